#include "custos/util/text.h"

namespace custos::util {

std::string printable_prefix(std::string_view text, std::size_t max) {
  std::string out(text.substr(0, max));
  for (char& c : out)
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e) c = '?';
  if (text.size() > max) out += "...";
  return out;
}

}  // namespace custos::util
