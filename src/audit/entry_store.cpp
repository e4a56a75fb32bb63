// Where the audit log keeps its entries: entry_store.h.
#include "entry_store.h"

#include <algorithm>
#include <limits>
#include <string>
#include <tuple>

#include "custos/audit/audit_log.h"
#include "custos/error.h"
#include "block_codec.h"
#include "subject_runs.h"

namespace custos::audit::detail {
namespace {

using store::Row;
using store::Transaction;

// A completed block's postings (one per distinct principal, purpose and
// operation, with a bit per entry that has it) and time range.
struct BlockSummary {
  std::vector<std::tuple<int, std::string, std::uint64_t>> postings;  // kind, value, bitmask
  std::int64_t min_at = std::numeric_limits<std::int64_t>::max();
  std::int64_t max_at = std::numeric_limits<std::int64_t>::min();

  void add(std::uint64_t seq, const auditfmt::EntryView& v) {
    const std::uint64_t bit = std::uint64_t{1} << (seq % kBlockEntries);
    const std::int64_t at_us = parse_time_us(v.time).value_or(0);
    min_at = std::min(min_at, at_us);
    max_at = std::max(max_at, at_us);
    post(kPostPrincipal, v.principal, bit);
    post(kPostPurpose, v.purpose, bit);
    post(kPostOperation, v.operation, bit);
  }
  void post(int kind, std::string_view value, std::uint64_t bit) {
    for (auto& [k, val, mask] : postings)
      if (k == kind && val == value) {
        mask |= bit;
        return;
      }
    postings.emplace_back(kind, std::string(value), bit);
  }
};

}  // namespace

EntryReader::EntryReader(Transaction& tx) : tx_(tx) {
  tx_.exec("SELECT (SELECT min(block) FROM audit_entry_blocks), (SELECT max(block) FROM audit_entry_blocks),"
           " (SELECT max(seq) FROM audit_entries), (SELECT leaf FROM audit_entries ORDER BY seq DESC LIMIT 1)",
           {}, [&](const Row& r) {
             if (!r.is_null(0) && !r.is_null(1)) {
               blocks_begin_ = static_cast<std::uint64_t>(r.integer(0)) * kBlockEntries;
               blocks_end_ = (static_cast<std::uint64_t>(r.integer(1)) + 1) * kBlockEntries;
             }
             if (!r.is_null(2) && !r.is_null(3)) {
               last_row_ = static_cast<std::uint64_t>(r.integer(2));
               const store::Blob leaf = r.blob(3);
               if (leaf.size() != last_row_leaf_.size())
                 throw Error(ErrorCode::integrity, "audit log: stored hash has the wrong length");
               std::copy(leaf.begin(), leaf.end(), last_row_leaf_.begin());
             }
           });
  size_ = std::max(blocks_end_, last_row_ ? *last_row_ + 1 : 0);
}

void EntryReader::load_block(std::uint64_t block) {
  if (cached_block_ == block) return;
  cached_block_ = ~std::uint64_t{0};
  cached_.reset();
  bool found = false;
  tx_.exec("SELECT entries FROM audit_entry_blocks WHERE block = ?", {static_cast<std::int64_t>(block)},
           [&](const Row& r) {
             cached_.emplace(block, r.blob(0));
             found = true;
           });
  // Every block between the first and the last block row has one.
  if (!found) throw malformed_block(block, "its row is missing");
  cached_block_ = block;
}

void EntryReader::range(std::uint64_t first, std::uint64_t last, const Visit& fn) {
  last = std::min(last, size_);
  const auto rows = [&](std::uint64_t from, std::uint64_t to) {
    if (from >= to) return true;
    bool go = true;
    // Paged, so a caller that stops early does not read the rest.
    constexpr std::int64_t kPage = 1024;
    for (std::uint64_t next = from; go && next < to;) {
      std::int64_t got = 0;
      tx_.exec("SELECT seq, entry FROM audit_entries WHERE seq >= ? AND seq < ? ORDER BY seq LIMIT ?",
               {static_cast<std::int64_t>(next), static_cast<std::int64_t>(to), kPage}, [&](const Row& r) {
                 ++got;
                 if (!go) return;
                 next = static_cast<std::uint64_t>(r.integer(0)) + 1;
                 go = fn(next - 1, r.blob(1));
               });
      if (got < kPage) break;
    }
    return go;
  };
  if (!rows(first, std::min(last, blocks_begin_ < blocks_end_ ? blocks_begin_ : last))) return;
  if (blocks_begin_ < blocks_end_) {
    for (std::uint64_t seq = std::max(first, blocks_begin_); seq < std::min(last, blocks_end_);) {
      const std::uint64_t block = seq / kBlockEntries;
      load_block(block);
      for (; seq < std::min(last, (block + 1) * kBlockEntries); ++seq)
        if (!fn(seq, (*cached_)[seq % kBlockEntries])) return;
    }
    rows(std::max(first, blocks_end_), last);
  }
}

std::optional<std::span<const std::uint8_t>> EntryReader::at(std::uint64_t seq) {
  if (seq >= size_) return std::nullopt;
  if (in_blocks(seq)) {
    load_block(seq / kBlockEntries);
    return (*cached_)[seq % kBlockEntries];
  }
  bool found = false;
  tx_.exec("SELECT entry FROM audit_entries WHERE seq = ?", {static_cast<std::int64_t>(seq)}, [&](const Row& r) {
    const store::Blob b = r.blob(0);
    row_.assign(b.begin(), b.end());
    found = true;
  });
  if (!found) return std::nullopt;
  return std::span<const std::uint8_t>(row_);
}

std::optional<auditfmt::Hash> EntryReader::last_leaf() {
  if (size_ == 0) return std::nullopt;
  if (last_row_ && *last_row_ + 1 == size_) return last_row_leaf_;
  const auto e = at(size_ - 1);
  if (!e) throw Error(ErrorCode::integrity, "audit log: entry " + std::to_string(size_ - 1) + " is missing");
  return auditfmt::leaf_hash(*e);
}

void write_entry_row(Transaction& tx, std::uint64_t seq, const auditfmt::EntryView& v, std::int64_t at_us,
                     std::span<const std::uint8_t> bytes, std::span<const std::uint8_t> leaf) {
  tx.exec_deferred(
      "INSERT INTO audit_entries (seq, at, principal, purpose, operation, subject_id, outcome, entry, leaf)"
      " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
      {static_cast<std::int64_t>(seq), at_us, v.principal, v.purpose, v.operation, v.subject_id, v.outcome,
       store::Blob(bytes), store::Blob(leaf)});
}

void complete_block(Transaction& tx, std::uint64_t block, std::span<const std::span<const std::uint8_t>> tail,
                    const SubjectRunsAt& runs) {
  const std::uint64_t first = block * kBlockEntries;
  const std::uint64_t with_rows = kBlockEntries - tail.size();  // entries with rows, first to first + with_rows
  std::vector<std::vector<std::uint8_t>> stored;
  stored.reserve(with_rows);
  if (with_rows > 0) {
    tx.exec("SELECT seq, entry FROM audit_entries WHERE seq >= ? AND seq < ? ORDER BY seq",
            {static_cast<std::int64_t>(first), static_cast<std::int64_t>(first + with_rows)}, [&](const Row& r) {
              if (static_cast<std::uint64_t>(r.integer(0)) != first + stored.size())
                throw malformed_block(block, "an entry row is missing");
              stored.push_back(r.blob_copy(1));
            });
    if (stored.size() != with_rows) throw malformed_block(block, "an entry row is missing");
  }
  std::vector<std::span<const std::uint8_t>> entries(stored.begin(), stored.end());
  entries.insert(entries.end(), tail.begin(), tail.end());
  BlockSummary summary;
  std::vector<auditfmt::EntryView> views(entries.size());
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const char* why = nullptr;
    if (!auditfmt::parse_view(entries[i], views[i], &why)) throw malformed_block(block, why);
    if (views[i].seq != first + i) throw malformed_block(block, "an entry is out of place");
    summary.add(first + i, views[i]);
  }
  // Deferred: nothing reads their outcome, so on PostgreSQL they travel
  // with the transaction's next statement instead of a round trip each (a
  // fold completes a block every 64 entries).
  const auto b = static_cast<std::int64_t>(block);
  tx.exec_deferred("INSERT INTO audit_entry_blocks (block, entries) VALUES (?, ?)", {b, encode_block(block, entries)});
  if (with_rows > 0)
    tx.exec_deferred("DELETE FROM audit_entries WHERE seq >= ? AND seq < ?",
                     {static_cast<std::int64_t>(first), static_cast<std::int64_t>(first + with_rows)});
  tx.exec_deferred("INSERT INTO audit_blocks (block, min_at, max_at) VALUES (?, ?, ?)", {b, summary.min_at, summary.max_at});
  for (const auto& [kind, value, mask] : summary.postings)
    tx.exec_deferred("INSERT INTO audit_postings (kind, value, block, mask) VALUES (?, ?, ?, ?)",
                     {kind, value, b, static_cast<std::int64_t>(mask)});
  if (block >= runs.first_block) index_block_subjects(tx, block, views, runs.blocks_per_run, runs.known);
}

}  // namespace custos::audit::detail
