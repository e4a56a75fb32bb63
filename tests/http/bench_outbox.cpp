// Outbox delivery to a local webhook receiver (issue 18's figure).
//
//   BM_OutboxDrain/N          N events committed while custosd was down, then
//                             delivered by a fresh custosd: events/s from the first
//                             arrival to the last (manual time).
//   BM_ReceiverFloor/N        the floor in the same run: N POSTs of the same size
//                             straight from a cpprestsdk client to the same
//                             receiver, 64 in flight (what the sender's batch allows).
//   BM_OutboxCommitToDelivery consent changes made one at a time over HTTP while
//                             custosd runs; per event, the receiver's arrival time
//                             minus the time in the event (taken in the committing
//                             transaction): p50 and p99 in ms.
//
// Run: build/tests/http/bench_outbox --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>

#include <algorithm>

#include "custos/audit/audit_log.h"
#include "http_support.h"
#include "webhook_receiver.h"

namespace {

namespace fs = std::filesystem;
using custos::httptest::Daemon;
using custos::httptest::Vault;
using custos::webhooktest::Receiver;
using Json = nlohmann::json;
using std::chrono::milliseconds;

const std::vector<std::string> kDaemonArgs = {"--outbox-poll-ms", "250", "--outbox-timeout-ms", "5000",
                                              "--log-level", "warn"};

void setup_system(Vault& v, const Receiver& rx) {
  custos::httptest::write_file(v.dir / "policies" / "systems.yaml",
                               "systems:\n  - {name: crm, url: \"" + rx.url() + "\", events: [consent]}\n");
  const auto r = custos::testing::run({custos::httptest::kCli, "--data-dir", v.dir.string(), "system", "secret", "crm"});
  if (r.exit_code != 0) throw std::runtime_error("system secret failed: " + r.err);
}

double seconds_between(const std::vector<custos::webhooktest::Delivery>& got) {
  auto first = got.front().at, last = got.front().at;
  for (const auto& d : got) first = std::min(first, d.at), last = std::max(last, d.at);
  return std::chrono::duration<double>(last - first).count();
}

void BM_OutboxDrain(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  double delivered = 0;
  for (auto _ : state) {
    Vault v;
    Receiver rx;
    setup_system(v, rx);
    {
      // Committed through the library while no custosd runs: one event each.
      custos::service::OpenOptions o;
      o.data_dir = v.dir;
      auto svc = custos::service::Service::open(o);
      const custos::service::Caller op{svc->local_operator(), "administration", "bench"};
      const std::string sid = svc->create_subject(op, {{"fields", {{"email", "bench@example.com"}}}})["id"];
      for (std::size_t i = 0; i < n; ++i)
        svc->record_consent(op, sid,
                            {{"purpose", "email_marketing"}, {"channel", "email"},
                             {"event", i % 2 ? "granted" : "withdrawn"}, {"source", "import"}},
                            false);
    }
    auto d = custos::httptest::start_daemon(v.dir, kDaemonArgs);
    if (!d || !rx.wait_for(n, milliseconds(300000))) {
      state.SkipWithError("not every event was delivered");
      return;
    }
    const auto got = rx.deliveries();
    state.SetIterationTime(seconds_between(got) * static_cast<double>(n) / static_cast<double>(n - 1));
    delivered += static_cast<double>(n);
  }
  state.counters["events_per_s"] = benchmark::Counter(delivered, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_OutboxDrain)->Arg(5000)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(1);

void BM_ReceiverFloor(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  // A body of a consent event's size.
  const std::string body(420, 'x');
  double delivered = 0;
  for (auto _ : state) {
    Receiver rx;
    web::http::client::http_client client(rx.url());
    std::size_t sent = 0;
    while (sent < n) {
      std::vector<pplx::task<web::http::http_response>> inflight;
      for (std::size_t i = 0; i < 64 && sent < n; ++i, ++sent) {
        web::http::http_request req(web::http::methods::POST);
        req.headers().add("webhook-id", "msg_" + std::to_string(sent));
        req.set_body(body, "application/json");
        inflight.push_back(client.request(req));
      }
      for (auto& t : inflight) t.get();
    }
    if (!rx.wait_for(n, milliseconds(60000))) {
      state.SkipWithError("receiver lost requests");
      return;
    }
    state.SetIterationTime(seconds_between(rx.deliveries()) * static_cast<double>(n) / static_cast<double>(n - 1));
    delivered += static_cast<double>(n);
  }
  state.counters["events_per_s"] = benchmark::Counter(delivered, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_ReceiverFloor)->Arg(5000)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(1);

void BM_OutboxCommitToDelivery(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  std::vector<double> latencies_ms;
  for (auto _ : state) {
    Vault v;
    Receiver rx;
    setup_system(v, rx);
    auto d = custos::httptest::start_daemon(v.dir, kDaemonArgs);
    const std::string sid = d->post("/v1/subjects", v.admin, {{"fields", {{"email", "lat@example.com"}}}}).json["id"];
    for (std::size_t i = 0; i < n; ++i)
      d->post("/v1/subjects/" + sid + "/consents", v.admin,
              {{"purpose", "email_marketing"}, {"channel", "email"}, {"event", i % 2 ? "granted" : "withdrawn"},
               {"source", "import"}});
    if (!rx.wait_for(n, milliseconds(120000))) {
      state.SkipWithError("not every event was delivered");
      return;
    }
    // Arrival in wall-clock time: steady arrival mapped through one (steady, system) pair.
    const auto steady_now = std::chrono::steady_clock::now();
    const auto system_now = std::chrono::system_clock::now();
    for (const auto& got : rx.deliveries()) {
      const auto arrival = system_now - std::chrono::duration_cast<std::chrono::system_clock::duration>(steady_now - got.at);
      const auto committed_us = custos::audit::parse_time_us(got.json["timestamp"].get<std::string>());
      const double arrival_us = static_cast<double>(
          std::chrono::duration_cast<std::chrono::microseconds>(arrival.time_since_epoch()).count());
      latencies_ms.push_back((arrival_us - static_cast<double>(committed_us.value_or(0))) / 1000.0);
    }
  }
  std::sort(latencies_ms.begin(), latencies_ms.end());
  const auto pct = [&](double p) {
    return latencies_ms[std::min(latencies_ms.size() - 1, static_cast<std::size_t>(p * static_cast<double>(latencies_ms.size())))];
  };
  state.counters["p50_ms"] = pct(0.50);
  state.counters["p99_ms"] = pct(0.99);
  state.counters["max_ms"] = latencies_ms.back();
}
BENCHMARK(BM_OutboxCommitToDelivery)->Arg(1000)->Unit(benchmark::kMillisecond)->Iterations(1);

}  // namespace

BENCHMARK_MAIN();
