// custos/audit/blocks.h — how the audit log stores its entries in blocks.
//
// Entries are grouped in blocks of kBlockEntries consecutive entries (a
// block is the perfect subtree of level kBlockLevel). A completed block is
// stored as one row of its entries, compacted (audit_entry_blocks;
// src/audit/block_codec.h);
// the open block's entries, and those of blocks completed before that table
// existed, have a row each (audit_entries; src/audit/entry_store.h). Per
// completed block the log writes one posting per distinct principal,
// purpose and operation (a bitmask of the block's entries) and the block's
// time range, instead of four secondary indexes on every entry; and it
// stores only subtree hashes of level >= kBlockLevel, hashing lower ones
// again from a block's entries for a proof. See docs/architecture.md,
// "Blocks"; audit migrations 6 and 7.
#pragma once

#include <cstdint>
#include <optional>
#include <utility>

#include "custos/store/store.h"

namespace custos::audit {

// Audit migration 6 (src/audit/audit_tables.cpp) spells out 64 too.
inline constexpr unsigned kBlockLevel = 6;
inline constexpr std::uint64_t kBlockEntries = std::uint64_t{1} << kBlockLevel;

// The smallest and the largest sequence number of the audit entries timed
// in [from_us, to_us), inside the caller's transaction; nullopt if none is.
// Entry times need not rise with the sequence (a write's entry can precede
// the entries of earlier reads): every entry in the window lies between the two.
std::optional<std::pair<std::uint64_t, std::uint64_t>> seq_range_at(store::Transaction& tx, std::int64_t from_us,
                                                                     std::int64_t to_us);

}  // namespace custos::audit
