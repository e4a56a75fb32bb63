#include "custos_audit/merkle.h"

#include <openssl/sha.h>
#include <sodium.h>

#include <array>
#include <bit>
#include <stdexcept>

namespace custos::auditfmt {
namespace {

// Largest power of two strictly smaller than n (n >= 2).
std::uint64_t split_point(std::uint64_t n) { return std::bit_floor(n - 1); }

// MTH of leaves [start, end); `start` is aligned to a power of two >= end - start.
Hash range_hash(std::uint64_t start, std::uint64_t end, const SubtreeHashFn& subtree) {
  const std::uint64_t n = end - start;
  if (std::has_single_bit(n)) {
    const unsigned level = static_cast<unsigned>(std::countr_zero(n));
    return subtree(level, start >> level);
  }
  const std::uint64_t k = split_point(n);
  return node_hash(range_hash(start, start + k, subtree), range_hash(start + k, end, subtree));
}

void path(std::uint64_t m, std::uint64_t start, std::uint64_t end, const SubtreeHashFn& subtree,
          std::vector<Hash>& out) {
  const std::uint64_t n = end - start;
  if (n <= 1) return;
  const std::uint64_t k = split_point(n);
  if (m - start < k) {
    path(m, start, start + k, subtree, out);
    out.push_back(range_hash(start + k, end, subtree));
  } else {
    path(m, start + k, end, subtree, out);
    out.push_back(range_hash(start, start + k, subtree));
  }
}

void subproof(std::uint64_t m, std::uint64_t start, std::uint64_t end, bool complete, const SubtreeHashFn& subtree,
              std::vector<Hash>& out) {
  const std::uint64_t n = end - start;
  if (m == n) {
    if (!complete) out.push_back(range_hash(start, end, subtree));
    return;
  }
  const std::uint64_t k = split_point(n);
  if (m <= k) {
    subproof(m, start, start + k, complete, subtree, out);
    out.push_back(range_hash(start + k, end, subtree));
  } else {
    subproof(m - k, start + k, end, false, subtree, out);
    out.push_back(range_hash(start, start + k, subtree));
  }
}

}  // namespace

Hash leaf_hash(std::span<const std::uint8_t> entry_bytes) {
  SHA256_CTX ctx;
  SHA256_Init(&ctx);
  const std::uint8_t prefix = 0x00;
  SHA256_Update(&ctx, &prefix, 1);
  SHA256_Update(&ctx, entry_bytes.data(), entry_bytes.size());
  Hash h;
  SHA256_Final(h.data(), &ctx);
  return h;
}

Hash node_hash(const Hash& left, const Hash& right) {
  std::uint8_t buf[65];
  buf[0] = 0x01;
  std::copy(left.begin(), left.end(), buf + 1);
  std::copy(right.begin(), right.end(), buf + 33);
  // The low-level interface: OpenSSL 3's one-shot SHA256() fetches the
  // algorithm (a locked lookup) on every call, which dominates 65-byte inputs.
  SHA256_CTX ctx;
  SHA256_Init(&ctx);
  SHA256_Update(&ctx, buf, sizeof buf);
  Hash h;
  SHA256_Final(h.data(), &ctx);
  return h;
}

Hash empty_root() {
  Hash h;
  SHA256(nullptr, 0, h.data());
  return h;
}

Hash root_at(std::uint64_t size, const SubtreeHashFn& subtree) {
  if (size == 0) return empty_root();
  return range_hash(0, size, subtree);
}

std::vector<Hash> inclusion_proof(std::uint64_t index, std::uint64_t size, const SubtreeHashFn& subtree) {
  if (index >= size) throw std::invalid_argument("inclusion proof: index must be smaller than the tree size");
  std::vector<Hash> out;
  path(index, 0, size, subtree, out);
  return out;
}

std::vector<Hash> consistency_proof(std::uint64_t size1, std::uint64_t size2, const SubtreeHashFn& subtree) {
  if (size1 > size2) throw std::invalid_argument("consistency proof: first size exceeds second");
  std::vector<Hash> out;
  if (size1 == 0 || size1 == size2) return out;
  subproof(size1, 0, size2, true, subtree, out);
  return out;
}

bool verify_inclusion(std::uint64_t index, std::uint64_t size, const Hash& leaf, std::span<const Hash> proof,
                      const Hash& root) {
  if (index >= size) return false;
  std::uint64_t fn = index, sn = size - 1;
  Hash r = leaf;
  for (const Hash& p : proof) {
    if (sn == 0) return false;
    if ((fn & 1) == 1 || fn == sn) {
      r = node_hash(p, r);
      if ((fn & 1) == 0)
        while ((fn & 1) == 0 && fn != 0) {
          fn >>= 1;
          sn >>= 1;
        }
    } else {
      r = node_hash(r, p);
    }
    fn >>= 1;
    sn >>= 1;
  }
  return sn == 0 && r == root;
}

bool verify_consistency(std::uint64_t size1, std::uint64_t size2, const Hash& root1, const Hash& root2,
                        std::span<const Hash> proof) {
  if (size1 > size2) return false;
  if (size1 == size2) return proof.empty() && root1 == root2;
  if (size1 == 0) return proof.empty();
  std::vector<Hash> path(proof.begin(), proof.end());
  if (std::has_single_bit(size1)) path.insert(path.begin(), root1);
  if (path.empty()) return false;
  std::uint64_t fn = size1 - 1, sn = size2 - 1;
  while ((fn & 1) == 1) {
    fn >>= 1;
    sn >>= 1;
  }
  Hash fr = path[0], sr = path[0];
  for (std::size_t i = 1; i < path.size(); ++i) {
    const Hash& c = path[i];
    if (sn == 0) return false;
    if ((fn & 1) == 1 || fn == sn) {
      fr = node_hash(c, fr);
      sr = node_hash(c, sr);
      if ((fn & 1) == 0)
        while ((fn & 1) == 0 && fn != 0) {
          fn >>= 1;
          sn >>= 1;
        }
    } else {
      sr = node_hash(sr, c);
    }
    fn >>= 1;
    sn >>= 1;
  }
  return sn == 0 && fr == root1 && sr == root2;
}

void Frontier::append(const Hash& leaf) {
  completed_.clear();
  Hash cur = leaf;
  unsigned level = 0;
  const std::uint64_t index = size_;
  while (!peaks_.empty() && peaks_.back().first == level) {
    cur = node_hash(peaks_.back().second, cur);
    peaks_.pop_back();
    ++level;
    completed_.emplace_back(level, index >> level, cur);
  }
  peaks_.emplace_back(level, cur);
  ++size_;
}

Hash Frontier::root() const {
  if (peaks_.empty()) return empty_root();
  Hash r = peaks_.back().second;
  for (std::size_t i = peaks_.size() - 1; i-- > 0;) r = node_hash(peaks_[i].second, r);
  return r;
}

Frontier Frontier::restore(std::uint64_t size, const SubtreeHashFn& subtree) {
  Frontier f;
  std::uint64_t start = 0;
  for (int level = 63; level >= 0; --level) {
    const std::uint64_t width = std::uint64_t{1} << level;
    if ((size & width) == 0) continue;
    f.peaks_.emplace_back(static_cast<unsigned>(level), subtree(static_cast<unsigned>(level), start >> level));
    start += width;
  }
  f.size_ = size;
  return f;
}

std::string to_hex(const Hash& h) {
  char out[65];
  sodium_bin2hex(out, sizeof out, h.data(), h.size());
  return out;
}

std::optional<Hash> hash_from_hex(std::string_view hex) {
  Hash h;
  std::size_t len = 0;
  if (hex.size() != 64 || sodium_hex2bin(h.data(), h.size(), hex.data(), hex.size(), nullptr, &len, nullptr) != 0 ||
      len != 32)
    return std::nullopt;
  return h;
}

std::string base64_encode(std::span<const std::uint8_t> bytes) {
  std::string out(sodium_base64_ENCODED_LEN(bytes.size(), sodium_base64_VARIANT_ORIGINAL), '\0');
  sodium_bin2base64(out.data(), out.size(), bytes.data(), bytes.size(), sodium_base64_VARIANT_ORIGINAL);
  out.pop_back();  // the terminating NUL
  return out;
}

std::optional<std::vector<std::uint8_t>> base64_decode(std::string_view text) {
  // Strict and canonical (FORMAT.md §0): the standard alphabet only, length a
  // multiple of 4, `=` only as the last one or two characters, and the bits a
  // padded final group leaves unused are zero; so each byte string has exactly
  // one accepted text and no altered text decodes to the same bytes.
  // (libsodium's decoder read bytes 0x80-0xFF as '/', issue 21.)
  static constexpr auto kValue = [] {
    std::array<std::int8_t, 256> v{};
    v.fill(-1);
    const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int i = 0; i < 64; ++i) v[static_cast<unsigned char>(alphabet[i])] = static_cast<std::int8_t>(i);
    return v;
  }();
  if (text.size() % 4 != 0) return std::nullopt;
  std::size_t pad = 0;
  if (!text.empty() && text.back() == '=') pad = text.size() >= 2 && text[text.size() - 2] == '=' ? 2 : 1;
  std::vector<std::uint8_t> out;
  out.reserve(text.size() / 4 * 3);
  for (std::size_t i = 0; i < text.size(); i += 4) {
    const bool last = i + 4 == text.size();
    const std::size_t real = last ? 4 - pad : 4;
    std::uint32_t group = 0;
    for (std::size_t k = 0; k < 4; ++k) {
      std::int8_t v = 0;
      if (k < real) {
        v = kValue[static_cast<unsigned char>(text[i + k])];
        if (v < 0) return std::nullopt;
      } else if (text[i + k] != '=') {
        return std::nullopt;
      }
      group = group << 6 | static_cast<std::uint32_t>(v);
    }
    out.push_back(static_cast<std::uint8_t>(group >> 16));
    if (real >= 3) out.push_back(static_cast<std::uint8_t>(group >> 8));
    if (real == 4) out.push_back(static_cast<std::uint8_t>(group));
    // Non-canonical: bits below the last encoded byte must be zero.
    if (real == 3 && (group & 0xFF) != 0) return std::nullopt;
    if (real == 2 && (group & 0xFFFF) != 0) return std::nullopt;
  }
  return out;
}

}  // namespace custos::auditfmt
