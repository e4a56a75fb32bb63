// The web console (/console/) and privacy page (/privacy/) in headless
// Debian chromium against a real custosd with seeded data (issue 19). Each
// test fails on any console error, page error, failed request, unexpected
// HTTP error or CSP violation (harness.mjs). Screenshots of each screen go
// to build/console-screenshots/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { Vault, launch, guardedPage, signIn, shot } from './harness.mjs';

const XSS = '<img src=x onerror=alert(1)>';
const rfc3339 = (ms) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
const DAY = 86_400_000;

let vault, url, browser;
const tok = {};
const seed = {};

before(async () => {
  vault = new Vault();
  url = await vault.start();
  tok.officer = vault.token('compliance_officer', 'dpo');
  tok.auditor = vault.token('auditor', 'auditor');
  tok.analyst = vault.token('analyst', 'analyst');
  tok.marketing = vault.token('marketing', 'marketing');
  const a = vault.admin;
  seed.ada = (await vault.api('POST', '/v1/subjects', a, { fields: { given_name: 'Ada', email: 'ada@example.com' } })).id;
  seed.xss = (await vault.api('POST', '/v1/subjects', a, { fields: { given_name: XSS, email: 'xss@example.com' } })).id;
  for (let i = 0; i < 12; i++) {
    const id = (await vault.api('POST', '/v1/subjects', a, { fields: { given_name: `C${i}`, email: `c${i}@example.com` } })).id;
    for (let k = 0; k <= i % 4; k++)
      await vault.api('POST', `/v1/subjects/${id}/orders`, a, { amount_minor: 1000 * (i + 1), currency: 'EUR' });
  }
  // An overdue request (received 60 days ago) and a fresh erasure request.
  seed.overdue = (await vault.api('POST', '/v1/dsr', tok.officer,
    { type: 'access', regime: 'gdpr', identifier: { email: 'c1@example.com' }, received_at: rfc3339(Date.now() - 60 * DAY) })).id;
  seed.erasure = (await vault.api('POST', '/v1/dsr', tok.officer,
    { type: 'erasure', regime: 'ccpa', identifier: { email: 'c2@example.com' } })).id;
  seed.xssRequest = (await vault.api('POST', '/v1/dsr', tok.officer,
    { type: 'access', regime: 'gdpr', identifier: { email: 'xss@example.com' } })).id;
  browser = await launch();
});

after(async () => {
  if (browser) await browser.close();
  if (vault) await vault.stop();
});

async function guarded(t, opts, fn) {
  const { context, page, problems } = await guardedPage(browser, opts);
  try {
    await fn(page, context);
  } finally {
    await context.close();
  }
  assert.deepEqual(problems, [], `browser problems in "${t.name}"`);
}

test('custosd serves the console and privacy page with strict headers', async () => {
  const r = await fetch(`${url}/console/`);
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('content-type'), 'text/html; charset=utf-8');
  const csp = r.headers.get('content-security-policy');
  assert.match(csp, /script-src 'self'/);
  assert.match(csp, /frame-ancestors 'none'/);
  assert.match(csp, /require-trusted-types-for 'script'/);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval|\*/);
  assert.equal(r.headers.get('x-content-type-options'), 'nosniff');
  assert.equal(r.headers.get('referrer-policy'), 'no-referrer');
  assert.equal(r.headers.get('cache-control'), 'no-store');
  const html = await r.text();
  assert.doesNotMatch(html, /<script(?![^>]*\bsrc=)[^>]*>/, 'no inline script');

  const js = await fetch(`${url}/console/js/app.js`);
  assert.equal(js.status, 200);
  assert.equal(js.headers.get('content-type'), 'text/javascript; charset=utf-8');
  assert.equal(js.headers.get('cache-control'), 'no-cache');
  const etag = js.headers.get('etag');
  assert.match(etag, /^"[0-9a-f]{16}"$/);
  const again = await fetch(`${url}/console/js/app.js`, { headers: { 'If-None-Match': etag } });
  assert.equal(again.status, 304);
  assert.equal((await fetch(`${url}/console/console.css`)).headers.get('content-type'), 'text/css; charset=utf-8');

  const priv = await fetch(`${url}/privacy/`);
  assert.equal(priv.status, 200);
  assert.match(priv.headers.get('content-security-policy'), /frame-ancestors 'none'/);

  const bare = await fetch(`${url}/console`, { redirect: 'manual' });
  assert.equal(bare.status, 308);
  assert.equal(bare.headers.get('location'), '/console/');
  const missing = await fetch(`${url}/console/nope.js`);
  assert.equal(missing.status, 404);
  assert.equal((await missing.json()).code, 'not_found');
  const post = await fetch(`${url}/console/`, { method: 'POST', body: '{}' });
  assert.equal(post.status, 405);
  // A dot-dot path (sent raw; fetch() would normalise it) names no embedded file.
  const raw = await new Promise((resolve, reject) => {
    const { hostname, port } = new URL(url);
    http.get({ hostname, port, path: '/console/../v1/whoami' }, (res) => { res.resume(); resolve(res.statusCode); })
      .on('error', reject);
  });
  assert.equal(raw, 404);
  // The API still needs its token.
  assert.equal((await fetch(`${url}/v1/whoami`)).status, 401);
});

