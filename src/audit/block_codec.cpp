// How a completed block's entries are stored in its row: block_codec.h.
#include "block_codec.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

#include "custos/audit/audit_log.h"
#include "custos/audit/blocks.h"
#include "custos/error.h"
#include "custos_audit/entry.h"

namespace custos::audit::detail {
namespace {

constexpr std::uint8_t kCompactRow = 0x01;
constexpr std::size_t kSegments = 14;  // fields 3-16 of the canonical entry
constexpr std::size_t kHashBytes = 32;
constexpr std::size_t kCommitmentBytes = 4 + kHashBytes;  // a version-2 entry's field 16

// Segments 0-5 (fields 3-8) and 8-12 (fields 11-15) are text: stored
// without their length prefix, and hex-packed where they are hex.
constexpr bool is_text(std::size_t segment) { return segment <= 5 || (segment >= 8 && segment <= 12); }

using Bytes = std::span<const std::uint8_t>;

std::uint32_t be32(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | p[3];
}
void put_be32(std::uint8_t* p, std::size_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<std::uint8_t>(v >> (24 - 8 * i));
}
// Differences of two times, wrapping: exact for every pair of int64 values.
std::uint64_t zigzag(std::uint64_t delta) {
  return (delta << 1) ^ static_cast<std::uint64_t>(static_cast<std::int64_t>(delta) >> 63);
}
std::uint64_t unzigzag(std::uint64_t z) { return (z >> 1) ^ (~(z & 1) + 1); }

// What each byte is as a lowercase hex digit; kNotHex for any other byte.
constexpr std::uint8_t kNotHex = 0xff;
constexpr std::array<std::uint8_t, 256> kNibble = [] {
  std::array<std::uint8_t, 256> t{};
  t.fill(kNotHex);
  for (int c = '0'; c <= '9'; ++c) t[static_cast<std::size_t>(c)] = static_cast<std::uint8_t>(c - '0');
  for (int c = 'a'; c <= 'f'; ++c) t[static_cast<std::size_t>(c)] = static_cast<std::uint8_t>(c - 'a' + 10);
  return t;
}();

// Writes a row into a buffer sized once for its worst case, so that no byte
// pays for a growth check (the fold encodes every entry it places; byte-wise
// push_back was a sixth of the SQLCipher fold's CPU).
class RowWriter {
 public:
  explicit RowWriter(std::size_t capacity) : out_(capacity), at_(out_.data()) {}
  void u8(std::uint8_t v) { *at_++ = v; }
  void varint(std::uint64_t v) {
    for (; v >= 0x80; v >>= 7) *at_++ = static_cast<std::uint8_t>(v | 0x80);
    *at_++ = static_cast<std::uint8_t>(v);
  }
  void bytes(Bytes b) {
    if (!b.empty()) std::memcpy(at_, b.data(), b.size());
    at_ += b.size();
  }
  // Writes `b` as a hex segment (varint(2k), k bytes) if it is 2k >= 2
  // lowercase hex digits; otherwise writes nothing and returns false.
  bool hex_segment(Bytes b) {
    if (b.empty() || b.size() % 2) return false;
    std::uint8_t* const start = at_;
    varint(b.size());
    std::uint8_t seen = 0;  // OR of every nibble: above 15 iff one was no digit
    for (std::size_t k = 0; k < b.size(); k += 2) {
      const std::uint8_t hi = kNibble[b[k]], lo = kNibble[b[k + 1]];
      seen |= hi | lo;
      *at_++ = static_cast<std::uint8_t>(hi << 4 | (lo & 0x0f));
    }
    if (seen > 0x0f) {
      at_ = start;
      return false;
    }
    return true;
  }
  std::vector<std::uint8_t> finish() && {
    out_.resize(static_cast<std::size_t>(at_ - out_.data()));
    return std::move(out_);
  }

