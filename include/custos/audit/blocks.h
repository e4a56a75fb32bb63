// custos/audit/blocks.h — how the audit log stores its entries in blocks.
//
// Entries are grouped in blocks of kBlockEntries consecutive entries (a
// block is the perfect subtree of level kBlockLevel). Every entry keeps its
// row (canonical bytes, leaf hash); per completed block the log writes one
// posting per distinct principal, purpose and operation (a bitmask of the
// block's entries) and the block's time range, instead of four secondary
// indexes on every entry; and it stores only subtree hashes of level >=
// kBlockLevel, hashing lower ones again from a block's leaves for a proof.
// See docs/architecture.md, "Blocks"; migration 10 converts older stores.
#pragma once

#include <cstdint>
#include <optional>
#include <utility>

#include "custos/store/store.h"

namespace custos::audit {

// Migration 10 (src/store/migrations.cpp) spells out 64 too.
inline constexpr unsigned kBlockLevel = 6;
inline constexpr std::uint64_t kBlockEntries = std::uint64_t{1} << kBlockLevel;

// The smallest and the largest sequence number of the audit entries timed
// in [from_us, to_us), inside the caller's transaction; nullopt if none is.
// Entry times need not rise with the sequence (a write's entry can precede
// the entries of earlier reads): every entry in the window lies between the two.
std::optional<std::pair<std::uint64_t, std::uint64_t>> seq_range_at(store::Transaction& tx, std::int64_t from_us,
                                                                     std::int64_t to_us);

}  // namespace custos::audit
