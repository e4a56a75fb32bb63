// Verifies an audit inclusion bundle in the browser, without trusting the
// server's answer: the C2SP verifier key and its key id, the Ed25519
// signature of the C2SP checkpoint (WebCrypto), and the RFC 6962 / RFC 9162
// §2.1.3.2 inclusion path from the entry's leaf hash to the signed root.
// The byte formats are audit/FORMAT.md §2; this mirrors custos-audit
// verify-inclusion (§5) step by step. No DOM: usable from tests.

const enc = new TextEncoder();

export function b64decode(text) {
  if (typeof text !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0)
    throw new Error('not base64');
  const bin = atob(text);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

export function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

export function unhex(text) {
  if (typeof text !== 'string' || !/^([0-9a-f]{2})*$/.test(text)) throw new Error('not lowercase hex');
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.substr(i * 2, 2), 16);
  return out;
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

function equal(a, b) {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
  return d === 0;
}

export async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
}

export const leafHash = (entry) => sha256(concat(Uint8Array.of(0), entry));
export const nodeHash = (l, r) => sha256(concat(Uint8Array.of(1), l, r));

// key_id = SHA-256(name || 0x0A || 0x01 || public_key)[0:4]  (C2SP signed-note, Ed25519)
export async function keyId(name, publicKey) {
  return (await sha256(concat(enc.encode(name), Uint8Array.of(0x0a, 0x01), publicKey))).slice(0, 4);
}

// "<name>+<hex key id>+<base64(0x01 || public key)>" (FORMAT.md §2.4).
export async function parseVerifierKey(vkey) {
  const text = String(vkey).trim();
  const first = text.indexOf('+');
  const second = text.indexOf('+', first + 1);
  if (first <= 0 || second < 0) throw new Error('verifier key: expected name+keyid+key');
  const name = text.slice(0, first);
  const idText = text.slice(first + 1, second);
  const raw = b64decode(text.slice(second + 1));
  if (raw.length !== 33 || raw[0] !== 0x01) throw new Error('verifier key: not an Ed25519 key');
  const publicKey = raw.slice(1);
  const id = await keyId(name, publicKey);
  if (hex(id) !== idText) throw new Error(`verifier key: key id ${idText} does not match the key (${hex(id)})`);
  return { name, keyId: id, publicKey };
}

// Parses a checkpoint note (FORMAT.md §2.3 rules 1–3). Does not verify.
export function parseCheckpoint(note) {
  const split = note.indexOf('\n\n');
  if (split < 0) throw new Error('checkpoint: no blank line before the signatures');
  const body = note.slice(0, split + 1);
  const lines = body.split('\n');
  if (lines.length !== 4) throw new Error('checkpoint: the body must be exactly three lines');
  const [origin, sizeText, rootText] = lines;
  if (!/^(0|[1-9][0-9]{0,19})$/.test(sizeText) || BigInt(sizeText) > 0xffffffffffffffffn)
    throw new Error('checkpoint: bad tree size');
  const root = b64decode(rootText);
  if (root.length !== 32) throw new Error('checkpoint: the root is not 32 bytes');
  const sigText = note.slice(split + 2);
  if (!sigText.endsWith('\n')) throw new Error('checkpoint: a signature line does not end in a newline');
  const signatures = sigText.slice(0, -1).split('\n').map((line) => {
    if (!line.startsWith('\u2014 ')) throw new Error('checkpoint: a signature line does not start with "— "');
    const rest = line.slice(2);
    const space = rest.indexOf(' ');
    if (space <= 0) throw new Error('checkpoint: a signature line has no key name');
    return { name: rest.slice(0, space), field: rest.slice(space + 1) };
  });
  return { origin, size: BigInt(sizeText), root, body, signatures };
}

