#include "field_blob.h"

#include "custos/error.h"

namespace custos::records {

std::vector<std::uint8_t> encode_fields(const SealedFields& fields) {
  std::vector<std::uint8_t> out;
  std::size_t total = 2;
  for (const auto& [name, sealed] : fields) total += 1 + name.size() + 4 + sealed.size();
  out.reserve(total);
  out.push_back(static_cast<std::uint8_t>(fields.size() >> 8));
  out.push_back(static_cast<std::uint8_t>(fields.size()));
  for (const auto& [name, sealed] : fields) {
    out.push_back(static_cast<std::uint8_t>(name.size()));
    out.insert(out.end(), name.begin(), name.end());
    const auto n = static_cast<std::uint32_t>(sealed.size());
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<std::uint8_t>(n >> shift));
    out.insert(out.end(), sealed.begin(), sealed.end());
  }
  return out;
}

SealedFields decode_fields(std::span<const std::uint8_t> blob) {
  SealedFields out;
  visit_fields(blob, [&](std::string_view name, std::span<const std::uint8_t> sealed) {
    out.emplace(std::string(name), std::vector<std::uint8_t>(sealed.begin(), sealed.end()));
  });
  return out;
}

void visit_fields(std::span<const std::uint8_t> blob,
                  const std::function<void(std::string_view, std::span<const std::uint8_t>)>& each) {
  const auto bad = [] { return Error(ErrorCode::integrity, "stored field record is malformed"); };
  if (blob.empty()) return;
  // Two passes over the framing (a few bytes per field): the first checks it
  // whole, so a malformed record yields no field at all, as decode_fields.
  for (const bool deliver : {false, true}) {
    std::size_t pos = 0;
    const auto need = [&](std::size_t n) {
      if (blob.size() - pos < n) throw bad();
    };
    need(2);
    const std::size_t count = (std::size_t{blob[0]} << 8) | blob[1];
    pos = 2;
    for (std::size_t i = 0; i < count; ++i) {
      need(1);
      const std::size_t name_len = blob[pos++];
      need(name_len + 4);
      const std::string_view name(reinterpret_cast<const char*>(&blob[pos]), name_len);
      pos += name_len;
      const std::size_t len = (std::size_t{blob[pos]} << 24) | (std::size_t{blob[pos + 1]} << 16) |
                              (std::size_t{blob[pos + 2]} << 8) | blob[pos + 3];
      pos += 4;
      need(len);
      if (deliver) each(name, blob.subspan(pos, len));
      pos += len;
    }
    if (pos != blob.size()) throw bad();
  }
}

std::vector<std::string> field_names(std::span<const std::uint8_t> blob) {
  std::vector<std::string> out;
  visit_fields(blob, [&](std::string_view name, std::span<const std::uint8_t>) { out.emplace_back(name); });
  return out;
}

}  // namespace custos::records
