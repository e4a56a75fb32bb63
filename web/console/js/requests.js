// Requests (compliance officer): the queue of data-subject requests by due
// date, one request's page with its timeline and allowed transitions, the
// intake form and the export download.
import { getJson, postJson, download, query } from './api.js';
import { h, replace, field, select, facts, table, errorBox, when } from './dom.js';

const TYPES = ['access', 'portability', 'rectification', 'erasure', 'restriction', 'objection', 'opt_out_sale_share'];
const STATUSES = ['received', 'identity_verified', 'in_progress', 'extended', 'completed',
  'completed_with_exceptions', 'denied', 'canceled'];
const OPEN = new Set(['received', 'identity_verified', 'in_progress', 'extended']);
// Canonical regime names (policies/regulations.yaml); the vault answers with these.
const REGIMES = ['eu-gdpr', 'uk-gdpr', 'us-ca', 'us-co', 'us-ct', 'us-va', 'us-tx', 'us-ut', 'us-or', 'br-lgpd',
  'ca-pipeda', 'ch-nfadp'];
// Mirrors dsr::transition_allowed (src/dsr/dsr.cpp) to offer only the moves
// that can succeed; the server still decides.
const TRANSITIONS = {
  received: ['identity_verified', 'extended', 'denied', 'canceled'],
  identity_verified: ['in_progress', 'extended', 'denied', 'canceled'],
  in_progress: ['completed', 'completed_with_exceptions', 'extended', 'denied', 'canceled'],
  extended: ['identity_verified', 'in_progress', 'completed', 'completed_with_exceptions', 'denied', 'canceled'],
};
const DAY = 86_400_000;

// Filters survive navigation within the session (memory only).
const filters = { status: 'open', type: '', regime: '' };

export function daysLeft(dueIso, now = Date.now()) {
  return Math.ceil((Date.parse(dueIso) - now) / DAY);
}

// Sorts by due date and renders the queue rows. Exported for the
// 10,000-request rendering measurement (docs/performance.md).
export function queueRows(requests, now = Date.now()) {
  const sorted = requests.slice().sort((a, b) => (a.due_at < b.due_at ? -1 : a.due_at > b.due_at ? 1 : 0));
  return sorted.map((q) => {
    const open = OPEN.has(q.status);
    const left = daysLeft(q.due_at, now);
    const overdue = open && Date.parse(q.due_at) < now;
    const leftText = !open ? '—' : overdue ? `overdue by ${-left || 1} d` : `${left} d left`;
    return h('tr', { class: overdue ? 'overdue' : null, 'data-id': q.id },
      h('td', null, q.due_date || q.due_at.slice(0, 10)),
      h('td', { class: 'num' }, overdue ? h('strong', null, '⚠ ', leftText) : leftText),
      h('td', null, q.type), h('td', null, q.regime), h('td', null, q.status.replaceAll('_', ' ')),
      h('td', null, h('a', { href: `#/requests/${encodeURIComponent(q.id)}` }, q.id)));
  });
}

export async function renderQueue(main) {
  const list = h('div', { 'aria-busy': 'true' }, 'Loading…');
  const statusSel = select('status', [['open', 'open'], ['', 'any'], ...STATUSES.map((s) => [s, s.replaceAll('_', ' ')])], filters.status);
  const typeSel = select('type', [['', 'any'], ...TYPES.map((t) => [t, t])], filters.type);
  const regimeSel = select('regime', [['', 'any'], ...REGIMES.map((r) => [r, r])], filters.regime);
  const form = h('form', { class: 'filters', 'aria-label': 'Filter requests' },
    field('Status', statusSel), field('Type', typeSel), field('Regime', regimeSel),
    h('button', { type: 'submit' }, 'Apply'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    filters.status = statusSel.value; filters.type = typeSel.value; filters.regime = regimeSel.value;
    load();
  });
  replace(main, h('h1', null, 'Requests'),
    h('p', null, h('a', { href: '#/requests/new', class: 'button' }, 'New request')),
    form, list);

  async function load() {
    list.setAttribute('aria-busy', 'true');
    try {
      const status = filters.status === 'open' ? '' : filters.status;
      const doc = await getJson(`/v1/dsr${query({ status, type: filters.type, limit: 1000 })}`);
      let reqs = doc.requests;
      if (filters.status === 'open') reqs = reqs.filter((q) => OPEN.has(q.status));
      if (filters.regime) reqs = reqs.filter((q) => q.regime === filters.regime);
      const overdue = reqs.filter((q) => OPEN.has(q.status) && Date.parse(q.due_at) < Date.now()).length;
      replace(list,
        h('p', { class: 'summary' }, `${reqs.length} request${reqs.length === 1 ? '' : 's'}`,
          overdue ? h('span', { class: 'overdue-text' }, ` · ${overdue} overdue`) : ''),
        table(['Due', 'Days left', 'Type', 'Regime', 'Status', 'Request'], queueRows(reqs), { id: 'queue' }));
    } catch (e) {
      replace(list, errorBox(e));
    }
    list.setAttribute('aria-busy', 'false');
  }
  await load();
}

