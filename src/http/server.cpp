// The HTTP transport. See server.h for the contract.
//
// Request flow (all on cpprestsdk's thread pool):
//   on_request  — request id, in-flight ticket; if the request carries a
//                 body, read it asynchronously with a size bound (the thread
//                 is not held while a slow client trickles bytes in);
//   process     — route, authenticate, parse, call the Service, map errors;
//   send        — one response, metrics, one access-log line.
//
// Privacy: the access log and the metrics carry route templates, codes and
// pseudonymous ids only — never a query string, a body, a header value or a
// token. Error details come from custos::Error (whose contract excludes
// personal values) for 4xx; 5xx details are generic and the cause is logged.
#include "server.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sodium.h>
#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <atomic>
#include <condition_variable>
#include <cpprest/http_listener.h>
#include <cpprest/producerconsumerstream.h>
#include <cpprest/uri.h>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <tuple>
#include <typeinfo>

#include "custos/error.h"
#include "custos/service/service.h"
#include "log.h"

namespace custos::http {
namespace {

using service::Json;
using web::http::http_request;
using web::http::http_response;
namespace listener = web::http::experimental::listener;

constexpr std::size_t kMaxRequestIdLength = 64;
constexpr std::size_t kMaxJsonDepth = 64;
constexpr const char* kProblemBase = "https://custos.dev/problems/";
constexpr const char* kJson = "application/json";
constexpr const char* kProblemJson = "application/problem+json";
// TLS 1.2 suites (Mozilla "intermediate" without DHE); TLS 1.3 uses OpenSSL's defaults.
constexpr const char* kTls12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

// ---------------------------------------------------------------- problems

// An HTTP-level problem that is not a custos::Error (404, 405, 503 drain).
struct HttpProblem : std::exception {
  int status;
  std::string code;
  std::string detail;
  std::vector<std::pair<std::string, std::string>> headers;
  HttpProblem(int s, std::string c, std::string d) : status(s), code(std::move(c)), detail(std::move(d)) {}
  const char* what() const noexcept override { return detail.c_str(); }
};

int status_for(ErrorCode code) {
  switch (code) {
    case ErrorCode::invalid_argument: return 400;
    case ErrorCode::invalid_field: return 422;
    case ErrorCode::unauthenticated: return 401;
    case ErrorCode::forbidden_role:
    case ErrorCode::purpose_not_allowed:
    case ErrorCode::consent_missing: return 403;
    case ErrorCode::not_found: return 404;
    case ErrorCode::conflict: return 409;
    case ErrorCode::payload_too_large: return 413;
    case ErrorCode::audit_unavailable:
    case ErrorCode::storage: return 503;
    case ErrorCode::integrity:
    case ErrorCode::key_error:
    case ErrorCode::internal: return 500;
  }
  return 500;
}

std::string title_for(const std::string& code) {
  static const std::map<std::string, std::string> titles = {
      {"invalid_argument", "Invalid request"},
      {"invalid_field", "Invalid field"},
      {"unauthenticated", "Authentication required"},
      {"forbidden_role", "Operation not permitted for this role"},
      {"purpose_not_allowed", "Purpose not allowed"},
      {"consent_missing", "Consent missing"},
      {"not_found", "Not found"},
      {"method_not_allowed", "Method not allowed"},
      {"conflict", "Conflict"},
      {"payload_too_large", "Payload too large"},
      {"audit_unavailable", "Audit log unavailable"},
      {"storage", "Storage unavailable"},
      {"integrity", "Integrity check failed"},
      {"key_error", "Key material unavailable"},
      {"internal", "Internal error"},
      {"unavailable", "Service unavailable"},
  };
  const auto it = titles.find(code);
  return it == titles.end() ? "Error" : it->second;
}

// Detail for server-side failures: the cause goes to the log, not the client.
std::string generic_detail(ErrorCode code) {
  switch (code) {
    case ErrorCode::audit_unavailable:
      return "the audit log cannot be written, so the operation was refused (fail closed)";
    case ErrorCode::storage: return "the vault store is unavailable";
    case ErrorCode::integrity: return "stored data failed its integrity check";
    case ErrorCode::key_error: return "key material is unavailable";
    default: return "internal error";
  }
}

// Printable ASCII, at most `max` characters: safe to echo or log.
std::string printable(std::string_view text, std::size_t max = 64) {
  std::string out(text.substr(0, max));
  for (char& c : out)
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e) c = '?';
  return out;
}

// ---------------------------------------------------------------- routes

struct Result {
  int status = 200;
  std::string body;
  std::string content_type = kJson;
  std::vector<std::pair<std::string, std::string>> headers;
  bool streamed = false;  // the handler has already replied (a streamed body)
};

Result json_result(int status, const Json& doc) {
  Result r;
  r.status = status;
  r.body = doc.dump(-1, ' ', false, Json::error_handler_t::replace);
  return r;
}

enum class BodyMode { none, json };

struct HandlerContext {
  std::function<std::string()> metrics_text;
  service::Service& svc;
  const http_request& req;
  service::Caller caller;
  std::vector<std::string> params;  // path parameters in template order
  std::map<std::string, std::string> query;
  Json body;
  // Adds the headers every response carries (request id, no-store, ...).
  std::function<void(http_response&)> decorate;
  // Held by a streamed reply until its last byte is written, so shutdown
  // waits for it.
  std::shared_ptr<void> keepalive;
  std::chrono::seconds timeout{30};
  // Streams running now, and the most allowed (ServerOptions::max_streams).
  std::atomic<int>* streams = nullptr;
  int max_streams = 0;

