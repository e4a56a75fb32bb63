// Administration (role with `admin`): API tokens (list, create — the secret
// shown once, in this page only — and revoke), the policy files in force
// (name, size, SHA-256, text) and the master-key versions with what each
// still wraps. The server authorises every call; nothing here is cached.
import { getJson, postJson, deleteJson } from './api.js';
import { h, replace, field, select, table, errorBox, when } from './dom.js';

// The shipped roles (policies/roles.yaml); the server refuses an unknown one.
const ROLES = ['compliance_officer', 'auditor', 'marketing', 'sales', 'service', 'analyst', 'downstream_system', 'admin'];

async function tokensSection(box) {
  const out = h('div', { id: 'token-created', 'aria-live': 'polite' });
  const listBox = h('div', { id: 'token-list' }, 'Loading…');
  const name = h('input', { name: 'name', required: true, autocomplete: 'off', maxlength: '64', spellcheck: 'false' });
  const role = select('role', ROLES.map((r) => [r, r.replaceAll('_', ' ')]), 'compliance_officer');
  const form = h('form', { class: 'filters', id: 'token-create', 'aria-label': 'Create a token' },
    field('Token name', name), field('Role', role), h('button', { type: 'submit' }, 'Create token'));

  async function load() {
    try {
      const doc = await getJson('/v1/tokens');
      replace(listBox, table(['Name', 'Role', 'Token id', 'Created', 'Revoked', ''], doc.tokens.map((t) => {
        const cell = h('td');
        if (!t.revoked_at) {
          // Two steps instead of a confirm() dialog: the second click revokes.
          const btn = h('button', { type: 'button', class: 'link', 'data-name': t.name }, 'Revoke');
          btn.addEventListener('click', async () => {
            if (btn.dataset.armed !== '1') {
              btn.dataset.armed = '1';
              btn.textContent = `Confirm: revoke ${t.name}`;
              return;
            }
            try {
              await deleteJson(`/v1/tokens/${encodeURIComponent(t.name)}`);
              await load();
            } catch (e) { replace(cell, errorBox(e)); }
          });
          cell.append(btn);
        }
        return h('tr', { 'data-name': t.name, class: t.revoked_at ? 'revoked' : null },
          h('td', null, t.name), h('td', null, t.role), h('td', { class: 'mono' }, t.token_id),
          h('td', null, when(t.created_at)), h('td', null, t.revoked_at ? when(t.revoked_at) : '—'), cell);
      }), { id: 'tokens' }));
    } catch (e) {
      replace(listBox, errorBox(e));
    }
  }

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      const t = await postJson('/v1/tokens', { name: name.value.trim(), role: role.value });
      name.value = '';
      // Shown once, never stored: gone when the screen is left.
      const secret = h('input', { class: 'wide', readonly: true, value: t.token, id: 'new-token', 'aria-label': `Token for ${t.name}` });
      replace(out, h('p', null, `Token for ${t.name} (${t.role}). Copy it now: it is not shown again.`), secret);
      await load();
    } catch (e) {
      replace(out, errorBox(e));
    }
  });
  replace(box, h('h2', null, 'Tokens'), form, out, listBox);
  await load();
}

async function policiesSection(box) {
  try {
    const doc = await getJson('/v1/admin/policies');
    replace(box, h('h2', null, 'Policy files in force'),
      table(['File', 'Bytes', 'SHA-256'], doc.files.map((f) =>
        h('tr', { 'data-file': f.name }, h('td', null, f.name), h('td', { class: 'num' }, String(f.bytes)),
          h('td', { class: 'mono' }, f.sha256))), { id: 'policies' }),
      doc.files.filter((f) => f.text !== null).map((f) =>
        h('details', { class: 'policy-text' }, h('summary', null, f.name), h('pre', { class: 'report' }, f.text))));
  } catch (e) {
    replace(box, h('h2', null, 'Policy files in force'), errorBox(e));
  }
}

async function keysSection(box) {
  try {
    const doc = await getJson('/v1/admin/keys');
    replace(box, h('h2', null, 'Master-key versions'),
      h('p', null, `New keys are wrapped with version ${doc.current_version}; the newest on disk is ${doc.newest_version}.`),
      table(['Version', 'In use for new keys', 'Database keys wrapped', 'Subject keys wrapped'], doc.versions.map((v) =>
        h('tr', { 'data-version': String(v.version) }, h('td', null, String(v.version)), h('td', null, v.current ? 'yes (current)' : 'no'),
          h('td', { class: 'num' }, String(v.named_keys)), h('td', { class: 'num' }, String(v.subject_keys)))), { id: 'key-versions' }),
      h('p', { class: 'hint' }, 'Rotate with custos key rotate; retire old versions with custos key retire.'));
  } catch (e) {
    replace(box, h('h2', null, 'Master-key versions'), errorBox(e));
  }
}

export async function renderAdmin(main) {
  const tokens = h('section', { id: 'admin-tokens' });
  const policies = h('section', { id: 'admin-policies' });
  const keys = h('section', { id: 'admin-keys' });
  replace(main, h('h1', null, 'Administration'), tokens, policies, keys);
  await Promise.all([tokensSection(tokens), policiesSection(policies), keysSection(keys)]);
}