test('each role signs in and sees only its screens, with real data', async (t) => {
  await guarded(t, {}, async (page) => {
    await signIn(page, url, tok.officer);
    assert.deepEqual(await page.locator('#nav a').allTextContents(), ['Requests', 'Breaches', 'Audit', 'Analytics']);
    await page.locator('#queue tbody tr').first().waitFor();
    assert.ok(await page.locator('#queue tbody tr').count() >= 3);
    await shot(page, 'requests-queue');
  });
  await guarded(t, {}, async (page) => {
    await signIn(page, url, tok.auditor);
    assert.deepEqual(await page.locator('#nav a').allTextContents(), ['Audit']);
    await page.locator('#audit-entries tbody tr').first().waitFor();
    await shot(page, 'audit-search');
  });
  await guarded(t, {}, async (page) => {
    await signIn(page, url, tok.analyst);
    assert.deepEqual(await page.locator('#nav a').allTextContents(), ['Analytics']);
    await page.locator('#rfm-heatmap').waitFor();
    assert.equal(await page.locator('#rfm-heatmap rect.cell').count(), 15);
    // Every cell carries its number as text, not only a shade.
    const labels = await page.locator('#rfm-heatmap text.cell-label').allTextContents();
    assert.equal(labels.length, 15);
    const rfm = await vault.api('GET', '/v1/analytics/rfm', tok.analyst, undefined, 'analytics');
    assert.ok(rfm.subjects_scored >= 12);
    assert.equal(labels.slice(0, 5).reduce((n, x) => n + Number(x), 0), rfm.subjects_scored, 'recency quintiles add up to the scored subjects');
    assert.ok(await page.locator('#segment-bars rect.bar').count() >= 1);
    await shot(page, 'analytics');
  });
  await guarded(t, {}, async (page) => {
    await signIn(page, url, tok.marketing);
    assert.equal(await page.locator('#nav a').count(), 0);
    await page.getByText('has no console screens').waitFor();
  });
});

test('a bad token is refused and a good one is kept in memory only', async (t) => {
  await guarded(t, { expectStatus: [401] }, async (page, context) => {
    await page.goto(`${url}/console/`);
    await page.getByLabel('Bearer token').fill('not-a-token');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByText('That token was not accepted.').waitFor();
    await shot(page, 'sign-in-refused');

    await page.getByLabel('Bearer token').fill(tok.officer);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('#principal').waitFor();
    assert.equal(await page.evaluate(() => localStorage.length + sessionStorage.length), 0);
    assert.deepEqual(await context.cookies(), []);
    assert.ok(!page.url().includes(tok.officer));
    const html = await page.content();
    assert.ok(!html.includes(tok.officer), 'the token is in no DOM attribute or text');
    await page.reload();
    await page.getByLabel('Bearer token').waitFor();
    await page.getByLabel('Bearer token').fill(tok.officer);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('#signout').click();
    await page.getByLabel('Bearer token').waitFor();
  });
});

