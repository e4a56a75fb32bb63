// Connections over TLS (connection_session.h): this unit holds their
// instantiation of the connection template, and only that.
#include "connection_session.h"

namespace custos::http::detail {

void serve_tls(tcp::socket socket, std::shared_ptr<net::ssl::context> tls, RequestHandler& handler,
               WorkerPools workers, const EdgeLimits& limits, EdgeCounters& counters,
               std::shared_ptr<std::atomic<bool>> draining, std::shared_ptr<void> address_slot) {
  beast::ssl_stream<beast::tcp_stream> stream(std::move(socket), *tls);
  std::make_shared<Connection<beast::ssl_stream<beast::tcp_stream>>>(std::move(stream), handler, workers, limits,
                                                                     counters, std::move(draining), std::move(tls),
                                                                     std::move(address_slot))
      ->start();
}

}  // namespace custos::http::detail
