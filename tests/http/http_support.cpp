#include "http_support.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>
#include <thread>

namespace custos::httptest {

using custos::testing::run;
using namespace std::chrono_literals;

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_file(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << text;
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

std::uint16_t free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) throw std::runtime_error("bind");
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

int connect_loopback(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    if (fd >= 0) ::close(fd);
    return -1;
  }
  return fd;
}

Vault::Vault() {
  std::vector<std::string> argv = {kCli, "--data-dir", dir.string(), "init", "--fast-kdf"};
  // CUSTOS_TEST_STORE: the vault's tables go to a fresh PostgreSQL schema
  // (the data dir remembers it for custosd and later CLI calls).
  if (const std::string url = custos::testing::fresh_test_store_url(); !url.empty()) {
    argv.insert(argv.begin() + 1, url);
    argv.insert(argv.begin() + 1, "--store");
  }
  const auto r = run(argv);
  if (r.exit_code != 0)
    throw std::runtime_error("custos init failed (exit " + std::to_string(r.exit_code) + "): " + r.err);
  admin = trim(read_file(dir / "admin.token"));
}

std::string Vault::token(const std::string& role, const std::string& name) {
  const auto r = run({kCli, "--data-dir", dir.string(), "token", "create", "--role", role, "--name", name});
  if (r.exit_code != 0)
    throw std::runtime_error("token create failed (exit " + std::to_string(r.exit_code) + "): " + r.err);
  return trim(r.out);
}

std::ostream& operator<<(std::ostream& os, const Resp& r) { return os << r.status << " " << r.body.substr(0, 300); }

Resp send(web::http::client::http_client& client, const Req& r) {
  web::http::http_request req(r.method);
  req.set_request_uri(r.path);
  if (!r.token.empty()) req.headers().add("Authorization", "Bearer " + r.token);
  if (!r.purpose.empty()) req.headers().add("Custos-Purpose", r.purpose);
  for (const auto& [k, v] : r.headers) req.headers().add(k, v);
  if (r.body) req.set_body(*r.body, "application/json");
  Resp out;
  try {
    auto resp = client.request(req).get();
    out.status = resp.status_code();
    for (const auto& [k, v] : resp.headers()) out.headers[k] = v;
    out.body = resp.extract_utf8string(true).get();
    if (!out.body.empty() && out.header("Content-Type").find("json") != std::string::npos)
      out.json = Json::parse(out.body, nullptr, false);
  } catch (const std::exception&) {
    out.status = 0;
  }
  if (out.status == 500) ADD_FAILURE() << "HTTP 500 for " << r.method << " " << r.path << ": " << out;
  for (const auto& v : contract_violations(out.header("sl-violations"), out.status))
    ADD_FAILURE() << "contract violation on " << r.method << " " << r.path << " -> " << out.status << ": " << v
                  << "\n  body: " << out.body.substr(0, 400);
  return out;
}

std::vector<std::string> contract_violations(const std::string& header, int status) {
  std::vector<std::string> found;
  if (header.empty()) return found;
  const Json list = Json::parse(header, nullptr, false);
  if (!list.is_array()) {
    found.push_back("unreadable sl-violations header: " + header.substr(0, 200));
    return found;
  }
  const bool accepted = status >= 200 && status < 300;
  for (const auto& v : list) {
    std::string where;
    if (v.contains("location") && v["location"].is_array())
      for (const auto& part : v["location"]) where += (where.empty() ? "" : ".") + (part.is_string() ? part.get<std::string>() : part.dump());
    const std::string message = v.contains("message") && v["message"].is_string() ? v["message"].get<std::string>() : v.dump();
    // A request outside the document that the server refused is the server
    // doing its job (the negative tests send such requests on purpose); one
    // it accepted means the document and the server disagree.
    const bool on_request = where.rfind("request", 0) == 0;
    if (on_request && !accepted) continue;
    found.push_back((on_request ? "accepted a request the document forbids: " : "") + where + ": " + message);
  }
  return found;
}