  const std::string& param(std::size_t i) const { return params.at(i); }
  std::string query_or_empty(const std::string& key) const {
    const auto it = query.find(key);
    return it == query.end() ? std::string() : it->second;
  }
};

using Handler = std::function<Result(HandlerContext&)>;

struct Route {
  std::string method;
  std::string path;                   // OpenAPI template
  std::vector<std::string> segments;  // split template
  bool auth = true;
  BodyMode body = BodyMode::none;
  std::vector<std::string> query;  // accepted query parameters
  Handler handler;
};

std::vector<std::string> split_template(const std::string& path) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : path.substr(1)) {
    if (c == '/') {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  out.push_back(cur);
  return out;
}

bool is_param(const std::string& seg) { return seg.size() > 2 && seg.front() == '{' && seg.back() == '}'; }

// A template segment "{id}:verb" matches "<value>:verb" and captures <value>.
std::optional<std::string> match_param_with_verb(const std::string& tmpl, const std::string& seg) {
  const auto close = tmpl.find("}:");
  if (tmpl.empty() || tmpl.front() != '{' || close == std::string::npos) return std::nullopt;
  const std::string suffix = tmpl.substr(close + 1);
  if (seg.size() <= suffix.size() || seg.compare(seg.size() - suffix.size(), suffix.size(), suffix) != 0)
    return std::nullopt;
  return seg.substr(0, seg.size() - suffix.size());
}

std::string method_label(const std::string& m) {
  static const std::array<const char*, 7> known = {"GET", "POST", "PATCH", "DELETE", "PUT", "HEAD", "OPTIONS"};
  for (const char* k : known)
    if (m == k) return m;
  return "OTHER";
}

// ---------------------------------------------------------------- metrics

constexpr std::array<double, 12> kBuckets = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                             0.1,   0.25,   0.5,   1.0,  2.5,   5.0};

std::string label_value(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

std::string format_double(double v) {
  std::ostringstream os;
  os.imbue(std::locale::classic());
  os.precision(9);
  os << v;
  return os.str();
}

class Metrics {
 public:
  void observe(const std::string& route, const std::string& method, int status, double seconds) {
    std::lock_guard lock(mu_);
    ++requests_[{route, method, status}];
    Hist& h = durations_[route];
    for (std::size_t i = 0; i < kBuckets.size(); ++i)
      if (seconds <= kBuckets[i]) ++h.buckets[i];
    ++h.count;
    h.sum += seconds;
  }

  void render(std::ostream& os) const {
    std::lock_guard lock(mu_);
    os << "# HELP custos_http_requests_total HTTP requests by route template, method and status.\n"
          "# TYPE custos_http_requests_total counter\n";
    for (const auto& [key, n] : requests_) {
      const auto& [route, method, status] = key;
      os << "custos_http_requests_total{route=\"" << label_value(route) << "\",method=\"" << method
         << "\",status=\"" << status << "\"} " << n << "\n";
    }
    os << "# HELP custos_http_request_duration_seconds Time from request receipt to response, by route template.\n"
          "# TYPE custos_http_request_duration_seconds histogram\n";
    for (const auto& [route, h] : durations_) {
      const std::string r = label_value(route);
      for (std::size_t i = 0; i < kBuckets.size(); ++i)
        os << "custos_http_request_duration_seconds_bucket{route=\"" << r << "\",le=\"" << format_double(kBuckets[i])
           << "\"} " << h.buckets[i] << "\n";
      os << "custos_http_request_duration_seconds_bucket{route=\"" << r << "\",le=\"+Inf\"} " << h.count << "\n";
      os << "custos_http_request_duration_seconds_sum{route=\"" << r << "\"} " << format_double(h.sum) << "\n";
      os << "custos_http_request_duration_seconds_count{route=\"" << r << "\"} " << h.count << "\n";
    }
  }

 private:
  struct Hist {
    std::array<std::uint64_t, kBuckets.size()> buckets{};
    std::uint64_t count = 0;
    double sum = 0;
  };
  mutable std::mutex mu_;
  std::map<std::tuple<std::string, std::string, int>, std::uint64_t> requests_;
  std::map<std::string, Hist> durations_;
};

// ---------------------------------------------------------------- TLS

struct TlsMaterial {
  X509* cert = nullptr;
  std::vector<X509*> chain;
  EVP_PKEY* key = nullptr;

  TlsMaterial() = default;
  TlsMaterial(const TlsMaterial&) = delete;
  TlsMaterial& operator=(const TlsMaterial&) = delete;
  ~TlsMaterial() {
    if (cert) X509_free(cert);
    for (X509* c : chain) X509_free(c);
    if (key) EVP_PKEY_free(key);
  }

  static int no_password(char*, int, int, void*) { return 0; }  // never prompt on a terminal

  void load(const std::filesystem::path& cert_path, const std::filesystem::path& key_path) {
    ERR_clear_error();
    {
      BIO* bio = BIO_new_file(cert_path.c_str(), "r");
      if (bio == nullptr) throw std::runtime_error("cannot read TLS certificate file " + cert_path.string());
      cert = PEM_read_bio_X509_AUX(bio, nullptr, no_password, nullptr);
      while (cert != nullptr) {
        X509* extra = PEM_read_bio_X509(bio, nullptr, no_password, nullptr);
        if (extra == nullptr) break;
        chain.push_back(extra);
      }
      BIO_free(bio);
      ERR_clear_error();  // the end of the PEM sequence reads as an error
      if (cert == nullptr) throw std::runtime_error("no PEM certificate in " + cert_path.string());
    }
    {
      struct stat st {};
      if (::stat(key_path.c_str(), &st) == 0 && (st.st_mode & 0077) != 0)
        log::warn("tls_key_permissions", {{"file", key_path.string()},
                                          {"detail", "the TLS private key is readable by group or others"}});
      BIO* bio = BIO_new_file(key_path.c_str(), "r");
      if (bio == nullptr) throw std::runtime_error("cannot read TLS key file " + key_path.string());
      key = PEM_read_bio_PrivateKey(bio, nullptr, no_password, nullptr);
      BIO_free(bio);
      ERR_clear_error();
      if (key == nullptr)
        throw std::runtime_error("no unencrypted PEM private key in " + key_path.string());
    }
    if (X509_check_private_key(cert, key) != 1) {
      ERR_clear_error();
      throw std::runtime_error("the TLS key in " + key_path.string() + " does not match the certificate in " +
                               cert_path.string());
    }
  }

  // Called by cpprestsdk for every accepted connection (it builds a fresh
  // context each time), so the PEM files are parsed once, at start-up.
  void apply(boost::asio::ssl::context& ctx) const {
    namespace ssl = boost::asio::ssl;
    ctx.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                    ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 | ssl::context::single_dh_use |
                    ssl::context::no_compression);
    SSL_CTX* native = ctx.native_handle();
    auto fail = [](const char* what) {
      ERR_clear_error();
      throw boost::system::system_error(boost::system::error_code(EINVAL, boost::system::generic_category()), what);
    };
    if (SSL_CTX_set_min_proto_version(native, TLS1_2_VERSION) != 1) fail("TLS: cannot set the minimum version");
    SSL_CTX_set_options(native, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION);
    if (SSL_CTX_set_cipher_list(native, kTls12Ciphers) != 1) fail("TLS: cannot set the cipher list");
    if (SSL_CTX_use_certificate(native, cert) != 1) fail("TLS: cannot use the certificate");
    for (X509* c : chain)
      if (SSL_CTX_add1_chain_cert(native, c) != 1) fail("TLS: cannot add a chain certificate");
    if (SSL_CTX_use_PrivateKey(native, key) != 1) fail("TLS: cannot use the private key");
  }
};

