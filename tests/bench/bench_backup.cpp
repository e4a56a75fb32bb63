// Online backup of a large vault while it serves (issue 21): how long the
// backup takes, and what it does to lookup latency. The floor is the same
// lookups with no backup running, measured in the same run.
//
//   ./build/tests/bench_backup            (CUSTOS_BENCH_BACKUP_SUBJECTS, default 100000)
#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>

#include "bench_support.h"
#include "custos/service/backup.h"

namespace custos::bench {
namespace {

int subject_count() {
  const char* v = std::getenv("CUSTOS_BENCH_BACKUP_SUBJECTS");
  return v ? std::max(1000, std::atoi(v)) : 100000;
}

// One vault for the whole run: populated directly, then served through the
// façade with the audit journal on, as custosd serves it.
struct Served {
  Core core;
  int subjects = subject_count();
  std::unique_ptr<service::Service> svc;
  TempDir out_dir;
  Served() {
    populate(core, subjects);
    reopen_as_service(core).reset();
    service::OpenOptions o;
    o.data_dir = core.vault.data_dir();
    o.audit_journal = true;
    svc = service::Service::open(o);
  }
  service::Caller caller() { return core.vault.caller("admin", "customer_service"); }
};

Served& served() {
  static Served* s = new Served();
  return *s;
}

// Exact lookups by email of random subjects; p50/p99 in µs as counters.
void lookups(benchmark::State& state, Served& s) {
  std::vector<double> us;
  std::uint64_t x = 88172645463325252ull;
  const auto caller = s.caller();
  for (auto _ : state) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    const int i = static_cast<int>(x % static_cast<std::uint64_t>(s.subjects));
    const auto t0 = std::chrono::steady_clock::now();
    auto r = s.svc->find_subjects(caller, "email", "user" + std::to_string(i) + ".benchmark.address@example-mail.com");
    us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
    benchmark::DoNotOptimize(r);
  }
  std::sort(us.begin(), us.end());
  if (!us.empty()) {
    state.counters["p50_us"] = us[us.size() / 2];
    state.counters["p99_us"] = us[us.size() * 99 / 100];
  }
}

void BM_LookupIdle(benchmark::State& state) { lookups(state, served()); }

void BM_LookupDuringBackup(benchmark::State& state) {
  Served& s = served();
  std::atomic<bool> stop{false};
  std::atomic<int> backups{0};
  std::thread backer([&] {
    while (!stop) {
      const auto out = s.out_dir.path() / "during.backup";
      std::filesystem::remove(out);
      service::BackupOptions b{s.core.vault.data_dir(), std::nullopt, out};
      service::backup_vault(b);
      ++backups;
    }
  });
  lookups(state, s);
  stop = true;
  backer.join();
  state.counters["backups_overlapping"] = backups.load();
}

void BM_Backup(benchmark::State& state) {
  Served& s = served();
  double bytes = 0;
  for (auto _ : state) {
    const auto out = s.out_dir.path() / "timed.backup";
    std::filesystem::remove(out);
    service::BackupOptions b{s.core.vault.data_dir(), std::nullopt, out};
    const auto summary = service::backup_vault(b);
    bytes = summary["bytes"].get<double>();
  }
  state.counters["subjects"] = s.subjects;
  state.counters["archive_MiB"] = bytes / (1 << 20);
  state.counters["MiB_per_s"] = benchmark::Counter(bytes / (1 << 20) * static_cast<double>(state.iterations()),
                                                    benchmark::Counter::kIsRate);
}

void BM_RestoreAndCheck(benchmark::State& state) {
  Served& s = served();
  const auto archive = s.out_dir.path() / "restore.backup";
  std::filesystem::remove(archive);
  service::backup_vault({s.core.vault.data_dir(), std::nullopt, archive});
  int n = 0;
  for (auto _ : state) {
    service::RestoreOptions r{archive, s.out_dir.path() / ("restored-" + std::to_string(n++)),
                              s.core.vault.data_dir() / "keys", std::nullopt};
    benchmark::DoNotOptimize(service::restore_vault(r));
  }
}

BENCHMARK(BM_LookupIdle)->MinTime(3)->UseRealTime();
BENCHMARK(BM_LookupDuringBackup)->MinTime(3)->UseRealTime();
BENCHMARK(BM_Backup)->Iterations(3)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_RestoreAndCheck)->Iterations(2)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace custos::bench

BENCHMARK_MAIN();