// ------------------------------------------------------------------ Daemon

Daemon::Daemon(const fs::path& data_dir, std::vector<std::string> extra, bool https, const fs::path& ca_cert)
    : port_(free_port()), https_(https), ca_cert_(ca_cert) {
  url_ = std::string(https ? "https" : "http") + "://127.0.0.1:" + std::to_string(port_);
  std::vector<std::string> argv = {kCustosd, "--data-dir", data_dir.string(), "--listen",
                                   "127.0.0.1:" + std::to_string(port_)};
  for (auto& e : extra) argv.push_back(e);
  out_file_ = log_dir_.path() / "stdout";
  err_file_ = log_dir_.path() / "stderr";
  // Everything the child needs is prepared before fork (no allocation after it).
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  const int out = ::open(out_file_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  const int err = ::open(err_file_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  pid_ = ::fork();
  if (pid_ == 0) {
    // A test binary that dies without its destructors (a sanitizer abort, a
    // crash) takes its daemon with it instead of leaving it serving, and
    // holding every descriptor it inherited, until someone notices.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    ::dup2(out, 1);
    ::dup2(err, 2);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::close(out);
  ::close(err);
  if (!https) start_contract_proxy();
  client_ = std::make_unique<web::http::client::http_client>(web::uri(client_url()), client_config());
}

void Daemon::start_contract_proxy() {
  const char* prism = std::getenv("CUSTOS_TEST_PRISM");
  const char* doc = std::getenv("CUSTOS_TEST_OPENAPI");
  if (prism == nullptr || doc == nullptr || *prism == '\0' || *doc == '\0') return;
  const std::uint16_t proxy_port = free_port();
  proxy_url_ = "http://127.0.0.1:" + std::to_string(proxy_port);
  std::vector<std::string> argv = {prism, "proxy", doc, url_, "--host", "127.0.0.1", "--port",
                                   std::to_string(proxy_port), "--errors", "false",
                                   // No CORS headers of its own (tests check custosd's); log only
                                   // what went wrong (the log is shown when the proxy fails).
                                   "--cors", "false", "--verboseLevel", "warn"};
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  const fs::path log = log_dir_.path() / "prism.log";
  const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  proxy_pid_ = ::fork();
  if (proxy_pid_ == 0) {
    ::setpgid(0, 0);  // its own group: the destructor ends node and anything it spawned
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::close(fd);
}

bool Daemon::wait_proxy_ready() {
  // Node loads and resolves the whole document before it listens: seconds,
  // more on a loaded machine. Bounded all the same.
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (std::chrono::steady_clock::now() < deadline) {
    if (::waitpid(proxy_pid_, nullptr, WNOHANG) == proxy_pid_) {
      proxy_pid_ = -1;
      ADD_FAILURE() << "prism proxy exited: " << read_file(log_dir_.path() / "prism.log").substr(0, 2000);
      return false;
    }
    Req r;
    r.path = "/healthz";
    if (send(*client_, r).status == 200) return true;
    std::this_thread::sleep_for(100ms);
  }
  ADD_FAILURE() << "prism proxy did not answer within 60 s: " << read_file(log_dir_.path() / "prism.log").substr(0, 2000);
  return false;
}

void Daemon::stop_contract_proxy() {
  if (proxy_pid_ <= 0) return;
  ::kill(-proxy_pid_, SIGKILL);
  ::waitpid(proxy_pid_, nullptr, 0);
  proxy_pid_ = -1;
}

web::http::client::http_client_config Daemon::client_config() const {
  web::http::client::http_client_config config;
  config.set_timeout(std::chrono::seconds(15));
  if (https_) {
    const std::string ca = ca_cert_.string();
    config.set_ssl_context_callback([ca](boost::asio::ssl::context& ctx) { ctx.load_verify_file(ca); });
  }
  return config;
}

void Daemon::reset_client() {
  client_.reset();
  client_ = std::make_unique<web::http::client::http_client>(web::uri(client_url()), client_config());
}

Daemon::~Daemon() {
  client_.reset();
  stop_contract_proxy();
  if (pid_ > 0 && !exited_) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
}

bool Daemon::wait_ready() {
  // custosd itself first, directly (the proxy answers 502 until it is up).
  web::http::client::http_client direct(web::uri(url_), client_config());
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < deadline) {
    if (!alive()) return false;
    Req r;
    r.path = "/healthz";
    if (send(direct, r).status == 200) return proxy_pid_ <= 0 || wait_proxy_ready();
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

bool Daemon::alive() {
  if (exited_) return false;
  int status = 0;
  const pid_t p = ::waitpid(pid_, &status, WNOHANG);
  if (p == pid_) {
    exited_ = true;
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return false;
  }
  return true;
}

int Daemon::wait_exit(std::chrono::milliseconds bound) {
  const auto deadline = std::chrono::steady_clock::now() + bound;
  while (alive()) {
    if (std::chrono::steady_clock::now() >= deadline) return -1;
    std::this_thread::sleep_for(20ms);
  }
  return exit_code_;
}

int Daemon::stop(int sig) {
  if (!alive()) return exit_code_;
  ::kill(pid_, sig);
  return wait_exit(15s);
}

void Daemon::signal(int sig) { ::kill(pid_, sig); }
std::string Daemon::out() const { return read_file(out_file_); }

std::string Daemon::out_first_line() const {
  std::string text = out();
  for (const auto deadline = std::chrono::steady_clock::now() + 10s;
       text.find('\n') == std::string::npos && std::chrono::steady_clock::now() < deadline; text = out())
    std::this_thread::sleep_for(10ms);
  return text.substr(0, text.find('\n'));
}
std::string Daemon::err() const { return read_file(err_file_); }

Resp Daemon::call(const Req& r) { return send(*client_, r); }

Resp Daemon::get(const std::string& path, const std::string& token, const std::string& purpose) {
  Req r;
  r.path = path;
  r.token = token;
  r.purpose = purpose;
  return call(r);
}

Resp Daemon::post(const std::string& path, const std::string& token, const Json& body, const std::string& purpose,
                  const std::string& method) {
  Req r;
  r.method = method;
  r.path = path;
  r.token = token;
  r.purpose = purpose;
  r.body = body.dump();
  return call(r);
}

std::unique_ptr<Daemon> start_daemon(const fs::path& data_dir, std::vector<std::string> extra, bool https,
                                     const fs::path& ca_cert) {
  for (int attempt = 0;; ++attempt) {
    auto d = std::make_unique<Daemon>(data_dir, extra, https, ca_cert);
    if (d->wait_ready()) return d;
    const std::string err = d->err();
    if (attempt == 2 || err.find("cannot listen") == std::string::npos) {
      ADD_FAILURE() << "custosd did not start: " << err;
      return d;
    }
  }
}

void expect_problem(const Resp& r, int status, const std::string& code) {
  EXPECT_EQ(r.status, status) << r;
  EXPECT_EQ(r.header("Content-Type"), "application/problem+json") << r;
  ASSERT_TRUE(r.json.is_object()) << r;
  // Typed reads: a body of the wrong shape fails the check, it does not throw.
  auto text = [&](const char* key) {
    return r.json.contains(key) && r.json[key].is_string() ? r.json[key].get<std::string>() : std::string("<absent>");
  };
  EXPECT_EQ(text("code"), code) << r;
  EXPECT_EQ(text("type"), "https://custos.dev/problems/" + code) << r;
  EXPECT_EQ(r.json.contains("status") && r.json["status"].is_number_integer() ? r.json["status"].get<int>() : -1, status)
      << r;
  EXPECT_TRUE(r.json.contains("title") && r.json["title"].is_string()) << r;
  EXPECT_TRUE(r.json.contains("detail") && r.json["detail"].is_string()) << r;
  EXPECT_FALSE(r.header("X-Request-Id").empty());
  EXPECT_EQ(text("request_id"), r.header("X-Request-Id")) << r;
}

// ------------------------------------------------------------------ raw sockets

void Fd::reset() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

namespace {

int ms_until(std::chrono::steady_clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
  return left.count() <= 0 ? 0 : static_cast<int>(std::min<long long>(left.count(), 1000));
}

// One recv() into `into`, waiting (bounded) for data. >0 bytes read, 0 EOF,
// -1 reset or error, -2 deadline passed.
long recv_some(int fd, std::string& into, std::chrono::steady_clock::time_point deadline) {
  char buf[16384];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      into.append(buf, static_cast<std::size_t>(n));
      return n;
    }
    if (n == 0) return 0;
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return -1;
    if (std::chrono::steady_clock::now() >= deadline) return -2;
    pollfd p{fd, POLLIN, 0};
    ::poll(&p, 1, std::max(1, ms_until(deadline)));
  }
}

}  // namespace

namespace {

// Connects `fd` to 127.0.0.1:port (bounded by 5 s); false on failure.
bool connect_loopback_fd(int fd, std::uint16_t port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    if (errno != EINPROGRESS) return false;
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, 5000) != 1) return false;
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) return false;
  }
  return true;
}

}  // namespace

