#include "custos_audit/entry.h"

#include <openssl/sha.h>

#include <algorithm>
#include <array>
#include <nlohmann/json.hpp>
#include <stdexcept>

namespace custos::auditfmt {
namespace {

// Writers into a buffer sized exactly by encoded_size(): one allocation per entry.
std::uint8_t* put_u32(std::uint8_t* at, std::uint32_t v) {
  at[0] = static_cast<std::uint8_t>(v >> 24);
  at[1] = static_cast<std::uint8_t>(v >> 16);
  at[2] = static_cast<std::uint8_t>(v >> 8);
  at[3] = static_cast<std::uint8_t>(v);
  return at + 4;
}

std::uint8_t* put_str(std::uint8_t* at, const std::string& s) {
  at = put_u32(at, static_cast<std::uint32_t>(s.size()));
  return std::copy(s.begin(), s.end(), at);
}

std::uint8_t* put_list(std::uint8_t* at, const std::vector<std::string>& list) {
  at = put_u32(at, static_cast<std::uint32_t>(list.size()));
  for (const auto& s : list) at = put_str(at, s);
  return at;
}

std::size_t list_size(const std::vector<std::string>& list) {
  std::size_t n = 4;
  for (const auto& s : list) n += 4 + s.size();
  return n;
}

// A bounds-checked reader; every failure names what was being read.
class Reader {
 public:
  explicit Reader(std::span<const std::uint8_t> b) : b_(b) {}
  bool u8(std::uint8_t& v) {
    if (pos_ + 1 > b_.size()) return false;
    v = b_[pos_++];
    return true;
  }
  bool u32(std::uint32_t& v) {
    if (pos_ + 4 > b_.size()) return false;
    v = (std::uint32_t{b_[pos_]} << 24) | (std::uint32_t{b_[pos_ + 1]} << 16) | (std::uint32_t{b_[pos_ + 2]} << 8) |
        b_[pos_ + 3];
    pos_ += 4;
    return true;
  }
  bool u64(std::uint64_t& v) {
    std::uint32_t hi, lo;
    if (!u32(hi) || !u32(lo)) return false;
    v = (std::uint64_t{hi} << 32) | lo;
    return true;
  }
  bool str(std::string* out, std::string_view* view = nullptr) {
    std::uint32_t n;
    if (!u32(n) || n > b_.size() - pos_) return false;
    const std::string_view text(reinterpret_cast<const char*>(b_.data() + pos_), n);
    if (out) out->assign(text);
    if (view) *view = text;
    pos_ += n;
    return true;
  }
  bool list(std::vector<std::string>* out) {
    std::uint32_t n;
    if (!u32(n) || n > b_.size() - pos_) return false;  // each item needs >= 4 bytes anyway
    for (std::uint32_t i = 0; i < n; ++i) {
      std::string s;
      if (!str(out ? &s : nullptr)) return false;
      if (out) out->push_back(std::move(s));
    }
    return true;
  }
  bool hash(Hash& h) {
    if (pos_ + 32 > b_.size()) return false;
    std::copy(b_.begin() + pos_, b_.begin() + pos_ + 32, h.begin());
    pos_ += 32;
    return true;
  }
  bool done() const { return pos_ == b_.size(); }
  std::size_t pos() const { return pos_; }