// FORMAT.md §2.3 rules 4–5: true iff a line for this key verifies; a line
// naming this key with its key id that fails to verify rejects the note.
export async function verifyCheckpointSignature(cp, vk) {
  const key = await crypto.subtle.importKey('raw', vk.publicKey, { name: 'Ed25519' }, false, ['verify']);
  let verified = false;
  for (const sig of cp.signatures) {
    if (sig.name !== vk.name) continue;
    const raw = b64decode(sig.field);
    if (raw.length !== 68) throw new Error('checkpoint: a signature is not 68 bytes');
    if (!equal(raw.slice(0, 4), vk.keyId)) continue;
    const ok = await crypto.subtle.verify({ name: 'Ed25519' }, key, raw.slice(4), enc.encode(cp.body));
    if (!ok) throw new Error('checkpoint: the Ed25519 signature does not verify');
    verified = true;
  }
  return verified;
}

// RFC 9162 §2.1.3.2. index and size as BigInt; proof leaf to root.
export async function rootFromInclusionProof(index, size, leaf, proof) {
  if (index >= size) throw new Error('inclusion: index is not below the tree size');
  let fn = index;
  let sn = size - 1n;
  let r = leaf;
  for (const p of proof) {
    if (sn === 0n) throw new Error('inclusion: the proof is too long');
    if ((fn & 1n) === 1n || fn === sn) {
      r = await nodeHash(p, r);
      if ((fn & 1n) === 0n) while ((fn & 1n) === 0n && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
    } else {
      r = await nodeHash(r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  if (sn !== 0n) throw new Error('inclusion: the proof is too short');
  return r;
}

// The whole check of one bundle ({entry, index, tree_size, proof,
// checkpoint}, FORMAT.md §5) against a verifier key the user supplies.
// Returns {ok, steps: [{title, ok, detail}], ms}; never throws. Stops at the
// first failed step.
export async function verifyInclusionBundle(bundle, vkeyText) {
  const t0 = performance.now();
  const steps = [];
  const step = async (title, fn) => {
    try {
      const detail = await fn();
      steps.push({ title, ok: true, detail });
      return true;
    } catch (e) {
      steps.push({ title, ok: false, detail: e.message });
      return false;
    }
  };
  let vk, cp, entry, leaf, proof, index, size;
  const run = async () => {
    if (!await step('Verifier key and its C2SP key id', async () => {
      vk = await parseVerifierKey(vkeyText);
      return `key "${vk.name}", key id ${hex(vk.keyId)} recomputed from the public key`;
    })) return false;
    if (!await step('Checkpoint signature (Ed25519, WebCrypto)', async () => {
      if (typeof bundle.checkpoint !== 'string') throw new Error('no signed checkpoint in the answer');
      cp = parseCheckpoint(bundle.checkpoint);
      if (!await verifyCheckpointSignature(cp, vk)) throw new Error('no signature by this key');
      return `origin "${cp.origin}", tree size ${cp.size}, root ${hex(cp.root)}`;
    })) return false;
    if (!await step('Tree size matches the checkpoint', async () => {
      size = BigInt(bundle.tree_size);
      if (size !== cp.size) throw new Error(`proof is for size ${size}, checkpoint is for ${cp.size}`);
      return `${size}`;
    })) return false;
    if (!await step('Entry bytes and leaf hash', async () => {
      entry = b64decode(bundle.entry);
      index = BigInt(bundle.index);
      if (entry.length < 9 || entry[0] !== 1) throw new Error('not a version-1 entry');
      const seq = new DataView(entry.buffer, entry.byteOffset + 1, 8).getBigUint64(0, false);
      if (seq !== index) throw new Error(`the entry's seq ${seq} is not the index ${index}`);
      leaf = await leafHash(entry);
      return `seq ${seq}, leaf hash SHA-256(0x00 || entry) = ${hex(leaf)}`;
    })) return false;
    return step('RFC 6962 inclusion path to the signed root', async () => {
      if (!Array.isArray(bundle.proof)) throw new Error('no proof');
      proof = bundle.proof.map(unhex);
      if (proof.some((p) => p.length !== 32)) throw new Error('a proof hash is not 32 bytes');
      const root = await rootFromInclusionProof(index, size, leaf, proof);
      if (!equal(root, cp.root)) throw new Error(`the path gives root ${hex(root)}, not the signed root`);
      return `${proof.length} hashes lead to the signed root ${hex(root)}`;
    });
  };
  const ok = await run();
  return { ok, steps, ms: performance.now() - t0 };
}
