// custos HTTP transport: a Boost.Beast HTTP/1.1 server in front of the
// service façade.
//
// The HTTP layer is thin: it bounds and frames requests at the edge,
// authenticates the bearer token, applies per-principal quotas, reads the
// declared purpose, parses the body, calls one Service method and turns
// the JSON document (or the custos::Error) into a response. It is the only
// module that may include Boost.Beast/Asio (and cpprestsdk, kept for the
// outbound client that calls downstream systems; nothing calls out yet);
// this header keeps them out (pimpl) so custosd_main and tests need not.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace custos::service {
class Service;
}

namespace custos::http {

// One entry of the route table: an HTTP method and an OpenAPI path template
// (e.g. {"GET", "/v1/subjects/{id}"}). docs/openapi.yaml lists exactly these.
struct RouteInfo {
  std::string method;
  std::string path;
};
std::vector<RouteInfo> route_table();

// A parsed --listen value.
struct ListenAddress {
  std::string host;  // as given, without IPv6 brackets
  std::uint16_t port = 0;
  bool loopback = false;  // 127.0.0.0/8, ::1, localhost
};
// Parses "HOST:PORT" / "[V6]:PORT"; throws std::invalid_argument with a
// message fit for the operator.
ListenAddress parse_listen(const std::string& text);

struct ServerOptions {
  ListenAddress listen;
  std::filesystem::path tls_cert;  // PEM: leaf certificate first, then the chain; empty: plain HTTP
  std::filesystem::path tls_key;   // PEM private key, mode 0600 or stricter

  // Edge limits (see README "Limits").
  std::size_t max_header_bytes = 16 * 1024;
  std::size_t max_body_bytes = 1024 * 1024;
  // Streamed bodies (POST /v1/import): read as the handler goes, never held
  // whole; above: 413 (by Content-Length before reading, else when reached).
  std::size_t max_import_bytes = std::size_t{1} << 30;
  std::chrono::milliseconds header_timeout{10'000};
  std::chrono::milliseconds idle_timeout{30'000};
  std::size_t min_body_rate = 16 * 1024;  // bytes per second
  std::size_t max_connections = 1024;
  // From one client address (IPv6: one /64); 0: no cap. Behind a reverse
  // proxy every connection comes from the proxy's address.
  std::size_t max_connections_per_address = 256;

  // Per-principal quotas (0: unlimited).
  int principal_max_inflight = 64;
  double principal_rate = 2000;
  double principal_burst = 4000;
  int principal_max_streams = 2;
  // The privacy page's routes (/v1/privacy/*) carry no bearer token: they
  // are limited per client address instead (0: unlimited).
  double privacy_rate = 10;
  double privacy_burst = 30;

  // Threads: io threads run the sockets, workers run the handlers that
  // return once done. Handlers that hold their thread while the client
  // reads or sends (campaign fetches, exports, imports: Route::streams) run
  // on a pool of their own, max_streams + 2 threads; at most max_streams
  // run at once (more get 503 with Retry-After).
  int io_threads = 1;
  int worker_threads = 4;
  int max_streams = 6;
};

class HttpServer {
 public:
  HttpServer(service::Service& service, ServerOptions options);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Loads the TLS material (if any), binds, listens and starts the
  // threads. Throws std::runtime_error with an operator-facing message.
  void open();

  // Re-reads the TLS certificate and key (SIGHUP). On failure the old ones
  // stay in force and `error` says why. Plain HTTP: nothing to do, true.
  bool reload_tls(std::string* error);

  // Stops accepting; requests on open connections get 503 and a close;
  // waits (up to `bound`) for the requests inside the Service to finish
  // and their replies to be written, then stops every thread. True when
  // none was left: the Service may then be destroyed. False: a handler is
  // still running; the caller must end the process without destroying
  // the Service (std::_Exit).
  bool drain(std::chrono::milliseconds bound);

  // Prometheus text exposition (format 0.0.4) of the HTTP and vault metrics.
  std::string metrics_text();

  // "http://127.0.0.1:8443" (the port actually bound).
  std::string url() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace custos::http
