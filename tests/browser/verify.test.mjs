// The console's in-browser verifier (web/console/js/verify.js) against the
// test vectors of audit/FORMAT.md §6 and against a reference Merkle tree
// (RFC 6962 MTH and PATH) for every (index, size) up to 33, run under
// Node's WebCrypto, which has the same API as the browser's.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { webcrypto } from 'node:crypto';
import {
  parseVerifierKey, parseCheckpoint, verifyCheckpointSignature, rootFromInclusionProof, unhex, hex, sha256, nodeHash,
} from '../../web/console/js/verify.js';

if (!globalThis.crypto) globalThis.crypto = webcrypto;

const VKEY = 'custos.local+44d66a28+AQOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4';
const NOTE = 'custos.local/audit\n2\nltamJfgmMGBIA0mb3AXsdgKEb4sOoMSpSR3JOUDN6lM=\n\n' +
  '\u2014 custos.local RNZqKDHSGX1GNrIwROln249mGOjtvccJeaP6o87+hxX5RngxSVgGNLeHGVDlM3csl7POXsDu0PpwhdwQUefuAXBm6Aw=\n';
const LEAF0 = '6283ef9fe4843d9a571a288845eaa9f9dd1b57a3acf31cc4a07d596e934ecc71';
const LEAF1 = 'fc2713e71eb76a4f9e8eec9fb81659863967e85ea60659fbdb02e892f0eb3a77';
const ROOT2 = '96d6a625f82630604803499bdc05ec7602846f8b0ea0c4a9491dc93940cdea53';

test('FORMAT.md §6: verifier key, key id, checkpoint signature, inclusion of entry 1 at size 2', async () => {
  const vk = await parseVerifierKey(VKEY);
  assert.equal(hex(vk.keyId), '44d66a28');
  assert.equal(hex(vk.publicKey), '03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8');
  const cp = parseCheckpoint(NOTE);
  assert.equal(cp.size, 2n);
  assert.equal(hex(cp.root), ROOT2);
  assert.equal(await verifyCheckpointSignature(cp, vk), true);
  const root = await rootFromInclusionProof(1n, 2n, unhex(LEAF1), [unhex(LEAF0)]);
  assert.equal(hex(root), ROOT2);
});

test('a wrong key id, a changed body or a bad signature is rejected', async () => {
  await assert.rejects(parseVerifierKey(VKEY.replace('44d66a28', '44d66a29')), /key id/);
  const vk = await parseVerifierKey(VKEY);
  await assert.rejects(verifyCheckpointSignature(parseCheckpoint(NOTE.replace('\n2\n', '\n3\n')), vk), /does not verify/);
  const sig = NOTE.split('\u2014 custos.local ')[1];
  const flipped = NOTE.replace(sig, sig.slice(0, 20) + (sig[20] === 'A' ? 'B' : 'A') + sig.slice(21));
  await assert.rejects(verifyCheckpointSignature(parseCheckpoint(flipped), vk), /does not verify/);
  assert.throws(() => parseCheckpoint(NOTE.replace('\n\n', '\nextra\n\n')), /three lines/);
  assert.throws(() => parseCheckpoint(NOTE.replace('\u2014 ', '- ')), /does not start/);
});

// Reference RFC 6962 §2.1: MTH and PATH by recursion over the leaves.
async function mth(leaves) {
  if (leaves.length === 1) return leaves[0];
  let k = 1;
  while (k * 2 < leaves.length) k *= 2;
  return nodeHash(await mth(leaves.slice(0, k)), await mth(leaves.slice(k)));
}
async function path(m, leaves) {
  if (leaves.length === 1) return [];
  let k = 1;
  while (k * 2 < leaves.length) k *= 2;
  if (m < k) return [...await path(m, leaves.slice(0, k)), await mth(leaves.slice(k))];
  return [...await path(m - k, leaves.slice(k)), await mth(leaves.slice(0, k))];
}

test('inclusion proofs agree with a reference tree for every index and size up to 33', async () => {
  const leaves = [];
  for (let i = 0; i < 33; i++) leaves.push(await sha256(Uint8Array.of(0, i)));
  for (let size = 1; size <= 33; size++) {
    const tree = leaves.slice(0, size);
    const root = await mth(tree);
    for (let m = 0; m < size; m++) {
      const proof = await path(m, tree);
      assert.equal(hex(await rootFromInclusionProof(BigInt(m), BigInt(size), tree[m], proof)), hex(root), `m=${m} n=${size}`);
      if (proof.length) {
        const shortened = await rootFromInclusionProof(BigInt(m), BigInt(size), tree[m], proof.slice(1))
          .then(hex, () => 'rejected');
        assert.notEqual(shortened, hex(root), `a shortened proof must not verify (m=${m} n=${size})`);
      }
      await assert.rejects(rootFromInclusionProof(BigInt(m), BigInt(size), tree[m], [...proof, leaves[0]]), /too long/);
    }
    await assert.rejects(rootFromInclusionProof(BigInt(size), BigInt(size), tree[0], []), /index/);
  }
});
