// Offline verification, as `custos-audit` does it (`audit/` only).
//   ./audit_verify_bench
// BM_VerifyExport1M reads a 1 M-entry export from a file; BM_Sha256Floor1M
// computes, in memory, the hashes verification cannot avoid (each entry's
// leaf hash and the node hashes of the tree): the floor the rate is a ratio
// to (one thread; the verifier uses two, so the ratio can exceed 1). Both are
// timed by the wall clock. With CUSTOS_VERIFY_BENCH_EXPORT=DIR the export and its key are kept in
// DIR (export.bin, audit.vkey) for measuring the real binary's peak RSS.
// BM_Membership* measure one subject's membership of a 500-subject page.
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "custos_audit/subjects.h"
#include "custos_audit/verify.h"
#include "export_fixture.h"

namespace {

using namespace custos::auditfmt;

testing::Fixture& fixture_1m() {
  static testing::Fixture* fx = [] {
    auto* f = new testing::Fixture();
    f->build(1000000, 1000);
    return f;
  }();
  return *fx;
}

void BM_VerifyExport1M(benchmark::State& state) {
  testing::Fixture& fx = fixture_1m();
  std::string path = "/tmp/custos-verify-bench-" + std::to_string(::getpid());
  const char* keep = std::getenv("CUSTOS_VERIFY_BENCH_EXPORT");
  if (keep) {
    std::filesystem::create_directories(keep);
    path = std::string(keep) + "/export.bin";
    std::ofstream(std::string(keep) + "/audit.vkey") << fx.vkey << "\n";
  }
  std::size_t size = 0;
  {
    const std::string bytes = fx.write();
    size = bytes.size();
    std::ofstream(path, std::ios::binary) << bytes;
  }
  for (auto _ : state) {
    std::ifstream in(path, std::ios::binary);
    const auto r = verify_export(in, fx.vkey);
    if (!r.ok) state.SkipWithError(r.error.c_str());
  }
  if (!keep) std::remove(path.c_str());
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(fx.entries.size()));
  state.counters["bytes_per_entry"] = static_cast<double>(size) / static_cast<double>(fx.entries.size());
}
// Wall-clock time: the verifier hashes on a helper thread, so the calling
// thread's CPU time would overstate its rate.
BENCHMARK(BM_VerifyExport1M)->Unit(benchmark::kMillisecond)->Iterations(3)->UseRealTime();

// The same hashes with nothing else: read from memory, no parsing, no I/O.
void BM_Sha256Floor1M(benchmark::State& state) {
  testing::Fixture& fx = fixture_1m();
  for (auto _ : state) {
    Frontier f;
    for (const auto& e : fx.entries) f.append(leaf_hash(e));
    benchmark::DoNotOptimize(f.root());
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(fx.entries.size()));
}
BENCHMARK(BM_Sha256Floor1M)->Unit(benchmark::kMillisecond)->Iterations(3)->UseRealTime();

Entry page_of(std::size_t n) {
  Entry e;
  e.operation = "campaign.fetch";
  char hex[33];
  for (std::size_t i = 0; i < n; ++i) {
    std::snprintf(hex, sizeof hex, "%032zx", i * 2654435761u);
    e.subject_ids.emplace_back(hex);
  }
  commit_subjects(e);
  return e;
}

// What a subject's package carries for one page entry, and what verifying it costs.
void BM_MembershipVerify500(benchmark::State& state) {
  const Entry e = page_of(500);
  const Membership m = membership_of(e, 321);
  for (auto _ : state) benchmark::DoNotOptimize(verify_membership(m, e.subject_count, e.subject_root));
  nlohmann::json j = {{"subject_id", m.subject_id}, {"salt", std::string(32, '0')}, {"index", m.index},
                      {"count", m.count}, {"path", nlohmann::json::array()}};
  for (const auto& h : m.path) j["path"].push_back(to_hex(h));
  state.counters["path_hashes"] = static_cast<double>(m.path.size());
  state.counters["membership_json_bytes"] = static_cast<double>(j.dump().size());
  state.counters["membership_raw_bytes"] = static_cast<double>(16 + 32 + 8 + 8 + 32 * m.path.size());
}
BENCHMARK(BM_MembershipVerify500)->Unit(benchmark::kMicrosecond);

// The vault's side: building one subject's membership from the page's openings.
void BM_MembershipBuild500(benchmark::State& state) {
  const Entry e = page_of(500);
  for (auto _ : state) benchmark::DoNotOptimize(membership_of(e, 321));
}
BENCHMARK(BM_MembershipBuild500)->Unit(benchmark::kMicrosecond);

// The writer's side: committing a 500-subject page (salts and root).
void BM_CommitPage500(benchmark::State& state) {
  Entry e = page_of(500);
  for (auto _ : state) {
    commit_subjects(e);
    benchmark::DoNotOptimize(e.subject_root);
  }
}
BENCHMARK(BM_CommitPage500)->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
