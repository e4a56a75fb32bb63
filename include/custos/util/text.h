// custos/util/text.h — echoing caller-supplied text safely.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace custos::util {

// At most `max` bytes of `text`, each byte outside printable ASCII replaced
// by '?', and "..." when `text` was longer: safe to put in an error message
// or a log line (one line, no control characters, bounded).
std::string printable_prefix(std::string_view text, std::size_t max = 64);

}  // namespace custos::util
