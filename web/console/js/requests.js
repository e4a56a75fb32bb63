// Requests (compliance officer): the queue of data-subject requests by due
// date, one request's page with its timeline and allowed transitions, the
// intake form and the export download.
import { getJson, postJson, download, query } from './api.js';
import { h, replace, field, select, facts, table, errorBox, when } from './dom.js';

const TYPES = ['access', 'portability', 'rectification', 'erasure', 'restriction', 'objection', 'opt_out_sale_share'];
const STATUSES = ['received', 'identity_verified', 'in_progress', 'extended', 'awaiting_approval',
  'awaiting_confirmation', 'completed', 'completed_with_exceptions', 'denied', 'canceled'];
const OPEN = new Set(['received', 'identity_verified', 'in_progress', 'extended', 'awaiting_approval', 'awaiting_confirmation']);
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
  // Four eyes on erasure: a second principal completes, or it goes back to work.
  awaiting_approval: ['completed', 'completed_with_exceptions', 'in_progress', 'denied', 'canceled'],
  awaiting_confirmation: ['completed', 'completed_with_exceptions'],
};
const DAY = 86_400_000;

// Filters survive navigation within the session (memory only).
const filters = { status: 'open', type: '', regime: '' };

export function daysLeft(dueIso, now = Date.now()) {
  return Math.ceil((Date.parse(dueIso) - now) / DAY);
}

// Sorts by due date (the server's order already; kept so the queue is right
// whatever the answer's order). Exported for the measurement.
export function sortByDue(requests) {
  return requests.slice().sort((a, b) => (a.due_at < b.due_at ? -1 : a.due_at > b.due_at ? 1 : 0));
}

// One queue row.
function queueRow(q, now) {
  const open = OPEN.has(q.status);
  const left = daysLeft(q.due_at, now);
  const overdue = open && Date.parse(q.due_at) < now;
  const leftText = !open ? '—' : overdue ? `overdue by ${-left || 1} d` : `${left} d left`;
  return h('tr', { class: overdue ? 'overdue' : null, 'data-id': q.id },
    h('td', null, q.due_date || q.due_at.slice(0, 10)),
    h('td', { class: 'num' }, overdue ? h('strong', null, '⚠ ', leftText) : leftText),
    h('td', null, q.type), h('td', null, q.regime), h('td', null, q.status.replaceAll('_', ' ')),
    h('td', null, h('a', { href: `#/requests/${encodeURIComponent(q.id)}` }, q.id)));
}

export function queueRows(requests, now = Date.now()) {
  return sortByDue(requests).map((q) => queueRow(q, now));
}

// Rows in the first frame; the rest are appended in chunks between frames,
// so a long queue shows its most urgent requests at once (docs/performance.md,
// "Web console": building 10,000 rows before the first paint took seconds).
const FIRST_ROWS = 100;
const CHUNK_ROWS = 500;
const nextTask = () => new Promise((res) => setTimeout(res, 0));
// Resolves once the browser has produced a frame (the task after the next
// animation frame), so what is in the DOM now is on screen.
const nextFrame = () => new Promise((res) => requestAnimationFrame(() => setTimeout(res, 0)));

// Appends rows for `sorted` to `tbody`: with `first`, the first rows at
// once (the caller awaits nothing before they are in), then the rest in
// chunks between tasks so the browser paints in between. Resolves when the
// last row is in, or early once `stale()` (the screen was left or reloaded).
function fillQueue(tbody, sorted, now, stale, first) {
  let at = 0;
  if (first) {
    const frag = document.createDocumentFragment();
    for (const q of sorted.slice(0, FIRST_ROWS)) frag.append(queueRow(q, now));
    tbody.append(frag);
    at = FIRST_ROWS;
  }
  const rest = (async () => {
    // The first rows get a frame of their own before any chunk is appended:
    // otherwise chunk tasks run ahead of the first paint, and its layout
    // covers thousands of rows.
    if (first) {
      await nextFrame();
      performance.mark('queue-first-frame');
    }
    for (; at < sorted.length; at += CHUNK_ROWS) {
      await nextTask();
      if (stale()) return;
      const frag = document.createDocumentFragment();
      for (const q of sorted.slice(at, at + CHUNK_ROWS)) frag.append(queueRow(q, now));
      tbody.append(frag);
    }
  })();
  return rest;
}

const PAGE = 1000;
let queueGeneration = 0;

