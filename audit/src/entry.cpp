#include "custos_audit/entry.h"

#include <nlohmann/json.hpp>
#include <stdexcept>

namespace custos::auditfmt {
namespace {

void put_u32(std::vector<std::uint8_t>& out, std::uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<std::uint8_t>(v >> shift));
}

void put_str(std::vector<std::uint8_t>& out, const std::string& s) {
  put_u32(out, static_cast<std::uint32_t>(s.size()));
  out.insert(out.end(), s.begin(), s.end());
}

void put_list(std::vector<std::uint8_t>& out, const std::vector<std::string>& list) {
  put_u32(out, static_cast<std::uint32_t>(list.size()));
  for (const auto& s : list) put_str(out, s);
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
  bool str(std::string* out) {
    std::uint32_t n;
    if (!u32(n) || n > b_.size() - pos_) return false;
    if (out) out->assign(reinterpret_cast<const char*>(b_.data() + pos_), n);
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

 private:
  std::span<const std::uint8_t> b_;
  std::size_t pos_ = 0;
};

// The one parse both decode() and parse_view() use; `e` null means validate only.
bool parse(std::span<const std::uint8_t> bytes, Entry* e, EntryView& view, const char** why) {
  Reader r(bytes);
  std::uint8_t version;
  if (!r.u8(version)) return *why = "empty entry", false;
  if (version != kEntryVersion) return *why = "unknown entry version", false;
  if (!r.u64(view.seq)) return *why = "truncated sequence number", false;
  std::string* strings[] = {e ? &e->time : nullptr,      e ? &e->principal : nullptr, e ? &e->role : nullptr,
                            e ? &e->token_id : nullptr,  e ? &e->purpose : nullptr,   e ? &e->operation : nullptr,
                            e ? &e->subject_id : nullptr};
  for (std::string* s : strings)
    if (!r.str(s)) return *why = "truncated or malformed text field", false;
  if (!r.list(e ? &e->fields : nullptr) || !r.list(e ? &e->masked_fields : nullptr))
    return *why = "malformed field list", false;
  std::string* tail[] = {e ? &e->outcome : nullptr, e ? &e->reason : nullptr, e ? &e->request_id : nullptr,
                         e ? &e->node_id : nullptr, e ? &e->detail : nullptr};
  for (std::string* s : tail)
    if (!r.str(s)) return *why = "truncated or malformed text field", false;
  if (!r.list(e ? &e->subject_ids : nullptr)) return *why = "malformed subject list", false;
  if (!r.hash(view.prev)) return *why = "truncated previous-entry hash", false;
  if (!r.done()) return *why = "trailing bytes after the entry", false;
  if (e) {
    e->seq = view.seq;
    e->prev = view.prev;
  }
  return true;
}

}  // namespace

std::vector<std::uint8_t> encode(const Entry& e) {
  std::vector<std::uint8_t> out;
  out.reserve(128 + e.time.size() + e.principal.size() + e.operation.size() + e.subject_id.size() +
              e.detail.size() + 40 * e.subject_ids.size());
  out.push_back(kEntryVersion);
  put_u32(out, static_cast<std::uint32_t>(e.seq >> 32));
  put_u32(out, static_cast<std::uint32_t>(e.seq));
  for (const std::string* s : {&e.time, &e.principal, &e.role, &e.token_id, &e.purpose, &e.operation, &e.subject_id})
    put_str(out, *s);
  put_list(out, e.fields);
  put_list(out, e.masked_fields);
  for (const std::string* s : {&e.outcome, &e.reason, &e.request_id, &e.node_id, &e.detail}) put_str(out, *s);
  put_list(out, e.subject_ids);
  out.insert(out.end(), e.prev.begin(), e.prev.end());
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

std::string to_json(const Entry& e) {
  nlohmann::json j = {{"seq", e.seq},          {"time", e.time},           {"principal", e.principal},
                      {"role", e.role},        {"token_id", e.token_id},   {"purpose", e.purpose},
                      {"operation", e.operation}, {"subject_id", e.subject_id}, {"fields", e.fields},
                      {"masked_fields", e.masked_fields}, {"outcome", e.outcome}, {"reason", e.reason},
                      {"request_id", e.request_id}, {"node_id", e.node_id}, {"detail", e.detail},
                      {"subject_ids", e.subject_ids}, {"prev", to_hex(e.prev)}};
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace custos::auditfmt
