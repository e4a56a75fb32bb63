#include "custos_audit/export.h"

#include "custos_audit/entry.h"

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
void ExportWriter::finish() {
  record('Z', "", 0);
  out_.flush();
}

bool read_export(std::istream& in, const ExportVisitor& v, std::string& error) {
  std::string magic(kExportMagic.size(), '\0');
  if (!in.read(magic.data(), static_cast<std::streamsize>(magic.size())) || magic != kExportMagic)
    return error = "not a custos audit export (bad magic line)", false;
  std::string line;
  if (!std::getline(in, line)) return error = "export header is missing", false;
  ExportHeader h;
  try {
    const auto j = nlohmann::json::parse(line);
    h.origin = j.at("origin").get<std::string>();
    h.key_name = j.at("key_name").get<std::string>();
    h.public_key_fingerprint = j.at("public_key_fingerprint").get<std::string>();
    h.first_seq = j.at("first_seq").get<std::uint64_t>();
    h.entry_count = j.at("entry_count").get<std::uint64_t>();
    h.checkpoint_count = j.at("checkpoint_count").get<std::uint64_t>();
    h.created = j.value("created", "");
  } catch (const nlohmann::json::exception&) {
    return error = "export header is not valid", false;
  }
  if (v.on_header && !v.on_header(h)) return true;
  std::vector<std::uint8_t> buf;
  for (;;) {
    char head[5];
    if (!in.read(head, 5)) return error = "export is truncated (no end marker)", false;
    const std::uint32_t n = (std::uint32_t{static_cast<std::uint8_t>(head[1])} << 24) |
                            (std::uint32_t{static_cast<std::uint8_t>(head[2])} << 16) |
                            (std::uint32_t{static_cast<std::uint8_t>(head[3])} << 8) |
                            std::uint32_t{static_cast<std::uint8_t>(head[4])};
    if (head[0] == 'Z') {
      if (n != 0) return error = "malformed end marker", false;
      if (in.peek() != std::char_traits<char>::eof()) return error = "data after the end marker", false;
      return true;
    }
    // The same bound the vault appends under: a record no vault can write is
    // refused before its length is trusted for an allocation.
    if (n > kMaxEntryBytes)
      return error = "record larger than " + std::to_string(kMaxEntryBytes) + " bytes", false;
    buf.resize(n);
    if (!in.read(reinterpret_cast<char*>(buf.data()), n)) return error = "export is truncated inside a record", false;
    if (head[0] == 'E') {
      if (v.on_entry && !v.on_entry(buf)) return true;
    } else if (head[0] == 'C') {
      if (v.on_checkpoint &&
          !v.on_checkpoint(std::string_view(reinterpret_cast<const char*>(buf.data()), buf.size())))
        return true;
    } else {
      return error = "unknown record type", false;
    }
  }
}

}  // namespace custos::auditfmt
