// The overdue report's arithmetic: due dates of 100,000 open requests spread
// over every DSR regime in the shipped policies (issue 17: < 50 ms). The
// floor is the one step no deadline can skip: converting each receipt
// instant to its local date in the controller's zone.
//
//   ./build/tests/bench_regulations
#include <benchmark/benchmark.h>

#include <filesystem>
#include <random>
#include <vector>

#include "custos/dsr/regulations.h"

namespace {

namespace fs = std::filesystem;
using custos::dsr::DsrRules;
using custos::dsr::Regulations;

constexpr std::size_t kOpenRequests = 100000;

struct OpenRequest {
  const DsrRules* rules;
  const char* type;
  std::int64_t received_us;
  int extensions;
};

const Regulations& regs() {
  static const auto r = Regulations::load(fs::path(CUSTOS_SOURCE_DIR) / "policies" / "regulations.yaml");
  return *r;
}

// 100,000 requests: regimes round-robin, a type mix with opt-outs, receipt
// times uniform over 2026, one in five extended.
const std::vector<OpenRequest>& open_requests() {
  static const std::vector<OpenRequest> requests = [] {
    std::vector<const DsrRules*> regimes;
    for (const auto& [key, rules] : regs().dsr_regimes()) regimes.push_back(&rules);
    static const char* kTypes[] = {"access", "erasure", "portability", "opt_out_sale_share", "rectification"};
    std::mt19937_64 rng(17);
    const std::int64_t start = 1767225600LL * 1000000;  // 2026-01-01T00:00:00Z
    std::uniform_int_distribution<std::int64_t> when(0, 365LL * 86400 * 1000000);
    std::vector<OpenRequest> out;
    out.reserve(kOpenRequests);
    for (std::size_t i = 0; i < kOpenRequests; ++i)
      out.push_back({regimes[i % regimes.size()], kTypes[(i / regimes.size()) % 5], start + when(rng), i % 5 == 0 ? 1 : 0});
    return out;
  }();
  return requests;
}

void BM_Floor_LocalDateOf100kReceipts(benchmark::State& state) {
  const auto& requests = open_requests();
  const auto& zone = regs().calendar();
  for (auto _ : state)
    for (const auto& q : requests) benchmark::DoNotOptimize(zone.local_date(q.received_us));
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * requests.size()));
}
BENCHMARK(BM_Floor_LocalDateOf100kReceipts)->Unit(benchmark::kMillisecond);

void BM_DueDatesOf100kOpenRequestsAllRegimes(benchmark::State& state) {
  const auto& requests = open_requests();
  const auto& r = regs();
  for (auto _ : state) {
    std::int64_t sum = 0;
    for (const auto& q : requests) {
      const auto ext = q.extensions ? r.extended_due(*q.rules, q.type, q.received_us, q.extensions) : std::nullopt;
      sum += ext ? *ext : r.due(*q.rules, q.type, q.received_us);
    }
    benchmark::DoNotOptimize(sum);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * requests.size()));
  state.counters["regimes"] = static_cast<double>(r.dsr_regimes().size());
}
BENCHMARK(BM_DueDatesOf100kOpenRequestsAllRegimes)->Unit(benchmark::kMillisecond);

// Loading and computing every calendar 1969..2101 (custosd start and SIGHUP).
void BM_LoadRegulationsAndCalendars(benchmark::State& state) {
  for (auto _ : state)
    benchmark::DoNotOptimize(Regulations::load(fs::path(CUSTOS_SOURCE_DIR) / "policies" / "regulations.yaml"));
}
BENCHMARK(BM_LoadRegulationsAndCalendars)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
