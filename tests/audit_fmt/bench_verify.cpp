// Offline verification rate of an export, read from a file as
// `custos-audit verify` reads it. Run: ./audit_verify_bench
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "custos_audit/verify.h"
#include "export_fixture.h"

namespace {

void BM_VerifyExport1M(benchmark::State& state) {
  custos::auditfmt::testing::Fixture fx;
  fx.build(static_cast<std::uint64_t>(state.range(0)), 1000);
  char path[] = "/tmp/custos-verify-bench-XXXXXX";
  const int fd = ::mkstemp(path);
  if (fd < 0) return state.SkipWithError("mkstemp failed");
  ::close(fd);
  std::size_t size = 0;
  {
    const std::string bytes = fx.write();
    size = bytes.size();
    std::ofstream(path, std::ios::binary) << bytes;
  }
  for (auto _ : state) {
    std::ifstream in(path, std::ios::binary);
    const auto r = custos::auditfmt::verify_export(in, fx.vkey);
    if (!r.ok) state.SkipWithError(r.error.c_str());
  }
  std::remove(path);
  state.SetItemsProcessed(state.iterations() * state.range(0));
  state.counters["bytes_per_entry"] = static_cast<double>(size) / static_cast<double>(state.range(0));
}
BENCHMARK(BM_VerifyExport1M)->Arg(1000000)->Unit(benchmark::kMillisecond)->Iterations(3);

}  // namespace

BENCHMARK_MAIN();
