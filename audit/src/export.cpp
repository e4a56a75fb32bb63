#include "custos_audit/export.h"

#include "custos_audit/entry.h"

#include <algorithm>
#include <cstring>
#include <future>
#include <nlohmann/json.hpp>
#include <system_error>
#include <vector>

namespace custos::auditfmt {

ExportWriter::ExportWriter(std::ostream& out, const ExportHeader& h) : out_(out) {
  const nlohmann::json j = {{"origin", h.origin},
                            {"key_name", h.key_name},
                            {"public_key_fingerprint", h.public_key_fingerprint},
                            {"first_seq", h.first_seq},
                            {"entry_count", h.entry_count},
                            {"checkpoint_count", h.checkpoint_count},
                            {"created", h.created}};
  out_ << kExportMagic << j.dump() << "\n";
}

void ExportWriter::record(char type, const void* data, std::size_t size) {
  const auto n = static_cast<std::uint32_t>(size);
  const char head[5] = {type, static_cast<char>(n >> 24), static_cast<char>(n >> 16), static_cast<char>(n >> 8),
                        static_cast<char>(n)};
  out_.write(head, 5);
  out_.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
}

void ExportWriter::add_checkpoint(std::string_view note) { record('C', note.data(), note.size()); }
void ExportWriter::add_entry(std::span<const std::uint8_t> e) { record('E', e.data(), e.size()); }
void ExportWriter::add_openings(std::span<const std::uint8_t> o) { record('S', o.data(), o.size()); }
void ExportWriter::finish() {
  record('Z', "", 0);
  out_.flush();
}

namespace {

// Reads the stream in large blocks and hands out spans into its buffer: one
// read call per megabyte instead of two per record (the verifier's speed is
// bounded by SHA-256, not by istream bookkeeping). Memory: the buffer only,
// which starts at kFirstBlock and doubles while the input keeps filling it,
// up to kBlock: a small export (an inclusion bundle, an access package's
// proofs) is not charged for a megabyte it never reads.
class BlockReader {
 public:
  explicit BlockReader(std::istream& in) : in_(in), buf_(kFirstBlock) {}
  // Makes at least `n` (<= kBlock) bytes available at data(); false at end of input.
  bool need(std::size_t n) {
    if (end_ - pos_ >= n) return true;
    std::memmove(buf_.data(), buf_.data() + pos_, end_ - pos_);
    end_ -= pos_;
    pos_ = 0;
    if (!eof_ && filled_ && buf_.size() < kBlock) buf_.resize(std::min(kBlock, 2 * buf_.size()));
    while (end_ < n && !eof_) {
      if (end_ == buf_.size()) buf_.resize(std::min(kBlock, std::max(n, 2 * buf_.size())));
      in_.read(buf_.data() + end_, static_cast<std::streamsize>(buf_.size() - end_));
      const auto got = static_cast<std::size_t>(in_.gcount());
      if (got == 0) eof_ = true;
      end_ += got;
    }
    filled_ = end_ == buf_.size();
    return end_ - pos_ >= n;
  }
  const std::uint8_t* data() const { return reinterpret_cast<const std::uint8_t*>(buf_.data()) + pos_; }
  std::size_t available() const { return end_ - pos_; }
  void skip(std::size_t n) { pos_ += n; }
  // Whether the input has ended (nothing beyond available() remains).
  bool at_end() const { return eof_; }
  static constexpr std::size_t kFirstBlock = std::size_t{16} << 10;
  static constexpr std::size_t kBlock = std::size_t{1} << 20;  // > magic + header, > any record

