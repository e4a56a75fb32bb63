// The browser tests' fixtures: a vault made by the real `custos init`, the
// real custosd on a free 127.0.0.1 port, seeding through the HTTP API, and
// Debian's chromium driven by playwright-core with a guard that fails a test
// on any console error, page error, failed request, unexpected HTTP error or
// CSP violation. Every wait is bounded; nothing sleeps.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

export const CLI = process.env.CUSTOS_CLI || 'build/src/custos';
export const CUSTOSD = process.env.CUSTOSD || 'build/src/http/custosd';
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const SHOTS = process.env.SCREENSHOT_DIR || 'build/console-screenshots';

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

export class Vault {
  constructor() {
    this.tmp = mkdtempSync(join(tmpdir(), 'custos-browser-'));
    this.dir = join(this.tmp, 'data');
    execFileSync(CLI, ['--data-dir', this.dir, 'init', '--fast-kdf'], { stdio: ['ignore', 'ignore', 'pipe'] });
    this.admin = readFileSync(join(this.dir, 'admin.token'), 'utf8').trim();
    // The auditor's verifier key, as an auditor would get it: from the
    // operator, not from the server under test.
    this.vkey = readFileSync(join(this.dir, 'audit.pub'), 'utf8').trim();
  }

  token(role, name) {
    return execFileSync(CLI, ['--data-dir', this.dir, 'token', 'create', '--role', role, '--name', name],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
  }

  async start() {
    for (let attempt = 0; attempt < 3; attempt++) {
      const port = await freePort();
      const child = spawn(CUSTOSD, ['--data-dir', this.dir, '--listen', `127.0.0.1:${port}`],
        { stdio: ['ignore', 'ignore', 'pipe'] });
      let exited = false;
      child.on('exit', () => { exited = true; });
      child.stderr.resume();
      const url = `http://127.0.0.1:${port}`;
      const deadline = Date.now() + 15_000;
      while (!exited && Date.now() < deadline) {
        try {
          const r = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(1000) });
          if (r.ok) { this.child = child; this.url = url; return url; }
        } catch { /* not listening yet */ }
        await new Promise((res) => setTimeout(res, 50));  // poll interval, bounded by the deadline
      }
      child.kill('SIGKILL');
    }
    throw new Error('custosd did not start');
  }

  async stop() {
    if (this.child && this.child.exitCode === null) {
      const done = new Promise((res) => this.child.once('exit', res));
      this.child.kill('SIGTERM');
      const timer = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
      await done;
      clearTimeout(timer);
    }
    rmSync(this.tmp, { recursive: true, force: true });
  }

  // One API call for seeding; throws on an HTTP error.
  async api(method, path, token, body, purpose) {
    const headers = { Authorization: `Bearer ${token}` };
    if (purpose) headers['Custos-Purpose'] = purpose;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const r = await fetch(this.url + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await r.text();
    if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${text.slice(0, 300)}`);
    return text ? JSON.parse(text) : null;
  }
}

export async function launch() {
  mkdirSync(SHOTS, { recursive: true });
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30_000,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
  });
}

// A fresh context and page whose problems are collected in `problems`:
// console errors, uncaught exceptions, failed requests, HTTP errors not
// listed in `expectStatus` (e.g. [401] for a test of a bad token) and CSP
// violations (the securitypolicyviolation event, reported through a binding).
// `gpc: true` makes the browser send Global Privacy Control (Sec-GPC: 1 on
// every request, navigator.globalPrivacyControl true), as a browser or
// extension with GPC switched on does. `expectAborted` lists URL patterns of
// requests the test itself makes the page abort (e.g. by signing out while a
// screen loads); any other aborted request is a problem.
export async function guardedPage(browser, { expectStatus = [], viewport = { width: 1280, height: 800 }, gpc = false, expectAborted = [] } = {}) {
  const context = await browser.newContext({ viewport, acceptDownloads: true, extraHTTPHeaders: gpc ? { 'Sec-GPC': '1' } : {} });
  const page = await context.newPage();
  if (gpc) await page.addInitScript(() => Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', { get: () => true }));
  page.setDefaultTimeout(10_000);
  const problems = [];
  await page.exposeBinding('__cspViolation', (_src, v) => problems.push(`CSP violation: ${v}`));
  await page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__cspViolation(`${e.violatedDirective} blocked ${e.blockedURI} at ${e.sourceFile}:${e.lineNumber}`);
    });
  });
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    const text = m.text();
    // Chromium logs every HTTP error response as a console error; those are
    // judged by status below.
    if (/^Failed to load resource: the server responded with a status of (\d+)/.test(text)) return;
    problems.push(`console error: ${text}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('dialog', (d) => { problems.push(`dialog: ${d.message()}`); d.dismiss().catch(() => {}); });
  page.on('requestfailed', (r) => {
    const failure = r.failure() ? r.failure().errorText : '';
    // A blob: download handed to the browser is not a failed request.
    if (r.url().startsWith('blob:')) return;
    if (failure === 'net::ERR_ABORTED' && expectAborted.some((re) => re.test(r.url()))) return;
    problems.push(`request failed: ${r.method()} ${r.url()} ${failure}`);
  });
  page.on('response', (r) => {
    if (r.status() >= 400 && !expectStatus.includes(r.status()))
      problems.push(`HTTP ${r.status()} for ${r.request().method()} ${r.url()}`);
  });
  return { context, page, problems };
}

export async function signIn(page, url, token) {
  await page.goto(`${url}/console/`);
  await page.getByLabel('Bearer token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#principal').waitFor();
  // The first screen has loaded (or shown its error): no request is in flight.
  await page.locator('#main[data-ready]').waitFor();
}

// Form controls with no accessible name (no <label>, aria-label or
// aria-labelledby, and for buttons no text): described by tag, type and name.
export async function unlabelledControls(page) {
  return page.evaluate(() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea, button')]
    .filter((c) => c.offsetParent !== null || c.getClientRects().length > 0)
    .filter((c) => !(c.labels && c.labels.length) && !c.getAttribute('aria-label') && !c.getAttribute('aria-labelledby') &&
      !(c.tagName === 'BUTTON' && c.textContent.trim()))
    .map((c) => `${c.tagName.toLowerCase()}[type=${c.type}][name=${c.name}]`));
}

export async function shot(page, name) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}
