// custos_audit/merkle.h — RFC 6962 / RFC 9162 Merkle tree math.
//
// leaf = SHA-256(0x00 || entry), node = SHA-256(0x01 || left || right),
// empty tree = SHA-256(""). Proofs are the PATH and PROOF of RFC 6962 §2.1.
//
// Stores keep only perfect-subtree hashes: (level, index) is the subtree over
// leaves [index << level, (index + 1) << level); level 0 is the leaf hash.
// Every root and proof is computed from O(log n) such lookups (any other
// range decomposes into perfect subtrees), so nothing is ever rehashed.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

namespace custos::auditfmt {

using Hash = std::array<std::uint8_t, 32>;

Hash leaf_hash(std::span<const std::uint8_t> entry_bytes);
Hash node_hash(const Hash& left, const Hash& right);
Hash empty_root();

using SubtreeHashFn = std::function<Hash(unsigned level, std::uint64_t index)>;

// The root of the first `size` leaves.
Hash root_at(std::uint64_t size, const SubtreeHashFn& subtree);
// RFC 6962 §2.1.1: the audit path of leaf `index` in the tree of `size` leaves.
std::vector<Hash> inclusion_proof(std::uint64_t index, std::uint64_t size, const SubtreeHashFn& subtree);
// RFC 6962 §2.1.2: the consistency proof between sizes size1 <= size2.
std::vector<Hash> consistency_proof(std::uint64_t size1, std::uint64_t size2, const SubtreeHashFn& subtree);

// RFC 9162 §2.1.3.2 and §2.1.4.2.
bool verify_inclusion(std::uint64_t index, std::uint64_t size, const Hash& leaf, std::span<const Hash> proof,
                      const Hash& root);
bool verify_consistency(std::uint64_t size1, std::uint64_t size2, const Hash& root1, const Hash& root2,
                        std::span<const Hash> proof);

// The append-only accumulator (a "compact range" from 0): O(log n) hashes.
class Frontier {
 public:
  void append(const Hash& leaf);
  std::uint64_t size() const { return size_; }
  Hash root() const;
  // Perfect subtrees (level >= 1) completed by the last append, so a store can persist them.
  const std::vector<std::tuple<unsigned, std::uint64_t, Hash>>& completed() const { return completed_; }
  // Rebuilds the frontier of a tree of `size` leaves from stored subtree hashes.
  static Frontier restore(std::uint64_t size, const SubtreeHashFn& subtree);

 private:
  std::uint64_t size_ = 0;
  std::vector<std::pair<unsigned, Hash>> peaks_;  // left to right, decreasing level
  std::vector<std::tuple<unsigned, std::uint64_t, Hash>> completed_;
};

std::string to_hex(const Hash& h);
std::optional<Hash> hash_from_hex(std::string_view hex);
std::string base64_encode(std::span<const std::uint8_t> bytes);
std::optional<std::vector<std::uint8_t>> base64_decode(std::string_view text);

}  // namespace custos::auditfmt