export async function renderQueue(main) {
  const list = h('div', { id: 'queue-list', 'aria-busy': 'true' }, 'Loading…');
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

  // Pages of up to 1,000 (the API's limit) in due-date order: the first
  // page's most urgent rows are shown at once, the rest appended as they come.
  async function load() {
    const generation = ++queueGeneration;
    const stale = () => generation !== queueGeneration || !list.isConnected;
    list.setAttribute('aria-busy', 'true');
    list.removeAttribute('data-complete');
    const status = filters.status === 'open' ? '' : filters.status;
    const keep = (q) => (filters.status !== 'open' || OPEN.has(q.status)) && (!filters.regime || q.regime === filters.regime);
    try {
      performance.mark('queue-fetch-start');
      let page = await getJson(`/v1/dsr${query({ status, type: filters.type, limit: PAGE })}`);
      performance.mark('queue-fetched');
      if (stale()) return;
      const now = Date.now();
      let shown = 0, overdue = 0;
      const summary = h('p', { class: 'summary' });
      const countSummary = (more) => replace(summary, `${shown} request${shown === 1 ? '' : 's'}`,
        overdue ? h('span', { class: 'overdue-text' }, ` · ${overdue} overdue`) : '', more ? ' · loading more…' : '');
      const tbody = h('tbody');
      replace(list, summary,
        h('div', { class: 'table-wrap' }, h('table', { id: 'queue', class: 'queue' },
          h('thead', null, h('tr', null, ['Due', 'Days left', 'Type', 'Regime', 'Status', 'Request']
            .map((t) => h('th', { scope: 'col' }, t)))),
          tbody)));
      let firstPage = true;
      let appended = Promise.resolve();  // pages' rows go in strictly in order
      for (;;) {
        const more = page.requests.length === PAGE;
        const reqs = page.requests.filter(keep);
        const sorted = sortByDue(reqs);
        if (firstPage) performance.mark('queue-sorted');
        shown += reqs.length;
        overdue += reqs.filter((q) => Date.parse(q.due_at) < now && OPEN.has(q.status)).length;
        countSummary(more);
        if (firstPage) {
          appended = fillQueue(tbody, sorted, now, stale, true);  // the first rows are in on return
          performance.mark('queue-first-rows');
          firstPage = false;
        } else {
          appended = appended.then(() => fillQueue(tbody, sorted, now, stale, false));
        }
        if (stale()) return;
        if (!more) break;
        const last = page.requests[page.requests.length - 1].id;
        page = await getJson(`/v1/dsr${query({ status, type: filters.type, limit: PAGE, after: last })}`);
        if (stale()) return;
      }
      await appended;
      if (stale()) return;
      list.setAttribute('data-complete', '');
      list.setAttribute('aria-busy', 'false');
      performance.mark('queue-complete');
    } catch (e) {
      if (stale()) return;
      replace(list, errorBox(e));
      list.setAttribute('aria-busy', 'false');
    }
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

export async function renderRequest(main, id, me = null) {
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
  if (q.status === 'awaiting_approval') {
    // The policy asks for a second approver (roles.yaml dsr.erasure_second_approver).
    const asked = [...(q.timeline || [])].reverse().find((e) => e.to === 'awaiting_approval');
    const askedBy = asked ? asked.actor : 'another principal';
    const mine = me && asked && asked.actor === me.principal;
    parts.push(h('div', { class: 'approval', id: 'second-approver', role: 'note' },
      h('strong', null, 'Second approval needed. '),
      `${askedBy} asked to complete this erasure. `,
      mine ? 'A different principal must approve it: you cannot approve your own request.'
        : 'Approve it by moving it to "completed", or send it back to "in progress".'));
  }
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
        await renderRequest(main, id, me);
      } catch (e) {
        replace(out, errorBox(e));
      }
    });
    parts.push(form);
  }
  const matched = q.subject_ids && q.subject_ids.length ? q.subject_ids : (q.subject_id ? [q.subject_id] : []);
  if (matched.length) {
    // Every matched subject's fields (read under dsr_fulfilment, audited) and legal hold.
    parts.push(h('h2', null, matched.length === 1 ? 'Matched subject' : `Matched subjects (${matched.length})`));
    matched.forEach((sid, i) => {
      const box = h('div', { id: i === 0 ? 'subject' : null, class: 'subject', 'data-subject': sid }, 'Loading…');
      parts.push(box);
      const show = (subj) => {
        const hold = h('p', { class: 'hold' });
        const holdOut = h('span');
        const setHold = (on) => h('button', {
          type: 'button', class: 'link', id: i === 0 ? 'legal-hold' : null,
          onclick: async () => {
            try {
              await postJson(`/v1/subjects/${encodeURIComponent(sid)}:legalHold`, { hold: on });
              show({ ...subj, legal_hold: on });
            } catch (e) { replace(holdOut, errorBox(e)); }
          },
        }, on ? 'Place a legal hold' : 'Release the legal hold');
        replace(hold, subj.legal_hold
          ? [h('strong', null, 'Legal hold: '), 'on — erasure keeps what the hold covers. ', setHold(false)]
          : ['Legal hold: none. ', setHold(true)], holdOut);
        replace(box, h('p', { class: 'mono' }, sid),
          facts(Object.entries(subj.fields || {}).map(([k, v]) => [k.replaceAll('_', ' '), typeof v === 'string' ? v : JSON.stringify(v)])),
          hold);
      };
      getJson(`/v1/subjects/${encodeURIComponent(sid)}`, { purpose: 'dsr_fulfilment' })
        .then(show).catch((e) => replace(box, errorBox(e)));
    });
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
