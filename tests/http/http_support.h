// Helpers shared by the end-to-end suites of custosd (http_tests and
// http_edge_tests): a vault initialised by the real `custos` CLI, the real
// `custosd` binary on a free loopback port, a cpprestsdk client for ordinary
// requests, and raw-socket tools for requests no well-behaved client sends.
//
// Every wait here is bounded: socket reads poll with a deadline, process
// waits poll with a deadline, and nothing sleeps to "let the server catch up".
#pragma once

// gtest before cpprest: cpprest defines a macro U that breaks gtest's headers.
#include <gtest/gtest.h>
#include <strings.h>
#include <sys/types.h>

#include <chrono>
#include <cpprest/http_client.h>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "test_support.h"

namespace custos::httptest {

namespace fs = std::filesystem;
using Json = nlohmann::json;

inline const std::string kCli = CUSTOS_CLI_PATH;
inline const std::string kCustosd = CUSTOSD_PATH;

std::string read_file(const fs::path& p);
void write_file(const fs::path& p, const std::string& text);
std::string trim(std::string s);

// A port that was free a moment ago (bind port 0, close).
std::uint16_t free_port();

// A TCP connection to 127.0.0.1:port, or -1. Blocking, without timeouts.
int connect_loopback(std::uint16_t port);

// A data directory initialised by the CLI, with its admin token.
struct Vault {
  custos::testing::TempDir tmp;
  fs::path dir = tmp.path() / "data";
  std::string admin;

  Vault();
  std::string token(const std::string& role, const std::string& name);
};

struct Resp {
  int status = 0;  // 0: no HTTP response (connection failed, timed out or closed)
  std::map<std::string, std::string> headers;
  std::string body;
  Json json;  // parsed if the body is JSON

  std::string header(const std::string& name) const {
    for (const auto& [k, v] : headers)
      if (strcasecmp(k.c_str(), name.c_str()) == 0) return v;
    return "";
  }
  std::string code() const {
    return json.is_object() && json.contains("code") && json["code"].is_string() ? json["code"].get<std::string>() : "";
  }
};

std::ostream& operator<<(std::ostream& os, const Resp& r);

struct Req {
  std::string method = "GET";
  std::string path = "/";
  std::string token;
  std::string purpose;
  std::optional<std::string> body;
  std::vector<std::pair<std::string, std::string>> headers;
};

// One request through cpprestsdk. Adds a test failure on any 500: a 500 a
// client can trigger is a bug, whichever test triggers it.
Resp send(web::http::client::http_client& client, const Req& r);

// A running custosd.
class Daemon {
 public:
  Daemon(const fs::path& data_dir, std::vector<std::string> extra = {}, bool https = false,
         const fs::path& ca_cert = {});
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Polls /healthz (bounded, ~10 s). False if the daemon died or never answered.
  bool wait_ready();
  bool alive();
  // Polls (bounded by `bound`) until the process has exited; its exit code,
  // or -1 if it is still running.
  int wait_exit(std::chrono::milliseconds bound);
  // Sends `sig` and waits (bounded) for the exit code; -1 if it did not exit.
  int stop(int sig = SIGTERM);

  void signal(int sig);
  pid_t pid() const { return pid_; }
  const std::string& url() const { return url_; }
  std::uint16_t port() const { return port_; }
  std::string out() const;
  // stdout once it holds a whole first line (polled, up to 10 s): the
  // listener answers a moment before custosd prints where it listens.
  std::string out_first_line() const;
  std::string err() const;

  // Replaces the cpprestsdk client by a fresh one, closing the connections
  // the old one kept alive (for tests that count connections).
  void reset_client();

  // The contract run (ctest contract_prism): when CUSTOS_TEST_PRISM names a
  // Prism CLI and CUSTOS_TEST_OPENAPI the document, every request of call(),
  // get() and post() goes through `prism proxy DOC <custosd> --port P`, and
  // send() fails the test on each violation Prism reports (sl-violations).
  // url() and port() stay custosd's own: raw-socket tests bypass the proxy.
  bool proxied() const { return proxy_pid_ > 0; }

  Resp call(const Req& r);
  Resp get(const std::string& path, const std::string& token, const std::string& purpose = "");
  Resp post(const std::string& path, const std::string& token, const Json& body, const std::string& purpose = "",
            const std::string& method = "POST");

