// custos_audit/subjects.h — committing to the subjects of one entry
// (audit/FORMAT.md §1.5).
//
// A version-2 entry covers n >= 1 subjects without naming them: it holds n
// and the root of an RFC 6962-shaped Merkle tree whose leaves are salted
// per-subject commitments, with hashes domain-separated from the log's own:
//
//   subject_leaf(salt, id) = SHA-256(0x10 || salt(16) || id)
//   subject_node(l, r)     = SHA-256(0x11 || l || r)
//   root = MTH over the leaves in list order (RFC 6962 §2.1, these hashes)
//
// The salt is 16 random bytes drawn for each subject of each entry, so a leaf
// reveals nothing of its id (nor whether two entries share a subject). One
// subject's "membership" (its id, salt, index, n and audit path) proves it is
// among the entry's subjects and reveals no other. The vault keeps every id
// and salt of an entry (its "openings") beside the entry, never in it.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "custos_audit/entry.h"
#include "custos_audit/merkle.h"

namespace custos::auditfmt {

inline constexpr std::uint8_t kSubjectLeafTag = 0x10;
inline constexpr std::uint8_t kSubjectNodeTag = 0x11;

Hash subject_leaf(const SubjectSalt& salt, std::string_view subject_id);
Hash subject_node(const Hash& left, const Hash& right);
// MTH of `leaves` (non-empty) under subject_node.
Hash subject_tree_root(std::span<const Hash> leaves);
// RFC 6962 PATH of leaf `index`, leaf to root.
std::vector<Hash> subject_tree_path(std::span<const Hash> leaves, std::uint64_t index);

// Makes `e` a version-2 entry committing to e.subject_ids (non-empty): draws
// a fresh salt for each (libsodium's randombytes), then sets the count and
// the root. Throws std::invalid_argument for an empty list.
void commit_subjects(Entry& e);
// Sets version 2, the count and the root from e.subject_ids and
// e.subject_salts as they are (test vectors; an entry re-read from its openings).
void recompute_commitment(Entry& e);

// One subject's opening of a version-2 entry's commitment.
struct Membership {
  std::string subject_id;
  SubjectSalt salt{};
  std::uint64_t index = 0;
  std::uint64_t count = 0;
  std::vector<Hash> path;  // leaf to root
};
// The membership of subject `index` of `e` (its ids and salts filled in).
Membership membership_of(const Entry& e, std::size_t index);
// Whether `m` proves its subject is among the `count` subjects under `root`
// (RFC 9162 §2.1.3.2 with the subject hashes; the count must equal m.count).
bool verify_membership(const Membership& m, std::uint32_t count, const Hash& root);

// The openings of a version-2 entry as bytes, for the vault's store, its
// journal and the export's `S` records (FORMAT.md §3):
//   u32 n || n × (salt(16) || u32 length || id)
std::vector<std::uint8_t> encode_openings(const Entry& e);
std::size_t openings_size(const Entry& e);
// Parses openings into `ids` and `salts`; false (with `why`) if malformed.
// Allocates only as the bytes themselves prove items exist.
bool decode_openings(std::span<const std::uint8_t> bytes, std::vector<std::string>& ids,
                     std::vector<SubjectSalt>& salts, const char** why);
// Whether openings hash to the commitment (count and root) of an entry.
bool openings_match(std::span<const std::string> ids, std::span<const SubjectSalt> salts, std::uint32_t count,
                    const Hash& root);

}  // namespace custos::auditfmt
