// custos HTTP transport: a cpprestsdk http_listener in front of the
// service façade.
//
// The HTTP layer is thin: it authenticates the bearer token, reads the
// declared purpose, bounds and parses the body, calls one Service method and
// turns the JSON document (or the custos::Error) into a response. It is the
// only module that includes cpprestsdk headers; this header keeps them out
// (pimpl) so custosd_main and the tests need not see them.
#pragma once

#include <chrono>
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

struct ServerOptions {
  // "http://127.0.0.1:8443" or "https://host:port". TLS needs both files.
  std::string url;
  std::filesystem::path tls_cert;  // PEM: leaf certificate first, then the chain
  std::filesystem::path tls_key;   // PEM private key
  std::size_t max_body_bytes = 1024 * 1024;
  // Passed to http_listener_config::set_timeout. NOTE: cpprestsdk's Linux
  // (Boost.Asio) listener ignores it (only the Windows HTTP Server API
  // backend applies it). Handlers never block on a body still arriving, so
  // a slow or abandoned client costs a socket, not a worker thread; put a
  // reverse proxy with read timeouts in front for hostile networks.
  std::chrono::seconds timeout{30};
  // Campaign fetches stream from a worker thread of cpprestsdk's pool while
  // the same pool writes their bytes; at most this many run at once (more
  // get 503 with Retry-After), so the pool always keeps threads for I/O.
  // custosd sets it to its pool size minus 2.
  int max_streams = 4;
};

// A parsed --listen value.
struct ListenAddress {
  std::string host;  // as given, without IPv6 brackets
  std::uint16_t port = 0;
  bool loopback = false;  // 127.0.0.0/8, ::1, localhost
};
// Parses "HOST:PORT" / "[V6]:PORT"; throws std::invalid_argument with a
// message fit for the operator.
ListenAddress parse_listen(const std::string& text);

class HttpServer {
 public:
  HttpServer(service::Service& service, ServerOptions options);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Loads the TLS material (if any) and starts listening. Throws
  // std::runtime_error with an operator-facing message.
  void open();

  // Stop for a process about to exit: from now on no request reaches the
  // Service (new ones get 503, Connection: close) and this waits (up to
  // `bound`) for the requests inside it to finish and their replies to be
  // written. True when none is left; the Service may then be destroyed.
  // The listener is deliberately left open: cpprestsdk 2.10's close() can
  // crash (epoll_reactor::start_op on a connection it is closing) while
  // request bodies are still being read, and the OS closes the sockets at
  // exit anyway. Only destruction may follow; the caller must end the
  // process with std::_Exit.
  bool drain(std::chrono::milliseconds bound);

  // Prometheus text exposition (format 0.0.4) of the HTTP and vault metrics.
  std::string metrics_text();

  const std::string& url() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace custos::http
