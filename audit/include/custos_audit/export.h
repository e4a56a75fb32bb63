// custos_audit/export.h — the self-contained audit export (FORMAT.md §3).
//
//   "custos-audit-export 1\n"
//   one line of JSON: the header (origin, key name, public-key fingerprint,
//   first sequence number, entry and checkpoint counts, creation time)
//   records: 1 type byte ('C' checkpoint note, 'E' canonical entry, 'S' the
//            subject openings of the 'E' before it), u32 big-endian length, payload
//   'Z' and u32 0: the end (a missing end marker means truncation)
//
// Writers emit every checkpoint first, then the entries in order, so a
// verifier knows each signed size before the entries reach it.
#pragma once

#include <cstdint>
#include <functional>
#include <istream>
#include <ostream>
#include <span>
#include <string>
#include <string_view>

#include "custos_audit/merkle.h"

namespace custos::auditfmt {

inline constexpr std::string_view kExportMagic = "custos-audit-export 1\n";
// The header line is read only this far before it is parsed (FORMAT.md §3).
inline constexpr std::size_t kMaxHeaderBytes = std::size_t{64} << 10;

struct ExportHeader {
  std::string origin;
  std::string key_name;
  std::string public_key_fingerprint;
  std::uint64_t first_seq = 0;
  std::uint64_t entry_count = 0;
  std::uint64_t checkpoint_count = 0;
  std::string created;
};

class ExportWriter {
 public:
  ExportWriter(std::ostream& out, const ExportHeader& header);
  void add_checkpoint(std::string_view note);
  void add_entry(std::span<const std::uint8_t> canonical_entry);
  // The openings (subjects.h) of the entry just added, which commits to its subjects.
  void add_openings(std::span<const std::uint8_t> openings);
  void finish();

 private:
  void record(char type, const void* data, std::size_t size);
  std::ostream& out_;
};

// Streams an export: the header, then each record. Returns false with `error`
// set on a malformed or truncated file. Callbacks return false to stop early;
// the spans they get are valid only during the call. Memory is bounded
// whatever the input: the header line is refused past kMaxHeaderBytes before
// it is parsed, a record past kMaxEntryBytes before its payload is read, and
// nothing is reserved from a count the file states.
struct ExportVisitor {
  std::function<bool(const ExportHeader&)> on_header;
  std::function<bool(std::string_view note)> on_checkpoint;
  std::function<bool(std::span<const std::uint8_t> entry)> on_entry;
  std::function<bool(std::span<const std::uint8_t> openings)> on_openings;  // absent: 'S' records are skipped
  // Given instead of on_entry: each entry arrives with its leaf hash
  // (leaf_hash(entry), merkle.h), computed ahead on a helper thread while
  // this thread reads and visits the records before it. Records are still
  // visited one at a time, in file order, and every error is reported at the
  // record where it occurs, as with on_entry. Memory: two 1 MiB batches.
  std::function<bool(std::span<const std::uint8_t> entry, const Hash& leaf)> on_hashed_entry;
};
bool read_export(std::istream& in, const ExportVisitor& visitor, std::string& error);

}  // namespace custos::auditfmt