// ---------------------------------------------------------------- bodies

struct BodyRead {
  std::string data;
  bool too_large = false;
};

// Reads the request body with a bound. Past the bound the rest is drained
// and discarded (cpprestsdk sends the response only once the request has
// been read, and would otherwise buffer it all).
pplx::task<BodyRead> read_body(const http_request& req, std::size_t limit, bool known_too_large) {
  struct State {
    concurrency::streams::streambuf<std::uint8_t> buf;
    std::vector<std::uint8_t> chunk;
    BodyRead out;
    std::size_t limit = 0;
  };
  auto st = std::make_shared<State>();
  st->buf = req.body().streambuf();
  st->chunk.resize(64 * 1024);
  st->limit = limit;
  st->out.too_large = known_too_large;
  return pplx::details::_do_while([st]() -> pplx::task<bool> {
           return st->buf.getn(st->chunk.data(), st->chunk.size()).then([st](std::size_t n) {
             if (n == 0) return false;
             if (!st->out.too_large) {
               if (st->out.data.size() + n > st->limit) {
                 st->out.too_large = true;
                 std::string().swap(st->out.data);
               } else {
                 st->out.data.append(reinterpret_cast<const char*>(st->chunk.data()), n);
               }
             }
             return true;
           });
         })
      .then([st](bool) { return std::move(st->out); });
}

// Nesting depth outside strings, so deeply nested input is refused before
// any recursive code (dump, comparisons) sees it.
std::size_t json_depth(std::string_view text) {
  std::size_t depth = 0, max_depth = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    else if (c == '[' || c == '{') max_depth = std::max(max_depth, ++depth);
    else if ((c == ']' || c == '}') && depth > 0) --depth;
  }
  return max_depth;
}

std::string random_request_id() {
  std::array<unsigned char, 16> raw{};
  randombytes_buf(raw.data(), raw.size());
  std::string hex(raw.size() * 2 + 1, '\0');
  sodium_bin2hex(hex.data(), hex.size(), raw.data(), raw.size());
  hex.pop_back();
  return hex;
}

// A caller-supplied X-Request-Id, kept only if it is short and plain.
std::string request_id_for(const http_request& req) {
  std::string given;
  if (req.headers().match("X-Request-Id", given)) {
    std::string clean;
    for (char c : given) {
      if (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' || c == ':') clean += c;
      if (clean.size() == kMaxRequestIdLength) break;
    }
    if (!clean.empty()) return clean;
  }
  return random_request_id();
}

std::vector<Route> make_routes();

bool iequals_prefix(std::string_view text, std::string_view prefix) {
  if (text.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(text[i])) != std::tolower(static_cast<unsigned char>(prefix[i])))
      return false;
  return true;
}

std::string trim(std::string s) {
  const auto b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  const auto e = s.find_last_not_of(" \t");
  return s.substr(b, e - b + 1);
}

struct RequestState {
  http_request req;
  std::chrono::steady_clock::time_point start;
  std::string request_id;
  std::shared_ptr<void> ticket;  // counts in `inflight` until the last copy goes
  std::shared_ptr<void> busy;    // counts in `busy` from processing until the reply is written
};

}  // namespace

// ---------------------------------------------------------------- server

struct HttpServer::Impl {
  service::Service& svc;
  ServerOptions options;
  std::vector<Route> routes;
  std::unique_ptr<listener::http_listener> listener;
  std::shared_ptr<TlsMaterial> tls;
  Metrics metrics;
  std::atomic<bool> draining{false};
  std::atomic<int> streams{0};  // campaign fetches streaming now
  // inflight: every request from arrival until its reply is written (or
  // failed), including ones still waiting for their body (a metric). busy:
  // the subset being processed or answered; drain() waits for it.
  std::mutex inflight_mu;
  std::condition_variable inflight_cv;
  std::size_t inflight = 0;
  std::size_t busy = 0;
  bool open = false;

  Impl(service::Service& s, ServerOptions o) : svc(s), options(std::move(o)), routes(make_routes()) {}

  std::shared_ptr<void> count_in(std::size_t Impl::*counter) {
    {
      std::lock_guard lock(inflight_mu);
      ++(this->*counter);
    }
    return std::shared_ptr<void>(static_cast<void*>(this), [counter](void* p) {
      auto* self = static_cast<Impl*>(p);
      std::lock_guard lock(self->inflight_mu);
      if (--(self->*counter) == 0) self->inflight_cv.notify_all();
    });
  }

  bool wait_zero(std::size_t Impl::*counter, std::chrono::milliseconds bound) {
    std::unique_lock lock(inflight_mu);
    return inflight_cv.wait_for(lock, bound, [&] { return this->*counter == 0; });
  }

