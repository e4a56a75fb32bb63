#include "custos_audit/subjects.h"

#include <openssl/sha.h>
#include <sodium.h>

#include <bit>
#include <stdexcept>

namespace custos::auditfmt {
namespace {

Hash mth(std::span<const Hash> leaves) {
  if (leaves.size() == 1) return leaves[0];
  const std::size_t k = std::bit_floor(leaves.size() - 1);
  return subject_node(mth(leaves.first(k)), mth(leaves.subspan(k)));
}

void path(std::span<const Hash> leaves, std::uint64_t m, std::vector<Hash>& out) {
  if (leaves.size() <= 1) return;
  const std::size_t k = std::bit_floor(leaves.size() - 1);
  if (m < k) {
    path(leaves.first(k), m, out);
    out.push_back(mth(leaves.subspan(k)));
  } else {
    path(leaves.subspan(k), m - k, out);
    out.push_back(mth(leaves.first(k)));
  }
}

std::uint8_t* put_u32(std::uint8_t* at, std::uint32_t v) {
  at[0] = static_cast<std::uint8_t>(v >> 24);
  at[1] = static_cast<std::uint8_t>(v >> 16);
  at[2] = static_cast<std::uint8_t>(v >> 8);
  at[3] = static_cast<std::uint8_t>(v);
  return at + 4;
}

std::uint32_t get_u32(const std::uint8_t* at) {
  return (std::uint32_t{at[0]} << 24) | (std::uint32_t{at[1]} << 16) | (std::uint32_t{at[2]} << 8) | at[3];
}

std::vector<Hash> leaves_of(std::span<const std::string> ids, std::span<const SubjectSalt> salts) {
  std::vector<Hash> leaves;
  leaves.reserve(ids.size());
  for (std::size_t i = 0; i < ids.size(); ++i) leaves.push_back(subject_leaf(salts[i], ids[i]));
  return leaves;
}

}  // namespace

Hash subject_leaf(const SubjectSalt& salt, std::string_view subject_id) {
  SHA256_CTX ctx;
  SHA256_Init(&ctx);
  const std::uint8_t tag = kSubjectLeafTag;
  SHA256_Update(&ctx, &tag, 1);
  SHA256_Update(&ctx, salt.data(), salt.size());
  SHA256_Update(&ctx, subject_id.data(), subject_id.size());
  Hash h;
  SHA256_Final(h.data(), &ctx);
  return h;
}

Hash subject_node(const Hash& left, const Hash& right) {
  std::uint8_t buf[65];
  buf[0] = kSubjectNodeTag;
  std::copy(left.begin(), left.end(), buf + 1);
  std::copy(right.begin(), right.end(), buf + 33);
  SHA256_CTX ctx;
  SHA256_Init(&ctx);
  SHA256_Update(&ctx, buf, sizeof buf);
  Hash h;
  SHA256_Final(h.data(), &ctx);
  return h;
}

Hash subject_tree_root(std::span<const Hash> leaves) {
  if (leaves.empty()) throw std::invalid_argument("subject tree: no leaves");
  return mth(leaves);
}

std::vector<Hash> subject_tree_path(std::span<const Hash> leaves, std::uint64_t index) {
  if (index >= leaves.size()) throw std::invalid_argument("subject tree: index out of range");
  std::vector<Hash> out;
  path(leaves, index, out);
  return out;
}

void recompute_commitment(Entry& e) {
  if (e.subject_ids.empty() || e.subject_ids.size() != e.subject_salts.size() ||
      e.subject_ids.size() > UINT32_MAX)
    throw std::invalid_argument("subject commitment: needs one salt for each of at least one subject");
  e.version = kEntryVersionCommitted;
  e.subject_count = static_cast<std::uint32_t>(e.subject_ids.size());
  e.subject_root = subject_tree_root(leaves_of(e.subject_ids, e.subject_salts));
}

void commit_subjects(Entry& e) {
  if (sodium_init() < 0) throw std::runtime_error("libsodium cannot be initialised");
  e.subject_salts.resize(e.subject_ids.size());
  // One CSPRNG call for the page's salts (the salts are contiguous), not one
  // per subject: libsodium's system source is a getrandom() call per request.
  static_assert(sizeof(SubjectSalt) == std::tuple_size_v<SubjectSalt>);
  if (!e.subject_salts.empty())
    randombytes_buf(e.subject_salts.data(), e.subject_salts.size() * sizeof(SubjectSalt));
  recompute_commitment(e);
}

Membership membership_of(const Entry& e, std::size_t index) {
  if (index >= e.subject_ids.size() || e.subject_ids.size() != e.subject_salts.size())
    throw std::invalid_argument("membership: no such subject among the entry's openings");
  const auto leaves = leaves_of(e.subject_ids, e.subject_salts);
  return {e.subject_ids[index], e.subject_salts[index], index, e.subject_ids.size(),
          subject_tree_path(leaves, index)};
}

bool verify_membership(const Membership& m, std::uint32_t count, const Hash& root) {
  if (m.count != count || m.index >= m.count) return false;
  // RFC 9162 §2.1.3.2, with the subject tree's node hash.
  std::uint64_t fn = m.index, sn = m.count - 1;
  Hash r = subject_leaf(m.salt, m.subject_id);
  for (const Hash& p : m.path) {
    if (sn == 0) return false;
    if ((fn & 1) == 1 || fn == sn) {
      r = subject_node(p, r);
      if ((fn & 1) == 0)
        while ((fn & 1) == 0 && fn != 0) {
          fn >>= 1;
          sn >>= 1;
        }
    } else {
      r = subject_node(r, p);
    }
    fn >>= 1;
    sn >>= 1;
  }
  return sn == 0 && r == root;
}

std::size_t openings_size(const Entry& e) {
  std::size_t n = 4;
  for (const auto& id : e.subject_ids) n += 16 + 4 + id.size();
  return n;
}

std::vector<std::uint8_t> encode_openings(const Entry& e) {
  if (e.subject_ids.size() != e.subject_salts.size())
    throw std::invalid_argument("openings: one salt for each subject is needed");
  std::vector<std::uint8_t> out(openings_size(e));
  std::uint8_t* at = put_u32(out.data(), static_cast<std::uint32_t>(e.subject_ids.size()));
  for (std::size_t i = 0; i < e.subject_ids.size(); ++i) {
    at = std::copy(e.subject_salts[i].begin(), e.subject_salts[i].end(), at);
    at = put_u32(at, static_cast<std::uint32_t>(e.subject_ids[i].size()));
    at = std::copy(e.subject_ids[i].begin(), e.subject_ids[i].end(), at);
  }
  return out;
}

bool decode_openings(std::span<const std::uint8_t> bytes, std::vector<std::string>& ids,
                     std::vector<SubjectSalt>& salts, const char** why) {
  ids.clear();
  salts.clear();
  if (bytes.size() < 4) return *why = "truncated subject openings", false;
  const std::uint32_t n = get_u32(bytes.data());
  // Each opening takes at least 20 bytes: a count the bytes cannot hold is
  // refused before anything is reserved for it.
  if (n == 0 || n > (bytes.size() - 4) / 20) return *why = "subject openings count does not fit", false;
  ids.reserve(n);
  salts.reserve(n);
  std::size_t pos = 4;
  for (std::uint32_t i = 0; i < n; ++i) {
    if (bytes.size() - pos < 20) return *why = "truncated subject openings", false;
    SubjectSalt salt;
    std::copy(bytes.begin() + static_cast<std::ptrdiff_t>(pos), bytes.begin() + static_cast<std::ptrdiff_t>(pos + 16),
              salt.begin());
    const std::uint32_t len = get_u32(bytes.data() + pos + 16);
    pos += 20;
    if (len > bytes.size() - pos) return *why = "truncated subject openings", false;
    ids.emplace_back(reinterpret_cast<const char*>(bytes.data() + pos), len);
    salts.push_back(salt);
    pos += len;
  }
  if (pos != bytes.size()) return *why = "trailing bytes after the subject openings", false;
  return true;
}

bool openings_match(std::span<const std::string> ids, std::span<const SubjectSalt> salts, std::uint32_t count,
                    const Hash& root) {
  if (ids.empty() || ids.size() != salts.size() || ids.size() != count) return false;
  return subject_tree_root(leaves_of(ids, salts)) == root;
}

}  // namespace custos::auditfmt