 private:
  std::vector<std::uint8_t> out_;
  std::uint8_t* at_;
};
// Bytes a compact entry may take beyond its canonical bytes: its time's two
// varints and a varint per segment, each at most 10 bytes, and its version.
constexpr std::size_t kEntryOverhead = 1 + 2 * 10 + kSegments * 10;

// Bounds-checked reads of a canonical entry or a row.
class Cursor {
 public:
  explicit Cursor(Bytes b) : b_(b) {}
  bool take(std::size_t n, Bytes& out) {
    if (n > b_.size() - at_) return false;
    out = b_.subspan(at_, n);
    at_ += n;
    return true;
  }
  bool u8(std::uint8_t& v) {
    if (at_ == b_.size()) return false;
    v = b_[at_++];
    return true;
  }
  bool varint(std::uint64_t& v) {
    v = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
      std::uint8_t byte;
      if (!u8(byte)) return false;
      v |= std::uint64_t{byte & 0x7fu} << shift;
      if (!(byte & 0x80)) return true;
    }
    return false;
  }
  bool text(Bytes& content) {  // a canonical str: u32 length, bytes
    Bytes len;
    return take(4, len) && take(be32(len.data()), content);
  }
  bool list(Bytes& whole) {  // a canonical list: u32 count, str each
    const std::size_t from = at_;
    Bytes count, item;
    if (!take(4, count)) return false;
    for (std::uint32_t i = be32(count.data()); i > 0; --i)
      if (!text(item)) return false;
    whole = b_.subspan(from, at_ - from);
    return true;
  }
  bool done() const { return at_ == b_.size(); }

 private:
  Bytes b_;
  std::size_t at_ = 0;
};

// A canonical entry cut into what a compact row stores (spans into it).
struct Cut {
  std::uint8_t version = 0;
  std::uint64_t seq = 0;
  Bytes time;
  std::array<Bytes, kSegments> segments;
  Bytes prev;
};

bool cut(Bytes entry, Cut& c) {
  Cursor r(entry);
  Bytes seq;
  if (!r.u8(c.version) || (c.version != auditfmt::kEntryVersion && c.version != auditfmt::kEntryVersionCommitted) ||
      !r.take(8, seq) || !r.text(c.time))
    return false;
  c.seq = std::uint64_t{be32(seq.data())} << 32 | be32(seq.data() + 4);
  for (std::size_t s = 0; s < kSegments; ++s) {
    const bool ok = is_text(s)                                         ? r.text(c.segments[s])
                    : s < 13 || c.version == auditfmt::kEntryVersion ? r.list(c.segments[s])
                                                                       : r.take(kCommitmentBytes, c.segments[s]);
    if (!ok) return false;
  }
  return r.take(kHashBytes, c.prev) && r.done();
}

bool same(Bytes a, Bytes b) { return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size()) == 0); }

// Times the compact form carries: those format_time_us writes with a
// four-digit year (0000-01-01 to 9999-12-31), each 27 bytes.
constexpr std::int64_t kFirstUs = -62167219200LL * 1000000, kEndUs = 253402300800LL * 1000000;
constexpr std::size_t kTimeBytes = 27;

std::int64_t second_of(std::int64_t us) { return us >= 0 ? us / 1000000 : -((-us + 999999) / 1000000); }

// The µs of a time the compact form can carry: one that format_time_us
// writes exactly so (the row keeps only the µs). Entries of one second share
// their first 20 bytes ("YYYY-MM-DDTHH:MM:SS."), so a time whose 20 bytes
// were already found canonical and whose rest is six digits and "Z" is not
// formatted again to be compared.
class CanonicalTimes {
 public:
  std::optional<std::int64_t> canonical(Bytes time) {
    const std::string_view text(reinterpret_cast<const char*>(time.data()), time.size());
    const auto us = parse_time_us(text);
    if (!us) return std::nullopt;
    if (have_ && text.size() == kTimeBytes && text.compare(0, kPrefix, prefix_.data(), kPrefix) == 0 && text[26] == 'Z' &&
        std::all_of(text.begin() + kPrefix, text.begin() + 26, [](char d) { return d >= '0' && d <= '9'; }))
      return us;
    if (format_time_us(*us) != text) return std::nullopt;
    if (text.size() == kTimeBytes) {
      std::memcpy(prefix_.data(), text.data(), kPrefix);
      have_ = true;
    }
    return us;
  }

 private:
  static constexpr std::size_t kPrefix = 20;
  std::array<char, kPrefix> prefix_{};
  bool have_ = false;
};

}  // namespace

