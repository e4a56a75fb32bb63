// The outbox sender in custosd: delivers the events downstream systems
// subscribe to (policies/systems.yaml) with cpprestsdk's http_client,
// signed per Standard Webhooks by the service.
//
// One thread claims due events in batches, POSTs a batch concurrently (each
// request bounded by `timeout`), and records every outcome in the store
// before the next batch: 2xx delivered; 4xx (but 408/429) a dead letter
// without retry; anything else, a timeout or no connection is retried with
// exponential backoff and jitter until the horizon (outbox::RetryPolicy).
// All state is in the store, so a restart (or kill -9) resumes where it
// stood: a claim is a lease of timeout + 5 s, after which another sender
// (or this one, restarted) claims the event again — at least once.
//
// Thread-safe: wake() and stop() may be called from any thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <thread>

#include "custos/outbox/outbox.h"
#include "custos/util/mutex.h"

namespace custos::service {
class Service;
}

namespace custos::http {

struct OutboxSenderOptions {
  outbox::RetryPolicy retry;                  // lease_ms is set from `timeout`
  std::chrono::milliseconds timeout{10'000};  // one request, connect to last byte
  std::chrono::milliseconds poll{250};        // longest wait between looks at the queue
  std::size_t batch = 64;                     // events in flight at once
};

class OutboxSender {
 public:
  OutboxSender(service::Service& svc, OutboxSenderOptions options);
  ~OutboxSender();  // stop()
  OutboxSender(const OutboxSender&) = delete;
  OutboxSender& operator=(const OutboxSender&) = delete;

  // Looks at the queue now (events were committed).
  void wake();
  // Finishes the batch in flight (bounded by the timeout) and joins.
  void stop();

 private:
  struct Clients;
  void run();

  service::Service& svc_;
  OutboxSenderOptions options_;
  std::unique_ptr<Clients> clients_;
  util::Mutex mu_;
  util::CondVar cv_;
  bool stop_ CUSTOS_GUARDED_BY(mu_) = false;
  bool woken_ CUSTOS_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace custos::http