 private:
  std::span<const std::uint8_t> b_;
  std::size_t pos_ = 0;
};

// The one parse both decode() and parse_view() use; `e` null means validate only.
bool parse(std::span<const std::uint8_t> bytes, Entry* e, EntryView& view, const char** why) {
  Reader r(bytes);
  std::uint8_t version;
  if (!r.u8(version)) return *why = "empty entry", false;
  if (version != kEntryVersion && version != kEntryVersionCommitted) return *why = "unknown entry version", false;
  view.version = version;
  if (!r.u64(view.seq)) return *why = "truncated sequence number", false;
  std::string* strings[] = {e ? &e->time : nullptr,      e ? &e->principal : nullptr, e ? &e->role : nullptr,
                            e ? &e->token_id : nullptr,  e ? &e->purpose : nullptr,   e ? &e->operation : nullptr,
                            e ? &e->subject_id : nullptr};
  std::string_view* views[] = {&view.time, &view.principal, nullptr, nullptr, &view.purpose, &view.operation,
                               &view.subject_id};
  for (std::size_t i = 0; i < std::size(strings); ++i)
    if (!r.str(strings[i], views[i])) return *why = "truncated or malformed text field", false;
  if (!r.list(e ? &e->fields : nullptr) || !r.list(e ? &e->masked_fields : nullptr))
    return *why = "malformed field list", false;
  std::string* tail[] = {e ? &e->outcome : nullptr, e ? &e->reason : nullptr, e ? &e->request_id : nullptr,
                         e ? &e->node_id : nullptr, e ? &e->detail : nullptr};
  std::string_view* tail_views[] = {&view.outcome, nullptr, nullptr, nullptr, nullptr};
  for (std::size_t i = 0; i < std::size(tail); ++i)
    if (!r.str(tail[i], tail_views[i])) return *why = "truncated or malformed text field", false;
  if (version == kEntryVersion) {
    const std::size_t list_at = r.pos();
    if (!r.list(e ? &e->subject_ids : nullptr)) return *why = "malformed subject list", false;
    view.subject_list = bytes.subspan(list_at, r.pos() - list_at);
  } else {
    if (!r.u32(view.subject_count) || !r.hash(view.subject_root)) return *why = "truncated subject commitment", false;
    if (view.subject_count == 0) return *why = "a subject commitment of no subjects", false;
    view.subject_list = {};
  }
  if (!r.hash(view.prev)) return *why = "truncated previous-entry hash", false;
  if (!r.done()) return *why = "trailing bytes after the entry", false;
  if (e) {
    e->version = version;
    e->seq = view.seq;
    e->prev = view.prev;
    e->subject_count = view.subject_count;
    e->subject_root = view.subject_root;
  }
  return true;
}

}  // namespace

std::size_t encoded_size(const Entry& e) {
  const std::string* strings[] = {&e.time,    &e.principal, &e.role,       &e.token_id, &e.purpose, &e.operation,
                                  &e.subject_id, &e.outcome, &e.reason, &e.request_id, &e.node_id, &e.detail};
  const std::size_t subjects = e.version == kEntryVersionCommitted ? 4 + e.subject_root.size() : list_size(e.subject_ids);
  std::size_t size = 1 + 8 + list_size(e.fields) + list_size(e.masked_fields) + subjects + e.prev.size();
  for (const std::string* s : strings) size += 4 + s->size();
  return size;
}

std::vector<std::uint8_t> encode(const Entry& e) {
  const std::string* head[] = {&e.time, &e.principal, &e.role, &e.token_id, &e.purpose, &e.operation, &e.subject_id};
  const std::string* tail[] = {&e.outcome, &e.reason, &e.request_id, &e.node_id, &e.detail};
  std::vector<std::uint8_t> out(encoded_size(e));
  std::uint8_t* at = out.data();
  if (e.version != kEntryVersion && e.version != kEntryVersionCommitted)
    throw std::invalid_argument("entry: unknown version");
  *at++ = e.version;
  at = put_u32(at, static_cast<std::uint32_t>(e.seq >> 32));
  at = put_u32(at, static_cast<std::uint32_t>(e.seq));
  for (const std::string* s : head) at = put_str(at, *s);
  at = put_list(at, e.fields);
  at = put_list(at, e.masked_fields);
  for (const std::string* s : tail) at = put_str(at, *s);
  if (e.version == kEntryVersionCommitted) {
    at = put_u32(at, e.subject_count);
    at = std::copy(e.subject_root.begin(), e.subject_root.end(), at);
  } else {
    at = put_list(at, e.subject_ids);
  }
  std::copy(e.prev.begin(), e.prev.end(), at);
  return out;
}

Entry decode(std::span<const std::uint8_t> bytes) {
  Entry e;
  EntryView view;
  const char* why = nullptr;
  if (!parse(bytes, &e, view, &why)) throw std::runtime_error(std::string("malformed entry: ") + why);
  return e;
}

bool parse_view(std::span<const std::uint8_t> bytes, EntryView& out, const char** why) {
  return parse(bytes, nullptr, out, why);
}

std::vector<std::string_view> list_items(std::span<const std::uint8_t> list) {
  std::vector<std::string_view> out;
  Reader r(list);
  std::uint32_t n = 0;
  if (!r.u32(n)) return out;
  out.reserve(n);
  std::string_view item;
  for (std::uint32_t i = 0; i < n && r.str(nullptr, &item); ++i) out.push_back(item);
  return out;
}

void set_time(std::span<std::uint8_t> bytes, std::string_view time) {
  // The time is the first string, after the version byte and the sequence number.
  constexpr std::size_t kAt = 1 + 8;
  if (bytes.size() < kAt + 4 + time.size() || bytes[kAt] || bytes[kAt + 1] ||
      bytes[kAt + 2] != static_cast<std::uint8_t>(time.size() >> 8) ||
      bytes[kAt + 3] != static_cast<std::uint8_t>(time.size()))
    throw std::runtime_error("malformed entry: the new time differs in length from the old");
  std::copy(time.begin(), time.end(), bytes.begin() + kAt + 4);
}

void set_position(std::span<std::uint8_t> bytes, std::uint64_t seq, const Hash& prev) {
  if (bytes.size() < 1 + 8 + prev.size()) throw std::runtime_error("malformed entry: too short to place");
  for (int i = 0; i < 8; ++i) bytes[1 + i] = static_cast<std::uint8_t>(seq >> (56 - 8 * i));
  std::copy(prev.begin(), prev.end(), bytes.end() - static_cast<std::ptrdiff_t>(prev.size()));
}

std::string invalid_value(std::string_view what, std::string_view value) {
  std::uint8_t digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(value.data()), value.size(), digest);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "invalid_" + std::string(what) + ":len=" + std::to_string(value.size()) + ":sha256=";
  for (int i = 0; i < 8; ++i) {
    out += kHex[digest[i] >> 4];
    out += kHex[digest[i] & 0xf];
  }
  return out;
}

