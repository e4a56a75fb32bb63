// The console's only way to the server: fetch() to this origin with the
// bearer token. The token lives in this module's memory only — never in a
// URL, a cookie, localStorage or sessionStorage — so a reload or sign-out
// forgets it.
let token = null;
// One AbortController per signed-in session: signing out aborts every request
// still in flight, so no answer fetched with the old token is shown after it.
let session = new AbortController();

export function setToken(t) { session.abort(); session = new AbortController(); token = t; }
export function clearToken() { session.abort(); session = new AbortController(); token = null; }
export function signedIn() { return token !== null; }

// True for the error a request ends with when its session was signed out.
export function isAbort(e) { return e instanceof DOMException && e.name === 'AbortError'; }

// A problem+json answer (RFC 9457) or a network failure, as an Error whose
// message is safe to show (the server's problem details hold no personal data).
export class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail || code || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

async function send(path, { method = 'GET', body, purpose } = {}) {
  if (token === null) throw new ApiError(401, 'unauthenticated', 'not signed in');
  const headers = { Authorization: `Bearer ${token}` };
  if (purpose) headers['Custos-Purpose'] = purpose;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const { signal } = session;
  const res = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store', credentials: 'omit', redirect: 'error', referrerPolicy: 'no-referrer', signal,
  });
  if (!res.ok) {
    let problem = {};
    try { problem = await res.json(); } catch { /* not JSON */ }
    throw new ApiError(res.status, problem.code, problem.detail || problem.title);
  }
  return res;
}

export async function getJson(path, opts) { return (await send(path, opts)).json(); }
export async function postJson(path, body, opts = {}) { return (await send(path, { ...opts, method: 'POST', body })).json(); }
export async function deleteJson(path, opts = {}) { return (await send(path, { ...opts, method: 'DELETE' })).json(); }

// Downloads a response body as a file: fetched with the token (so it never
// appears in a URL), handed to the browser as a Blob.
export async function download(path, filename, opts) {
  const blob = await (await send(path, opts)).blob();
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

// Query string from an object, skipping empty values.
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  const s = q.toString();
  return s ? `?${s}` : '';
}