Fd connect_raw(std::uint16_t port, int rcvbuf) {
  Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.ok()) return {};
  if (rcvbuf > 0) ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  if (!connect_loopback_fd(fd.get(), port)) return {};
  return fd;
}

Fd connect_raw_from(const std::string& source_ip, std::uint16_t port) {
  Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.ok()) return {};
  sockaddr_in from{};
  from.sin_family = AF_INET;
  from.sin_port = 0;
  if (::inet_pton(AF_INET, source_ip.c_str(), &from.sin_addr) != 1) return {};
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&from), sizeof from) != 0) return {};
  if (!connect_loopback_fd(fd.get(), port)) return {};
  return fd;
}

SendResult send_raw(int fd, std::string_view data, std::chrono::milliseconds bound) {
  std::size_t off = 0;
  auto deadline = std::chrono::steady_clock::now() + bound;
  while (off < data.size()) {
    const ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      off += static_cast<std::size_t>(n);
      deadline = std::chrono::steady_clock::now() + bound;  // bound on no progress
      continue;
    }
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return SendResult::closed;
    if (std::chrono::steady_clock::now() >= deadline) return SendResult::timeout;
    pollfd p{fd, POLLOUT, 0};
    ::poll(&p, 1, std::max(1, ms_until(deadline)));
    if (p.revents & (POLLERR | POLLHUP)) return SendResult::closed;
  }
  return SendResult::sent;
}

