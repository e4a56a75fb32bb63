// src/audit/block_codec.h — how a completed block's entries are stored in
// its row (audit_entry_blocks.entries; private to src/audit).
//
// The Merkle leaves hash each entry's canonical bytes (custos_audit/entry.h,
// audit/FORMAT.md §1.1), so a block row must give them back exactly; it need
// not hold them as they are. Within a block most of an entry repeats the
// entry before it (principal, role, token, purpose, operation, field lists,
// outcome, node), its sequence number follows from its place, its time is
// a few microseconds after the previous one, and its ids are hex. The
// compact row stores what differs:
//
//   row      := 0x01  varint(block)  entry × 64
//   entry    := u8 version  time  segment × 14  hash prev
//   time     := varint(0) varint(n) n bytes          the text as it is, or
//               varint(1 + zigzag(µs − previous µs))  a canonical RFC 3339
//                                                    time (format_time_us,
//                                                    years 0000-9999)
//   segment  := varint(0)                  the previous entry's same field
//             | varint(2n + 1) n bytes     these n bytes
//             | varint(2k) k bytes         2k lowercase hex digits (k >= 1)
// The segments are fields 3–16 in order: a text field's bytes (its length
// prefix is implied), a list's canonical bytes whole, and a version-2
// entry's subject commitment (count and root, 36 bytes). "Previous µs" is
// the last canonical time before it in the block (0 for the first).
// Sequence numbers are block · 64 + place; the row names its block, so a row
// stored under another block's number is damage, not entries to serve.
//
// Rows written before this format (audit migration 7 up to this release)
// are the entries' canonical bytes, each preceded by its length (4 bytes,
// big-endian); an entry is at most 64 KiB, so such a row begins with 0x00.
// Both are read; only the compact one is written.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "custos/error.h"

namespace custos::audit::detail {

// The row of block `block` holding `entries` (its kBlockEntries entries'
// canonical bytes, in order). Throws Error(integrity) if one is malformed.
std::vector<std::uint8_t> encode_block(std::uint64_t block, std::span<const std::span<const std::uint8_t>> entries);

// A block row's entries, in either format. The constructor reads the whole
// row once, checking it, without making any entry's bytes; an entry's
// canonical bytes are made when first asked for (a query that wants one
// entry of a block pays for that one) and stay valid while this object
// lives (a move keeps them).
class BlockEntries {
 public:
  // Throws Error(integrity) if the row is malformed, holds other than
  // kBlockEntries entries, or belongs to another block; never reads past
  // its end.
  BlockEntries(std::uint64_t block, std::span<const std::uint8_t> row);

  // The canonical bytes of the entry at `place` (< kBlockEntries).
  std::span<const std::uint8_t> operator[](std::size_t place);

 private:
  // Bytes of the row: `size` bytes from `at`; if `hex`, packing 2 * size
  // lowercase hex digits.
  struct Source {
    std::uint32_t at = 0;
    std::uint32_t size : 31 = 0;
    std::uint32_t hex : 1 = 0;
  };
  // Where an entry of a compact row is, and where its bytes go.
  struct Place {
    std::uint8_t version = 0;
    bool raw_time = false;
    std::int64_t us = 0;  // its time, unless raw
    Source time;          // its time's text, if raw
    std::array<Source, 14> segments;
    std::uint32_t prev = 0;                  // its previous-leaf hash
    std::uint32_t out_at = 0, out_size = 0;  // its bytes in out_
  };
  void read_compact();
  void make(const Place& p, std::uint64_t seq, std::uint8_t* out);

  std::uint64_t block_;
  std::vector<std::uint8_t> row_;
  std::vector<std::span<const std::uint8_t>> length_prefixed_;  // the earlier format's entries, in row_
  std::vector<Place> places_;                                   // the compact format's
  std::unique_ptr<std::uint8_t[]> out_;
  std::uint64_t made_ = 0;  // bit i: entry i is in out_
  // The last time formatted whole, and its second: entries of one second
  // differ in their six fraction digits only.
  std::int64_t formatted_second_ = 0;
  std::array<char, 27> formatted_{};
  bool have_formatted_ = false;
};

// The Error(integrity) for a damaged row of block `block`.
Error malformed_block(std::uint64_t block, const char* why);

}  // namespace custos::audit::detail