  void on_request(http_request req) noexcept;
  void process(const std::shared_ptr<RequestState>& rs, const BodyRead& body, bool body_failed) noexcept;
  Result dispatch(const std::shared_ptr<RequestState>& rs, const BodyRead& body, std::string& route_label,
                  std::string& principal);
  void send(const std::shared_ptr<RequestState>& rs, Result result) noexcept;
  void add_common_headers(http_response& resp, const std::string& request_id) const {
    auto& h = resp.headers();
    h.add("X-Request-Id", request_id);
    h.add("Cache-Control", "no-store");
    h.add("X-Content-Type-Options", "nosniff");
    if (tls) h.add("Strict-Transport-Security", "max-age=31536000");
  }
  std::string metrics_text();
};

namespace {

Result problem(int status, const std::string& code, const std::string& detail, const std::string& request_id) {
  Json doc = {{"type", kProblemBase + code}, {"title", title_for(code)},    {"status", status},
              {"detail", detail},            {"code", code},                {"request_id", request_id}};
  Result r = json_result(status, doc);
  r.content_type = kProblemJson;
  return r;
}

// Handlers -----------------------------------------------------------------

// 503 while the audit journal cannot be folded: reads will soon fail closed,
// so a load balancer should send them elsewhere.
Result h_healthz(HandlerContext& c) {
  if (!c.svc.audit_journal_status().fold_error.empty())
    return json_result(503, {{"status", "degraded"}, {"code", "audit_unavailable"}});
  return json_result(200, {{"status", "ok"}});
}

Result h_metrics(HandlerContext& c);

// 201 with a Location header naming the new resource.
Result created(const Json& out, const std::string& collection) {
  Result r = json_result(201, out);
  if (out.contains("id") && out["id"].is_string())
    r.headers.emplace_back("Location", collection + "/" + out["id"].get<std::string>());
  return r;
}

Result h_create_subject(HandlerContext& c) { return created(c.svc.create_subject(c.caller, c.body), "/v1/subjects"); }

Result h_find_subjects(HandlerContext& c) {
  static const std::array<const char*, 3> keys = {"email", "phone", "external_id"};
  const char* field = nullptr;
  for (const char* k : keys) {
    if (!c.query.count(k)) continue;
    if (field != nullptr)
      throw Error(ErrorCode::invalid_argument, "give exactly one of the query parameters email, phone, external_id");
    field = k;
  }
  if (field == nullptr)
    throw Error(ErrorCode::invalid_argument, "give exactly one of the query parameters email, phone, external_id");
  return json_result(200, c.svc.find_subjects(c.caller, field, c.query.at(field)));
}

Result h_get_subject(HandlerContext& c) { return json_result(200, c.svc.get_subject(c.caller, c.param(0))); }
Result h_patch_subject(HandlerContext& c) {
  return json_result(200, c.svc.patch_subject(c.caller, c.param(0), c.body));
}
Result h_erase_subject(HandlerContext& c) { return json_result(200, c.svc.erase_subject(c.caller, c.param(0))); }
Result h_batch_create(HandlerContext& c) { return json_result(200, c.svc.batch_create(c.caller, c.body)); }
Result h_batch_get(HandlerContext& c) { return json_result(200, c.svc.batch_get(c.caller, c.body)); }
Result h_touchpoint(HandlerContext& c) {
  return json_result(201, c.svc.add_touchpoint(c.caller, c.param(0), c.body));
}
Result h_order(HandlerContext& c) { return json_result(201, c.svc.add_order(c.caller, c.param(0), c.body)); }
Result h_get_consents(HandlerContext& c) { return json_result(200, c.svc.get_consents(c.caller, c.param(0))); }
Result h_record_consent(HandlerContext& c) {
  std::string gpc;
  const bool has_gpc = c.req.headers().match("Sec-GPC", gpc) && trim(gpc) == "1";
  return json_result(201, c.svc.record_consent(c.caller, c.param(0), c.body, has_gpc));
}
Result h_confirm_consent(HandlerContext& c) { return json_result(200, c.svc.confirm_consent(c.caller, c.body)); }
Result h_audit_entries(HandlerContext& c) { return json_result(200, c.svc.audit_entries(c.caller, c.query)); }
Result h_audit_checkpoint(HandlerContext& c) { return json_result(200, c.svc.audit_checkpoint(c.caller)); }
Result h_inclusion(HandlerContext& c) {
  return json_result(200, c.svc.audit_inclusion_proof(c.caller, c.query_or_empty("index"), c.query_or_empty("size")));
}
Result h_consistency(HandlerContext& c) {
  return json_result(200,
                     c.svc.audit_consistency_proof(c.caller, c.query_or_empty("first"), c.query_or_empty("second")));
}
Result h_audit_export(HandlerContext& c) {
  std::stringstream out;
  c.svc.audit_export(c.caller, out);
  Result r;
  r.status = 200;
  r.body = std::move(out).str();
  r.content_type = "application/octet-stream";
  r.headers.emplace_back("Content-Disposition", "attachment; filename=\"custos-audit-export.bin\"");
  return r;
}

Result h_analytics_rfm(HandlerContext& c) { return json_result(200, c.svc.analytics_rfm(c.caller)); }

// POST /v1/campaigns:fetch streams NDJSON: one line per subject, then a
// summary line. Validation errors arrive before the first line as a normal
// problem+json response. The producer waits while more than
// kMaxBufferedStream bytes are unsent, so memory stays bounded whatever the
// result size; a client that stops reading for `timeout` ends the stream.
constexpr std::size_t kMaxBufferedStream = 1 << 20;

Result h_campaign_fetch(HandlerContext& c) {
  // A producer blocks its pool thread (back-pressure) while other pool
  // threads drain the buffer: cap how many may do so at once.
  if (c.streams->fetch_add(1) >= c.max_streams) {
    c.streams->fetch_sub(1);
    HttpProblem p(503, "unavailable", "too many campaign fetches are streaming; retry shortly");
    p.headers = {{"Retry-After", "1"}};
    throw p;
  }
  struct Slot {
    std::atomic<int>* n;
    ~Slot() { n->fetch_sub(1); }
  } slot{c.streams};
  using Buffer = concurrency::streams::producer_consumer_buffer<std::uint8_t>;
  auto buffer = std::make_shared<Buffer>();
  auto client_gone = std::make_shared<std::atomic<bool>>(false);
  bool started = false;
  auto emit = [&](const std::string& line) -> bool {
    if (!started) {
      http_response resp(web::http::status_codes::OK);
      c.decorate(resp);
      resp.set_body(buffer->create_istream(), "application/x-ndjson");
      c.req.reply(resp).then([buffer, client_gone, keep = c.keepalive](pplx::task<void> t) {
        try {
          t.get();
        } catch (...) {
          client_gone->store(true);
        }
      });
      started = true;
    }
    const auto deadline = std::chrono::steady_clock::now() + c.timeout;
    while (buffer->in_avail() > kMaxBufferedStream) {
      if (client_gone->load() || std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));  // back-pressure from a slow reader
    }
    if (client_gone->load()) return false;
    buffer->putn_nocopy(reinterpret_cast<const std::uint8_t*>(line.data()), line.size()).wait();
    return true;
  };
  try {
    c.svc.campaign_fetch(c.caller, c.body, emit);
  } catch (const Error& e) {
    if (!started) throw;
    // Headers are gone: end the stream with an error line the client can see.
    const Json line = {{"error", code_name(e.code())}, {"done", false}};
    const std::string text = line.dump() + "\n";
    buffer->putn_nocopy(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()).wait();
  } catch (...) {
    if (!started) throw;
  }
  // Not waited for: closing schedules work on the pool, which must not
  // depend on this thread being free.
  if (started) buffer->close(std::ios_base::out);
  Result r;
  r.streamed = true;
  return r;
}

