#include <gtest/gtest.h>

#include <random>

#include "custos_audit/merkle.h"

namespace custos::auditfmt {
namespace {

std::vector<std::uint8_t> unhex(const std::string& hex) {
  std::vector<std::uint8_t> out;
  for (std::size_t i = 0; i < hex.size(); i += 2) out.push_back(static_cast<std::uint8_t>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}
Hash H(const std::string& hex) { return *hash_from_hex(hex); }

// The RFC 6962 reference leaves and roots (certificate-transparency test data).
const std::vector<std::string> kLeaves = {"",         "00",       "10", "2021", "3031", "40414243",
                                          "5051525354555657", "606162636465666768696a6b6c6d6e6f"};
const std::vector<std::string> kRoots = {
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"};

// An independent, naive MTH straight from RFC 6962 §2.1.
Hash naive_mth(const std::vector<Hash>& leaves, std::size_t lo, std::size_t hi) {
  if (hi == lo) return empty_root();
  if (hi - lo == 1) return leaves[lo];
  std::size_t k = 1;
  while (k * 2 < hi - lo) k *= 2;
  return node_hash(naive_mth(leaves, lo, lo + k), naive_mth(leaves, lo + k, hi));
}

// Subtree lookups over an in-memory list of leaf hashes (computed naively).
SubtreeHashFn naive_subtrees(const std::vector<Hash>& leaves) {
  return [&leaves](unsigned level, std::uint64_t index) {
    const std::size_t lo = index << level;
    return naive_mth(leaves, lo, lo + (std::size_t{1} << level));
  };
}

std::vector<Hash> reference_leaf_hashes() {
  std::vector<Hash> out;
  for (const auto& l : kLeaves) out.push_back(leaf_hash(unhex(l)));
  return out;
}

TEST(Merkle, ReferenceRoots) {
  const auto leaves = reference_leaf_hashes();
  EXPECT_EQ(to_hex(empty_root()), kRoots[0]);
  Frontier f;
  for (std::size_t n = 1; n <= leaves.size(); ++n) {
    f.append(leaves[n - 1]);
    EXPECT_EQ(to_hex(f.root()), kRoots[n]) << n;
    EXPECT_EQ(to_hex(root_at(n, naive_subtrees(leaves))), kRoots[n]) << n;
  }
}

TEST(Merkle, ReferenceInclusionProofs) {
  const auto leaves = reference_leaf_hashes();
  const auto sub = naive_subtrees(leaves);
  struct Case {
    std::uint64_t index, size;
    std::vector<std::string> proof;
  };
  const std::vector<Case> cases = {
      {0, 1, {}},
      {0, 8,
       {"96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"}},
      {5, 8,
       {"bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"}},
      {2, 3, {"fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"}},
      {1, 5,
       {"6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"}},
  };
  for (const auto& c : cases) {
    const auto proof = inclusion_proof(c.index, c.size, sub);
    ASSERT_EQ(proof.size(), c.proof.size()) << c.index << "/" << c.size;
    for (std::size_t i = 0; i < proof.size(); ++i) EXPECT_EQ(to_hex(proof[i]), c.proof[i]);
    EXPECT_TRUE(verify_inclusion(c.index, c.size, leaves[c.index], proof, H(kRoots[c.size])));
    EXPECT_FALSE(verify_inclusion(c.index, c.size, leaves[(c.index + 1) % 8], proof, H(kRoots[c.size])));
  }
}

// Two logs of the same size are consistent only if they are the same log:
// a server that forked its log (same size, another root) is caught, and a
// proof is never needed, so one given is refused.
TEST(Merkle, LogsOfTheSameSizeAreConsistentOnlyWithTheSameRoot) {
  for (const std::uint64_t n : {1, 2, 5, 8}) {
    const Hash root = H(kRoots[n]);
    EXPECT_TRUE(verify_consistency(n, n, root, root, {})) << n;
    EXPECT_FALSE(verify_consistency(n, n, root, H(kRoots[n == 1 ? 2 : 1]), {})) << n;
    const std::vector<Hash> stray{root};
    EXPECT_FALSE(verify_consistency(n, n, root, root, stray)) << n;
  }
}

TEST(Merkle, ReferenceConsistencyProofs) {
  const auto leaves = reference_leaf_hashes();
  const auto sub = naive_subtrees(leaves);
  struct Case {
    std::uint64_t first, second;
    std::vector<std::string> proof;
  };
  const std::vector<Case> cases = {
      {1, 1, {}},
      {1, 8,
       {"96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"}},
      {6, 8,
       {"0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"}},
      {2, 5,
       {"5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"}},
  };
  for (const auto& c : cases) {
    const auto proof = consistency_proof(c.first, c.second, sub);
    ASSERT_EQ(proof.size(), c.proof.size()) << c.first << "->" << c.second;
    for (std::size_t i = 0; i < proof.size(); ++i) EXPECT_EQ(to_hex(proof[i]), c.proof[i]);
    EXPECT_TRUE(verify_consistency(c.first, c.second, H(kRoots[c.first]), H(kRoots[c.second]), proof));
    EXPECT_FALSE(verify_consistency(c.first, c.second, H(kRoots[c.first]), H(kRoots[0]), proof) && c.first != c.second);
  }
}

// Random sizes up to 100,000 leaves: proofs from stored perfect subtrees
// (as the vault keeps them) verify against independently computed roots.
TEST(Merkle, RandomProofsUpTo100kLeaves) {
  std::mt19937_64 rng(6962);
  std::vector<Hash> leaves(100000);
  for (std::size_t i = 0; i < leaves.size(); ++i) {
    const std::uint64_t v = rng();
    leaves[i] = leaf_hash(std::span(reinterpret_cast<const std::uint8_t*>(&v), 8));
  }
  // Store as the vault does: every completed perfect subtree, by level.
  std::vector<std::vector<Hash>> levels(1);
  Frontier f;
  for (const auto& l : leaves) {
    f.append(l);
    levels[0].push_back(l);
    for (const auto& [level, idx, h] : f.completed()) {
      if (levels.size() <= level) levels.resize(level + 1);
      ASSERT_EQ(levels[level].size(), idx);
      levels[level].push_back(h);
    }
  }
  const SubtreeHashFn stored = [&](unsigned level, std::uint64_t i) { return levels.at(level).at(i); };
  for (int round = 0; round < 40; ++round) {
    const std::uint64_t size = 1 + rng() % leaves.size();
    const std::vector<Hash> prefix(leaves.begin(), leaves.begin() + static_cast<long>(size));
    Frontier independent;
    for (const auto& l : prefix) independent.append(l);
    const Hash root = independent.root();
    EXPECT_EQ(root_at(size, stored), root);
    const std::uint64_t index = rng() % size;
    EXPECT_TRUE(verify_inclusion(index, size, leaves[index], inclusion_proof(index, size, stored), root));
    const std::uint64_t first = 1 + rng() % size;
    Frontier older;
    for (std::uint64_t i = 0; i < first; ++i) older.append(leaves[i]);
    EXPECT_TRUE(verify_consistency(first, size, older.root(), root, consistency_proof(first, size, stored)));
    EXPECT_EQ(Frontier::restore(size, stored).root(), root);
  }
  // A small naive cross-check of the recursion shapes.
  for (std::uint64_t n = 1; n <= 70; ++n) {
    const std::vector<Hash> prefix(leaves.begin(), leaves.begin() + static_cast<long>(n));
    EXPECT_EQ(root_at(n, stored), naive_mth(prefix, 0, n)) << n;
  }
}

TEST(Merkle, HexAndBase64) {
  const Hash h = leaf_hash({});
  EXPECT_EQ(hash_from_hex(to_hex(h)), h);
  EXPECT_FALSE(hash_from_hex("zz"));
  const auto b = base64_decode(base64_encode(h));
  ASSERT_TRUE(b);
  EXPECT_TRUE(std::equal(b->begin(), b->end(), h.begin()));
  EXPECT_FALSE(base64_decode("!!!"));
}

}  // namespace
}  // namespace custos::auditfmt