export function renderIntake(main) {
  const type = select('type', TYPES.map((t) => [t, t]), 'access');
  const regime = select('regime', REGIMES.map((r) => [r, r]), 'eu-gdpr');
  const idField = select('identifier_field', [['email', 'e-mail'], ['phone', 'phone'], ['external_id', 'external id']], 'email');
  const idValue = h('input', { name: 'identifier', required: true, autocomplete: 'off' });
  const note = h('input', { name: 'note', autocomplete: 'off' });
  const out = h('div');
  const form = h('form', { class: 'stack', 'aria-label': 'New data-subject request' },
    field('Type', type), field('Regime', regime), field('Identified by', idField), field('Identifier', idValue),
    field('Note', note), h('button', { type: 'submit' }, 'Create request'), out);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const body = { type: type.value, regime: regime.value, identifier: { [idField.value]: idValue.value } };
    if (note.value) body.note = note.value;
    try {
      const q = await postJson('/v1/dsr', body);
      location.hash = `#/requests/${encodeURIComponent(q.id)}`;
    } catch (e) {
      replace(out, errorBox(e));
    }
  });
  replace(main, h('h1', null, 'New request'), form);
}

export async function renderRequest(main, id) {
  replace(main, h('p', { 'aria-busy': 'true' }, 'Loading…'));
  let q;
  try {
    q = await getJson(`/v1/dsr/${encodeURIComponent(id)}`);
  } catch (e) {
    replace(main, h('h1', null, 'Request'), errorBox(e));
    return;
  }
  const open = OPEN.has(q.status);
  const overdue = open && Date.parse(q.due_at) < Date.now();
  const left = daysLeft(q.due_at);
  const moves = TRANSITIONS[q.status] || [];
  const out = h('div');

  const parts = [
    h('h1', null, `Request ${q.id}`),
    facts([
      ['Status', h('span', { id: 'request-status' }, q.status.replaceAll('_', ' '))],
      ['Type', q.type], ['Regime', q.regime_name ? `${q.regime} — ${q.regime_name}` : q.regime],
      ['Received', when(q.received_at)],
      ['Due', h('span', { class: overdue ? 'overdue-text' : null },
        `${q.due_date} (${!open ? 'closed' : overdue ? `overdue by ${-left || 1} d` : `${left} d left`})`)],
      ['Extensions', String(q.extensions)],
      ['Subject', q.subject_id || 'no data held on the identifier'],
      ['Identified by', q.identified_by], ['Channel', q.channel], ['Created by', q.created_by],
      ['Duplicate of', q.duplicate_of], ['Denial reason', q.denial_reason],
      ['Confirm receipt by', when(q.confirm_receipt_by)],
    ]),
  ];
  if (moves.length) {
    const to = select('to', moves.map((m) => [m, m.replaceAll('_', ' ')]), moves[0]);
    const reason = h('input', { name: 'reason', autocomplete: 'off' });
    const note = h('input', { name: 'note', autocomplete: 'off' });
    const form = h('form', { class: 'stack', id: 'transition', 'aria-label': 'Move the request' },
      h('h2', null, 'Move to'), field('New status', to),
      field('Reason (required to deny or extend)', reason), field('Note', note),
      h('button', { type: 'submit' }, 'Apply transition'), out);
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const body = { to: to.value };
      if (reason.value) body.reason = reason.value;
      if (note.value) body.note = note.value;
      try {
        await postJson(`/v1/dsr/${encodeURIComponent(q.id)}:transition`, body);
        await renderRequest(main, id);
      } catch (e) {
        replace(out, errorBox(e));
      }
    });
    parts.push(form);
  }
  if (q.subject_id) {
    // The matched subject's fields, read under dsr_fulfilment (audited).
    const box = h('div', { id: 'subject' }, 'Loading…');
    parts.push(h('h2', null, 'Matched subject'), box);
    getJson(`/v1/subjects/${encodeURIComponent(q.subject_id)}`, { purpose: 'dsr_fulfilment' })
      .then((subj) => replace(box, facts(Object.entries(subj.fields || {}).map(([k, v]) =>
        [k.replaceAll('_', ' '), typeof v === 'string' ? v : JSON.stringify(v)]))))
      .catch((e) => replace(box, errorBox(e)));
  }
  const exportOut = h('span');
  parts.push(h('h2', null, 'Export'),
    h('p', null, h('button', {
      type: 'button', id: 'export',
      onclick: async () => {
        try {
          await download(`/v1/dsr/${encodeURIComponent(q.id)}/export`, `custos-dsr-${q.id}.json`, { purpose: 'dsr_fulfilment' });
          replace(exportOut, ' downloaded.');
        } catch (e) { replace(exportOut, errorBox(e)); }
      },
    }, 'Download export package'), exportOut));
  parts.push(h('h2', null, 'Timeline'),
    table(['When', 'Who', 'From', 'To', 'Note'], (q.timeline || []).map((e) =>
      h('tr', null, h('td', null, when(e.at)), h('td', null, e.actor), h('td', null, e.from),
        h('td', null, e.to), h('td', null, e.note))), { id: 'timeline' }));
  if (q.report) parts.push(h('h2', null, 'Report'), h('pre', { class: 'report' }, JSON.stringify(q.report, null, 2)));
  replace(main, ...parts);
}