namespace {

// read_response and read_head_response: `to_head` reads no body.
Resp read_one_response(int fd, std::chrono::steady_clock::time_point deadline, std::string* leftover, bool to_head) {
  std::string data = leftover ? std::move(*leftover) : std::string();
  if (leftover) leftover->clear();
  Resp out;
  std::size_t head_end;
  while ((head_end = data.find("\r\n\r\n")) == std::string::npos) {
    if (recv_some(fd, data, deadline) <= 0) return out;
  }
  // Status line and headers.
  std::istringstream head(data.substr(0, head_end));
  std::string line;
  std::getline(head, line);
  if (line.rfind("HTTP/1.", 0) != 0 || line.size() < 12) return out;
  const int status = std::atoi(line.c_str() + 9);
  while (std::getline(head, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string value = line.substr(colon + 1);
    while (!value.empty() && value.front() == ' ') value.erase(0, 1);
    out.headers[line.substr(0, colon)] = value;
  }
  std::string rest = data.substr(head_end + 4);
  // Body: Content-Length, chunked, or up to EOF.
  const std::string length = out.header("Content-Length");
  const bool chunked = out.header("Transfer-Encoding").find("chunked") != std::string::npos;
  if (to_head) {
    if (leftover) *leftover = rest;
  } else if (!length.empty()) {
    const std::size_t n = std::stoul(length);
    while (rest.size() < n)
      if (recv_some(fd, rest, deadline) <= 0) return out;
    out.body = rest.substr(0, n);
    if (leftover) *leftover = rest.substr(n);
  } else if (chunked) {
    std::size_t pos = 0;
    for (;;) {
      std::size_t eol;
      while ((eol = rest.find("\r\n", pos)) == std::string::npos)
        if (recv_some(fd, rest, deadline) <= 0) return out;
      const std::size_t size = std::stoul(rest.substr(pos, eol - pos), nullptr, 16);
      while (rest.size() < eol + 2 + size + 2)
        if (recv_some(fd, rest, deadline) <= 0) return out;
      out.body += rest.substr(eol + 2, size);
      pos = eol + 2 + size + 2;
      if (size == 0) break;
    }
    if (leftover) *leftover = rest.substr(pos);
  } else if (status == 204 || status == 304) {
    if (leftover) *leftover = rest;
  } else {
    for (;;) {
      const long n = recv_some(fd, rest, deadline);
      if (n == 0 || n == -1) break;
      if (n == -2) return out;
    }
    out.body = rest;
  }
  out.status = status;
  if (!out.body.empty() && out.header("Content-Type").find("json") != std::string::npos)
    out.json = Json::parse(out.body, nullptr, false);
  return out;
}

}  // namespace

Resp read_response(int fd, std::chrono::steady_clock::time_point deadline, std::string* leftover) {
  return read_one_response(fd, deadline, leftover, false);
}

Resp read_head_response(int fd, std::chrono::steady_clock::time_point deadline, std::string* leftover) {
  return read_one_response(fd, deadline, leftover, true);
}

bool wait_closed(int fd, std::chrono::steady_clock::time_point deadline) {
  std::string sink;
  for (;;) {
    const long n = recv_some(fd, sink, deadline);
    if (n == 0 || n == -1) return true;
    if (n == -2) return false;
    sink.clear();
  }
}

bool still_open(int fd) {
  char c;
  const ssize_t n = ::recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n == 0) return false;
  if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK;
  return true;  // data pending: open, for now
}

