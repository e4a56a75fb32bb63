// Structured logging for custosd: one JSON object per line on stderr.
//
// Contract: callers pass only non-personal values (ids, route templates,
// codes, counts). Never a query string, a body, a header value or a token.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace custos::http::log {

enum class Level { debug, info, warn, error };

// Sets the minimum level written (default info). Not thread-safe against
// concurrent logging; call once at start-up.
void set_level(Level level);
bool parse_level(const std::string& text, Level* out);
bool enabled(Level level);

// Writes {"ts": ..., "level": ..., "msg": msg, ...fields} as one line.
void write(Level level, const std::string& msg, nlohmann::json fields = nlohmann::json::object());

inline void info(const std::string& msg, nlohmann::json fields = nlohmann::json::object()) {
  write(Level::info, msg, std::move(fields));
}
inline void warn(const std::string& msg, nlohmann::json fields = nlohmann::json::object()) {
  write(Level::warn, msg, std::move(fields));
}
inline void error(const std::string& msg, nlohmann::json fields = nlohmann::json::object()) {
  write(Level::error, msg, std::move(fields));
}

// RFC 3339 UTC with milliseconds, e.g. 2024-05-01T12:00:00.123Z.
std::string now_rfc3339();

}  // namespace custos::http::log
