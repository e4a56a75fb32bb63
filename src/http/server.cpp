// The HTTP transport: HttpServer and the request pipeline between the
// connection layer (connection.cpp) and the route handlers (handlers.cpp).
// See server.h for the contract.
//
// Privacy: the access log and the metrics carry route templates, codes and
// pseudonymous ids only — never a query string, a body, a header value or a
// token. Error details come from custos::Error (whose contract excludes
// personal values) for 4xx; 5xx details are generic and the cause is logged.
#include "server.h"

#include <arpa/inet.h>
#include <sodium.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/beast/core/string.hpp>
#include <cmath>
#include <optional>
#include <sstream>
#include <thread>
#include <typeinfo>

#include "client_address.h"
#include "connection.h"
#include "edge_check.h"
#include "custos/error.h"
#include "custos/service/service.h"
#include "log.h"
#include "metrics.h"
#include "quota.h"
#include "router.h"
#include "static_assets.h"
#include "tls.h"

namespace custos::http {
namespace {

namespace net = boost::asio;
namespace bhttp = boost::beast::http;
using tcp = net::ip::tcp;

constexpr std::size_t kMaxJsonDepth = 64;

std::string_view sv(boost::beast::string_view s) { return {s.data(), s.size()}; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Nesting depth outside strings, so deeply nested input is refused before
// any recursive code (the parser, dump, comparisons) sees it.
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

Json parse_body(const std::string& text) {
  if (text.empty()) throw Error(ErrorCode::invalid_argument, "a JSON request body is required");
  if (json_depth(text) > kMaxJsonDepth)
    throw Error(ErrorCode::invalid_argument,
                "request body nests deeper than " + std::to_string(kMaxJsonDepth) + " levels");
  try {
    return Json::parse(text);
  } catch (const Json::parse_error& e) {
    // Never e.what(): nlohmann quotes the input near the error.
    throw Error(ErrorCode::invalid_argument, "request body is not valid JSON (at byte " + std::to_string(e.byte) + ")");
  } catch (const Json::exception&) {
    // out_of_range.406: a number that does not fit a double (1e400, 400 digits).
    throw Error(ErrorCode::invalid_argument, "request body holds a number out of range");
  }
}

std::string method_label(std::string_view m) {
  for (const char* k : {"GET", "POST", "PATCH", "DELETE", "PUT", "HEAD", "OPTIONS"})
    if (m == k) return std::string(m);
  return "OTHER";
}

Result problem(int status, const std::string& code, const std::string& detail, const std::string& request_id) {
  Result r;
  r.status = status;
  r.content_type = kProblemJson;
  r.body = problem_body(status, code, detail, request_id);
  return r;
}

// How often a streaming request re-checks its caller's token while it
// streams a response (the body of an import is checked per block instead).
constexpr std::chrono::milliseconds kTokenRecheck{1000};

// A streamed request body (POST /v1/import) that hands each block to the
// handler only once `check` has passed after it arrived: a token revoked at
// any moment stops every byte that arrives later, and nothing sent after
// the revocation is imported. A block refused is wiped and read() throws
// what `check` threw; the import ends (Service::import_ndjson commits the
// lines it had read before), and the connection closes after the answer
// if the rest of the body is still unread.
// One check per block of up to 64 KiB (a token lookup): cheaper than the
// store work each block's lines cost, and unlike a timed check it leaves
// no window in which lines sent after the revocation get in.
class RecheckedBody final : public RequestBodyStream {
 public:
  RecheckedBody(RequestBodyStream& body, std::function<void()> check) : body_(body), check_(std::move(check)) {}

  std::size_t read(char* buffer, std::size_t capacity) override {
    const std::size_t n = body_.read(buffer, capacity);
    if (n == 0) return n;
    try {
      check_();
    } catch (...) {
      sodium_memzero(buffer, n);
      throw;
    }
    return n;
  }

 private:
  RequestBodyStream& body_;
  const std::function<void()> check_;
};

}  // namespace

// For the fuzzers (edge_check.h): the same parse, without a server.
Json parse_request_body(const std::string& text) { return parse_body(text); }

struct HttpServer::Impl final : RequestHandler {
  service::Service& svc;
  const ServerOptions options;
  const std::vector<Route> routes = make_routes();
  RequestMetrics metrics;
  PrincipalQuotas quotas;
  PrincipalQuotas privacy_quotas;  // per client address, /v1/privacy/*
  EdgeCounters counters;
  std::atomic<bool> draining{false};
  std::atomic<int> streams{0};  // stream slots claimed now, all principals
  const int max_streams;
  bool https = false;
  bool opened = false;
  std::uint16_t bound_port = 0;