 private:
  std::istream& in_;
  std::vector<char> buf_;
  std::size_t pos_ = 0, end_ = 0;
  bool eof_ = false;
  bool filled_ = false;  // the last read filled the whole buffer: the input is large
};
static_assert(BlockReader::kBlock > kExportMagic.size() + kMaxHeaderBytes + 1);
static_assert(BlockReader::kBlock > kMaxEntryBytes + 5);

// Deepest nesting of brackets outside strings: a header is a flat object, and
// a deeply nested one is refused before a parser builds anything for it.
std::size_t json_depth(std::string_view text) {
  std::size_t depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (const char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return deepest;
}

bool parse_header(std::string_view line, ExportHeader& h) {
  if (json_depth(line) > 4) return false;
  const auto j = nlohmann::json::parse(line, nullptr, false);
  if (!j.is_object()) return false;
  const auto text = [&](const char* key, std::string& out, bool required) {
    const auto it = j.find(key);
    if (it == j.end()) return !required;
    if (!it->is_string()) return false;
    out = it->get<std::string>();
    return true;
  };
  const auto count = [&](const char* key, std::uint64_t& out) {
    const auto it = j.find(key);
    if (it == j.end() || !it->is_number_unsigned()) return false;
    out = it->get<std::uint64_t>();
    return true;
  };
  return text("origin", h.origin, true) && text("key_name", h.key_name, true) &&
         text("public_key_fingerprint", h.public_key_fingerprint, true) && count("first_seq", h.first_seq) &&
         count("entry_count", h.entry_count) && count("checkpoint_count", h.checkpoint_count) &&
         text("created", h.created, false);
}

// Whole records read from the stream into one buffer, with the leaf hash of
// each entry once hash() has run. The hashed reader keeps two: the helper
// thread hashes one while this thread visits the other's records and then
// reads the next.
struct RecordBatch {
  struct Record {
    char type;
    std::uint32_t size;
    std::size_t at;  // of the payload, in bytes
  };
  static constexpr std::size_t kBytes = BlockReader::kBlock;
  // Grows as the stream fills it, up to kBytes (see BatchReader::fill).
  std::vector<std::uint8_t> bytes;
  std::vector<Record> records;
  std::vector<Hash> leaves;  // one per 'E' record, in order
  std::string error;         // set: the export is malformed right after `records`
  bool end = false;          // the end marker follows `records`, and nothing after it

  std::span<const std::uint8_t> payload(const Record& r) const { return {bytes.data() + r.at, r.size}; }
  void hash() {
    std::size_t k = 0;
    for (const Record& r : records)
      if (r.type == 'E') leaves[k++] = leaf_hash(payload(r));
  }
};

// Fills batches from the stream; a record cut by the end of a batch is
// carried to the start of the next (records are <= kMaxEntryBytes + 5, far
// below a batch). Checks each record header exactly as read_export's
// one-record loop does, in the same order, so both report the same error.
class BatchReader {
 public:
  BatchReader(std::istream& in, BlockReader& rest) : in_(in) {
    // What the header's reader already holds comes first.
    carry_.assign(rest.data(), rest.data() + rest.available());
    eof_ = rest.at_end();
  }
  void fill(RecordBatch& b) {
    b.records.clear();
    b.error.clear();
    b.end = false;
    std::size_t len = carry_.size();
    if (b.bytes.size() < std::max(len, BlockReader::kFirstBlock)) b.bytes.resize(std::max(len, BlockReader::kFirstBlock));
    std::copy(carry_.begin(), carry_.end(), b.bytes.begin());
    // Read until the batch holds kBytes or the input ends, growing the
    // buffer only as far as the input reaches.
    while (!eof_) {
      if (len == b.bytes.size()) {
        if (len >= RecordBatch::kBytes) break;
        b.bytes.resize(std::min(RecordBatch::kBytes, 2 * len));
      }
      in_.read(reinterpret_cast<char*>(b.bytes.data() + len), static_cast<std::streamsize>(b.bytes.size() - len));
      const auto got = static_cast<std::size_t>(in_.gcount());
      if (got == 0) eof_ = true;
      len += got;
    }
    std::size_t pos = 0, entries = 0;
    for (;;) {
      const std::size_t left = len - pos;
      if (left < 5) {
        if (eof_) b.error = "export is truncated (no end marker)";
        break;
      }
      const std::uint8_t* head = b.bytes.data() + pos;
      const char type = static_cast<char>(head[0]);
      const std::uint32_t n = (std::uint32_t{head[1]} << 24) | (std::uint32_t{head[2]} << 16) |
                              (std::uint32_t{head[3]} << 8) | std::uint32_t{head[4]};
      if (type == 'Z') {
        if (n != 0) {
          b.error = "malformed end marker";
        } else if (left > 5 || (!eof_ && in_.peek() != std::char_traits<char>::eof())) {
          b.error = "data after the end marker";
        } else {
          b.end = true;
        }
        break;
      }
      if (n > kMaxEntryBytes) {
        b.error = "record larger than " + std::to_string(kMaxEntryBytes) + " bytes";
        break;
      }
      if (left < 5 + std::size_t{n}) {
        if (eof_) b.error = "export is truncated inside a record";
        break;
      }
      if (type != 'E' && type != 'C' && type != 'S') {
        b.error = "unknown record type";
        break;
      }
      b.records.push_back({type, n, pos + 5});
      entries += type == 'E';
      pos += 5 + std::size_t{n};
    }
    b.leaves.resize(entries);  // here, not on the helper thread: it allocates nothing
    carry_.assign(b.bytes.begin() + static_cast<std::ptrdiff_t>(pos),
                  b.bytes.begin() + static_cast<std::ptrdiff_t>(len));
  }

 private:
  std::istream& in_;
  std::vector<std::uint8_t> carry_;
  bool eof_ = false;
};

// The records after the header, visited with their entries' leaf hashes.
bool read_records_hashed(std::istream& in, BlockReader& rest, const ExportVisitor& v, std::string& error) {
  BatchReader reader(in, rest);
  RecordBatch batches[2];
  RecordBatch* current = &batches[0];
  RecordBatch* next = &batches[1];
  reader.fill(*current);
  std::future<void> hashing;
  const auto start_hashing = [&](RecordBatch* b) {
    try {
      hashing = std::async(std::launch::async, [b] { b->hash(); });
    } catch (const std::system_error&) {
      b->hash();  // no thread to be had: hash here
    }
  };
  // An export that fits one batch has nothing to read while it hashes: no
  // thread for it.
  if (!current->error.empty() || current->end)
    current->hash();
  else
    start_hashing(current);
  for (;;) {
    const bool more = current->error.empty() && !current->end;
    if (more) reader.fill(*next);  // while the helper hashes `current`
    if (hashing.valid()) hashing.get();
    if (more) start_hashing(next);
    std::size_t k = 0;
    for (const RecordBatch::Record& r : current->records) {
      const auto payload = current->payload(r);
      bool go = true;
      if (r.type == 'E') {
        go = v.on_hashed_entry(payload, current->leaves[k++]);
      } else if (r.type == 'C') {
        if (v.on_checkpoint)
          go = v.on_checkpoint(std::string_view(reinterpret_cast<const char*>(payload.data()), payload.size()));
      } else if (v.on_openings) {
        go = v.on_openings(payload);
      }
      if (!go) return true;  // `hashing`'s destructor waits for the helper
    }
    if (!current->error.empty()) return error = current->error, false;
    if (current->end) return true;
    std::swap(current, next);
  }
}

}  // namespace

bool read_export(std::istream& in, const ExportVisitor& v, std::string& error) {
  BlockReader r(in);
  if (!r.need(kExportMagic.size()) ||
      std::memcmp(r.data(), kExportMagic.data(), kExportMagic.size()) != 0)
    return error = "not a custos audit export (bad magic line)", false;
  r.skip(kExportMagic.size());
  // The header line, bounded before anything parses it.
  r.need(kMaxHeaderBytes + 1);
  const auto* start = reinterpret_cast<const char*>(r.data());
  const std::size_t window = std::min(r.available(), kMaxHeaderBytes + 1);
  const auto* nl = static_cast<const char*>(std::memchr(start, '\n', window));
  if (!nl) {
    if (window > kMaxHeaderBytes)
      return error = "export header is longer than " + std::to_string(kMaxHeaderBytes) + " bytes", false;
    return error = "export header is missing", false;
  }
  ExportHeader h;
  if (!parse_header(std::string_view(start, static_cast<std::size_t>(nl - start)), h))
    return error = "export header is not valid", false;
  r.skip(static_cast<std::size_t>(nl - start) + 1);
  if (v.on_header && !v.on_header(h)) return true;
  if (v.on_hashed_entry) return read_records_hashed(in, r, v, error);
  for (;;) {
    if (!r.need(5)) return error = "export is truncated (no end marker)", false;
    const std::uint8_t* head = r.data();
    const char type = static_cast<char>(head[0]);
    const std::uint32_t n = (std::uint32_t{head[1]} << 24) | (std::uint32_t{head[2]} << 16) |
                            (std::uint32_t{head[3]} << 8) | std::uint32_t{head[4]};
    if (type == 'Z') {
      if (n != 0) return error = "malformed end marker", false;
      r.skip(5);
      if (r.need(1)) return error = "data after the end marker", false;
      return true;
    }
    // The same bound the vault appends under: a record no vault can write is
    // refused before its length is trusted for anything.
    if (n > kMaxEntryBytes) return error = "record larger than " + std::to_string(kMaxEntryBytes) + " bytes", false;
    if (!r.need(5 + std::size_t{n})) return error = "export is truncated inside a record", false;
    if (type != 'E' && type != 'C' && type != 'S') return error = "unknown record type", false;
    const std::span<const std::uint8_t> payload(r.data() + 5, n);
    bool go = true;
    if (type == 'E') {
      if (v.on_entry) go = v.on_entry(payload);
    } else if (type == 'C') {
      if (v.on_checkpoint)
        go = v.on_checkpoint(std::string_view(reinterpret_cast<const char*>(payload.data()), payload.size()));
    } else if (v.on_openings) {
      go = v.on_openings(payload);
    }
    if (!go) return true;
    r.skip(5 + std::size_t{n});
  }
}

}  // namespace custos::auditfmt
