// The data subject's privacy page. A subject arrives through a single-use,
// expiring link their CRM sent (POST /v1/subjects/{id}:privacyLink; see
// docs/console.md, "Privacy page"). The link's token travels in the URL
// fragment, which the browser never sends to a server or in a Referer; the
// page drops it from the address bar at once, keeps it in memory and spends
// it for a 30-minute session bound to that one subject
// (POST /v1/privacy/session). With the session it reads and changes the
// subject's own marketing consents and files requests; nothing else is
// reachable with it. Every value is put in the page as text, never as HTML.
const gpcOn = navigator.globalPrivacyControl === true;
const gpcBox = document.getElementById('gpc');
const linkBox = document.getElementById('link');
const choices = document.getElementById('choices');
const consentsBox = document.getElementById('consents');
const objectionBox = document.getElementById('objection');
const consentStatus = document.getElementById('consent-status');
const requestsBox = document.getElementById('requests');
const requestForm = document.getElementById('request-form');
const requestStatus = document.getElementById('request-status');
const correction = document.getElementById('correction');

let session = null;  // memory only

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined && v !== false) e.setAttribute(k, v === true ? '' : String(v));
  for (const c of children) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  return e;
}

function showGpc(serverHonoured) {
  if (serverHonoured) {
    gpcBox.textContent = 'Your browser sends Global Privacy Control (Sec-GPC: 1). We honoured it: you are opted out of the sale and sharing of your data.';
    gpcBox.className = 'on';
  } else if (gpcOn) {
    gpcBox.textContent = 'Your browser sends Global Privacy Control (Sec-GPC: 1): we treat it as an opt-out of sale and sharing.';
    gpcBox.className = 'on';
  } else {
    gpcBox.textContent = 'Your browser does not send a Global Privacy Control signal.';
    gpcBox.className = '';
  }
}

class PageError extends Error {
  constructor(status, code, detail) { super(detail || code || `HTTP ${status}`); this.status = status; this.code = code; }
}

async function call(path, { method = 'GET', body, scheme = 'PrivacySession', token = session } = {}) {
  const headers = { Authorization: `${scheme} ${token}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store', credentials: 'omit', redirect: 'error', referrerPolicy: 'no-referrer',
  });
  let doc = {};
  try { doc = await res.json(); } catch { /* no JSON */ }
  if (!res.ok) throw new PageError(res.status, doc.code, doc.detail || doc.title);
  return doc;
}

const CHANNEL_NAMES = { email: 'e-mail', sms: 'text message', phone: 'phone call', post: 'post', push: 'app notification', web: 'website', app: 'app' };
const STATE_NAMES = { granted: 'you agreed', withdrawn: 'you withdrew', denied: 'you declined', none: 'not asked yet', pending: 'awaiting your confirmation' };

function humanPurpose(p) {
  return p.description || p.purpose.replaceAll('_', ' ');
}

function renderConsents(doc) {
  showGpc(doc.gpc === true);
  objectionBox.hidden = doc.objected !== true;
  consentsBox.replaceChildren();
  for (const p of doc.purposes) {
    const fs = el('fieldset', { 'data-purpose': p.purpose }, el('legend', null, humanPurpose(p)));
    for (const c of p.channels) {
      const id = `c-${p.purpose}-${c.channel}`;
      const box = el('input', { type: 'checkbox', id, 'data-purpose': p.purpose, 'data-channel': c.channel, checked: c.state === 'granted' });
      box.addEventListener('change', () => change(p.purpose, c.channel, box.checked ? 'granted' : 'withdrawn', box));
      fs.append(el('label', { for: id }, box, ' ', `by ${CHANNEL_NAMES[c.channel] || c.channel}`, ' ',
        el('span', { class: 'state' }, `(${STATE_NAMES[c.state] || c.state}${c.since ? `, ${c.since.slice(0, 10)}` : ''})`)));
    }
    consentsBox.append(fs);
  }
}

function showError(box, e) {
  box.className = 'error';
  if (e.status === 401) {
    box.textContent = 'Your session has ended. Please ask us for a new link.';
    session = null;
  } else {
    box.textContent = `That did not work: ${e.message}`;
  }
}

async function change(purpose, channel, event, box) {
  box.disabled = true;
  try {
    const doc = await call('/v1/privacy/consents', { method: 'POST', body: { purpose, channel, event } });
    renderConsents(doc);
    consentStatus.className = 'ok';
    consentStatus.textContent = `Saved: ${event === 'granted' ? 'you agreed to' : 'you withdrew'} ${purpose.replaceAll('_', ' ')} by ${CHANNEL_NAMES[channel] || channel}.`;
  } catch (e) {
    box.checked = !box.checked;
    box.disabled = false;
    showError(consentStatus, e);
  }
}

const REQUEST_NAMES = { access: 'a copy of your data', erasure: 'erasure of your data', rectification: 'a correction of your data', opt_out_sale_share: 'no sale or sharing of your data' };

requestForm.addEventListener('change', () => {
  correction.hidden = requestForm.elements.type.value !== 'rectification';
});

requestForm.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const type = requestForm.elements.type.value;
  const body = { type };
  const note = requestForm.elements.note.value.trim();
  if (note) body.note = note;
  if (type === 'rectification') {
    const value = requestForm.elements.value.value.trim();
    if (!value) {
      requestStatus.className = 'error';
      requestStatus.textContent = 'Please give the correct value.';
      return;
    }
    body.changes = { fields: { [requestForm.elements.field.value]: value } };
  }
  try {
    const r = await call('/v1/privacy/requests', { method: 'POST', body });
    requestStatus.className = 'ok';
    requestStatus.replaceChildren(
      el('p', null, `We received your request for ${REQUEST_NAMES[r.type] || r.type}. ${r.status === 'identity_verified' ? 'Your identity is confirmed by this link.' : 'We will confirm your identity before we act on it.'}`),
      el('p', null, 'Reference: ', el('span', { 'data-request-id': r.request_id }, r.request_id), `. We will answer by ${r.due_at.slice(0, 10)}.`));
    requestForm.reset();
    correction.hidden = true;
  } catch (e) {
    showError(requestStatus, e);
  }
});

async function start() {
  showGpc(false);
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get('t');
  if (location.hash.length > 1) history.replaceState(null, '', location.pathname);
  if (!token) {
    linkBox.textContent = 'Open this page through the link in the e-mail we sent you to see and change your choices.';
    return;
  }
  try {
    const s = await call('/v1/privacy/session', { method: 'POST', scheme: 'PrivacyLink', token });
    session = s.session;
    const doc = await call('/v1/privacy/consents');
    linkBox.textContent = `Your choices, through your personal link (valid until ${s.expires_at.replace('T', ' ').slice(0, 16)} UTC).`;
    renderConsents(doc);
    choices.hidden = false;
    requestsBox.hidden = false;
  } catch (e) {
    linkBox.className = 'error';
    if (e.code === 'link_used') linkBox.textContent = 'This link was already used. For your protection each link works once: please ask us for a new one.';
    else if (e.code === 'link_expired') linkBox.textContent = 'This link has expired. Please ask us for a new one.';
    else linkBox.textContent = 'This link is not valid. Please use the link from the e-mail we sent you.';
  }
}

start();