test('the queue is sorted by due date, overdue requests are red and say so, filters apply', async (t) => {
  await guarded(t, {}, async (page) => {
    await signIn(page, url, tok.officer);
    await page.locator('#queue tbody tr').first().waitFor();
    const due = await page.locator('#queue tbody tr td:first-child').allTextContents();
    assert.deepEqual(due, due.slice().sort());
    const overdueRow = page.locator(`#queue tbody tr[data-id="${seed.overdue}"]`);
    assert.equal(await overdueRow.getAttribute('class'), 'overdue');
    assert.match(await overdueRow.textContent(), /overdue by \d+ d/);
    const colour = await overdueRow.locator('td').first().evaluate((td) => getComputedStyle(td).color);
    assert.equal(colour, 'rgb(179, 38, 30)');
    assert.match(await page.locator(`#queue tr[data-id="${seed.erasure}"]`).textContent(), /\d+ d left/);

    await page.getByLabel('Type').selectOption('erasure');
    await page.getByRole('button', { name: 'Apply' }).click();
    await page.locator(`#queue tr[data-id="${seed.overdue}"]`).waitFor({ state: 'detached' });
    const types = await page.locator('#queue tbody tr td:nth-child(3)').allTextContents();
    assert.deepEqual([...new Set(types)], ['erasure']);
    await page.getByLabel('Type').selectOption('');
    await page.getByLabel('Regime').selectOption('us-ca');  // CCPA's canonical name
    await page.getByRole('button', { name: 'Apply' }).click();
    await page.locator(`#queue tr[data-id="${seed.overdue}"]`).waitFor({ state: 'detached' });
    assert.deepEqual([...new Set(await page.locator('#queue tbody tr td:nth-child(4)').allTextContents())], ['us-ca']);
  });
});

test('a data-subject request goes from intake to completion in the console', async (t) => {
  await guarded(t, {}, async (page) => {
    await signIn(page, url, tok.officer);
    await page.getByRole('link', { name: 'New request' }).click();
    await page.getByLabel('Identifier', { exact: true }).fill('ada@example.com');
    await page.getByRole('button', { name: 'Create request' }).click();
    await page.locator('#request-status').waitFor();
    assert.equal(await page.locator('#request-status').textContent(), 'received');
    await page.locator('#subject dd').getByText('Ada', { exact: true }).waitFor();

    for (const [to, label] of [['identity_verified', 'identity verified'], ['in_progress', 'in progress']]) {
      await page.getByLabel('New status').selectOption(to);
      await page.getByLabel('Note').fill(`moved to ${to}`);
      await page.getByRole('button', { name: 'Apply transition' }).click();
      await page.locator('#request-status', { hasText: label }).waitFor();
    }
    const [download] = await Promise.all([page.waitForEvent('download'), page.locator('#export').click()]);
    const pkg = JSON.parse(readFileSync(await download.path(), 'utf8'));
    assert.equal(pkg.subject.fields.email, 'ada@example.com');

    await page.getByLabel('New status').selectOption('completed');
    await page.getByRole('button', { name: 'Apply transition' }).click();
    await page.locator('#request-status', { hasText: 'completed' }).waitFor();
    assert.equal(await page.locator('#transition').count(), 0, 'a completed request offers no transition');
    const timeline = await page.locator('#timeline tbody tr td:nth-child(4)').allTextContents();
    for (const s of ['identity_verified', 'in_progress', 'completed']) assert.ok(timeline.includes(s), `timeline has ${s}`);
    await shot(page, 'request-completed');
  });
});

test('a subject named like markup renders as inert text', async (t) => {
  await guarded(t, {}, async (page) => {
    await signIn(page, url, tok.officer);
    await page.evaluate((id) => { location.hash = `#/requests/${id}`; }, seed.xssRequest);
    const cell = page.locator('#subject dd', { hasText: XSS });
    await cell.waitFor();
    assert.equal(await cell.textContent(), XSS);
    assert.equal(await page.locator('img').count(), 0, 'no element was created from the name');
    await shot(page, 'request-xss-inert');
  });
});

