// The console's figures (issue 19), printed as one line each; recorded in
// docs/performance.md. Not a test: run by hand after a build,
//   node tests/browser/measure.mjs            (from the repository root)
// 1. First load: every byte the console's sign-in page fetches, raw and gzip -9.
// 2. The requests screen with 10,000 open requests: from the hash change to
//    the first frame with the first rows, split into fetch, sort and DOM
//    (performance marks in requests.js), and to the 10,000th row (the API
//    answer is served by the test, since GET /v1/dsr returns at most 1,000
//    per call).
// 3. One in-browser inclusion verification (verify.js: vkey + key id,
//    Ed25519 checkpoint signature, leaf hash, RFC 6962 path) at tree size
//    1,000,000, median and max of 50, against a floor: one SHA-256 digest.
import assert from 'node:assert/strict';
import { gzipSync } from 'node:zlib';
import { Vault, launch } from './harness.mjs';

const vault = new Vault();
const url = await vault.start();
const officer = vault.token('compliance_officer', 'dpo');
const browser = await launch();
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  const bodies = [];
  page.on('response', async (r) => { if (r.url().startsWith(url)) bodies.push(r.body().catch(() => Buffer.alloc(0))); });
  await page.goto(`${url}/console/`, { waitUntil: 'networkidle' });
  const all = await Promise.all(bodies);
  const raw = all.reduce((n, b) => n + b.length, 0);
  const gz = all.reduce((n, b) => n + gzipSync(b, { level: 9 }).length, 0);
  console.log(`first load: ${all.length} files, ${(raw / 1024).toFixed(1)} KiB raw, ${(gz / 1024).toFixed(1)} KiB gzip -9`);

  // 10,000 open requests, due dates spread over ±60 days.
  const now = Date.now();
  const types = ['access', 'erasure', 'rectification', 'portability'];
  const requests = Array.from({ length: 10_000 }, (_, i) => {
    const due = new Date(now + ((i * 7919) % 120 - 60) * 86_400_000 + i * 1000).toISOString();
    return { id: `dsr_${i.toString(16).padStart(24, '0')}`, type: types[i % 4], regime: i % 3 ? 'gdpr' : 'ccpa',
      status: ['received', 'identity_verified', 'in_progress'][i % 3], due_at: due, due_date: due.slice(0, 10) };
  });
  const body = JSON.stringify({ requests, count: requests.length });
  await page.route('**/v1/dsr?*', (route) => route.fulfill({ status: 200, contentType: 'application/json', body }));
  await page.getByLabel('Bearer token').fill(officer);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#queue-list[data-complete]').waitFor({ timeout: 30_000 });
  assert.equal(await page.locator('#queue tbody tr').count(), 10_000);
  const runs = [];
  for (let run = 0; run < 5; run++) {
    await page.evaluate(() => { location.hash = '#/'; });
    await page.locator('#main[data-ready=""]').waitFor();
    await page.evaluate(() => { performance.clearMarks(); window.__t0 = performance.now(); location.hash = '#/requests'; });
    // First frame: the first rows are in the DOM and a frame has been produced.
    await page.locator('#queue tbody tr:nth-child(100)').waitFor({ timeout: 30_000 });
    await page.locator('#queue-list[data-complete]').waitFor({ timeout: 30_000 });
    // The page marks the task after the frame that first shows its rows.
    const first = await page.evaluate(() => performance.getEntriesByName('queue-first-frame').at(-1).startTime - window.__t0);
    const parts = await page.evaluate(() => {
      const at = (name) => performance.getEntriesByName(name).at(-1).startTime - window.__t0;
      return { fetched: at('queue-fetched'), sorted: at('queue-sorted'), firstRows: at('queue-first-rows'), complete: at('queue-complete') };
    });
    assert.equal(await page.locator('#queue tbody tr').count(), 10_000);
    runs.push({ first, ...parts });
  }
  const med = (k) => runs.map((r) => r[k]).sort((a, b) => a - b)[2];
  const max = (k) => Math.max(...runs.map((r) => r[k]));
  console.log(`requests screen, 10,000 open requests (5 runs, ms from the hash change; median / max):`);
  console.log(`  answer received (fetch, served through page.route over the DevTools protocol): ${med('fetched').toFixed(0)} / ${max('fetched').toFixed(0)}`);
  console.log(`  sorted: ${med('sorted').toFixed(0)} / ${max('sorted').toFixed(0)}   (sort alone: ${(med('sorted') - med('fetched')).toFixed(1)} ms)`);
  console.log(`  first 100 rows in the DOM: ${med('firstRows').toFixed(0)} / ${max('firstRows').toFixed(0)}`);
  console.log(`  FIRST FRAME: ${med('first').toFixed(0)} / ${max('first').toFixed(0)}   (after the answer: ${(med('first') - med('fetched')).toFixed(0)} ms)`);
  console.log(`  all 10,000 rows in the DOM: ${med('complete').toFixed(0)} / ${max('complete').toFixed(0)}`);

  const v = await page.evaluate(async () => {
    const m = await import('/console/js/verify.js');
    const rand = (n) => crypto.getRandomValues(new Uint8Array(n));
    const b64 = (u8) => btoa(String.fromCharCode(...u8));
    const kp = await crypto.subtle.generateKey({ name: 'Ed25519' }, true, ['sign', 'verify']);
    const pub = new Uint8Array(await crypto.subtle.exportKey('raw', kp.publicKey));
    const name = 'custos.local';
    const id = await m.keyId(name, pub);
    const vkey = `${name}+${m.hex(id)}+${b64(Uint8Array.of(1, ...pub))}`;
    const size = 1_000_000n, index = 0n;  // leaf 0: the longest path (20 hashes)
    const entry = new Uint8Array(223); entry[0] = 1;
    new DataView(entry.buffer).setBigUint64(1, index, false);
    let proof;
    for (let len = 1; len < 64 && !proof; len++) {
      const p = Array.from({ length: len }, () => rand(32));
      try { await m.rootFromInclusionProof(index, size, await m.leafHash(entry), p); proof = p; } catch { /* wrong length */ }
    }
    const root = await m.rootFromInclusionProof(index, size, await m.leafHash(entry), proof);
    const noteBody = `custos.local/audit\n${size}\n${b64(root)}\n`;
    const sig = new Uint8Array(await crypto.subtle.sign({ name: 'Ed25519' }, kp.privateKey, new TextEncoder().encode(noteBody)));
    const bundle = { entry: b64(entry), index: Number(index), tree_size: Number(size), proof: proof.map(m.hex),
      checkpoint: `${noteBody}\n\u2014 ${name} ${b64(Uint8Array.of(...id, ...sig))}\n` };
    const ms = [];
    for (let i = 0; i < 50; i++) {
      const r = await m.verifyInclusionBundle(bundle, vkey);
      if (!r.ok) throw new Error(JSON.stringify(r.steps));
      ms.push(r.ms);
    }
    const floor = [];
    for (let i = 0; i < 50; i++) { const t = performance.now(); await crypto.subtle.digest('SHA-256', entry); floor.push(performance.now() - t); }
    ms.sort((a, b) => a - b); floor.sort((a, b) => a - b);
    return { median: ms[25], max: ms[49], floor: floor[25], hashes: proof.length };
  });
  console.log(`in-browser inclusion verification at 1,000,000 entries (${v.hashes} proof hashes): median ${v.median.toFixed(2)} ms, ` +
    `max ${v.max.toFixed(2)} ms (50 runs); floor: one SHA-256 digest ${v.floor.toFixed(3)} ms, ratio ${(v.median / v.floor).toFixed(0)}`);
  // The same screen against the real custosd holding 10,000 open requests:
  // the console pages through GET /v1/dsr 1,000 at a time (keyset by due
  // date), so the first frame waits for the first page only.
  await page.unroute('**/v1/dsr?*');
  const seedStart = Date.now();
  const regimes = ['eu-gdpr', 'us-ca', 'uk-gdpr'];
  // A rectification needs its corrections; these requests match nobody.
  const seedTypes = ['access', 'erasure', 'portability', 'restriction'];
  for (let i = 0; i < 10_000; i += 16) {
    await Promise.all(Array.from({ length: Math.min(16, 10_000 - i) }, (_, k) => vault.api('POST', '/v1/dsr', officer, {
      type: seedTypes[(i + k) % 4], regime: regimes[(i + k) % 3], identifier: { email: `nobody${i + k}@example.com` },
      received_at: new Date(now - ((i + k) % 50) * 86_400_000).toISOString().replace(/\.\d{3}Z$/, 'Z'),
    })));
  }
  console.log(`(seeded 10,000 requests in custosd in ${((Date.now() - seedStart) / 1000).toFixed(0)} s)`);
  const real = [];
  for (let run = 0; run < 5; run++) {
    await page.evaluate(() => { location.hash = '#/'; });
    await page.locator('#main[data-ready=""]').waitFor();
    await page.evaluate(() => { performance.clearMarks(); window.__t0 = performance.now(); location.hash = '#/requests'; });
    await page.locator('#queue-list[data-complete]').waitFor({ timeout: 60_000 });
    const parts = await page.evaluate(() => {
      const at = (name) => performance.getEntriesByName(name).at(-1).startTime - window.__t0;
      return { fetched: at('queue-fetched'), first: at('queue-first-frame'), complete: at('queue-complete') };
    });
    assert.equal(await page.locator('#queue tbody tr').count(), 10_000);
    real.push(parts);
  }
  const rmed = (k) => real.map((r) => r[k]).sort((a, b) => a - b)[2];
  const rmax = (k) => Math.max(...real.map((r) => r[k]));
  console.log(`requests screen against custosd with 10,000 open requests (10 pages of 1,000; 5 runs, median / max ms):`);
  console.log(`  first page received: ${rmed('fetched').toFixed(0)} / ${rmax('fetched').toFixed(0)}`);
  console.log(`  FIRST FRAME: ${rmed('first').toFixed(0)} / ${rmax('first').toFixed(0)}`);
  console.log(`  all 10,000 rows in the DOM: ${rmed('complete').toFixed(0)} / ${rmax('complete').toFixed(0)}`);

} finally {
  await browser.close();
  await vault.stop();
}
