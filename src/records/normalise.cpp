#include "normalise.h"

#include <phonenumbers/phonenumberutil.h>

#include <algorithm>
#include <cctype>

namespace custos::records {

std::string trim(std::string_view s) {
  const auto is_space = [](unsigned char c) { return std::isspace(c) != 0; };
  while (!s.empty() && is_space(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && is_space(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return std::string(s);
}

std::optional<std::string> normalise_email(std::string_view value) {
  std::string email = trim(value);
  const auto at = email.find('@');
  if (at == std::string::npos || at == 0 || at + 1 >= email.size() || email.find('@', at + 1) != std::string::npos)
    return std::nullopt;
  if (email.size() > 254) return std::nullopt;
  const std::string_view domain = std::string_view(email).substr(at + 1);
  if (domain.find('.') == std::string_view::npos || domain.front() == '.' || domain.back() == '.' ||
      domain.find("..") != std::string_view::npos)
    return std::nullopt;
  for (unsigned char c : email)
    if (c <= ' ' || c == 0x7f || c == '<' || c == '>' || c == ',' || c == ';' || c == '"') return std::nullopt;
  std::transform(email.begin(), email.end(), email.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return email;
}

std::optional<std::string> normalise_phone(std::string_view value, const std::string& region) {
  using i18n::phonenumbers::PhoneNumber;
  using i18n::phonenumbers::PhoneNumberUtil;
  const PhoneNumberUtil* util = PhoneNumberUtil::GetInstance();
  PhoneNumber number;
  if (util->Parse(std::string(trim(value)), region, &number) != PhoneNumberUtil::NO_PARSING_ERROR)
    return std::nullopt;
  if (!util->IsValidNumber(number)) return std::nullopt;
  std::string out;
  util->Format(number, PhoneNumberUtil::E164, &out);
  return out;
}

bool is_valid_date(std::string_view v) {
  if (v.size() != 10 || v[4] != '-' || v[7] != '-') return false;
  for (std::size_t i : {0, 1, 2, 3, 5, 6, 8, 9})
    if (!std::isdigit(static_cast<unsigned char>(v[i]))) return false;
  const int y = std::stoi(std::string(v.substr(0, 4)));
  const int m = std::stoi(std::string(v.substr(5, 2)));
  const int d = std::stoi(std::string(v.substr(8, 2)));
  if (y < 1800 || m < 1 || m > 12 || d < 1) return false;
  static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  return d <= days[m - 1] + ((m == 2 && leap) ? 1 : 0);
}

bool is_valid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    if (len == 0 || i + len > s.size()) return false;
    for (std::size_t k = 1; k < len; ++k)
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 0x2) return false;
    i += len;
  }
  return true;
}

}  // namespace custos::records
