// The web console (/console/) and privacy page (/privacy/) in headless
// Debian chromium against a real custosd with seeded data (issue 19). Each
// test fails on any console error, page error, failed request, unexpected
// HTTP error or CSP violation (harness.mjs). Screenshots of each screen go
// to build/console-screenshots/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { Vault, launch, guardedPage, signIn, shot, unlabelledControls } from './harness.mjs';

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
  await vault.api('POST', `/v1/subjects/${seed.ada}/orders`, vault.admin, { amount_minor: 5000, currency: 'USD' });
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
    // CLV per currency: one row per currency, never a sum across them.
    assert.deepEqual(await page.locator('#clv-currency tbody tr').evaluateAll((rows) => rows.map((r) => r.dataset.currency)), ['EUR', 'USD']);
    assert.match(await page.locator('#clv-currency tr[data-currency="EUR"]').textContent(), /€/);
    assert.match(await page.locator('#clv-currency tr[data-currency="USD"]').textContent(), /^USD11\$50\.00/);
    await shot(page, 'analytics');
  });
  // A marketer sees the campaign preview (counts only) and nothing else.
  await vault.api('POST', `/v1/subjects/${seed.ada}/consents`, vault.admin,
    { purpose: 'email_marketing', channel: 'email', event: 'granted', source: 'import' });
  await guarded(t, {}, async (page) => {
    await signIn(page, url, tok.marketing);
    assert.deepEqual(await page.locator('#nav a').allTextContents(), ['Analytics']);
    await page.getByRole('button', { name: 'Count recipients' }).click();
    const count = Number(await page.locator('#preview-count').textContent());
    assert.equal(count, (await campaignIds('email_marketing', 'email')).length);
    assert.ok(count >= 1);
    assert.equal(await page.locator('#rfm-heatmap').count(), 0);
    await shot(page, 'marketing-preview');
  });
  // The analyst's consent rates per purpose and channel over time, with their numbers.
  await guarded(t, {}, async (page) => {
    await signIn(page, url, tok.analyst);
    const row = page.locator('#consent-rates tr[data-series="email_marketing/email"]');
    await row.waitFor();
    const cells = await row.locator('td.num').allTextContents();
    assert.equal(cells.length, 6);
    assert.match(cells.at(-1), /^[1-9]\d* \(\d+(\.\d)?%\)$/);
    assert.equal(await row.locator('svg.spark polyline').count(), 1);
    await shot(page, 'analytics-consent-rates');
  });
  await guarded(t, {}, async (page) => {
    await signIn(page, url, vault.token('downstream_system', 'erp'));
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
    // Let the queue finish loading: a reload in the middle of it aborts the
    // request, which this test does not mean to do (the next one does).
    await page.locator('#main[data-ready]').waitFor();
    assert.equal(await page.evaluate(() => localStorage.length + sessionStorage.length), 0);
    assert.deepEqual(await context.cookies(), []);
    assert.ok(!page.url().includes(tok.officer));
    const html = await page.content();
    assert.ok(!html.includes(tok.officer), 'the token is in no DOM attribute or text');
    await page.reload();
    await page.getByLabel('Bearer token').waitFor();
    await page.getByLabel('Bearer token').fill(tok.officer);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('#main[data-ready]').waitFor();
    await page.locator('#signout').click();
    await page.getByLabel('Bearer token').waitFor();
  });
});