Result h_dsr_create(HandlerContext& c) { return created(c.svc.dsr_create(c.caller, c.body), "/v1/dsr"); }
Result h_dsr_list(HandlerContext& c) { return json_result(200, c.svc.dsr_list(c.caller, c.query)); }
Result h_dsr_get(HandlerContext& c) { return json_result(200, c.svc.dsr_get(c.caller, c.param(0))); }
Result h_dsr_transition(HandlerContext& c) {
  return json_result(200, c.svc.dsr_transition(c.caller, c.param(0), c.body));
}
Result h_dsr_export(HandlerContext& c) {
  Result r = json_result(200, c.svc.dsr_export(c.caller, c.param(0)));
  r.headers.emplace_back("Content-Disposition", "attachment; filename=\"custos-dsr-export.json\"");
  return r;
}
Result h_breach_create(HandlerContext& c) { return created(c.svc.breach_create(c.caller, c.body), "/v1/breaches"); }
Result h_breach_list(HandlerContext& c) { return json_result(200, c.svc.breach_list(c.caller, c.query)); }
Result h_breach_get(HandlerContext& c) { return json_result(200, c.svc.breach_get(c.caller, c.param(0))); }
Result h_breach_event(HandlerContext& c) {
  return json_result(201, c.svc.breach_add_event(c.caller, c.param(0), c.body));
}
Result h_breach_compute(HandlerContext& c) {
  return json_result(200, c.svc.breach_compute_affected(c.caller, c.param(0), c.body));
}
Result h_breach_affected(HandlerContext& c) {
  return json_result(200, c.svc.breach_affected(c.caller, c.param(0), c.query));
}
Result h_legal_hold(HandlerContext& c) {
  return json_result(200, c.svc.set_legal_hold(c.caller, c.param(0), c.body));
}
Result h_retention_run(HandlerContext& c) { return json_result(200, c.svc.retention_run(c.caller, c.body)); }

}  // namespace

namespace {
std::vector<Route> make_routes() {
  std::vector<Route> r;
  auto add = [&](const char* method, const char* path, bool auth, BodyMode body, std::vector<std::string> query,
                 Handler h) {
    Route route;
    route.method = method;
    route.path = path;
    route.segments = split_template(path);
    route.auth = auth;
    route.body = body;
    route.query = std::move(query);
    route.handler = std::move(h);
    r.push_back(std::move(route));
  };
  const auto none = BodyMode::none;
  const auto json = BodyMode::json;
  add("GET", "/healthz", false, none, {}, h_healthz);
  add("GET", "/metrics", true, none, {}, h_metrics);
  add("POST", "/v1/subjects", true, json, {}, h_create_subject);
  add("GET", "/v1/subjects", true, none, {"email", "phone", "external_id"}, h_find_subjects);
  add("POST", "/v1/subjects:batchCreate", true, json, {}, h_batch_create);
  add("POST", "/v1/subjects:batchGet", true, json, {}, h_batch_get);
  add("GET", "/v1/subjects/{id}", true, none, {}, h_get_subject);
  add("PATCH", "/v1/subjects/{id}", true, json, {}, h_patch_subject);
  add("DELETE", "/v1/subjects/{id}", true, none, {}, h_erase_subject);
  add("POST", "/v1/subjects/{id}/touchpoints", true, json, {}, h_touchpoint);
  add("POST", "/v1/subjects/{id}/orders", true, json, {}, h_order);
  add("GET", "/v1/subjects/{id}/consents", true, none, {}, h_get_consents);
  add("POST", "/v1/subjects/{id}/consents", true, json, {}, h_record_consent);
  add("POST", "/v1/consents:confirm", true, json, {}, h_confirm_consent);
  add("POST", "/v1/subjects/{id}:legalHold", true, json, {}, h_legal_hold);
  add("POST", "/v1/campaigns:fetch", true, json, {}, h_campaign_fetch);
  add("GET", "/v1/analytics/rfm", true, none, {}, h_analytics_rfm);
  add("POST", "/v1/dsr", true, json, {}, h_dsr_create);
  add("GET", "/v1/dsr", true, none, {"status", "type", "overdue", "due_within_days", "limit"}, h_dsr_list);
  add("GET", "/v1/dsr/{id}", true, none, {}, h_dsr_get);
  add("POST", "/v1/dsr/{id}:transition", true, json, {}, h_dsr_transition);
  add("GET", "/v1/dsr/{id}/export", true, none, {}, h_dsr_export);
  add("POST", "/v1/breaches", true, json, {}, h_breach_create);
  add("GET", "/v1/breaches", true, none, {"status", "at_risk", "overdue", "margin_hours"}, h_breach_list);
  add("GET", "/v1/breaches/{id}", true, none, {}, h_breach_get);
  add("POST", "/v1/breaches/{id}/events", true, json, {}, h_breach_event);
  add("POST", "/v1/breaches/{id}:computeAffected", true, json, {}, h_breach_compute);
  add("GET", "/v1/breaches/{id}/affected", true, none, {"after", "limit"}, h_breach_affected);
  add("POST", "/v1/retention:run", true, json, {}, h_retention_run);
  add("GET", "/v1/audit/entries", true, none,
      {"subject", "principal", "purpose", "operation", "from", "to", "after", "limit"}, h_audit_entries);
  add("GET", "/v1/audit/checkpoint", true, none, {}, h_audit_checkpoint);
  add("GET", "/v1/audit/proof/inclusion", true, none, {"index", "size"}, h_inclusion);
  add("GET", "/v1/audit/proof/consistency", true, none, {"first", "second"}, h_consistency);
  add("GET", "/v1/audit/export", true, none, {}, h_audit_export);
  return r;
}

Result h_metrics(HandlerContext& c) {
  Result r;
  r.body = c.metrics_text();
  r.content_type = "text/plain; version=0.0.4; charset=utf-8";
  return r;
}
}  // namespace

