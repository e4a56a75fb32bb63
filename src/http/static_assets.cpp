#include "static_assets.h"

#include <boost/beast/http/verb.hpp>
#include <cstdint>
#include <cstdio>
#include <map>

namespace custos::http {

const char* const kStaticCsp =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'none'; frame-ancestors 'none'; base-uri 'none'; require-trusted-types-for 'script'; "
    "trusted-types 'none'";

namespace {

struct Asset {
  std::string_view body;
  std::string content_type;
  std::string etag;
  bool html = false;
};

std::string content_type_for(std::string_view path) {
  auto ends = [&](std::string_view ext) {
    return path.size() >= ext.size() && path.compare(path.size() - ext.size(), ext.size(), ext) == 0;
  };
  if (ends(".html")) return "text/html; charset=utf-8";
  if (ends(".js")) return "text/javascript; charset=utf-8";
  if (ends(".css")) return "text/css; charset=utf-8";
  if (ends(".svg")) return "image/svg+xml";
  if (ends(".json")) return "application/json";
  if (ends(".png")) return "image/png";
  return "application/octet-stream";
}

// A validator, not a secret: FNV-1a over the bytes is enough to tell
// versions apart.
std::string etag_for(std::string_view body) {
  std::uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : body) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  char buf[24];
  std::snprintf(buf, sizeof buf, "\"%016llx\"", static_cast<unsigned long long>(h));
  return buf;
}

const std::map<std::string, Asset, std::less<>>& assets() {
  static const auto table = [] {
    std::map<std::string, Asset, std::less<>> out;
    for (const auto& f : embedded_files()) {
      const std::string_view body(reinterpret_cast<const char*>(f.data), f.size);
      Asset a{body, content_type_for(f.path), etag_for(body), content_type_for(f.path).rfind("text/html", 0) == 0};
      out.emplace(f.path, std::move(a));
    }
    return out;
  }();
  return table;
}

void add_security_headers(Result& r) {
  r.headers.emplace_back("Content-Security-Policy", kStaticCsp);
  r.headers.emplace_back("Referrer-Policy", "no-referrer");
  r.headers.emplace_back("X-Frame-Options", "DENY");
  r.headers.emplace_back("Cross-Origin-Opener-Policy", "same-origin");
  r.headers.emplace_back("Cross-Origin-Resource-Policy", "same-origin");
  r.headers.emplace_back("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()");
}

}  // namespace

std::optional<Result> serve_static(const Request& req, std::string& label) {
  const std::string_view target(req.target().data(), req.target().size());
  const std::string_view path = target.substr(0, target.find('?'));
  std::string_view prefix;
  for (std::string_view p : {std::string_view("/console"), std::string_view("/privacy")})
    if (path.substr(0, p.size()) == p && (path.size() == p.size() || path[p.size()] == '/')) prefix = p;
  if (prefix.empty()) return std::nullopt;
  label = std::string(prefix) + "/";

  if (req.method() != boost::beast::http::verb::get)
    throw HttpProblem(405, "method_not_allowed", "only GET is allowed here", {{"Allow", "GET"}});
  if (path.size() == prefix.size()) {
    Result r;
    r.status = 308;
    r.content_type = "text/plain; charset=utf-8";
    r.headers.emplace_back("Location", label);
    add_security_headers(r);
    return r;
  }
  std::string key(path);
  if (key.back() == '/') key += "index.html";
  const auto it = assets().find(key);
  if (it == assets().end()) throw HttpProblem(404, "not_found", "no such resource");
  const Asset& a = it->second;

  Result r;
  add_security_headers(r);
  r.content_type = a.content_type;
  if (a.html) {
    // The connection layer already sends Cache-Control: no-store.
    r.body = std::string(a.body);
    return r;
  }
  r.headers.emplace_back("Cache-Control", "no-cache");
  r.headers.emplace_back("ETag", a.etag);
  const auto inm = req[boost::beast::http::field::if_none_match];
  if (std::string_view(inm.data(), inm.size()).find(a.etag) != std::string_view::npos) {
    r.status = 304;
    return r;
  }
  r.body = std::string(a.body);
  return r;
}

}  // namespace custos::http
