// Fuzz target: the audit log's block rows (src/audit/block_codec.h), the
// bytes a completed block of 64 entries is stored as.
//
// Input: byte 0 picks the mode, byte 1 the block number (0-255):
//   even  the rest is a stored row, as someone with the database could
//         leave it (compact or the earlier length-prefixed format);
//   odd   the rest describes 64 entries (each field's length, bytes, and
//         whether it repeats the previous entry's; times as given or as
//         microseconds), which are encoded as a row and decoded back; the
//         bytes left after them are up to 8 edits (position, value) made
//         to that row, which is then decoded again.
// Invariants: decoding a row either throws Error(integrity) or gives
// exactly 64 entries; a row made from 64 well-formed entries decodes to
// exactly those bytes (the Merkle leaves hash them), as does a row made again
// from a decoded row's entries; nothing else is thrown and nothing is read
// past a row's end.
#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "../../src/audit/block_codec.h"
#include "custos/audit/audit_log.h"
#include "custos/audit/blocks.h"
#include "custos/error.h"
#include "custos_audit/entry.h"
#include "fuzz_support.h"

using namespace custos;
namespace af = custos::auditfmt;
using audit::detail::BlockEntries;

namespace {

constexpr std::uint64_t kEntries = audit::kBlockEntries;

// A row read as the log reads it: refused as damage, or 64 entries, each
// of which can then be made without a refusal (all of them, in an order the
// input picks: in place order, or from the last one back).
std::optional<BlockEntries> decode(std::uint64_t block, std::span<const std::uint8_t> row, bool backwards) {
  std::optional<BlockEntries> out;
  try {
    out.emplace(block, row);
  } catch (const Error& e) {
    FUZZ_CHECK(e.code() == ErrorCode::integrity, std::string("a row refused with another code: ") + e.what());
    return std::nullopt;
  }
  for (std::size_t k = 0; k < kEntries; ++k) {
    const auto entry = (*out)[backwards ? kEntries - 1 - k : k];
    FUZZ_CHECK(entry.size() >= 1 + 8 + 4 + 32, "an entry shorter than any entry");
  }
  return out;
}

void expect_round_trip(std::uint64_t block, const std::vector<std::vector<std::uint8_t>>& entries,
                       std::vector<std::uint8_t>* row_out) {
  std::vector<std::span<const std::uint8_t>> spans(entries.begin(), entries.end());
  const std::vector<std::uint8_t> row = audit::detail::encode_block(block, spans);
  auto back = decode(block, row, block % 2);
  FUZZ_CHECK(back.has_value(), "a row made from well-formed entries does not decode");
  for (std::size_t i = 0; i < kEntries; ++i)
    FUZZ_CHECK(std::ranges::equal((*back)[i], entries[i]),
               "entry " + std::to_string(i) + " decodes to other bytes");
  if (row_out) *row_out = row;
}

// A text field from the input: a control byte (bit 7: as the previous
// entry's; bit 6: 32 hex digits from the next 16 bytes; else up to 63 bytes).
std::string field(fuzz::InputReader& in, const std::string& previous) {
  const std::uint8_t c = in.byte();
  if (c & 0x80) return previous;
  if (c & 0x40) {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out;
    for (const char b : in.take(16)) out += {kHex[static_cast<std::uint8_t>(b) >> 4], kHex[b & 15]};
    return out;
  }
  return std::string(in.take(c & 0x3f));
}

af::Entry entry_from(fuzz::InputReader& in, std::uint64_t seq, const af::Entry& prev) {
  af::Entry e;
  const std::uint8_t flags = in.byte();
  e.version = flags & 1 ? af::kEntryVersionCommitted : af::kEntryVersion;
  e.seq = seq;
  if (flags & 2) {  // a time as the vault writes it, from microseconds
    std::int64_t us = 0;
    for (const char b : in.take(8)) us = static_cast<std::int64_t>(static_cast<std::uint64_t>(us) << 8 | static_cast<std::uint8_t>(b));
    e.time = audit::format_time_us(us);
  } else {
    e.time = field(in, prev.time);
  }
  const std::pair<std::string*, const std::string*> texts[] = {
      {&e.principal, &prev.principal}, {&e.role, &prev.role},           {&e.token_id, &prev.token_id},
      {&e.purpose, &prev.purpose},     {&e.operation, &prev.operation}, {&e.subject_id, &prev.subject_id},
      {&e.outcome, &prev.outcome},     {&e.reason, &prev.reason},       {&e.request_id, &prev.request_id},
      {&e.node_id, &prev.node_id},     {&e.detail, &prev.detail}};
  for (const auto& [mine, theirs] : texts) *mine = field(in, *theirs);
  for (int k = in.byte() % 4; k > 0; --k) e.fields.push_back(field(in, ""));
  if (flags & 4) e.masked_fields = e.fields;
  if (e.version == af::kEntryVersion) {
    for (int k = in.byte() % 3; k > 0; --k) e.subject_ids.push_back(field(in, ""));
  } else {
    e.subject_count = 1 + in.byte();
    e.subject_root.fill(in.byte());
  }
  e.prev.fill(in.byte());  // opaque to the row: one byte's worth is enough
  return e;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::InputReader in(data, size);
  const std::uint8_t mode = in.byte();
  const std::uint64_t block = in.byte();
  if (mode % 2 == 0) {
    const std::string_view row = in.rest();
    auto decoded = decode(block, {reinterpret_cast<const std::uint8_t*>(row.data()), row.size()}, mode & 2);
    if (!decoded) return 0;
    // Entries a row holds are served only if they parse; those that do,
    // in their places, make a row that gives them back.
    std::vector<std::vector<std::uint8_t>> entries;
    for (std::size_t i = 0; i < kEntries; ++i) {
      af::EntryView v;
      const char* why = nullptr;
      const auto entry = (*decoded)[i];
      if (!af::parse_view(entry, v, &why) || v.seq != block * kEntries + i) return 0;
      entries.emplace_back(entry.begin(), entry.end());
    }
    expect_round_trip(block, entries, nullptr);
    return 0;
  }
  std::vector<std::vector<std::uint8_t>> entries;
  af::Entry previous;
  for (std::uint64_t i = 0; i < kEntries; ++i) {
    previous = entry_from(in, block * kEntries + i, previous);
    entries.push_back(af::encode(previous));
  }
  std::vector<std::uint8_t> row;
  expect_round_trip(block, entries, &row);
  // The same row, damaged by up to 8 edits: refused as damage, or 64 entries.
  if (in.remaining() < 3) return 0;
  for (int k = 0; k < 8 && in.remaining() >= 3; ++k) {
    const std::size_t at = in.u16() % (row.size() + 1);
    const std::uint8_t value = in.byte();
    if (at == row.size()) {
      if (row.empty()) break;  // cut to nothing already (value % 0 was this harness's own bug)
      row.resize(value % row.size());  // cut
    } else {
      row[at] = value;
    }
  }
  (void)decode(block, row, block % 2);
  return 0;
}