std::vector<RouteInfo> route_table() {
  std::vector<RouteInfo> out;
  for (const auto& r : make_routes()) out.push_back({r.method, r.path});
  return out;
}

std::string HttpServer::Impl::metrics_text() {
  std::ostringstream os;
  os.imbue(std::locale::classic());
  metrics.render(os);
  const auto& counters = svc.counters();
  const auto journal = svc.audit_journal_status();
  os << "# HELP custos_audit_journal_pending Journaled read entries not yet folded into the tree.\n"
        "# TYPE custos_audit_journal_pending gauge\n"
     << "custos_audit_journal_pending " << journal.pending << "\n";
  os << "# HELP custos_audit_fold_failing 1 while folding the audit journal fails (reads will fail closed once it is full).\n"
        "# TYPE custos_audit_fold_failing gauge\n"
     << "custos_audit_fold_failing " << (journal.fold_error.empty() ? 0 : 1) << "\n";
  os << "# HELP custos_decryptions_total Personal field values decrypted and served by this process.\n"
        "# TYPE custos_decryptions_total counter\n"
     << "custos_decryptions_total " << counters.decryptions.load() << "\n";
  os << "# HELP custos_audit_entries_total Entries in the audit log.\n"
        "# TYPE custos_audit_entries_total counter\n"
     << "custos_audit_entries_total " << svc.audit_size() << "\n";
  os << "# HELP custos_audit_checkpoint_size Tree size of the latest signed audit checkpoint.\n"
        "# TYPE custos_audit_checkpoint_size gauge\n"
     << "custos_audit_checkpoint_size " << svc.audit_checkpoint_size() << "\n";
  std::size_t inflight_now = 0;
  {
    std::lock_guard lock(inflight_mu);
    inflight_now = inflight;
  }
  os << "# HELP custos_http_requests_in_flight Requests being read or handled.\n"
        "# TYPE custos_http_requests_in_flight gauge\n"
     << "custos_http_requests_in_flight " << inflight_now << "\n";
  return os.str();
}

void HttpServer::Impl::on_request(http_request req) noexcept {
  try {
    auto rs = std::make_shared<RequestState>();
    rs->req = req;
    rs->start = std::chrono::steady_clock::now();
    rs->ticket = count_in(&Impl::inflight);
    rs->request_id = request_id_for(req);

    const auto& headers = req.headers();
    const bool chunked = headers.has("Transfer-Encoding");
    const std::uint64_t length = headers.content_length();
    if (!chunked && length == 0) {
      process(rs, BodyRead{}, false);
      return;
    }
    const bool known_too_large = length > options.max_body_bytes;
    read_body(req, options.max_body_bytes, known_too_large).then([this, rs](pplx::task<BodyRead> t) noexcept {
      BodyRead body;
      bool failed = false;
      try {
        body = t.get();
      } catch (...) {
        failed = true;  // the client went away mid-body
      }
      process(rs, body, failed);
    });
  } catch (...) {
    try {
      req.reply(web::http::status_codes::InternalError).then([](pplx::task<void> t) {
        try {
          t.get();
        } catch (...) {
        }
      });
    } catch (...) {
    }
  }
}