test('a breach clock turns from at risk to late under an injected clock, then met', async (t) => {
  const discovered = Date.now() - 72 * 3_600_000 + 120_000;  // GDPR 72 h authority clock: 2 minutes left
  const incident = await vault.api('POST', '/v1/breaches', tok.officer,
    { description: 'Laptop with a CRM export stolen', categories: ['contact'], regimes: ['gdpr'], discovered_at: rfc3339(discovered) });
  await guarded(t, {}, async (page) => {
    await page.clock.install();
    await signIn(page, url, tok.officer);
    await page.locator('#nav a', { hasText: 'Breaches' }).click();
    const clock = page.locator(`article[data-id="${incident.id}"] .clock[data-due]:not([data-due=""])`).first();
    await clock.waitFor();
    assert.equal(await clock.getAttribute('data-state'), 'risk');
    assert.match(await clock.textContent(), /^at risk: 00:0[12]:\d\d left$/);
    await shot(page, 'breach-board-at-risk');
    await page.clock.fastForward('03:00');
    await page.locator(`article[data-id="${incident.id}"] .clock[data-state="late"]`).first().waitFor();
    assert.match(await clock.textContent(), /^late by 00:0\d:\d\d$/);
    await shot(page, 'breach-board-late');

    await page.locator(`article[data-id="${incident.id}"] h2 a`).click();
    // An incident is contained before the authority is told (409 otherwise).
    for (const [type, note] of [['contained', 'laptop wiped remotely'], ['authority_notified', 'told the supervisory authority']]) {
      await page.getByLabel('Event', { exact: true }).selectOption(type);
      await page.getByLabel('Note').fill(note);
      await page.getByRole('button', { name: 'Record event' }).click();
      await page.locator('#breach-timeline td', { hasText: type.replace('_', ' ') }).waitFor();
    }
    assert.equal(await page.locator('.clock[data-due]:not([data-due=""])').first().getAttribute('data-state'), 'met');
    await shot(page, 'breach-incident');
  });
});

test('an inclusion proof verifies in the browser and a tampered one is rejected', async (t) => {
  await guarded(t, {}, async (page) => {
    await signIn(page, url, tok.auditor);
    await page.locator('#audit-entries tbody tr').first().waitFor();
    assert.equal(await page.locator('#audit-entries tbody tr').count(), 50);
    await page.locator('#next-page').click();
    await page.getByText(/^Page 2:/).waitFor();
    await page.getByRole('button', { name: 'First page' }).click();
    await page.getByText(/^Page 1:/).waitFor();

    const row = page.locator('#audit-entries tbody tr').nth(5);
    const seq = (await row.locator('td').first().textContent()).trim();
    await row.getByRole('button', { name: 'Details' }).click();
    await page.getByRole('heading', { name: `Entry ${seq}` }).waitFor();
    await page.getByLabel('Verifier key').fill(vault.vkey);
    await page.locator('#verify').click();
    await page.locator('#verify-verdict.ok').waitFor();
    assert.equal(await page.locator('#verify-steps li.ok').count(), 5);
    await shot(page, 'audit-verified');

    // The server (or a proxy) lies: one proof hash changed.
    await page.route('**/v1/audit/proof/inclusion*', async (route) => {
      const res = await route.fetch();
      const bundle = await res.json();
      assert.ok(bundle.proof.length > 0);
      const h = bundle.proof[0];
      bundle.proof[0] = (h[0] === '0' ? '1' : '0') + h.slice(1);
      await route.fulfill({ response: res, json: bundle });
    });
    await page.locator('#verify').click();
    await page.locator('#verify-verdict.fail').waitFor();
    assert.match(await page.locator('#verify-steps li.fail').textContent(), /inclusion path/);
    await shot(page, 'audit-tampered-proof');

    // A checkpoint whose root was changed no longer carries a valid signature.
    await page.unroute('**/v1/audit/proof/inclusion*');
    await page.route('**/v1/audit/proof/inclusion*', async (route) => {
      const res = await route.fetch();
      const bundle = await res.json();
      const lines = bundle.checkpoint.split('\n');
      lines[2] = Buffer.alloc(32, 7).toString('base64');
      bundle.checkpoint = lines.join('\n');
      await route.fulfill({ response: res, json: bundle });
    });
    await page.locator('#verify').click();
    await page.locator('#verify-verdict.fail').waitFor();
    assert.match(await page.locator('#verify-steps li.fail').textContent(), /signature does not verify/);
  });
});

test('the privacy page loads under its CSP and the console works at 390 px', async (t) => {
  await guarded(t, {}, async (page) => {
    await page.goto(`${url}/privacy/`);
    await page.getByText('Open this page through the link').waitFor();
    await shot(page, 'privacy');
  });
  await guarded(t, { viewport: { width: 390, height: 844 } }, async (page) => {
    await signIn(page, url, tok.officer);
    await page.locator('#queue tbody tr').first().waitFor();
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the page scrolls sideways by ${overflow} px`);
    await shot(page, 'requests-390px');
  });
});
