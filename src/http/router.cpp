#include "router.h"

#include "custos/util/text.h"

#include <algorithm>
#include <optional>

namespace custos::http {
namespace {

std::vector<std::string> split(std::string_view path, char sep) {
  std::vector<std::string> out;
  std::size_t start = 0;
  for (;;) {
    const std::size_t end = path.find(sep, start);
    out.emplace_back(path.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start));
    if (end == std::string_view::npos) return out;
    start = end + 1;
  }
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Strict percent-decoding: '%' must start two hex digits. '+' stays '+'
// (an e-mail address may hold one).
std::optional<std::string> percent_decode(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out += in[i];
      continue;
    }
    if (i + 2 >= in.size()) return std::nullopt;
    const int hi = hex_value(in[i + 1]), lo = hex_value(in[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

bool is_param(const std::string& seg) { return seg.size() > 2 && seg.front() == '{' && seg.back() == '}'; }

// A template segment "{id}:verb" matches "<value>:verb" and captures <value>.
std::optional<std::string> match_param_with_verb(const std::string& tmpl, const std::string& seg) {
  const auto close = tmpl.find("}:");
  if (tmpl.empty() || tmpl.front() != '{' || close == std::string::npos) return std::nullopt;
  const std::string_view suffix = std::string_view(tmpl).substr(close + 1);
  if (seg.size() <= suffix.size() || seg.compare(seg.size() - suffix.size(), suffix.size(), suffix) != 0)
    return std::nullopt;
  return seg.substr(0, seg.size() - suffix.size());
}

}  // namespace

Result json_result(int status, const Json& doc) {
  Result r;
  r.status = status;
  r.body = doc.dump(-1, ' ', false, Json::error_handler_t::replace);
  return r;
}

std::vector<std::string> split_route_template(const std::string& path) { return split(path.substr(1), '/'); }

RouteMatch match_route(const std::vector<Route>& routes, std::string_view method, std::string_view target) {
  if (target.empty() || target.front() != '/')
    throw Error(ErrorCode::invalid_argument, "the request target must be an absolute path");
  const std::size_t qmark = target.find('?');
  const std::string_view raw_path = target.substr(0, qmark);
  const std::string_view raw_query = qmark == std::string_view::npos ? std::string_view() : target.substr(qmark + 1);

  // Split the encoded path first, then decode each segment, so an encoded
  // '/' cannot create a segment.
  std::vector<std::string> segments;
  for (const auto& s : split(raw_path.substr(1), '/')) {
    auto decoded = percent_decode(s);
    if (!decoded) throw Error(ErrorCode::invalid_argument, "malformed percent-encoding in the request path");
    segments.push_back(std::move(*decoded));
  }

  RouteMatch m;
  std::string allow;
  for (const auto& r : routes) {
    if (r.segments.size() != segments.size()) continue;
    std::vector<std::string> found;
    bool ok = true;
    for (std::size_t i = 0; i < segments.size() && ok; ++i) {
      if (is_param(r.segments[i])) {
        ok = !segments[i].empty();
        found.push_back(segments[i]);
      } else if (auto v = match_param_with_verb(r.segments[i], segments[i])) {
        found.push_back(std::move(*v));
      } else {
        ok = r.segments[i] == segments[i];
      }
    }
    if (!ok) continue;
    if (r.method == method) {
      m.route = &r;
      m.params = std::move(found);
      break;
    }
    if (allow.find(r.method) == std::string::npos) allow += (allow.empty() ? "" : ", ") + r.method;
  }
  if (m.route == nullptr) {
    if (allow.empty()) throw HttpProblem(404, "not_found", "no such resource");
    throw HttpProblem(405, "method_not_allowed", "method " + util::printable_prefix(method, 16) + " is not allowed here",
                      {{"Allow", allow}});
  }

  // Query: decode keys and values; only the route's parameters, each once.
  if (!raw_query.empty()) {
    for (const auto& piece : split(raw_query, '&')) {
      if (piece.empty()) continue;
      const auto eq = piece.find('=');
      auto key = percent_decode(std::string_view(piece).substr(0, eq));
      auto value = eq == std::string::npos ? std::optional<std::string>("")
                                           : percent_decode(std::string_view(piece).substr(eq + 1));
      if (!key || !value) throw Error(ErrorCode::invalid_argument, "malformed percent-encoding in the query string");
      const auto& accepted = m.route->query;
      if (std::find(accepted.begin(), accepted.end(), *key) == accepted.end())
        throw Error(ErrorCode::invalid_argument, "unknown query parameter '" + util::printable_prefix(*key) + "'");
      if (!m.query.emplace(*key, std::move(*value)).second)
        throw Error(ErrorCode::invalid_argument, "query parameter '" + *key + "' given more than once");
    }
  }
  return m;
}

}  // namespace custos::http
