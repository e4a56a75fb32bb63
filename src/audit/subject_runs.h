// src/audit/subject_runs.h — which audit entries name a subject, from audit
// migration 8 on (private to src/audit).
//
// An entry names a subject as its subject_id, in a version-1 list, or among
// the subjects a version-2 entry commits to. The index was a row per
// (subject, entry): a random insert into a B-tree for every entry, which cost
// the fold as much CPU as everything else it does together (issue 16). For
// the entries from `first_seq` on (audit_subject_runs_start: the first block
// boundary at or after the log's size when migration 8 ran, 0 for a log
// created since) it is sorted runs instead, each written once, in sequence:
//   audit_block_subjects  one row per completed block not yet in a run: the
//                         block's refs, sorted;
//   audit_subject_runs    one run per `blocks_per_run` consecutive completed
//                         blocks, merged when the last of them completes: its
//                         refs sorted, kChunkRefs to a row, each row keyed by
//                         (the run's first block, the chunk's first ref).
// A ref is 24 bytes: the subject id's 16 bytes, then the entry's sequence
// number (8 bytes, big-endian), so byte order is (subject, seq) order and a
// subject's refs in a run are one seek away. The open block is not indexed:
// a query reads its entries. Entries below first_seq keep their rows in
// audit_subject_index (AuditLog::index_subjects).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <span>
#include <string_view>

#include "custos/store/store.h"
#include "custos_audit/entry.h"

namespace custos::audit::detail {

inline constexpr std::size_t kRefBytes = 24;
// 4,080 bytes of refs: a chunk fills about one 4 KiB page.
inline constexpr std::size_t kChunkRefs = 170;

// Where the runs begin: the first sequence number they index.
std::uint64_t subject_runs_start(store::Transaction& tx);

// The open run as a transaction has left it: its first block and how many
// of its blocks have rows. Unknown (first_block < 0) until the transaction's
// first index_block_subjects reads it; from then on kept here, so a fold
// that completes hundreds of blocks reads it once, not once per block (a
// round trip each on PostgreSQL). Only valid inside that transaction.
struct OpenRun {
  std::int64_t first_block = -1;
  std::int64_t blocks = 0;
};

// Block `block` completed; `entries` are its entries' views, in order. Stores
// the block's refs, and when the block ends a run of `blocks_per_run` blocks
// (counted from the open run's first block, audit_subject_runs_start), merges
// them into one run. Throws Error(integrity) if a block of the open run has
// no row. With `known`, the open run is read from the store only while it is
// unknown there, and kept up to date in it.
void index_block_subjects(store::Transaction& tx, std::uint64_t block, std::span<const auditfmt::EntryView> entries,
                          std::uint64_t blocks_per_run, OpenRun* known = nullptr);

// Calls fn(seq), in increasing order, for each entry of a completed block at
// or after `from_seq` that names `subject_id`, until fn returns false.
// Returns false if fn stopped it. Only entries from subject_runs_start() on
// are found. Throws Error(integrity) on a malformed stored run.
bool find_subject_in_runs(store::Transaction& tx, std::string_view subject_id, std::uint64_t from_seq,
                          const std::function<bool(std::uint64_t seq)>& fn);

}  // namespace custos::audit::detail
