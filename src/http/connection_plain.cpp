// Connections over plain TCP (connection_session.h): this unit holds their
// instantiation of the connection template, and only that.
#include "connection_session.h"

namespace custos::http::detail {

void serve_plain(tcp::socket socket, RequestHandler& handler, WorkerPools workers, const EdgeLimits& limits,
                 EdgeCounters& counters, std::shared_ptr<std::atomic<bool>> draining,
                 std::shared_ptr<void> address_slot) {
  std::make_shared<Connection<beast::tcp_stream>>(beast::tcp_stream(std::move(socket)), handler, workers, limits,
                                                  counters, std::move(draining), nullptr, std::move(address_slot))
      ->start();
}

}  // namespace custos::http::detail
