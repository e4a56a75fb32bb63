// Breaches: the board of incidents with a live countdown per recipient
// clock, one incident's timeline and affected-subject computation, and the
// forms to open an incident and record events.
import { getJson, postJson } from './api.js';
import { h, replace, field, select, facts, table, errorBox, duration, when } from './dom.js';

const EVENTS = ['contained', 'authority_notified', 'subjects_notified', 'closed', 'note'];
// A notification names whom it satisfies: "authority notified (eu-gdpr)".
function eventLabel(e) {
  if (e.type !== 'notified') return e.type.replaceAll('_', ' ');
  const who = `${(e.recipient || 'recipient').replaceAll('_', ' ')} notified`;
  return e.regime ? `${who} (${e.regime})` : who;
}
const AT_RISK_MS = 24 * 3_600_000;  // under a day left: at risk
let ticker = null;

// The state of one deadline now: met, late, at risk, on track. Text, not
// colour alone, carries it.
export function clockState(d, now = Date.now()) {
  if (d.met) return { cls: 'met', text: 'met' };
  if (!d.required) return { cls: 'met', text: 'not required' };
  if (!d.due_at) return { cls: 'risk', text: 'without undue delay' };
  const left = Date.parse(d.due_at) - now;
  if (left < 0) return { cls: 'late', text: `late by ${duration(left)}` };
  if (left < AT_RISK_MS) return { cls: 'risk', text: `at risk: ${duration(left)} left` };
  return { cls: 'track', text: `${duration(left)} left` };
}

function clock(d) {
  const out = h('span', { class: 'clock', 'data-due': d.due_at || '' });
  const paint = () => {
    const st = clockState(d);
    out.setAttribute('class', `clock ${st.cls}`);
    out.setAttribute('data-state', st.cls);
    out.textContent = st.text;
  };
  paint();
  out.paint = paint;
  return out;
}

function startTicker(root) {
  if (ticker) clearInterval(ticker);
  ticker = setInterval(() => {
    if (!root.isConnected) { clearInterval(ticker); ticker = null; return; }
    for (const c of root.querySelectorAll('.clock')) c.paint && c.paint();
  }, 1000);
}

function deadlineList(deadlines) {
  return h('ul', { class: 'deadlines' }, deadlines.map((d) => h('li', null,
    h('span', null, `${d.notify} — ${d.law}`, d.due_at ? ` (due ${when(d.due_at)})` : ''), ' ', clock(d))));
}

export async function renderBoard(main) {
  const board = h('div', { class: 'board', id: 'breach-board' }, 'Loading…');
  const desc = h('input', { name: 'description', required: true, autocomplete: 'off' });
  const cats = h('input', { name: 'categories', value: 'contact', autocomplete: 'off' });
  const regimes = h('input', { name: 'regimes', value: 'gdpr', autocomplete: 'off' });
  const discovered = h('input', { name: 'discovered_at', autocomplete: 'off', placeholder: 'now' });
  const out = h('div');
  const form = h('form', { class: 'stack', 'aria-label': 'Open a breach incident' },
    h('h2', null, 'Open an incident'), field('Description', desc), field('Categories (comma-separated)', cats),
    field('Regimes (comma-separated)', regimes), field('Discovered at (RFC 3339; empty: now)', discovered),
    h('button', { type: 'submit' }, 'Open incident'), out);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const list = (el) => el.value.split(',').map((x) => x.trim()).filter(Boolean);
    const body = { description: desc.value, categories: list(cats), regimes: list(regimes) };
    if (discovered.value.trim()) body.discovered_at = discovered.value.trim();
    try {
      const i = await postJson('/v1/breaches', body);
      location.hash = `#/breaches/${encodeURIComponent(i.id)}`;
    } catch (e) { replace(out, errorBox(e)); }
  });
  replace(main, h('h1', null, 'Breaches'), board, form);
  try {
    const doc = await getJson('/v1/breaches');
    const incidents = doc.breaches;
    replace(board, incidents.length === 0 ? h('p', null, 'No incidents.') : incidents.map((i) =>
      h('article', { class: `card${i.overdue ? ' late' : ''}`, 'data-id': i.id },
        h('h2', null, h('a', { href: `#/breaches/${encodeURIComponent(i.id)}` }, i.id)),
        h('p', null, i.description),
        h('p', { class: 'meta' }, `${i.status.replaceAll('_', ' ')} · discovered ${when(i.discovered_at)} · severity ${i.severity}`),
        deadlineList(i.deadlines || []))));
    startTicker(board);
  } catch (e) { replace(board, errorBox(e)); }
}

