// Audit (auditor): search the log with paging, one entry's detail, and
// "Verify in this browser" (verify.js), and the export download.
import { getJson, download, query } from './api.js';
import { h, replace, field, facts, table, errorBox, when } from './dom.js';
import { verifyInclusionBundle } from './verify.js';

const PAGE = 50;
const state = { filters: {}, pages: [], entries: new Map() };
let verifierKey = '';

export async function renderAudit(main) {
  const inputs = {};
  const mk = (name, label, type = 'text') => {
    inputs[name] = h('input', { name, type, autocomplete: 'off', value: state.filters[name] || '' });
    return field(label, inputs[name]);
  };
  const results = h('div');
  const detail = h('section', { id: 'entry-detail', 'aria-label': 'Entry detail' });
  const form = h('form', { class: 'filters', 'aria-label': 'Search the audit log' },
    mk('subject', 'Subject id'), mk('principal', 'Principal'), mk('purpose', 'Purpose'),
    mk('operation', 'Operation'), mk('from', 'From (RFC 3339)'), mk('to', 'To (RFC 3339)'),
    h('button', { type: 'submit' }, 'Search'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    state.filters = Object.fromEntries(Object.entries(inputs).map(([k, el]) => [k, el.value.trim()]));
    state.pages = [];
    load(undefined);
  });
  const exportOut = h('span');
  replace(main, h('h1', null, 'Audit log'), form, results, detail,
    h('h2', null, 'Export'),
    h('p', null, h('button', {
      type: 'button', id: 'audit-export',
      onclick: async () => {
        try {
          await download('/v1/audit/export', 'custos-audit-export.bin');
          replace(exportOut, ' downloaded; check it offline with custos-audit verify.');
        } catch (e) { replace(exportOut, errorBox(e)); }
      },
    }, 'Download audit export'), exportOut));

  async function load(after) {
    try {
      const doc = await getJson(`/v1/audit/entries${query({ ...state.filters, after, limit: PAGE })}`);
      for (const e of doc.entries) state.entries.set(e.seq, e);
      const rows = doc.entries.map((e) => h('tr', { class: e.outcome !== 'allowed' ? 'denied' : null },
        h('td', { class: 'num' }, String(e.seq)), h('td', null, when(e.time)), h('td', null, e.principal),
        h('td', null, e.role), h('td', null, e.operation), h('td', null, e.purpose), h('td', null, e.outcome),
        h('td', null, h('button', { type: 'button', class: 'link', onclick: () => showEntry(detail, e) }, 'Details'))));
      const nav = h('div', { class: 'pager' },
        h('button', { type: 'button', disabled: state.pages.length === 0, onclick: () => { state.pages = []; load(undefined); } }, 'First page'),
        h('button', {
          type: 'button', id: 'next-page', disabled: doc.next_after === null,
          onclick: () => { state.pages.push(after); load(doc.next_after); },
        }, 'Next page'));
      replace(results, h('p', { class: 'summary' }, `Page ${state.pages.length + 1}: ${doc.entries.length} entries`),
        table(['#', 'Time', 'Principal', 'Role', 'Operation', 'Purpose', 'Outcome', ''], rows, { id: 'audit-entries' }), nav);
    } catch (e) {
      replace(results, errorBox(e));
    }
  }
  await load(undefined);
}

function showEntry(detail, e) {
  const vkey = h('input', { name: 'vkey', autocomplete: 'off', spellcheck: 'false', value: verifierKey, class: 'wide' });
  const steps = h('ol', { id: 'verify-steps', class: 'steps' });
  const verdict = h('p', { id: 'verify-verdict', role: 'status' });
  const fillKey = h('button', {
    type: 'button',
    onclick: async () => {
      try { vkey.value = (await getJson('/v1/audit/checkpoint')).verifier_key; } catch (err) { replace(verdict, errorBox(err)); }
    },
  }, "Use the server's key");
  const verify = h('button', {
    type: 'button', id: 'verify',
    onclick: async () => {
      verifierKey = vkey.value.trim();
      replace(steps); replace(verdict, 'Verifying…');
      let bundle;
      try {
        bundle = await getJson(`/v1/audit/proof/inclusion${query({ index: e.seq })}`);
      } catch (err) { replace(verdict, errorBox(err)); return; }
      const result = await verifyInclusionBundle(bundle, verifierKey);
      replace(steps, result.steps.map((s) => h('li', { class: s.ok ? 'ok' : 'fail' },
        h('strong', null, s.ok ? '✓ ' : '✗ ', s.title), h('br'), h('span', { class: 'mono' }, s.detail))));
      verdict.setAttribute('class', result.ok ? 'verdict ok' : 'verdict fail');
      replace(verdict, result.ok
        ? `Verified in this browser: entry ${e.seq} is in the signed log (${result.ms.toFixed(1)} ms).`
        : 'Rejected: this proof does not show the entry in a log signed by that key.');
    },
  }, 'Verify in this browser');
  replace(detail, h('h2', null, `Entry ${e.seq}`),
    facts([['Time', e.time], ['Principal', e.principal], ['Role', e.role], ['Token id', e.token_id],
      ['Purpose', e.purpose], ['Operation', e.operation], ['Subject', e.subject_id],
      ['Subjects', (e.subject_ids || []).join(', ')], ['Fields', (e.fields || []).join(', ')],
      ['Masked fields', (e.masked_fields || []).join(', ')], ['Outcome', e.outcome], ['Reason', e.reason],
      ['Request id', e.request_id], ['Node', e.node_id], ['Detail', e.detail], ['Previous leaf', e.prev]]),
    h('h3', null, 'Verify in this browser'),
    h('p', { class: 'hint' }, 'Paste the verifier key from audit.pub (custos audit pubkey), taken from a channel you trust: ',
      "the server's own copy proves nothing if the server is what you are checking."),
    field('Verifier key', vkey), h('p', null, fillKey, ' ', verify), verdict, steps);
  detail.focus();
}
