// custos_audit/entry.h — one audit entry and its canonical byte encoding.
//
// The encoding (audit/FORMAT.md §1) is what the Merkle leaf hashes, so it is
// fixed: a version byte, then every field in a fixed order, integers
// big-endian, strings and lists length-prefixed. Entries carry names, ids
// and codes, never personal values.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "custos_audit/merkle.h"

namespace custos::auditfmt {

// Version 1 lists the further subjects an entry covers in clear (field 16,
// subject_ids); version 2 commits to them instead (field 16 = count and the
// root of a Merkle tree over salted per-subject commitments, subjects.h), so
// one subject's membership can be proven without naming the others. The vault
// writes version 2 for every entry that covers further subjects and version 1
// for every other entry; readers accept both (FORMAT.md §1.1, §1.5).
inline constexpr std::uint8_t kEntryVersion = 1;
inline constexpr std::uint8_t kEntryVersionCommitted = 2;

// A per-subject random salt of a version-2 entry's commitment.
using SubjectSalt = std::array<std::uint8_t, 16>;

// The largest canonical entry a vault appends and the largest export record
// (FORMAT.md §1.4, §3) a reader accepts: 64 KiB. One constant for both sides,
// so the log never holds an entry its own verifier refuses. The largest
// legitimate entry is a batch create of 1,000 subjects: 1,000 ids of 36
// bytes (length + 32 hex digits) plus a dozen field names and bounded labels,
// about 37 KB; the rest is margin.
inline constexpr std::size_t kMaxEntryBytes = std::size_t{64} << 10;

struct Entry {
  std::uint8_t version = kEntryVersion;
  std::uint64_t seq = 0;  // position in the log == Merkle leaf index
  std::string time;       // RFC 3339 UTC, microseconds
  std::string principal, role, token_id, purpose, operation, subject_id;
  std::vector<std::string> fields;         // field names, never values
  std::vector<std::string> masked_fields;  // fields served masked
  std::string outcome;                     // allowed | denied
  std::string reason;                      // denial code
  std::string request_id, node_id;
  std::string detail;                      // small, non-personal
  // Further subjects covered (campaign pages, batch creates). Version 1:
  // encoded as field 16. Version 2: not encoded; the vault keeps them, with
  // their salts, beside the entry (the "openings", subjects.h) and fills them
  // in where the reader is entitled to them.
  std::vector<std::string> subject_ids;
  std::vector<SubjectSalt> subject_salts;  // version 2: the salt of each of subject_ids
  std::uint32_t subject_count = 0;         // version 2, encoded: how many subjects
  Hash subject_root{};                     // version 2, encoded: root of their commitments
  Hash prev{};  // leaf hash of entry seq-1 (zero for seq 0): pinpoints an altered entry
};

std::vector<std::uint8_t> encode(const Entry& entry);
// The length of encode(entry), computed without encoding.
std::size_t encoded_size(const Entry& entry);
// Throws std::runtime_error naming what is malformed.
Entry decode(std::span<const std::uint8_t> bytes);

// What the verifier and the store's indexes need, without allocating: the
// views point into the parsed bytes and live as long as they do.
struct EntryView {
  std::uint8_t version = kEntryVersion;
  std::uint64_t seq = 0;
  Hash prev{};
  std::string_view time, principal, purpose, operation, subject_id, outcome;
  std::span<const std::uint8_t> subject_list;  // version 1: the encoded subject_ids list; see list_items()
  std::uint32_t subject_count = 0;             // version 2
  Hash subject_root{};                         // version 2
};

// Returns false (with `why`) if the bytes are not a well-formed entry.
bool parse_view(std::span<const std::uint8_t> bytes, EntryView& out, const char** why);

// The items of an encoded list that parse_view has already checked.
std::vector<std::string_view> list_items(std::span<const std::uint8_t> list);

// Rewrites an encoded entry's time in place; `time` must be as long as the
// time it replaces (RFC 3339 with microseconds always is).
void set_time(std::span<std::uint8_t> bytes, std::string_view time);

// Rewrites an encoded entry's sequence number and previous-leaf hash in
// place (both are fixed-width: encode(e) with e.seq and e.prev changed).
void set_position(std::span<std::uint8_t> bytes, std::uint64_t seq, const Hash& prev);

// What an entry may hold (FORMAT.md §1.4). Entries carry names, ids and
// codes; a value that is not one is recorded in its place as
//   invalid_<what>:len=<byte length>:sha256=<first 8 bytes of its SHA-256, 16 hex>
// bounded and free of the value, yet an auditor holding the value can match it.
std::string invalid_value(std::string_view what, std::string_view value);
// Whether `text` is exactly invalid_value(what, <some value>): a value
// already replaced is recorded as it is, not replaced again.
bool is_invalid_value(std::string_view what, std::string_view text);
// Exactly 32 lowercase hex digits (a 16-byte subject id).
bool is_subject_id(std::string_view text);
// 1-64 characters of [A-Za-z0-9._-] (empty is "no request" and allowed by callers).
bool is_request_id(std::string_view text);
// A name, role, token id, purpose or field name: at most kMaxLabelBytes
// bytes, no control characters (so no newline can fake a line in a dump).
inline constexpr std::size_t kMaxLabelBytes = 128;
bool is_label(std::string_view text);

// One JSON object, for people and for the API.
std::string to_json(const Entry& entry);

}  // namespace custos::auditfmt
