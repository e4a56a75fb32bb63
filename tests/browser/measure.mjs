// The console's figures (issue 19), printed as one line each; recorded in
// docs/performance.md. Not a test: run by hand after a build,
//   node tests/browser/measure.mjs            (from the repository root)
// 1. First load: every byte the console's sign-in page fetches, raw and gzip -9.
// 2. The requests screen with 10,000 open requests: from the hash change to
//    the 10,000th row in the DOM and a frame rendered (the API answer is
//    served by the test, since GET /v1/dsr returns at most 1,000 per call).
// 3. One in-browser inclusion verification (verify.js: vkey + key id,
//    Ed25519 checkpoint signature, leaf hash, RFC 6962 path) at tree size
//    1,000,000, median and max of 50, against a floor: one SHA-256 digest.
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
  await page.locator('#queue tbody tr:nth-child(10000)').waitFor({ timeout: 30_000 });
  const times = [];
  for (let run = 0; run < 5; run++) {
    await page.evaluate(() => { location.hash = '#/'; });
    await page.locator('#main[data-ready=""]').waitFor();
    const t0 = await page.evaluate(() => { window.__t0 = performance.now(); location.hash = '#/requests'; return window.__t0; });
    await page.locator('#queue tbody tr:nth-child(10000)').waitFor({ timeout: 30_000 });
    const t1 = await page.evaluate(() => new Promise((res) => requestAnimationFrame(() => setTimeout(() => res(performance.now()), 0))));
    times.push(t1 - t0);
  }
  times.sort((a, b) => a - b);
  console.log(`requests screen, 10,000 open requests: median ${times[2].toFixed(0)} ms, max ${times[4].toFixed(0)} ms (5 runs, fetch + sort + DOM + first frame)`);

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
} finally {
  await browser.close();
  await vault.stop();
}
