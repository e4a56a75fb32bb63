// bench_hello_beast PORT [IO_THREADS] — the smallest asynchronous
// Boost.Beast keep-alive server: answers every request with 200 "ok" on
// 127.0.0.1:PORT until SIGTERM/SIGINT. The floor for scripts/bench_http.sh:
// custosd runs on the same library with the same io-thread count, so its
// cost over this is custosd's own work (edge checks, worker hand-off,
// authentication, the vault read and its audit entry).
#include <signal.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <thread>
#include <vector>

namespace beast = boost::beast;
namespace bhttp = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

class Session : public std::enable_shared_from_this<Session> {
 public:
  explicit Session(tcp::socket socket) : stream_(std::move(socket)) {}
  void read() {
    request_ = {};
    bhttp::async_read(stream_, buffer_, request_, [self = shared_from_this()](beast::error_code ec, std::size_t) {
      if (ec) return;
      self->write();
    });
  }

 private:
  void write() {
    response_ = {bhttp::status::ok, request_.version()};
    response_.set(bhttp::field::content_type, "text/plain");
    response_.body() = "ok";
    response_.keep_alive(request_.keep_alive());
    response_.prepare_payload();
    bhttp::async_write(stream_, response_, [self = shared_from_this()](beast::error_code ec, std::size_t) {
      if (ec || !self->response_.keep_alive()) return;
      self->read();
    });
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  bhttp::request<bhttp::string_body> request_;
  bhttp::response<bhttp::string_body> response_;
};

void accept(net::io_context& ioc, tcp::acceptor& acceptor) {
  acceptor.async_accept(net::make_strand(ioc), [&ioc, &acceptor](beast::error_code ec, tcp::socket socket) {
    if (!ec) {
      socket.set_option(tcp::no_delay(true), ec);
      std::make_shared<Session>(std::move(socket))->read();
    }
    if (acceptor.is_open()) accept(ioc, acceptor);
  });
}

int main(int argc, char** argv) {
  if (argc != 2 && argc != 3) {
    std::cerr << "usage: bench_hello_beast PORT [IO_THREADS]\n";
    return 2;
  }
  const unsigned long port = std::strtoul(argv[1], nullptr, 10);
  const unsigned long threads = argc == 3 ? std::strtoul(argv[2], nullptr, 10) : 1;
  if (port == 0 || port > 65535 || threads < 1 || threads > 64) {
    std::cerr << "bench_hello_beast: PORT must be 1-65535 and IO_THREADS 1-64\n";
    return 2;
  }
  net::io_context ioc(static_cast<int>(threads));
  tcp::acceptor acceptor(net::make_strand(ioc), {net::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)});
  accept(ioc, acceptor);
  net::signal_set signals(ioc, SIGINT, SIGTERM);
  signals.async_wait([&](beast::error_code, int) { ioc.stop(); });
  std::vector<std::thread> pool;
  for (unsigned long i = 1; i < threads; ++i) pool.emplace_back([&ioc] { ioc.run(); });
  ioc.run();
  for (auto& t : pool) t.join();
  return 0;
}