  // Destroyed in reverse: the listener, then the io context (and with it
  // every connection), then the workers; all before the state above.
  net::thread_pool workers;         // handlers that return once done
  net::thread_pool stream_workers;  // handlers that hold a stream slot (Route::streams)
  net::io_context ioc;
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work;
  std::shared_ptr<Listener> listener;
  std::vector<std::thread> io_threads;

  Impl(service::Service& s, ServerOptions o)
      : svc(s),
        options(std::move(o)),
        quotas(QuotaLimits{options.principal_max_inflight, options.principal_rate, options.principal_burst,
                           options.principal_max_streams}),
        privacy_quotas(QuotaLimits{8, options.privacy_rate, options.privacy_burst, 0, "client address", 65536}),
        max_streams(std::max(1, options.max_streams)),
        workers(static_cast<std::size_t>(std::max(1, options.worker_threads))),
        // Two beyond the slots: a request over the limit still gets a
        // thread to be refused on (503), at once.
        stream_workers(static_cast<std::size_t>(max_streams + 2)),
        ioc(std::max(1, options.io_threads)) {}

  ~Impl() override { stop_threads(); }

  void stop_threads() {
    work.reset();
    ioc.stop();
    for (auto& t : io_threads)
      if (t.joinable()) t.join();
    workers.join();
    stream_workers.join();
  }