Result HttpServer::Impl::dispatch(const std::shared_ptr<RequestState>& rs, const BodyRead& body,
                                  std::string& route_label, std::string& principal) {
  const http_request& req = rs->req;
  if (draining) {
    HttpProblem p(503, "unavailable", "the server is shutting down");
    p.headers = {{"Retry-After", "1"}, {"Connection", "close"}};
    throw p;
  }

  // Path: split the encoded path first, then decode each segment, so an
  // encoded '/' cannot create a segment.
  const web::uri& uri = req.request_uri();
  std::vector<std::string> segments;
  try {
    for (const auto& s : web::uri::split_path(uri.path())) segments.push_back(web::uri::decode(s));
  } catch (const std::exception&) {
    throw Error(ErrorCode::invalid_argument, "malformed percent-encoding in the request path");
  }

  const Route* route = nullptr;
  std::vector<std::string> params;
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
        found.push_back(*v);
      } else {
        ok = r.segments[i] == segments[i];
      }
    }
    if (!ok) continue;
    if (r.method == req.method()) {
      route = &r;
      params = std::move(found);
      break;
    }
    if (allow.find(r.method) == std::string::npos) allow += (allow.empty() ? "" : ", ") + r.method;
  }
  if (route == nullptr) {
    if (allow.empty()) throw HttpProblem(404, "not_found", "no such resource");
    HttpProblem p(405, "method_not_allowed", "method " + printable(req.method(), 16) + " is not allowed here");
    p.headers = {{"Allow", allow}};
    throw p;
  }
  route_label = route->path;

  if (body.too_large)
    throw Error(ErrorCode::payload_too_large,
                "request body larger than " + std::to_string(options.max_body_bytes) + " bytes");

  // Query: decode keys and values; only the route's parameters, each once.
  std::map<std::string, std::string> query;
  const std::string raw_query = uri.query();
  std::size_t pos = 0;
  while (pos <= raw_query.size() && !raw_query.empty()) {
    std::size_t amp = raw_query.find('&', pos);
    if (amp == std::string::npos) amp = raw_query.size();
    const std::string piece = raw_query.substr(pos, amp - pos);
    pos = amp + 1;
    if (piece.empty()) continue;
    const auto eq = piece.find('=');
    std::string key, value;
    try {
      key = web::uri::decode(piece.substr(0, eq));
      value = eq == std::string::npos ? std::string() : web::uri::decode(piece.substr(eq + 1));
    } catch (const std::exception&) {
      throw Error(ErrorCode::invalid_argument, "malformed percent-encoding in the query string");
    }
    if (std::find(route->query.begin(), route->query.end(), key) == route->query.end())
      throw Error(ErrorCode::invalid_argument, "unknown query parameter '" + printable(key) + "'");
    if (!query.emplace(key, std::move(value)).second)
      throw Error(ErrorCode::invalid_argument, "query parameter '" + key + "' given more than once");
  }

  HandlerContext ctx{[this] { return metrics_text(); }, svc, req, {}, std::move(params), std::move(query), Json()};
  ctx.caller.request_id = rs->request_id;
  ctx.decorate = [this, id = rs->request_id](http_response& resp) { add_common_headers(resp, id); };
  ctx.keepalive = rs->ticket;
  ctx.timeout = std::chrono::duration_cast<std::chrono::seconds>(options.timeout);
  ctx.streams = &streams;
  ctx.max_streams = std::max(1, options.max_streams);
  if (route->auth) {
    std::string authz;
    if (!req.headers().match("Authorization", authz) || !iequals_prefix(authz, "Bearer "))
      throw Error(ErrorCode::unauthenticated, "missing bearer token: send 'Authorization: Bearer <token>'");
    const std::string token = trim(authz.substr(7));
    if (token.empty()) throw Error(ErrorCode::unauthenticated, "missing bearer token");
    ctx.caller.principal = svc.authenticate(token);
    principal = ctx.caller.principal.name;
  }
  std::string purpose;
  if (req.headers().match("Custos-Purpose", purpose)) ctx.caller.purpose = trim(purpose);

  if (route->body == BodyMode::json) {
    if (body.data.empty()) throw Error(ErrorCode::invalid_argument, "a JSON request body is required");
    if (json_depth(body.data) > kMaxJsonDepth)
      throw Error(ErrorCode::invalid_argument,
                  "request body nests deeper than " + std::to_string(kMaxJsonDepth) + " levels");
    try {
      ctx.body = Json::parse(body.data);
    } catch (const Json::parse_error& e) {
      // Never e.what(): nlohmann quotes the input near the error.
      throw Error(ErrorCode::invalid_argument,
                  "request body is not valid JSON (at byte " + std::to_string(e.byte) + ")");
    }
  }
  return route->handler(ctx);
}

void HttpServer::Impl::process(const std::shared_ptr<RequestState>& rs, const BodyRead& body,
                               bool body_failed) noexcept {
  std::string route_label = "unmatched";
  std::string principal;
  std::string code;
  Result result;
  log::Level level = log::Level::info;
  Json extra = Json::object();
  // Counted before dispatch() checks `draining`, so shutdown either sees
  // this request or the request sees the drain.
  rs->busy = count_in(&Impl::busy);
  try {
    if (body_failed) throw Error(ErrorCode::invalid_argument, "the request body could not be read");
    result = dispatch(rs, body, route_label, principal);
  } catch (const HttpProblem& p) {
    code = p.code;
    result = problem(p.status, p.code, p.detail, rs->request_id);
    for (const auto& h : p.headers) result.headers.push_back(h);
  } catch (const Error& e) {
    code = code_name(e.code());
    const int status = status_for(e.code());
    if (status >= 500) {
      level = log::Level::error;
      extra["cause"] = e.what();  // custos::Error messages hold no personal values
      result = problem(status, code, generic_detail(e.code()), rs->request_id);
    } else {
      result = problem(status, code, e.what(), rs->request_id);
    }
    if (e.code() == ErrorCode::unauthenticated)
      result.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"custos\"");
    if (e.code() == ErrorCode::payload_too_large && body.too_large)
      result.headers.emplace_back("Connection", "close");
  } catch (const std::exception& e) {
    // Third-party messages may quote input: log the type only.
    code = "internal";
    level = log::Level::error;
    extra["cause"] = std::string("unexpected exception of type ") + typeid(e).name();
    result = problem(500, code, "internal error", rs->request_id);
  } catch (...) {
    code = "internal";
    level = log::Level::error;
    extra["cause"] = "unexpected non-standard exception";
    result = problem(500, code, "internal error", rs->request_id);
  }

  const int status = result.status;
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - rs->start).count();
  const std::string method = method_label(rs->req.method());
  // Counted before the reply goes out, so a client that reads /metrics right
  // after a response always sees that response counted.
  try {
    metrics.observe(route_label, method, status, seconds);
  } catch (...) {
  }
  if (!result.streamed) send(rs, std::move(result));

  try {
    if (log::enabled(level)) {
      Json line = {{"request_id", rs->request_id},
                   {"principal", principal.empty() ? Json(nullptr) : Json(principal)},
                   {"method", method},
                   {"route", route_label},
                   {"status", status},
                   {"latency_ms", std::round(seconds * 1e6) / 1e3}};
      if (!code.empty()) line["code"] = code;
      for (auto& [k, v] : extra.items()) line[k] = v;
      log::write(level, "request", std::move(line));
    }
  } catch (...) {
  }
}