namespace {
// One table lookup per byte and no early exit: the fold checks every
// entry's subject ids (a per-character short-circuit was 3 % of its CPU).
constexpr std::array<bool, 256> kLowerHex = [] {
  std::array<bool, 256> t{};
  for (int c = '0'; c <= '9'; ++c) t[static_cast<std::size_t>(c)] = true;
  for (int c = 'a'; c <= 'f'; ++c) t[static_cast<std::size_t>(c)] = true;
  return t;
}();
bool all_lower_hex(std::string_view text) {
  bool all = true;
  for (const char c : text) all &= kLowerHex[static_cast<unsigned char>(c)];
  return all;
}
}  // namespace

bool is_invalid_value(std::string_view what, std::string_view text) {
  const std::string head = "invalid_" + std::string(what) + ":len=";
  if (text.substr(0, head.size()) != head) return false;
  text.remove_prefix(head.size());
  const std::size_t digits = text.find_first_not_of("0123456789");
  if (digits == 0 || digits > 20 || digits == std::string_view::npos) return false;
  text.remove_prefix(digits);
  constexpr std::string_view kHash = ":sha256=";
  return text.size() == kHash.size() + 16 && text.substr(0, kHash.size()) == kHash &&
         all_lower_hex(text.substr(kHash.size()));
}

bool is_subject_id(std::string_view text) { return text.size() == 32 && all_lower_hex(text); }

bool is_request_id(std::string_view text) {
  return !text.empty() && text.size() <= 64 && std::all_of(text.begin(), text.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '-';
  });
}

bool is_label(std::string_view text) {
  return text.size() <= kMaxLabelBytes && std::none_of(text.begin(), text.end(), [](char c) {
    const auto b = static_cast<unsigned char>(c);
    return b < 0x20 || b == 0x7f;
  });
}

std::string to_json(const Entry& e) {
  nlohmann::json j = {{"seq", e.seq},          {"time", e.time},           {"principal", e.principal},
                      {"role", e.role},        {"token_id", e.token_id},   {"purpose", e.purpose},
                      {"operation", e.operation}, {"subject_id", e.subject_id}, {"fields", e.fields},
                      {"masked_fields", e.masked_fields}, {"outcome", e.outcome}, {"reason", e.reason},
                      {"request_id", e.request_id}, {"node_id", e.node_id}, {"detail", e.detail},
                      {"subject_ids", e.subject_ids}, {"prev", to_hex(e.prev)}};
  if (e.version == kEntryVersionCommitted) {
    // The list is what the reader was given (the vault's openings, or none);
    // the commitment is what the entry's bytes hold.
    j["version"] = e.version;
    j["subject_count"] = e.subject_count;
    j["subject_root"] = to_hex(e.subject_root);
  }
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace custos::auditfmt
