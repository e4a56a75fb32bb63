// The connection layer of custosd (Boost.Beast): accepting, TLS, reading
// requests under every edge limit, handing them to the worker pool, and
// writing responses (whole or streamed).
//
// Each connection runs on its own strand of the io context; handlers run
// on a separate bounded worker pool, so a slow handler never blocks I/O
// and a slow client never holds a worker (its body is read before the
// request reaches a worker, under a deadline).
#pragma once

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <chrono>
#include <cstddef>
#include <memory>
#include <string>

#include "custos/util/mutex.h"
#include "router.h"

namespace custos::http {

struct EdgeLimits {
  std::size_t max_header_bytes = 16 * 1024;  // request line + headers; above: 431
  std::size_t max_body_bytes = 1024 * 1024;  // above: 413 before any body byte is read
  std::chrono::milliseconds header_timeout{10'000};  // first byte of a request to its last header
  std::chrono::milliseconds idle_timeout{30'000};    // keep-alive wait, and each write
  std::size_t min_body_rate = 16 * 1024;             // bytes/s a body must at least arrive at
  std::size_t max_connections = 1024;                // above: 503, then close
  // From one client address (IPv6: one /64, client_address_group); above:
  // the same 503, then close. 0: no cap.
  std::size_t max_connections_per_address = 256;
};

// What the connection layer needs from the server. Implemented by
// HttpServer::Impl.
class RequestHandler {
 public:
  virtual ~RequestHandler() = default;
  // Runs on a worker thread. Never throws; errors come back as problem
  // Results. A streamed Result has already answered through `stream`.
  // `body` is the request body of a streamed-body route (else null).
  virtual Result handle(const Request& req, const std::string& request_id, ResponseStream& stream,
                        RequestBodyStream* body) noexcept = 0;
  // What the connection must know of a request's route once its header is
  // in, before any of the body is read.
  struct RouteTraits {
    // > 0: the route streams its body to the handler (BodyMode::stream)
    // under this limit. 0: the body is read whole under max_body_bytes
    // before the handler runs.
    std::size_t streamed_body_limit = 0;
    // The handler may hold its thread while the client sends or reads
    // (Route::streams): it runs on the stream pool (WorkerPools).
    bool streams = false;
  };
  virtual RouteTraits route_traits(const Request& req) noexcept = 0;
  // A request refused at the edge (400, 413, 431, 503): counted in metrics.
  virtual void count_refusal(int status) noexcept = 0;
};

// Counters shared by every connection (for /metrics and drain).
struct EdgeCounters {
  std::atomic<std::size_t> open{0};                // connections open now
  // Closed with 503 at --max-connections or --max-connections-per-address.
  std::atomic<std::uint64_t> refused_capacity{0};
  std::atomic<std::uint64_t> timed_out{0};         // closed by a header, body, idle or write timeout
  // Requests handed to a worker until their response is written.
  util::Mutex busy_mu;
  util::CondVar busy_cv;
  std::size_t busy CUSTOS_GUARDED_BY(busy_mu) = 0;
};

// The pools handlers run on. `quick` runs the handlers that return once
// their work is done; `streams` those that hold their thread while a client
// sends or reads (imports, campaign fetches, exports), so slow clients never
// occupy the threads that lookups need, and `quick` can be sized to the
// cores (fewer threads: fewer context switches, warmer store caches).
struct WorkerPools {
  boost::asio::thread_pool& quick;
  boost::asio::thread_pool& streams;
};

class ConnectionsPerAddress;  // connection.cpp

// Accepts connections on `endpoint` and serves them until stop().
class Listener : public std::enable_shared_from_this<Listener> {
 public:
  Listener(boost::asio::io_context& ioc, WorkerPools workers, RequestHandler& handler, EdgeLimits limits,
           EdgeCounters& counters);
  // Binds and listens; throws std::runtime_error.
  void open(const boost::asio::ip::tcp::endpoint& endpoint);
  void start();
  // Stops accepting (new connections are refused by the OS).
  void stop();
  // The TLS context for connections accepted from now on (null: plain HTTP).
  void set_tls(std::shared_ptr<boost::asio::ssl::context> tls);
  // While draining, requests on open connections get 503 and a close.
  void set_draining() { draining_->store(true); }

 private:
  void accept();
  // Null when `socket` may be served (then `address_slot` holds its share
  // of its address's cap, if there is one); else why it is refused.
  const char* admission_refusal(const boost::asio::ip::tcp::socket& socket, std::shared_ptr<void>& address_slot);

  boost::asio::io_context& ioc_;
  WorkerPools workers_;
  RequestHandler& handler_;
  const EdgeLimits limits_;
  EdgeCounters& counters_;
  boost::asio::ip::tcp::acceptor acceptor_;
  boost::asio::steady_timer retry_timer_;
  util::Mutex tls_mu_;
  std::shared_ptr<boost::asio::ssl::context> tls_ CUSTOS_GUARDED_BY(tls_mu_);
  std::shared_ptr<std::atomic<bool>> draining_ = std::make_shared<std::atomic<bool>>(false);
  std::shared_ptr<ConnectionsPerAddress> per_address_;  // null: no per-address cap
};

}  // namespace custos::http