  Result handle(const Request& req, const std::string& request_id, ResponseStream& stream,
                RequestBodyStream* body) noexcept override;
  Result dispatch(const Request& req, const std::string& request_id, ResponseStream& stream, RequestBodyStream* body,
                  std::string& route_label, std::string& principal);
  RouteTraits route_traits(const Request& req) noexcept override {
    try {
      const RouteMatch m = match_route(routes, sv(req.method_string()), sv(req.target()));
      return {m.route->body == BodyMode::stream ? options.max_import_bytes : 0, m.route->streams};
    } catch (...) {
      return {};  // unrouted: the ordinary path answers it
    }
  }
  void count_refusal(int status) noexcept override {
    try {
      metrics.observe("edge", "OTHER", status, 0);
    } catch (...) {
    }
  }
  std::shared_ptr<void> claim_stream(const std::string& principal);
  std::function<void()> token_recheck(std::string_view token, const std::string& request_id,
                                      const std::string& principal, const std::string& route);
  std::string metrics_text();
};

// Authenticates `token` again (as dispatch did at the start of the request)
// and throws Error(unauthenticated) once it no longer authenticates: it was
// revoked while the request ran. Other errors (the store away) pass through.
// The token is a view into the request, which outlives its handler and so
// every call of the check (ResponseStream::recheck drops it on return).
std::function<void()> HttpServer::Impl::token_recheck(std::string_view token, const std::string& request_id,
                                                      const std::string& principal, const std::string& route) {
  return [this, token, request_id, principal, route] {
    try {
      (void)svc.authenticate(token);
    } catch (const Error& e) {
      if (e.code() != ErrorCode::unauthenticated) throw;
      log::warn("token_revoked_mid_request", {{"request_id", request_id}, {"principal", principal}, {"route", route}});
      throw Error(ErrorCode::unauthenticated, "the bearer token was revoked while the request ran");
    }
  };
}

std::shared_ptr<void> HttpServer::Impl::claim_stream(const std::string& principal) {
  auto mine = quotas.admit_stream(principal);
  // A stream holds a thread of the stream pool while its client sends or
  // reads; the pool has two more than the slots, for refusals.
  if (streams.fetch_add(1) >= max_streams) {
    streams.fetch_sub(1);
    throw HttpProblem(503, "unavailable",
                      "too many streaming requests (campaign fetches, exports, imports) are running; retry shortly",
                      {{"Retry-After", "1"}});
  }
  return std::shared_ptr<void>(mine.get(), [this, mine](void*) { streams.fetch_sub(1); });
}

Result HttpServer::Impl::dispatch(const Request& req, const std::string& request_id, ResponseStream& stream,
                                  RequestBodyStream* body, std::string& route_label, std::string& principal) {
  if (draining)
    throw HttpProblem(503, "unavailable", "the server is shutting down", {{"Retry-After", "1"}, {"Connection", "close"}});
  // The console and privacy page (static, unauthenticated; see static_assets.h).
  if (auto page = serve_static(req, route_label)) return std::move(*page);
  RouteMatch m = match_route(routes, sv(req.method_string()), sv(req.target()));
  route_label = m.route->path;

  // A quick request's reads (the token, then the handler's) share one
  // read transaction; a streaming one would hold it for as long as its client.
  std::unique_ptr<store::ReadSnapshot> snapshot;
  if (!m.route->streams) snapshot = svc.read_snapshot();
  HandlerContext ctx{svc, req, {}, std::move(m.params), std::move(m.query), Json(), &stream, {}, {}};
  ctx.caller.request_id = request_id;
  ctx.metrics_text = [this] { return metrics_text(); };
  std::shared_ptr<void> admitted;  // the principal's in-flight slot, until the reply
  std::optional<RecheckedBody> rechecked_body;  // a streamed body, read by the handler below
  if (m.route->auth) {
    const auto n = req.count(bhttp::field::authorization);
    if (n > 1) throw Error(ErrorCode::invalid_argument, "more than one Authorization header");
    const std::string_view authz = trim(sv(req[bhttp::field::authorization]));
    if (n == 0 || authz.size() < 7 || !boost::beast::iequals(boost::beast::string_view(authz.data(), 7), "Bearer "))
      throw Error(ErrorCode::unauthenticated, "missing bearer token: send 'Authorization: Bearer <token>'");
    const std::string_view token = trim(authz.substr(7));
    if (token.empty()) throw Error(ErrorCode::unauthenticated, "missing bearer token");
    ctx.caller.principal = svc.authenticate(token);
    principal = ctx.caller.principal.name;
    admitted = quotas.admit(principal);
    if (m.route->streams) {
      // A stream may run for minutes: the token is checked again while it
      // runs, so revoking it stops the stream, not only the next request.
      auto check = token_recheck(token, request_id, principal, route_label);
      stream.recheck(check, kTokenRecheck);
      if (body != nullptr) body = &rechecked_body.emplace(*body, std::move(check));
    }
  } else if (m.route->path.rfind("/v1/privacy/", 0) == 0) {
    // A data subject's page: no principal yet (its credential is checked by
    // the handler), so the caller's address is what is limited — before any
    // hashing or store read, so a flood of guessed links stays cheap. An
    // IPv6 client is counted by its /64, all of which one host may use.
    admitted = privacy_quotas.admit(client_address_group(stream.peer_address()));
  }
  if (req.count("Custos-Purpose") > 1) throw Error(ErrorCode::invalid_argument, "more than one Custos-Purpose header");
  ctx.caller.purpose = std::string(trim(sv(req["Custos-Purpose"])));
  ctx.claim_stream = [this, &principal, on_stream_pool = m.route->streams] {
    // A handler that holds its thread must run on the stream pool, or slow
    // clients could take every quick worker (make_routes marks the route).
    if (!on_stream_pool) throw Error(ErrorCode::internal, "a stream slot claimed on a route not marked streams");
    return claim_stream(principal);
  };
  if (m.route->body == BodyMode::json) ctx.body = parse_body(req.body());
  if (m.route->body == BodyMode::stream) {
    if (body == nullptr) throw Error(ErrorCode::internal, "streamed-body route reached without its body stream");
    ctx.body_stream = body;
  }
  Result result = m.route->handler(ctx);
  result.hold = std::move(admitted);
  return result;
}

Result HttpServer::Impl::handle(const Request& req, const std::string& request_id, ResponseStream& stream,
                                RequestBodyStream* body) noexcept {
  const auto start = std::chrono::steady_clock::now();
  std::string route_label = "unmatched";
  std::string principal;
  std::string code;
  Result result;
  log::Level level = log::Level::info;
  Json extra = Json::object();
  try {
    result = dispatch(req, request_id, stream, body, route_label, principal);
  } catch (const HttpProblem& p) {
    code = p.code;
    result = problem(p.status, p.code, p.detail, request_id);
    for (const auto& h : p.headers) result.headers.push_back(h);
  } catch (const Error& e) {
    code = code_name(e.code());
    const int status = status_for(e.code());
    if (status >= 500) {
      level = log::Level::error;
      extra["cause"] = e.what();  // custos::Error messages hold no personal values
      result = problem(status, code, generic_detail(e.code()), request_id);
    } else {
      result = problem(status, code, e.what(), request_id);
    }
    if (e.code() == ErrorCode::unauthenticated)
      result.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"custos\"");
  } catch (const Json::exception& e) {
    // A body value of the wrong type or range reached a handler: the
    // client's mistake, not ours. Third-party text is never echoed.
    code = "invalid_argument";
    extra["cause"] = "json exception " + std::to_string(e.id);
    result = problem(400, code, "a request body value has the wrong type or is out of range", request_id);
  } catch (const std::exception& e) {
    // Third-party messages may quote input: log the type only.
    code = "internal";
    level = log::Level::error;
    extra["cause"] = std::string("unexpected exception of type ") + typeid(e).name();
    result = problem(500, code, "internal error", request_id);
  } catch (...) {
    code = "internal";
    level = log::Level::error;
    extra["cause"] = "unexpected non-standard exception";
    result = problem(500, code, "internal error", request_id);
  }

