// src/audit/entry_store.h — where the audit log keeps its entries (private
// to src/audit; the layout is described in custos/audit/blocks.h).
//
// Each entry is stored in exactly one of two places:
//   audit_entry_blocks  one row per completed block of kBlockEntries entries,
//                       written whole when the block completes (block_codec.h):
//                       a fold of many entries writes a row per 64 of them;
//   audit_entries       one row per entry of the open (last, incomplete)
//                       block, and of every block completed before the store
//                       had audit_entry_blocks (migration 7 moves nothing).
// So rows lie only below the first block row or from the end of the last one
// on, and a range is read as: rows, then block rows, then rows.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "custos/audit/blocks.h"
#include "block_codec.h"
#include "custos/store/store.h"
#include "subject_runs.h"
#include "custos_audit/entry.h"
#include "custos_audit/merkle.h"

namespace custos::audit::detail {

// Kinds of posting (audit_postings.kind); the numbers are stored.
inline constexpr int kPostPrincipal = 0, kPostPurpose = 1, kPostOperation = 2;

// Reads entries wherever they are stored, inside the caller's transaction.
class EntryReader {
 public:
  // One query: where the block rows begin and end, and the last entry row.
  explicit EntryReader(store::Transaction& tx);

  // Entries stored (the next entry's sequence number).
  std::uint64_t size() const { return size_; }

  // Calls fn(seq, entry) for first <= seq < last, in sequence order, until it
  // returns false. The bytes are valid during the call only.
  using Visit = std::function<bool(std::uint64_t seq, std::span<const std::uint8_t> entry)>;
  void range(std::uint64_t first, std::uint64_t last, const Visit& fn);

  // The entry at `seq`, or nullopt. Valid until the next call on this
  // reader; neighbours in one block row cost one read of it.
  std::optional<std::span<const std::uint8_t>> at(std::uint64_t seq);

  // The last entry's leaf hash, if there is an entry: from the constructor's
  // query if the entry has a row, else hashed from its block's row.
  std::optional<auditfmt::Hash> last_leaf();

 private:
  bool in_blocks(std::uint64_t seq) const { return seq >= blocks_begin_ && seq < blocks_end_; }
  void load_block(std::uint64_t block);

  store::Transaction& tx_;
  std::uint64_t blocks_begin_ = 0, blocks_end_ = 0;  // [begin, end): in block rows
  std::optional<std::uint64_t> last_row_;            // the highest seq in audit_entries
  auditfmt::Hash last_row_leaf_{};                   // and its stored leaf
  std::uint64_t size_ = 0;
  std::uint64_t cached_block_ = ~std::uint64_t{0};
  std::optional<BlockEntries> cached_;  // block cached_block_'s entries
  std::vector<std::uint8_t> row_;  // the last entry read from a row by at()
};

// Writes the row of entry `seq` of the open block (viewed as `v`, timed
// `at_us`, leaf `leaf`).
void write_entry_row(store::Transaction& tx, std::uint64_t seq, const auditfmt::EntryView& v, std::int64_t at_us,
                     std::span<const std::uint8_t> bytes, std::span<const std::uint8_t> leaf);

// Which completed blocks index their subjects in runs (subject_runs.h): those
// from first_block on, in runs of blocks_per_run.
struct SubjectRunsAt {
  std::uint64_t first_block = 0;
  std::uint64_t blocks_per_run = 1;
  OpenRun* known = nullptr;  // the transaction's view of the open run (subject_runs.h), if it keeps one
};

// Block `block` is complete: `tail` holds its last entries, in order, that
// have no row (a fold's; the others have rows, written by earlier
// transactions or this one). Writes the block's row, removes its entry rows,
// writes its postings and time range, and indexes its subjects if `runs` says so.
void complete_block(store::Transaction& tx, std::uint64_t block, std::span<const std::span<const std::uint8_t>> tail,
                    const SubjectRunsAt& runs);

}  // namespace custos::audit::detail
