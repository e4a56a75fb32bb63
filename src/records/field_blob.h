// The `subjects.fields` column: every personal field of one subject, each
// sealed on its own, in one blob so a subject is one row.
//
//   u16 count, then per field: u8 name length, name, u32 sealed length, sealed
//   (big-endian), names in ascending order.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <vector>

namespace custos::records {

using SealedFields = std::map<std::string, std::vector<std::uint8_t>, std::less<>>;

std::vector<std::uint8_t> encode_fields(const SealedFields& fields);
// Throws Error(integrity) if the blob is malformed.
SealedFields decode_fields(std::span<const std::uint8_t> blob);
// Calls `each(name, sealed)` for every field in blob order, with views into
// `blob` (nothing copied: the hot read paths open a few fields of a row).
// The whole framing is checked as decode_fields checks it; throws
// Error(integrity) if the blob is malformed, before `each` sees any field.
void visit_fields(std::span<const std::uint8_t> blob,
                  const std::function<void(std::string_view, std::span<const std::uint8_t>)>& each);
// The field names alone (the framing is not encrypted), copying no ciphertext.
// Throws Error(integrity) if the blob is malformed.
std::vector<std::string> field_names(std::span<const std::uint8_t> blob);

}  // namespace custos::records