  try {
    const int status = result.status;
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const std::string method = method_label(sv(req.method_string()));
    metrics.observe(route_label, method, status, seconds);
    if (log::enabled(level)) {
      Json line = {{"request_id", request_id},
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
  return result;
}

std::string HttpServer::Impl::metrics_text() {
  std::ostringstream os;
  os.imbue(std::locale::classic());
  metrics.render(os);
  const auto& vault = svc.counters();
  const auto journal = svc.audit_journal_status();
  auto gauge = [&](const char* name, const char* help, const char* type, auto value) {
    os << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n" << name << " " << value << "\n";
  };
  gauge("custos_audit_journal_pending", "Journaled read entries not yet folded into the tree.", "gauge",
        journal.pending);
  gauge("custos_audit_fold_failing",
        "1 while folding the audit journal fails (reads will fail closed once it is full).", "gauge",
        journal.fold_error.empty() ? 0 : 1);
  gauge("custos_decryptions_total", "Personal field values decrypted and served by this process.", "counter",
        vault.decryptions.load());
  gauge("custos_audit_entries_total", "Entries in the audit log.", "counter", svc.audit_size());
  gauge("custos_audit_checkpoint_size", "Tree size of the latest signed audit checkpoint.", "gauge",
        svc.audit_checkpoint_size());
  std::size_t busy = 0;
  {
    util::MutexLock lock(counters.busy_mu);
    busy = counters.busy;
  }
  gauge("custos_http_requests_in_flight", "Requests being handled or answered.", "gauge", busy);
  gauge("custos_http_connections_open", "Client connections open now.", "gauge", counters.open.load());
  gauge("custos_http_connections_refused_total",
        "Connections refused with 503 at --max-connections or --max-connections-per-address.", "counter",
        counters.refused_capacity.load());
  gauge("custos_http_connections_timed_out_total",
        "Connections closed by a header, body, idle or write timeout.", "counter", counters.timed_out.load());
  gauge("custos_http_campaign_streams", "Campaign fetches streaming now.", "gauge", streams.load());
  // Downstream systems (the outbox): events waiting, delivered, dead letters.
  const auto outbox = svc.outbox_counts();
  os << "# HELP custos_outbox_events Outbox events for downstream systems, by delivery status.\n"
     << "# TYPE custos_outbox_events gauge\n"
     << "custos_outbox_events{status=\"pending\"} " << outbox.pending << "\n"
     << "custos_outbox_events{status=\"delivered\"} " << outbox.delivered << "\n"
     << "custos_outbox_events{status=\"dead\"} " << outbox.dead << "\n";
  gauge("custos_outbox_dead_letters", "Outbox events no longer retried (4xx answer or retry horizon passed).", "gauge",
        outbox.dead);
  return os.str();
}

// ---------------------------------------------------------------- public

std::vector<RouteInfo> route_table() {
  std::vector<RouteInfo> out;
  for (const auto& r : make_routes()) out.push_back({r.method, r.path});
  return out;
}

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
  if (impl_ && impl_->opened) drain(std::chrono::milliseconds(0));
}

std::string HttpServer::url() const {
  const auto& host = impl_->options.listen.host;
  const std::string shown = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return std::string(impl_->https ? "https" : "http") + "://" + shown + ":" + std::to_string(impl_->bound_port);
}

std::string HttpServer::metrics_text() { return impl_->metrics_text(); }

void HttpServer::open() {
  Impl& m = *impl_;
  const auto& o = m.options;
  std::shared_ptr<net::ssl::context> tls;
  if (!o.tls_cert.empty() || !o.tls_key.empty()) {
    if (o.tls_cert.empty() || o.tls_key.empty()) throw std::runtime_error("https needs both a TLS certificate and a key");
    tls = make_tls_context(o.tls_cert, o.tls_key);
    m.https = true;
  }

  tcp::endpoint endpoint;
  {
    boost::system::error_code ec;
    const std::string host = o.listen.host == "localhost" ? "127.0.0.1" : o.listen.host;
    auto address = net::ip::make_address(host, ec);
    if (ec) {
      tcp::resolver resolver(m.ioc);
      auto results = resolver.resolve(host, std::to_string(o.listen.port), ec);
      if (ec || results.empty()) throw std::runtime_error("cannot resolve listen host " + o.listen.host);
      address = results.begin()->endpoint().address();
    }
    endpoint = tcp::endpoint(address, o.listen.port);
  }

  EdgeLimits limits;
  limits.max_header_bytes = o.max_header_bytes;
  limits.max_body_bytes = o.max_body_bytes;
  limits.header_timeout = o.header_timeout;
  limits.idle_timeout = o.idle_timeout;
  limits.min_body_rate = o.min_body_rate;
  limits.max_connections = o.max_connections;
  limits.max_connections_per_address = o.max_connections_per_address;
  m.listener = std::make_shared<Listener>(m.ioc, WorkerPools{m.workers, m.stream_workers}, m, limits, m.counters);
  try {
    m.listener->open(endpoint);
  } catch (const std::exception& e) {
    m.listener.reset();
    throw std::runtime_error("cannot listen on " + o.listen.host + ":" + std::to_string(o.listen.port) + ": " +
                             e.what());
  }
  m.listener->set_tls(tls);
  m.bound_port = o.listen.port;
  m.work.emplace(m.ioc.get_executor());
  m.listener->start();
  for (int i = 0; i < std::max(1, o.io_threads); ++i) m.io_threads.emplace_back([&m] { m.ioc.run(); });
  m.opened = true;
}

bool HttpServer::reload_tls(std::string* error) {
  Impl& m = *impl_;
  if (!m.https || !m.listener) return true;
  try {
    m.listener->set_tls(make_tls_context(m.options.tls_cert, m.options.tls_key));
    return true;
  } catch (const std::exception& e) {
    if (error) *error = e.what();
    return false;
  }
}

bool HttpServer::drain(std::chrono::milliseconds bound) {
  Impl& m = *impl_;
  m.draining = true;
  if (m.listener) {
    m.listener->set_draining();
    m.listener->stop();
  }
  bool drained = false;
  {
    util::MutexLock lock(m.counters.busy_mu);
    drained = m.counters.busy_cv.wait_for(lock, bound,
                                          [&]() CUSTOS_REQUIRES(m.counters.busy_mu) { return m.counters.busy == 0; });
  }
  m.opened = false;
  if (!drained) {
    // A handler still runs inside the Service: stopping its threads or
    // destroying what it uses would be worse than leaving it to _Exit.
    (void)impl_.release();
    return false;
  }
  m.stop_threads();
  m.listener.reset();
  return true;
}

}  // namespace custos::http
