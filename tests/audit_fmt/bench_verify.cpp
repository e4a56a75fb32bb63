// Offline verification rate of an export. Run: ./audit_verify_bench
#include <benchmark/benchmark.h>

#include "custos_audit/verify.h"
#include "export_fixture.h"

namespace {

void BM_VerifyExport1M(benchmark::State& state) {
  custos::auditfmt::testing::Fixture fx;
  fx.build(static_cast<std::uint64_t>(state.range(0)), 1000);
  const std::string bytes = fx.write();
  for (auto _ : state) {
    std::istringstream in(bytes);
    const auto r = custos::auditfmt::verify_export(in, fx.vkey);
    if (!r.ok) state.SkipWithError(r.error.c_str());
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
  state.counters["bytes_per_entry"] = static_cast<double>(bytes.size()) / static_cast<double>(state.range(0));
}
BENCHMARK(BM_VerifyExport1M)->Arg(1000000)->Unit(benchmark::kMillisecond)->Iterations(3);

}  // namespace

BENCHMARK_MAIN();