export async function renderIncident(main, id) {
  let i;
  try {
    i = await getJson(`/v1/breaches/${encodeURIComponent(id)}`);
  } catch (e) { replace(main, h('h1', null, 'Incident'), errorBox(e)); return; }
  const type = select('type', EVENTS.map((t) => [t, t.replaceAll('_', ' ')]), EVENTS[0]);
  const note = h('input', { name: 'note', autocomplete: 'off' });
  const out = h('div');
  const form = h('form', { class: 'stack', id: 'breach-event', 'aria-label': 'Record an event' },
    h('h2', null, 'Record an event'), field('Event', type), field('Note', note),
    h('button', { type: 'submit' }, 'Record event'), out);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const body = { type: type.value };
    if (note.value) body.note = note.value;
    try {
      await postJson(`/v1/breaches/${encodeURIComponent(i.id)}/events`, body);
      await renderIncident(main, id);
    } catch (e) { replace(out, errorBox(e)); }
  });
  // The affected-subject computation: every subject the named principals or
  // tokens touched in the window, from the audit log (or by data category).
  const principals = h('input', { name: 'principals', autocomplete: 'off', placeholder: 'e.g. sales-laptop' });
  const from = h('input', { name: 'from', type: 'datetime-local', step: '1' });
  const to = h('input', { name: 'to', type: 'datetime-local', step: '1' });
  const compOut = h('div');
  const compForm = h('form', { class: 'filters', id: 'compute-affected', 'aria-label': 'Compute the affected subjects' },
    field('Compromised principals (comma-separated)', principals), field('From (UTC)', from), field('To (UTC)', to),
    h('button', { type: 'submit' }, 'Compute affected subjects'), compOut);
  compForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const iso = (v) => (v ? `${v.length === 16 ? `${v}:00` : v}Z` : undefined);
    const body = { principals: principals.value.split(',').map((x) => x.trim()).filter(Boolean), from: iso(from.value), to: iso(to.value) };
    try {
      await postJson(`/v1/breaches/${encodeURIComponent(i.id)}:computeAffected`, body);
      await renderIncident(main, id);
    } catch (e) { replace(compOut, errorBox(e)); }
  });
  const comp = i.affected_computation;
  const compFacts = comp ? facts([
    ['Method', comp.method === 'audit_log' ? 'from the audit log' : comp.method],
    ['Window', comp.from ? `${when(comp.from)} – ${when(comp.to)}` : null],
    ['Subjects affected', h('span', { id: 'affected-count' }, String(comp.count))],
    ['Audit entries scanned', comp.method === 'audit_log' ? `${comp.entries_scanned}${comp.count ? ` (matching seq ${comp.first_seq}–${comp.last_seq})` : ''}` : null],
    ['Checkpoint', `tree size ${comp.checkpoint_size}${comp.checkpoint_root ? `, root ${comp.checkpoint_root}` : ''}`],
  ]) : null;
  const deadlines = deadlineList(i.deadlines || []);
  replace(main, h('h1', null, `Incident ${i.id}`), h('p', null, i.description),
    facts([['Status', i.status.replaceAll('_', ' ')], ['Discovered', when(i.discovered_at)],
      ['Occurred', i.occurred_from ? `${when(i.occurred_from)} – ${when(i.occurred_to)}` : null],
      ['Severity', i.severity], ['High risk', i.high_risk ? 'yes' : 'no'],
      ['Categories', (i.categories || []).join(', ')], ['Regimes', (i.regimes || []).join(', ')],
      ['Affected subjects', i.affected_count === null ? 'not computed' : String(i.affected_count)]]),
    h('h2', null, 'Notification clocks'), deadlines,
    h('h2', null, 'Affected-subject computation'), compFacts ? h('div', { id: 'affected' }, compFacts) : h('p', null, 'Not computed yet.'), compForm,
    h('h2', null, 'Timeline'),
    table(['When', 'Recorded', 'Who', 'Event', 'Note'], (i.timeline || []).map((e) => h('tr', null,
      h('td', null, when(e.at)), h('td', null, when(e.recorded_at)), h('td', null, e.actor),
      h('td', null, eventLabel(e)), h('td', null, e.note))), { id: 'breach-timeline' }),
    form);
  startTicker(main);
}