Error malformed_block(std::uint64_t block, const char* why) {
  return Error(ErrorCode::integrity, "audit log: stored block " + std::to_string(block) + " is malformed (" + why + ")");
}

std::vector<std::uint8_t> encode_block(std::uint64_t block, std::span<const std::span<const std::uint8_t>> entries) {
  if (entries.size() != kBlockEntries) throw malformed_block(block, "not a whole block");
  std::size_t capacity = 1 + 10;
  for (const Bytes e : entries) capacity += e.size() + kEntryOverhead;
  RowWriter out(capacity);
  out.u8(kCompactRow);
  out.varint(block);
  Cut previous;
  std::uint64_t previous_us = 0;
  CanonicalTimes times;
  for (std::size_t i = 0; i < kBlockEntries; ++i) {
    Cut c;
    if (!cut(entries[i], c)) throw malformed_block(block, "an entry is malformed");
    if (c.seq != block * kBlockEntries + i) throw malformed_block(block, "an entry is out of place");
    out.u8(c.version);
    if (const auto us = times.canonical(c.time)) {
      out.varint(1 + zigzag(static_cast<std::uint64_t>(*us) - previous_us));
      previous_us = static_cast<std::uint64_t>(*us);
    } else {
      out.varint(0);
      out.varint(c.time.size());
      out.bytes(c.time);
    }
    for (std::size_t s = 0; s < kSegments; ++s) {
      const Bytes v = c.segments[s];
      if (i > 0 && same(v, previous.segments[s])) {
        out.varint(0);
      } else if (!is_text(s) || !out.hex_segment(v)) {
        out.varint(2 * std::uint64_t{v.size()} + 1);
        out.bytes(v);
      }
    }
    out.bytes(c.prev);
    previous = c;
  }
  return std::move(out).finish();
}

BlockEntries::BlockEntries(std::uint64_t block, std::span<const std::uint8_t> row)
    : block_(block), row_(row.begin(), row.end()) {
  if (row_.empty()) throw malformed_block(block, "it is empty");
  if (row_[0] == kCompactRow) {
    read_compact();
    return;
  }
  if (row_[0] != 0x00) throw malformed_block(block, "its format is unknown");
  length_prefixed_.reserve(kBlockEntries);
  Cursor r(row_);
  while (!r.done()) {
    Bytes entry;
    if (length_prefixed_.size() == kBlockEntries || !r.text(entry)) throw malformed_block(block, "an entry runs past the row");
    // Each entry encodes its own position (a u8 version, then seq as a
    // big-endian u64): a row stored under another block's number is damage.
    const std::uint64_t seq =
        entry.size() < 9 ? ~std::uint64_t{0} : std::uint64_t{be32(entry.data() + 1)} << 32 | be32(entry.data() + 5);
    if (seq != block * kBlockEntries + length_prefixed_.size()) throw malformed_block(block, "an entry is out of place");
    length_prefixed_.push_back(entry);
  }
  if (length_prefixed_.size() != kBlockEntries) throw malformed_block(block, "it is short");
}

