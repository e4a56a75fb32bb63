// A real webhook receiver for tests and benches: a one-thread HTTP/1.1
// server on 127.0.0.1, and reference Standard Webhooks verification written
// against OpenSSL (independent of the vault's libsodium signing).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace custos::webhooktest {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// ------------------------------------------------ reference verifier (Standard Webhooks)

inline std::string base64_decode(const std::string& in) {
  std::string out(in.size(), '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(in.data()), static_cast<int>(in.size()));
  if (n < 0) return "";
  std::size_t pad = 0;
  if (!in.empty() && in.back() == '=') ++pad;
  if (in.size() > 1 && in[in.size() - 2] == '=') ++pad;
  out.resize(static_cast<std::size_t>(n) - pad);
  return out;
}

inline std::string base64_encode(const unsigned char* data, std::size_t n) {
  std::string out(4 * ((n + 2) / 3) + 1, '\0');
  const int len = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), data, static_cast<int>(n));
  out.resize(static_cast<std::size_t>(len));
  return out;
}

// The receiver's check: all three headers, a timestamp within 5 minutes, and
// one "v1,<base64>" among the space-separated signatures equal (in constant
// time) to HMAC-SHA256(base64-decoded secret, id "." timestamp "." body).
inline bool verify_webhook(const std::string& secret, const std::string& id, const std::string& timestamp,
                    const std::string& signatures, const std::string& body) {
  if (secret.rfind("whsec_", 0) != 0 || id.empty() || timestamp.empty() || signatures.empty()) return false;
  long long ts = 0;
  try {
    ts = std::stoll(timestamp);
  } catch (...) {
    return false;
  }
  const long long now = std::chrono::duration_cast<std::chrono::seconds>(
                            std::chrono::system_clock::now().time_since_epoch()).count();
  if (ts < now - 300 || ts > now + 300) return false;
  const std::string key = base64_decode(secret.substr(6));
  const std::string signed_content = id + "." + timestamp + "." + body;
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(signed_content.data()), signed_content.size(), mac, &mac_len);
  const std::string expected = base64_encode(mac, mac_len);
  std::istringstream in(signatures);
  std::string sig;
  while (in >> sig) {
    if (sig.rfind("v1,", 0) != 0) continue;
    const std::string b64 = sig.substr(3);
    if (b64.size() == expected.size() && CRYPTO_memcmp(b64.data(), expected.data(), b64.size()) == 0) return true;
  }
  return false;
}

// ------------------------------------------------ the receiver

struct Delivery {
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
  Json json;
  Clock::time_point at;
  std::string header(const std::string& n) const {
    auto it = headers.find(n);
    return it == headers.end() ? "" : it->second;
  }
};

// What the receiver does with a request: answer `status`, or hang (read the
// request, never answer, keep the connection open).
struct Answer {
  int status = 204;
  bool hang = false;
};

// A one-thread HTTP/1.1 receiver on 127.0.0.1: reads one request per
// connection, records it, answers with Connection: close.
class Receiver {
 public:
  explicit Receiver(std::function<Answer(const Delivery&, std::size_t nth)> policy = {})
      : policy_(std::move(policy)) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port_hint_);
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) throw std::runtime_error("bind");
    socklen_t len = sizeof a;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    ::listen(listen_fd_, 512);
    thread_ = std::thread([this] { run(); });
  }
  ~Receiver() {
    stop_ = true;
    thread_.join();
    ::close(listen_fd_);
    for (int fd : hung_) ::close(fd);
  }
  std::uint16_t port() const { return port_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/hook"; }
  std::vector<Delivery> deliveries() {
    std::lock_guard lock(mu_);
    return got_;
  }
  std::size_t count() {
    std::lock_guard lock(mu_);
    return got_.size();
  }
  // Polls (bounded) until at least n requests arrived.
  bool wait_for(std::size_t n, milliseconds bound) {
    const auto end = Clock::now() + bound;
    while (Clock::now() < end) {
      if (count() >= n) return true;
      std::this_thread::sleep_for(milliseconds(10));
    }
    return count() >= n;
  }

  // The port the next Receiver binds (0: any); for a test that restarts a receiver on a port.
  static inline std::uint16_t port_hint_ = 0;

 private:
  void run() {
    while (!stop_) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      const int fd = ::accept(listen_fd_, nullptr, nullptr);
      if (fd < 0) continue;
      serve(fd);
    }
  }

  void serve(int fd) {
    std::string data;
    const auto deadline = Clock::now() + milliseconds(5000);
    std::size_t head_end = std::string::npos, need = 0;
    while (Clock::now() < deadline) {
      if (head_end == std::string::npos) {
        head_end = data.find("\r\n\r\n");
        if (head_end != std::string::npos) {
          const auto cl = lower(data.substr(0, head_end)).find("content-length:");
          need = cl == std::string::npos ? 0 : std::stoul(data.substr(cl + 15, data.find("\r\n", cl) - cl - 15));
        }
      }
      if (head_end != std::string::npos && data.size() >= head_end + 4 + need) break;
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      char buf[16384];
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      data.append(buf, static_cast<std::size_t>(n));
    }
    if (head_end == std::string::npos || data.size() < head_end + 4 + need) {
      ::close(fd);
      return;
    }
    Delivery d;
    d.at = Clock::now();
    std::istringstream head(data.substr(0, head_end));
    std::string line;
    std::getline(head, line);  // request line
    while (std::getline(head, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      const auto colon = line.find(':');
      if (colon == std::string::npos) continue;
      std::string value = line.substr(colon + 1);
      value.erase(0, value.find_first_not_of(' '));
      d.headers[lower(line.substr(0, colon))] = value;
    }
    d.body = data.substr(head_end + 4, need);
    d.json = Json::parse(d.body, nullptr, false);
    std::size_t nth = 0;
    {
      std::lock_guard lock(mu_);
      got_.push_back(d);
      nth = got_.size();
    }
    const Answer a = policy_ ? policy_(d, nth) : Answer{};
    if (a.hang) {
      hung_.push_back(fd);  // never answered; closed when the receiver goes
      return;
    }
    const std::string reply = "HTTP/1.1 " + std::to_string(a.status) + " X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    (void)::send(fd, reply.data(), reply.size(), MSG_NOSIGNAL);
    ::close(fd);
  }

  static std::string lower(std::string s) {
    for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
  }

  std::function<Answer(const Delivery&, std::size_t)> policy_;
  int listen_fd_ = -1;
  std::uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::vector<Delivery> got_;
  std::vector<int> hung_;  // receiver thread only
  std::thread thread_;
};

}  // namespace custos::webhooktest