void HttpServer::Impl::send(const std::shared_ptr<RequestState>& rs, Result result) noexcept {
  try {
    http_response resp(static_cast<web::http::status_code>(result.status));
    add_common_headers(resp, rs->request_id);
    auto& h = resp.headers();
    for (const auto& [k, v] : result.headers) h.add(k, v);
    resp.set_body(std::move(result.body), result.content_type);
    rs->req.reply(resp).then([ticket = rs->ticket, busy = rs->busy](pplx::task<void> t) {
      try {
        t.get();
      } catch (...) {
        // the client went away; nothing to do
      }
    });
  } catch (...) {
  }
}

// ---------------------------------------------------------------- public

ListenAddress parse_listen(const std::string& text) {
  ListenAddress out;
  std::string port_text;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':')
      throw std::invalid_argument("--listen: expected [IPv6]:PORT");
    out.host = text.substr(1, close - 1);
    port_text = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string::npos || colon == 0) throw std::invalid_argument("--listen: expected HOST:PORT");
    out.host = text.substr(0, colon);
    if (out.host.find(':') != std::string::npos)
      throw std::invalid_argument("--listen: write IPv6 addresses as [ADDR]:PORT");
    port_text = text.substr(colon + 1);
  }
  if (port_text.empty() || port_text.size() > 5 || port_text.find_first_not_of("0123456789") != std::string::npos)
    throw std::invalid_argument("--listen: the port must be a number 1-65535");
  const unsigned long port = std::stoul(port_text);
  if (port == 0 || port > 65535) throw std::invalid_argument("--listen: the port must be a number 1-65535");
  out.port = static_cast<std::uint16_t>(port);
  for (char c : out.host)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != ':')
      throw std::invalid_argument("--listen: invalid host name");

  in_addr v4{};
  in6_addr v6{};
  if (out.host == "localhost") {
    out.loopback = true;
  } else if (::inet_pton(AF_INET, out.host.c_str(), &v4) == 1) {
    out.loopback = (ntohl(v4.s_addr) >> 24) == 127;
  } else if (::inet_pton(AF_INET6, out.host.c_str(), &v6) == 1) {
    out.loopback = IN6_IS_ADDR_LOOPBACK(&v6) || (IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127);
  }
  return out;
}

HttpServer::HttpServer(service::Service& service, ServerOptions options)
    : impl_(std::make_unique<Impl>(service, std::move(options))) {}

HttpServer::~HttpServer() {
  // Once listening, cpprestsdk threads may refer to Impl until the process
  // ends: drain() leaves it to the exit.
  if (impl_ && impl_->open) drain(std::chrono::milliseconds(0));
}

const std::string& HttpServer::url() const { return impl_->options.url; }

std::string HttpServer::metrics_text() { return impl_->metrics_text(); }

void HttpServer::open() {
  web::uri uri;
  try {
    uri = web::uri(impl_->options.url);
  } catch (const std::exception&) {
    throw std::runtime_error("invalid listen URL " + impl_->options.url);
  }
  const bool https = uri.scheme() == "https";
  if (!https && uri.scheme() != "http") throw std::runtime_error("listen URL must be http:// or https://");

  listener::http_listener_config config;
  config.set_timeout(utility::seconds(impl_->options.timeout.count()));
  config.set_backlog(256);
  if (https) {
    if (impl_->options.tls_cert.empty() || impl_->options.tls_key.empty())
      throw std::runtime_error("https needs both a TLS certificate and a key");
    auto tls = std::make_shared<TlsMaterial>();
    tls->load(impl_->options.tls_cert, impl_->options.tls_key);
    // Fail at start-up, not on the first connection, if OpenSSL refuses it.
    {
      boost::asio::ssl::context probe(boost::asio::ssl::context::sslv23);
      try {
        tls->apply(probe);
      } catch (const std::exception& e) {
        throw std::runtime_error(std::string("TLS configuration rejected: ") + e.what());
      }
    }
    impl_->tls = tls;
    config.set_ssl_context_callback([tls](boost::asio::ssl::context& ctx) {
      // cpprestsdk only catches boost::system::system_error here.
      try {
        tls->apply(ctx);
      } catch (const boost::system::system_error&) {
        throw;
      } catch (...) {
        throw boost::system::system_error(boost::system::error_code(EINVAL, boost::system::generic_category()),
                                          "TLS setup failed");
      }
    });
  }
  impl_->listener = std::make_unique<listener::http_listener>(uri, config);
  Impl* impl = impl_.get();
  impl_->listener->support([impl](http_request req) { impl->on_request(std::move(req)); });
  // cpprestsdk answers OPTIONS and TRACE itself unless told otherwise; its
  // TRACE echoes the request, Authorization header included.
  impl_->listener->support(web::http::methods::OPTIONS, [impl](http_request req) { impl->on_request(std::move(req)); });
  impl_->listener->support(web::http::methods::TRCE, [impl](http_request req) { impl->on_request(std::move(req)); });
  try {
    impl_->listener->open().wait();
  } catch (const std::exception& e) {
    impl_->listener.reset();
    throw std::runtime_error("cannot listen on " + impl_->options.url + ": " + e.what());
  }
  impl_->open = true;
}

bool HttpServer::drain(std::chrono::milliseconds bound) {
  impl_->draining = true;
  const bool drained = impl_->wait_zero(&Impl::busy, bound);
  // Leaked on purpose: cpprestsdk threads keep running until _Exit.
  (void)impl_.release();
  return drained;
}

}  // namespace custos::http
