// The `subjects.fields` column: every personal field of one subject, each
// sealed on its own, in one blob so a subject is one row.
//
//   u16 count, then per field: u8 name length, name, u32 sealed length, sealed
//   (big-endian), names in ascending order.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

namespace custos::records {

using SealedFields = std::map<std::string, std::vector<std::uint8_t>, std::less<>>;

std::vector<std::uint8_t> encode_fields(const SealedFields& fields);
// Throws Error(integrity) if the blob is malformed.
SealedFields decode_fields(std::span<const std::uint8_t> blob);
// The field names alone (the framing is not encrypted), copying no ciphertext.
// Throws Error(integrity) if the blob is malformed.
std::vector<std::string> field_names(std::span<const std::uint8_t> blob);

}  // namespace custos::records
