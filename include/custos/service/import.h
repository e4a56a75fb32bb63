// custos/service/import.h — bulk import of customers from NDJSON, and its
// options and report (Service::import_ndjson).
//
// One customer per line:
//   {"fields": {...}, "on_conflict": "merge"?,
//    "consents": [{"purpose", "channel", "event", "at", "source"?, "expires_at"?,
//                  "lawful_basis"?, "notice_version"?, "evidence"? (object)}],
//    "orders": [{"amount_minor", "currency", "at"}],
//    "touchpoints": [{"channel", "type", "at", "notes"?}]}
// Every item needs its time `at`: a re-import recognises what it already
// holds by it (so nothing is added twice), and it is a consent's evidence.
// Each line succeeds or fails alone (all of it or none of it). Lines are
// committed in chunks; each commit also records the import's checkpoint
// (the last line committed) and one audit entry naming the chunk's subjects
// (entry version 2 commitments), so an import killed at any point resumes
// from its checkpoint with no line applied twice and none missed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace custos::service {

// The import text a chunk holds before it is committed, whatever its lines.
inline constexpr std::size_t kImportChunkBytes = std::size_t{8} << 20;

struct ImportOptions {
  // The resume key: 1-80 characters of [A-Za-z0-9._:-] (the CLI uses
  // "sha256:" + the file's hash). Empty: a fresh random id (reported).
  // A known id resumes after its checkpoint; only its own principal may.
  std::string import_id;
  // For lines without their own: reject (default) | merge | create. An
  // external_id naming one active subject always applies the line to it.
  std::string on_conflict = "reject";
  // Lines per transaction (1-1000). A chunk is also committed once its
  // lines add up to kImportChunkBytes, so memory stays bounded whatever the
  // lines' sizes. 1000 rather than 500: each commit re-encrypts the pages
  // the chunk shares (indexes, the audit tail) once, and the service import
  // ran 20-35 % faster (docs/performance.md, bulk import).
  std::size_t chunk_lines = 1000;
  std::uint64_t max_bytes = std::uint64_t{1} << 30;  // the whole import; above: payload_too_large
  std::size_t max_line_bytes = std::size_t{1} << 20;  // one line; above: that line's error
  std::size_t max_listed_errors = 10000;          // errors listed in the report (all go to on_error)
};

struct ImportProgress {
  std::uint64_t lines = 0;      // lines read so far (blank ones included)
  std::uint64_t bytes = 0;      // bytes read so far
  std::uint64_t succeeded = 0;  // this run and earlier runs of the same import
  std::uint64_t failed = 0;
  std::uint64_t resumed_after = 0;  // lines an earlier run had committed (skipped)
};

struct ImportObserver {
  // After each committed chunk (progress bars).
  std::function<void(const ImportProgress&)> on_chunk;
  // Every failed line of the import, earlier runs included, in line order,
  // once the import is done. `detail` never holds a personal value.
  std::function<void(std::uint64_t line, const std::string& code, const std::string& detail)> on_error;
};

// Pulls up to `capacity` bytes of the NDJSON body into `buffer`; returns 0
// at the end. May throw (a vanished client, a read timeout): the import then
// stops, keeping what was committed.
using ImportReader = std::function<std::size_t(char* buffer, std::size_t capacity)>;

}  // namespace custos::service