test('signing out while a screen loads leaves nothing of it on the page', async (t) => {
  await guarded(t, { expectAborted: [/\/v1\/dsr\?/] }, async (page) => {
    // Hold the queue's request at the network until the officer has signed out.
    let held;
    const arrived = new Promise((resolve) => {
      page.route(/\/v1\/dsr\?/, (route) => { held = route; resolve(); });
    });
    await page.goto(`${url}/console/`);
    await page.getByLabel('Bearer token').fill(tok.officer);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await arrived;
    const aborted = page.waitForEvent('requestfailed', (r) => /\/v1\/dsr\?/.test(r.url()));
    await page.locator('#signout').click();
    await page.getByLabel('Bearer token').waitFor();
    // Signing out aborted the queue's request; letting it go on changes nothing.
    assert.equal((await aborted).failure().errorText, 'net::ERR_ABORTED');
    await held.continue().catch(() => { /* the page already aborted it */ });
    assert.equal(await page.locator('#queue').count(), 0, 'no queue after sign-out');
    assert.equal(await page.locator('.error').count(), 0, 'no error box over the sign-in form');
    assert.equal(await page.locator('#principal').count(), 0);
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

    // The affected subjects: everyone the officer's token touched in the last hour, from the audit log.
    const local = (ms) => new Date(ms).toISOString().slice(0, 19);
    await page.getByLabel('Compromised principals (comma-separated)').fill('dpo');
    await page.getByLabel('From (UTC)').fill(local(Date.now() - 3_600_000));
    await page.getByLabel('To (UTC)').fill(local(Date.now() + 60_000));
    await page.getByRole('button', { name: 'Compute affected subjects' }).click();
    await page.locator('#affected-count').waitFor();
    const stored = (await vault.api('GET', `/v1/breaches/${incident.id}`, tok.officer)).affected_computation;
    assert.ok(stored.count >= 1, JSON.stringify(stored));
    assert.equal(await page.locator('#affected-count').textContent(), String(stored.count));
    const affected = await page.locator('#affected').textContent();
    assert.match(affected, /Window/);
    assert.match(affected, new RegExp(`tree size ${stored.checkpoint_size}, root [0-9a-f]{64}`));
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

    // Search by principal and operation, then by subject and time.
    await page.getByLabel('Principal').fill('dpo');
    await page.getByLabel('Operation').fill('dsr.intake');
    await page.getByRole('button', { name: 'Search' }).click();
    await page.locator('#audit-entries tbody tr').first().waitFor();
    await page.waitForFunction(() => [...document.querySelectorAll('#audit-entries tbody tr td:nth-child(5)')].every((td) => td.textContent === 'dsr.intake'));
    const found = await page.locator('#audit-entries tbody tr').evaluateAll((rows) => rows.map((r) => [r.cells[2].textContent, r.cells[4].textContent]));
    assert.ok(found.length >= 3);
    for (const [who, op] of found) assert.deepEqual([who, op], ['dpo', 'dsr.intake']);
    await page.getByLabel('Principal').fill('');
    await page.getByLabel('Operation').fill('');
    await page.getByLabel('Subject id').fill(seed.ada);
    await page.getByLabel('From (RFC 3339)').fill(new Date(Date.now() - 3_600_000).toISOString());
    await page.getByRole('button', { name: 'Search' }).click();
    await page.waitForFunction(() => [...document.querySelectorAll('#audit-entries tbody tr td:nth-child(3)')].some((td) => td.textContent === 'admin'));
    const ops = await page.locator('#audit-entries tbody tr td:nth-child(5)').allTextContents();
    assert.ok(ops.includes('subject.create'), ops.join(','));
    // The export download, checked offline.
    const [dl] = await Promise.all([page.waitForEvent('download'), page.locator('#audit-export').click()]);
    assert.ok(readFileSync(await dl.path()).length > 0);
    await page.getByLabel('Subject id').fill('');
    await page.getByLabel('From (RFC 3339)').fill('');
    await page.getByRole('button', { name: 'Search' }).click();
    await page.waitForFunction(() => document.querySelectorAll('#audit-entries tbody tr').length === 50);

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

test('the admin screen lists, creates and revokes tokens and shows the policy files and key versions', async (t) => {
  // Only a role with `admin` sees the screen, and the server refuses the others anyway.
  for (const token of [tok.officer, tok.auditor]) {
    const r = await fetch(`${url}/v1/admin/policies`, { headers: { Authorization: `Bearer ${token}` } });
    assert.equal(r.status, 403);
    assert.equal((await r.json()).code, 'forbidden_role');
    const c = await fetch(`${url}/v1/tokens`, { method: 'POST', headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ name: 'sneaky', role: 'admin' }) });
    assert.equal(c.status, 403);
  }
  await guarded(t, {}, async (page) => {
    await signIn(page, url, vault.admin);
    assert.deepEqual(await page.locator('#nav a').allTextContents(), ['Requests', 'Breaches', 'Audit', 'Analytics', 'Admin']);
    await page.locator('#nav a', { hasText: 'Admin' }).click();
    await page.locator('#tokens tr[data-name="dpo"]').waitFor();
    assert.match(await page.locator('#tokens tr[data-name="dpo"]').textContent(), /compliance_officer/);

    await page.getByLabel('Token name').fill('night-auditor');
    await page.getByLabel('Role').selectOption('auditor');
    await page.getByRole('button', { name: 'Create token' }).click();
    const secret = await page.locator('#new-token').inputValue();
    assert.match(secret, /^cst_/);
    await page.locator('#tokens tr[data-name="night-auditor"]').waitFor();
    const who = await vault.api('GET', '/v1/whoami', secret);
    assert.equal(who.role, 'auditor');

    const revoke = page.locator('#tokens tr[data-name="night-auditor"] button');
    await revoke.click();
    await page.getByRole('button', { name: 'Confirm: revoke night-auditor' }).click();
    await page.locator('#tokens tr[data-name="night-auditor"].revoked').waitFor();
    assert.equal((await fetch(`${url}/v1/whoami`, { headers: { Authorization: `Bearer ${secret}` } })).status, 401);

    // The policy files in force, with the digest of the very bytes custosd reads.
    const roles = readFileSync(join(vault.dir, 'policies', 'roles.yaml'));
    const row = page.locator('#policies tr[data-file="roles.yaml"]');
    await row.waitFor();
    assert.match(await row.textContent(), new RegExp(createHash('sha256').update(roles).digest('hex')));
    await page.locator('details.policy-text summary', { hasText: 'roles.yaml' }).click();
    await page.getByText('compliance_officer:', { exact: false }).first().waitFor();
    // Key versions: version 1 wraps the vault's keys and is current.
    const v1 = page.locator('#key-versions tr[data-version="1"]');
    await v1.waitFor();
    assert.match(await v1.textContent(), /yes \(current\)/);
    assert.deepEqual(await unlabelledControls(page), []);
    await shot(page, 'admin');
  });
});

async function campaignIds(purpose, channel) {
  const r = await fetch(`${url}/v1/campaigns:fetch`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${tok.marketing}`, 'Custos-Purpose': purpose, 'Content-Type': 'application/json' },
    body: JSON.stringify({ channel, fields: ['email'] }),
  });
  assert.equal(r.status, 200);
  return (await r.text()).split('\n').filter(Boolean).map((l) => JSON.parse(l).id).filter(Boolean);
}

test('a privacy link: consent changed on the page reaches a campaign fetch, a request is taken in verified, the link works once', async (t) => {
  const id = (await vault.api('POST', '/v1/subjects', vault.admin, { fields: { given_name: XSS, email: 'pat@example.com' } })).id;
  assert.ok(!(await campaignIds('email_marketing', 'email')).includes(id));
  // The CRM's call: a role with `consent`.
  const link = await vault.api('POST', `/v1/subjects/${id}:privacyLink`, tok.officer, { ttl_hours: 1 });
  assert.match(link.url, /^\/privacy\/#t=[A-Za-z0-9_-]{59}$/);
  const token = link.url.split('#t=')[1];
  // The link is no API token.
  assert.equal((await fetch(`${url}/v1/whoami`, { headers: { Authorization: `Bearer ${token}` } })).status, 401);

  await guarded(t, {}, async (page) => {
    const sent = [];
    page.on('request', (r) => sent.push({ url: r.url(), referer: r.headers().referer || '' }));
    await page.goto(`${url}${link.url}`);
    const box = page.locator('input[data-purpose="email_marketing"][data-channel="email"]');
    await box.waitFor();
    // The token left the address bar at once, and no request carried it in a URL or Referer.
    assert.equal(new URL(page.url()).hash, '');
    for (const r of sent) assert.ok(!r.url.includes(token) && !r.referer.includes(token), `token leaked in ${r.url}`);
    assert.equal(await box.isChecked(), false);
    assert.deepEqual(await unlabelledControls(page), []);
    await shot(page, 'privacy-choices');

    await box.check();
    await page.locator('#consent-status.ok').waitFor();
    assert.equal(await box.isChecked(), true);
    assert.ok((await campaignIds('email_marketing', 'email')).includes(id), 'the grant reaches the campaign fetch');
    const history = (await vault.api('GET', `/v1/subjects/${id}/consents`, tok.officer)).history;
    const last = history.at(-1);
    assert.equal(last.source, 'privacy_page');
    assert.equal(last.proof.capture, 'privacy_page');
    assert.equal(last.proof.link_id, link.link_id);
    assert.ok(Math.abs(Date.parse(last.proof.at) - Date.now()) < 60_000);

    await box.uncheck();
    await page.locator('#consent-status.ok', { hasText: 'withdrew' }).waitFor();
    assert.ok(!(await campaignIds('email_marketing', 'email')).includes(id), 'the withdrawal reaches the campaign fetch');

    // A correction and an access request, each taken in with identity verified by the link.
    await page.getByLabel('Correct my data').check();
    await page.getByLabel('Field to correct').selectOption('family_name');
    await page.getByLabel('Correct value').fill('Smith');
    await page.getByRole('button', { name: 'Send request' }).click();
    const fixId = await page.locator('[data-request-id]').getAttribute('data-request-id');
    await page.getByLabel('Send me a copy of my data').check();
    await page.getByRole('button', { name: 'Send request' }).click();
    await page.locator(`[data-request-id]:not([data-request-id="${fixId}"])`).waitFor();
    const accessId = await page.locator('[data-request-id]').getAttribute('data-request-id');
    for (const [rid, type] of [[fixId, 'rectification'], [accessId, 'access']]) {
      const q = await vault.api('GET', `/v1/dsr/${rid}`, tok.officer);
      assert.equal(q.type, type);
      assert.equal(q.status, 'identity_verified');
      assert.equal(q.identified_by, 'privacy_link');
      assert.equal(q.channel, 'privacy_page');
      assert.equal(q.subject_id, id);
    }
    assert.equal(await page.locator('img').count(), 0);
    await shot(page, 'privacy-request-sent');
  });

  // The same link again: refused, said plainly.
  await guarded(t, { expectStatus: [410] }, async (page) => {
    await page.goto(`${url}${link.url}`);
    await page.getByText('This link was already used.').waitFor();
    assert.equal(await page.locator('#choices').isHidden(), true);
    await shot(page, 'privacy-link-used');
  });
  const again = await fetch(`${url}/v1/privacy/session`, { method: 'POST', headers: { Authorization: `PrivacyLink ${token}` } });
  assert.equal(again.status, 410);
  assert.equal((await again.json()).code, 'link_used');
  // The session scheme is no bearer token and no other route takes it.
  const bad = await fetch(`${url}/v1/privacy/consents`, { headers: { Authorization: `Bearer ${token}` } });
  assert.equal(bad.status, 401);
});

test('Sec-GPC: 1 on the privacy page is honoured as an opt-out of sale and sharing and shown', async (t) => {
  const id = (await vault.api('POST', '/v1/subjects', vault.admin, { fields: { given_name: 'Gil', email: 'gil@example.com' } })).id;
  await vault.api('POST', `/v1/subjects/${id}/consents`, vault.admin,
    { purpose: 'partner_sharing', channel: 'email', event: 'granted', source: 'import' });
  assert.ok((await campaignIds('partner_sharing', 'email')).includes(id));
  const link = await vault.api('POST', `/v1/subjects/${id}:privacyLink`, tok.officer, {});
  await guarded(t, { gpc: true }, async (page) => {
    await page.goto(`${url}${link.url}`);
    await page.getByText('We honoured it: you are opted out of the sale and sharing of your data.').waitFor();
    const box = page.locator('input[data-purpose="partner_sharing"][data-channel="email"]');
    assert.equal(await box.isChecked(), false);
    await shot(page, 'privacy-gpc');
  });
  assert.ok(!(await campaignIds('partner_sharing', 'email')).includes(id));
  const current = (await vault.api('GET', `/v1/subjects/${id}/consents`, tok.officer)).current;
  const state = current.find((c) => c.purpose === 'partner_sharing' && c.channel === 'email');
  assert.equal(state.state, 'withdrawn');
  const history = (await vault.api('GET', `/v1/subjects/${id}/consents`, tok.officer)).history;
  assert.equal(history.at(-1).source, 'gpc');
});

test('an objection stands on the privacy page until the subject agrees again there', async (t) => {
  const id = (await vault.api('POST', '/v1/subjects', vault.admin, { fields: { given_name: 'Obi', email: 'obi@example.com' } })).id;
  await vault.api('POST', `/v1/subjects/${id}/consents`, vault.admin, { event: 'objection', source: 'call_centre' });
  const link = await vault.api('POST', `/v1/subjects/${id}:privacyLink`, tok.officer, {});
  await guarded(t, {}, async (page) => {
    await page.goto(`${url}${link.url}`);
    const banner = page.locator('#objection');
    await banner.waitFor();  // shown: the objection stands
    const box = page.locator('input[data-purpose="email_marketing"][data-channel="email"]');
    assert.equal(await box.isChecked(), false);
    await box.check();
    await page.locator('#consent-status.ok').waitFor();
    assert.equal(await banner.isHidden(), true);
    await shot(page, 'privacy-objection-lifted');
  });
  assert.ok((await campaignIds('email_marketing', 'email')).includes(id), 'the subject\'s own yes reaches the campaign fetch');
  assert.equal((await vault.api('GET', `/v1/subjects/${id}/consents`, tok.officer)).objected, false);
});

test('the console and the privacy page work from the keyboard alone', async (t) => {
  await guarded(t, {}, async (page) => {
    await page.goto(`${url}/console/`);
    // The token field has focus on load; Enter submits.
    await page.keyboard.type(tok.officer);
    await page.keyboard.press('Enter');
    await page.locator('#queue tbody tr').first().waitFor();
    // Tab reaches the screens' links in order and Enter follows one.
    const reached = [];
    for (let i = 0; i < 40 && !reached.includes('Breaches'); i++) {
      await page.keyboard.press('Tab');
      reached.push(await page.evaluate(() => document.activeElement.textContent.trim()));
    }
    assert.ok(reached.includes('Breaches'), `Tab order: ${reached.join(' | ')}`);
    await page.keyboard.press('Enter');
    await page.locator('#main[data-ready="breaches"]').waitFor();
    assert.deepEqual(await unlabelledControls(page), []);
    for (const screen of ['requests', 'audit', 'analytics']) {
      await page.evaluate((sc) => { location.hash = `#/${sc}`; }, screen);
      await page.locator(`#main[data-ready="${screen}"]`).waitFor();
      assert.deepEqual(await unlabelledControls(page), [], `unlabelled controls on ${screen}`);
    }
  });
  const id = (await vault.api('POST', '/v1/subjects', vault.admin, { fields: { given_name: 'Kim', email: 'kim@example.com' } })).id;
  const link = await vault.api('POST', `/v1/subjects/${id}:privacyLink`, tok.officer, {});
  await guarded(t, { viewport: { width: 390, height: 844 } }, async (page) => {
    await page.goto(`${url}${link.url}`);
    const box = page.locator('input[data-purpose="email_marketing"][data-channel="email"]');
    await box.waitFor();
    await box.focus();
    await page.keyboard.press('Space');
    await page.locator('#consent-status.ok').waitFor();
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the privacy page scrolls sideways by ${overflow} px`);
    await shot(page, 'privacy-390px');
  });
});

test('an erasure under four eyes: legal hold, the second-approver prompt, and the report', async (t) => {
  // A vault of its own whose policy asks for a second approver on erasure.
  const v = new Vault();
  const rolesFile = join(v.dir, 'policies', 'roles.yaml');
  const roles = readFileSync(rolesFile, 'utf8');
  assert.match(roles, /erasure_second_approver: false/);
  writeFileSync(rolesFile, roles.replace('erasure_second_approver: false', 'erasure_second_approver: true'));
  const vurl = await v.start();
  try {
    const first = v.token('compliance_officer', 'dpo-1');
    const second = v.token('compliance_officer', 'dpo-2');
    const sid = (await v.api('POST', '/v1/subjects', v.admin, { fields: { given_name: 'Eve', email: 'eve@example.com' } })).id;
    const q = await v.api('POST', '/v1/dsr', first, { type: 'erasure', regime: 'eu-gdpr', identifier: { email: 'eve@example.com' } });
    await guarded(t, {}, async (page) => {
      await signIn(page, vurl, first);
      await page.evaluate((id) => { location.hash = `#/requests/${id}`; }, q.id);
      await page.locator('#subject dd').getByText('Eve', { exact: true }).waitFor();
      // A legal hold, placed from the request page.
      await page.locator('#legal-hold', { hasText: 'Place a legal hold' }).click();
      await page.locator('#legal-hold', { hasText: 'Release the legal hold' }).waitFor();
      assert.equal((await v.api('GET', `/v1/subjects/${sid}`, first, undefined, 'dsr_fulfilment')).legal_hold, true);
      for (const [to, label] of [['identity_verified', 'identity verified'], ['in_progress', 'in progress'], ['completed', 'awaiting approval']]) {
        await page.getByLabel('New status').selectOption(to);
        await page.getByRole('button', { name: 'Apply transition' }).click();
        await page.locator('#request-status', { hasText: label }).waitFor();
      }
      assert.match(await page.locator('#second-approver').textContent(), /dpo-1 asked to complete this erasure\. A different principal must approve it/);
      await shot(page, 'request-awaiting-approval');
    });
    await guarded(t, {}, async (page) => {
      await signIn(page, vurl, second);
      await page.evaluate((id) => { location.hash = `#/requests/${id}`; }, q.id);
      await page.locator('#second-approver').waitFor();
      assert.match(await page.locator('#second-approver').textContent(), /Approve it by moving it to "completed"/);
      await page.getByLabel('New status').selectOption('completed');
      await page.getByRole('button', { name: 'Apply transition' }).click();
      await page.locator('#request-status', { hasText: /^completed/ }).waitFor();
      // The report says what the hold kept.
      const report = await page.locator('pre.report').textContent();
      assert.match(report, /hold/i);
      await shot(page, 'request-erasure-report');
    });
  } finally {
    await v.stop();
  }
});