 private:
  web::http::client::http_client_config client_config() const;
  // Starts the validating proxy in front of this custosd when the contract
  // run asks for it (plain HTTP only; a TLS daemon is left direct).
  void start_contract_proxy();
  bool wait_proxy_ready();
  void stop_contract_proxy();
  const std::string& client_url() const { return proxy_pid_ > 0 ? proxy_url_ : url_; }

  custos::testing::TempDir log_dir_;
  std::uint16_t port_;
  std::string url_;
  bool https_ = false;
  fs::path ca_cert_;
  fs::path out_file_, err_file_;
  pid_t pid_ = -1;
  bool exited_ = false;
  int exit_code_ = -1;
  std::unique_ptr<web::http::client::http_client> client_;
  pid_t proxy_pid_ = -1;
  std::string proxy_url_;
};

// The violations Prism reported on one exchange, as readable lines: every
// response violation, and request violations the server answered with 2xx
// (the server accepted what the document forbids). Empty when the header is
// absent. Exposed for the harness's own test.
std::vector<std::string> contract_violations(const std::string& sl_violations_header, int status);

// Starts custosd and waits until it answers. The free port is found by
// binding port 0 and closing it, so another process may take it first: a
// start that fails to listen is retried on a new port.
std::unique_ptr<Daemon> start_daemon(const fs::path& data_dir, std::vector<std::string> extra = {},
                                     bool https = false, const fs::path& ca_cert = {});

// Checks the RFC 9457 shape, status and code.
void expect_problem(const Resp& r, int status, const std::string& code);

// ------------------------------------------------------------------ raw sockets

// An owned socket descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  int get() const { return fd_; }
  bool ok() const { return fd_ >= 0; }
  void reset();

 private:
  int fd_ = -1;
};

// A non-blocking connection to 127.0.0.1:port (connect completed, bounded by
// 5 s), or an empty Fd. `rcvbuf` > 0 sets SO_RCVBUF before connecting (a
// small receive window keeps the server's writes from completing).
Fd connect_raw(std::uint16_t port, int rcvbuf = 0);
// The same from a chosen loopback source address (bind() before connect):
// every 127.x.y.z is this host, so one test can be many clients.
Fd connect_raw_from(const std::string& source_ip, std::uint16_t port);

enum class SendResult { sent, closed, timeout };
// Writes all of `data` (poll for POLLOUT, bounded by `bound` without progress).
// `closed`: the peer reset or closed the connection (EPIPE / ECONNRESET).
SendResult send_raw(int fd, std::string_view data, std::chrono::milliseconds bound);

// Reads one HTTP/1.1 response (status line, headers, a Content-Length or
// chunked body, or a body up to EOF) before `deadline`. status 0 if no
// complete head arrived in time or the connection closed first. Bytes read
// past the response stay in `*leftover` when given.
Resp read_response(int fd, std::chrono::steady_clock::time_point deadline, std::string* leftover = nullptr);
// The same for the response to a HEAD request: the status line and headers
// only (RFC 9110 §9.3.2: no content, whatever Content-Length says).
Resp read_head_response(int fd, std::chrono::steady_clock::time_point deadline, std::string* leftover = nullptr);

// True when the server closed the connection (recv() == 0 or ECONNRESET)
// before `deadline`; bytes that arrive meanwhile are discarded.
bool wait_closed(int fd, std::chrono::steady_clock::time_point deadline);

// True when the connection is still open now: no EOF, no reset, nothing
// pending to read that ends in EOF (non-destructive: MSG_PEEK).
bool still_open(int fd);

// Resident set size of a process in KiB (VmRSS from /proc), or -1.
long vm_rss_kib(pid_t pid);

// Server-side TCP connections on 127.0.0.1:port in state ESTABLISHED or
// CLOSE_WAIT (/proc/net/tcp): the connections the server still holds.
int server_connections(std::uint16_t port);

// Bytes the server's established connections on 127.0.0.1:port have queued
// for sending and not yet had acknowledged (tx_queue in /proc/net/tcp).
long server_send_queue(std::uint16_t port);

// "GET /path HTTP/1.1" with Host and the given extra header lines (each
// "Name: value"), terminated by the blank line.
std::string raw_request(const std::string& method, const std::string& path,
                        const std::vector<std::string>& header_lines, const std::string& body = "");

}  // namespace custos::httptest
