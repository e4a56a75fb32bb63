// The console's shell: sign-in with a pasted bearer token (memory only, see
// api.js), the screens the token's role may use, and hash routing
// (#/requests, #/requests/<id>, #/audit, #/breaches, #/breaches/<id>,
// #/analytics, #/admin). Only ids appear in the URL, never a token or personal value.
import { getJson, setToken, clearToken, signedIn, isAbort } from './api.js';
import { h, replace, field, errorBox } from './dom.js';
import { renderQueue, renderRequest, renderIntake } from './requests.js';
import { renderAudit } from './audit.js';
import { renderBoard, renderIncident } from './breaches.js';
import { renderAnalytics, marketer } from './analytics.js';
import { renderAdmin } from './admin.js';

let main = document.getElementById('main');
const nav = document.getElementById('nav');
const who = document.getElementById('who');
let me = null;

const SCREENS = [
  { path: 'requests', title: 'Requests', op: 'dsr' },
  { path: 'breaches', title: 'Breaches', op: 'breach' },
  { path: 'audit', title: 'Audit', op: 'audit' },
  { path: 'analytics', title: 'Analytics', op: 'analytics' },
  { path: 'admin', title: 'Admin', op: 'admin' },
];

// The screens the role may use (the server still decides every call): by
// operation class; Analytics also for a marketer (its campaign preview).
function allowed() {
  return SCREENS.filter((sc) => me && (me.operations.includes(sc.op) || (sc.op === 'analytics' && marketer(me))));
}

function renderSignIn(message) {
  const token = h('input', { type: 'password', name: 'token', autocomplete: 'off', required: true, spellcheck: 'false' });
  const out = h('div', null, message ? errorBox(message) : null);
  const form = h('form', { class: 'stack signin', id: 'signin', 'aria-label': 'Sign in' },
    h('h1', null, 'Sign in'),
    h('p', { class: 'hint' }, 'Paste a bearer token (custos token create). It is kept in this tab\'s memory only and forgotten on reload or sign-out.'),
    field('Bearer token', token), h('button', { type: 'submit' }, 'Sign in'), out);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    setToken(token.value.trim());
    token.value = '';
    try {
      me = await getJson('/v1/whoami');
    } catch (e) {
      clearToken();
      me = null;
      replace(out, errorBox(e.status === 401 ? 'That token was not accepted.' : e));
      return;
    }
    const first = allowed()[0];
    const target = first ? `#/${first.path}` : '#/';
    if (location.hash === target) route(); else location.hash = target;
  });
  replace(nav); replace(who);
  replace(main, form);
  token.focus();
}

function signOut() {
  clearToken();
  me = null;
  // A fresh <main>: a screen of the old session still finishing (its
  // requests are aborted, but its own error handling still runs) writes into
  // the detached element, never over the sign-in form.
  const fresh = main.cloneNode(false);
  fresh.removeAttribute('data-ready');
  main.replaceWith(fresh);
  main = fresh;
  history.replaceState(null, '', location.pathname);
  renderSignIn();
}

function renderChrome(current) {
  replace(nav, allowed().map((sc) => h('a', {
    href: `#/${sc.path}`, 'aria-current': sc.path === current ? 'page' : null,
  }, sc.title)));
  replace(who, h('span', { id: 'principal' }, `${me.principal} (${me.role})`), ' ',
    h('button', { type: 'button', id: 'signout', onclick: signOut }, 'Sign out'));
}

async function route() {
  if (!signedIn() || !me) return renderSignIn();
  const [, screen = '', id] = location.hash.split('/');
  const sc = allowed().find((x) => x.path === screen);
  renderChrome(screen);
  if (!sc) {
    replace(main, h('h1', null, 'Custos'), allowed().length
      ? h('p', null, 'Choose a screen above.')
      : h('p', null, `The role ${me.role} has no console screens.`));
    main.setAttribute('data-ready', '');
    return;
  }
  document.title = `${sc.title} · Custos`;
  const decoded = id === undefined ? undefined : decodeURIComponent(id);
  try {
    if (screen === 'requests') {
      if (decoded === 'new') renderIntake(main);
      else if (decoded) await renderRequest(main, decoded, me);
      else await renderQueue(main);
    } else if (screen === 'breaches') {
      if (decoded) await renderIncident(main, decoded); else await renderBoard(main);
    } else if (screen === 'audit') await renderAudit(main);
    else if (screen === 'analytics') await renderAnalytics(main, me);
    else if (screen === 'admin') await renderAdmin(main, me);
  } catch (e) {
    // Signed out (or signed in again) while this screen loaded: the sign-in
    // form, or the newer session's screen, owns the page now.
    if (isAbort(e)) return;
    replace(main, errorBox(e));
  }
  main.setAttribute('data-ready', screen);
}

window.addEventListener('hashchange', () => { main.removeAttribute('data-ready'); route(); });
route();