void BlockEntries::read_compact() {
  const auto fail = [this](const char* why) { return malformed_block(block_, why); };
  Cursor r(row_);
  std::uint8_t format;
  std::uint64_t stored_block = 0;
  if (!r.u8(format) || !r.varint(stored_block)) throw fail("its header is cut");
  if (stored_block != block_) throw fail("it is another block's row");
  const auto source = [&](std::size_t n, bool hex) {
    Bytes b;
    if (!r.take(n, b)) throw fail("an entry runs past the row");
    Source out;
    out.at = static_cast<std::uint32_t>(b.data() - row_.data());
    out.size = static_cast<std::uint32_t>(n) & 0x7fffffffu;
    out.hex = hex;
    return out;
  };
  places_.resize(kBlockEntries);
  std::uint64_t previous_us = 0;
  std::size_t total = 0;
  for (std::size_t i = 0; i < kBlockEntries; ++i) {
    Place& p = places_[i];
    if (!r.u8(p.version)) throw fail("an entry runs past the row");
    if (p.version != auditfmt::kEntryVersion && p.version != auditfmt::kEntryVersionCommitted)
      throw fail("an entry has an unknown version");
    std::uint64_t tag, n;
    if (!r.varint(tag)) throw fail("an entry runs past the row");
    std::size_t size = 1 + 8 + 4;
    if (tag == 0) {
      if (!r.varint(n)) throw fail("an entry runs past the row");
      p.raw_time = true;
      p.time = source(n, false);
      size += n;
    } else {
      previous_us += unzigzag(tag - 1);
      p.us = static_cast<std::int64_t>(previous_us);
      if (p.us < kFirstUs || p.us >= kEndUs) throw fail("a time is out of range");
      size += kTimeBytes;
    }
    for (std::size_t s = 0; s < kSegments; ++s) {
      if (!r.varint(tag)) throw fail("an entry runs past the row");
      if (tag == 0) {
        if (i == 0) throw fail("its first entry repeats an entry before it");
        p.segments[s] = places_[i - 1].segments[s];
      } else if (tag % 2) {
        p.segments[s] = source((tag - 1) / 2, false);
      } else {
        if (!is_text(s)) throw fail("a list is stored as hex");
        p.segments[s] = source(tag / 2, true);
      }
      size += (is_text(s) ? 4 : 0) + std::size_t{p.segments[s].size} * (p.segments[s].hex ? 2 : 1);
    }
    p.prev = source(kHashBytes, false).at;
    size += kHashBytes;
    // What the log never appends (its verifier would refuse it) is damage,
    // and bounds what "as the previous entry" can multiply.
    if (size > auditfmt::kMaxEntryBytes) throw fail("an entry is too large");
    p.out_at = static_cast<std::uint32_t>(total);
    p.out_size = static_cast<std::uint32_t>(size);
    total += size;
  }
  if (!r.done()) throw fail("bytes follow its last entry");
  out_.reset(new std::uint8_t[total]);
}

std::span<const std::uint8_t> BlockEntries::operator[](std::size_t place) {
  if (places_.empty()) return length_prefixed_.at(place);
  const Place& p = places_.at(place);
  std::uint8_t* out = out_.get() + p.out_at;
  if (!(made_ >> place & 1)) {
    make(p, block_ * kBlockEntries + place, out);
    made_ |= std::uint64_t{1} << place;
  }
  return {out, p.out_size};
}

void BlockEntries::make(const Place& p, std::uint64_t seq, std::uint8_t* out) {
  const std::uint8_t* row = row_.data();
  *out++ = p.version;
  for (int b = 0; b < 8; ++b) *out++ = static_cast<std::uint8_t>(seq >> (56 - 8 * b));
  if (p.raw_time) {
    put_be32(out, p.time.size);
    std::memcpy(out + 4, row + p.time.at, p.time.size);
    out += 4 + p.time.size;
  } else {
    const std::int64_t second = second_of(p.us);
    if (!have_formatted_ || second != formatted_second_) {
      const std::string text = format_time_us(p.us);  // 27 bytes: the year has four digits
      std::memcpy(formatted_.data(), text.data(), kTimeBytes);
      formatted_second_ = second;
      have_formatted_ = true;
    }
    put_be32(out, kTimeBytes);
    std::memcpy(out + 4, formatted_.data(), kTimeBytes);
    // "YYYY-MM-DDTHH:MM:SS.ffffffZ": the fraction is bytes 20-25.
    auto micros = static_cast<unsigned>(p.us - second * 1000000);
    for (std::size_t d = 25; d >= 20; --d, micros /= 10) out[4 + d] = static_cast<std::uint8_t>('0' + micros % 10);
    out += 4 + kTimeBytes;
  }
  static constexpr char kHex[] = "0123456789abcdef";
  for (std::size_t s = 0; s < kSegments; ++s) {
    const Source& src = p.segments[s];
    if (is_text(s)) {
      put_be32(out, std::size_t{src.size} * (src.hex ? 2 : 1));
      out += 4;
    }
    if (src.hex) {
      for (std::uint32_t k = 0; k < src.size; ++k) {
        *out++ = static_cast<std::uint8_t>(kHex[row[src.at + k] >> 4]);
        *out++ = static_cast<std::uint8_t>(kHex[row[src.at + k] & 15]);
      }
    } else {
      std::memcpy(out, row + src.at, src.size);
      out += src.size;
    }
  }
  std::memcpy(out, row + p.prev, kHashBytes);
}

}  // namespace custos::audit::detail
