// Normalisers for the typed schema fields. Each returns nullopt when the
// value is not valid for its type; callers turn that into an error that
// names the field (never the value).
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace custos::records {

std::string trim(std::string_view s);
// Trimmed; lower-cased for the index. Checks a plausible addr-spec shape.
std::optional<std::string> normalise_email(std::string_view value);
// E.164 via libphonenumber, `region` for numbers without a country code.
std::optional<std::string> normalise_phone(std::string_view value, const std::string& region);
// YYYY-MM-DD, a real calendar date.
bool is_valid_date(std::string_view value);
bool is_valid_utf8(std::string_view value);

}  // namespace custos::records
