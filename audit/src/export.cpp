#include "custos_audit/export.h"

#include "custos_audit/entry.h"

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>
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
// bounded by SHA-256, not by istream bookkeeping). Memory: the buffer only.
class BlockReader {
 public:
  explicit BlockReader(std::istream& in) : in_(in), buf_(kBlock) {}
  // Makes at least `n` (<= kBlock) bytes available at data(); false at end of input.
  bool need(std::size_t n) {
    if (end_ - pos_ >= n) return true;
    std::memmove(buf_.data(), buf_.data() + pos_, end_ - pos_);
    end_ -= pos_;
    pos_ = 0;
    while (end_ < n && !eof_) {
      in_.read(buf_.data() + end_, static_cast<std::streamsize>(buf_.size() - end_));
      const auto got = static_cast<std::size_t>(in_.gcount());
      if (got == 0) eof_ = true;
      end_ += got;
    }
    return end_ - pos_ >= n;
  }
  const std::uint8_t* data() const { return reinterpret_cast<const std::uint8_t*>(buf_.data()) + pos_; }
  std::size_t available() const { return end_ - pos_; }
  void skip(std::size_t n) { pos_ += n; }
  static constexpr std::size_t kBlock = std::size_t{1} << 20;  // > magic + header, > any record

 private:
  std::istream& in_;
  std::vector<char> buf_;
  std::size_t pos_ = 0, end_ = 0;
  bool eof_ = false;
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