long vm_rss_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
  return -1;
}

namespace {
// Calls `row(state, queues)` for each line of /proc/net/tcp whose local
// port is `port` (state in hex, "01" established; queues "tx:rx" in hex).
template <class Row>
void for_each_local_tcp(std::uint16_t port, Row row) {
  std::ifstream in("/proc/net/tcp");
  std::string line;
  std::getline(in, line);  // header
  char want[8];
  std::snprintf(want, sizeof want, "%04X", port);
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string slot, local, remote, state, queues;
    fields >> slot >> local >> remote >> state >> queues;
    const auto colon = local.find(':');
    if (colon != std::string::npos && local.substr(colon + 1) == want) row(state, queues);
  }
}
}  // namespace

int server_connections(std::uint16_t port) {
  int n = 0;
  for_each_local_tcp(port, [&](const std::string& state, const std::string&) {
    if (state == "01" || state == "08") ++n;
  });
  return n;
}

long server_send_queue(std::uint16_t port) {
  long total = 0;
  for_each_local_tcp(port, [&](const std::string& state, const std::string& queues) {
    if (state == "01") total += std::strtol(queues.substr(0, queues.find(':')).c_str(), nullptr, 16);
  });
  return total;
}

std::string raw_request(const std::string& method, const std::string& path, const std::vector<std::string>& header_lines,
                        const std::string& body) {
  std::string r = method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  for (const auto& h : header_lines) r += h + "\r\n";
  r += "\r\n";
  r += body;
  return r;
}

}  // namespace custos::httptest
