#include "outbox_sender.h"

#include <cpprest/http_client.h>

#include <map>

#include "custos/error.h"
#include "custos/service/service.h"
#include "log.h"

namespace custos::http {
namespace hlog = custos::http::log;
namespace client = web::http::client;

// One http_client per system URL (keeps its connections alive between
// deliveries). Used only by the sender thread.
struct OutboxSender::Clients {
  std::chrono::milliseconds timeout;
  std::map<std::string, std::unique_ptr<client::http_client>> by_url;

  client::http_client& get(const std::string& url) {
    auto it = by_url.find(url);
    if (it != by_url.end()) return *it->second;
    client::http_client_config config;
    config.set_timeout(timeout);
    return *by_url.emplace(url, std::make_unique<client::http_client>(utility::conversions::to_string_t(url), config))
                .first->second;
  }
};

OutboxSender::OutboxSender(service::Service& svc, OutboxSenderOptions options)
    : svc_(svc), options_(options), clients_(std::make_unique<Clients>()) {
  options_.retry.lease_ms = options_.timeout.count() + 5000;
  clients_->timeout = options_.timeout;
  svc_.set_outbox_listener([this] { wake(); });
  thread_ = std::thread([this] { run(); });
}

OutboxSender::~OutboxSender() { stop(); }

void OutboxSender::wake() {
  {
    util::MutexLock lock(mu_);
    woken_ = true;
  }
  cv_.notify_all();
}

void OutboxSender::stop() {
  if (!thread_.joinable()) return;  // stopped already (the service may be gone)
  svc_.set_outbox_listener({});
  {
    util::MutexLock lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void OutboxSender::run() {
  bool failing = false;
  for (;;) {
    {
      util::MutexLock lock(mu_);
      if (stop_) return;
      woken_ = false;
    }
    std::vector<service::Service::OutboxDelivery> batch;
    std::chrono::milliseconds wait = options_.poll;
    try {
      batch = svc_.outbox_claim(options_.batch, options_.retry);
      if (batch.empty()) {
        if (const auto next = svc_.outbox_next_due_us()) {
          const auto until = std::chrono::milliseconds(std::max<std::int64_t>(0, (*next - svc_.now_us()) / 1000));
          wait = std::min(wait, until);
        }
      }
      if (failing) hlog::info("outbox_recovered");
      failing = false;
    } catch (const std::exception& e) {
      const auto* ce = dynamic_cast<const custos::Error*>(&e);
      if (!failing) hlog::error("outbox_claim_failed", {{"code", ce ? custos::code_name(ce->code()) : "internal"}});
      failing = true;
      wait = std::chrono::seconds(1);
    }
    if (batch.empty()) {
      util::MutexLock lock(mu_);
      cv_.wait_for(lock, wait, [this]() CUSTOS_REQUIRES(mu_) { return stop_ || woken_; });
      continue;
    }

    // All of the batch in flight at once; each bounded by the client timeout.
    std::vector<pplx::task<web::http::http_response>> inflight;
    inflight.reserve(batch.size());
    for (const auto& d : batch) {
      try {
        web::http::http_request req(web::http::methods::POST);
        for (const auto& [name, value] : d.headers)
          if (name != "content-type") req.headers().add(utility::conversions::to_string_t(name), utility::conversions::to_string_t(value));
        req.set_body(d.body, "application/json");
        inflight.push_back(clients_->get(d.url).request(req));
      } catch (const std::exception&) {
        inflight.push_back(pplx::task_from_exception<web::http::http_response>(
            std::make_exception_ptr(web::http::http_exception("cannot start the request"))));
      }
    }
    for (std::size_t i = 0; i < batch.size(); ++i) {
      int status = 0;
      std::string error;
      try {
        const auto resp = inflight[i].get();
        status = resp.status_code();
        if (status < 200 || status >= 300) error = "HTTP " + std::to_string(status);
      } catch (const web::http::http_exception& e) {
        error = e.error_code() == std::errc::timed_out ? "timeout" : "connection failed";
      } catch (const std::exception&) {
        error = "connection failed";
      }
      try {
        svc_.outbox_record(batch[i].id, status, error, options_.retry);
      } catch (const std::exception&) {
        // Not recorded: the lease runs out and the event is sent again.
        hlog::error("outbox_record_failed", {{"id", batch[i].id}});
      }
      // Ids and system names only: never a body, a URL or a subject.
      if (status < 200 || status >= 300)
        hlog::warn("outbox_delivery_failed", {{"id", batch[i].id}, {"system", batch[i].system}, {"cause", error}});
      else if (hlog::enabled(hlog::Level::debug))
        hlog::write(hlog::Level::debug, "outbox_delivered", {{"id", batch[i].id}, {"system", batch[i].system}});
    }
  }
}

}  // namespace custos::http
