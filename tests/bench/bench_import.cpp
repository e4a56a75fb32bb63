// Bulk import (issue 18) against its floor, in one run: the library's
// batch ingest (Records::create, 1,000 subjects a batch, subjects only) and
// the import of customers WITH one consent, one order and one touchpoint
// each, through the service façade, the real `custos import` binary and
// POST /v1/import on a real custosd. Rates are customers per second; the
// ratios to the floor are printed after the runs.
//   ./build/tests/bench_import
#include <benchmark/benchmark.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "bench_support.h"
#include "http_support.h"

namespace custos::bench {
namespace {

using nlohmann::json;

constexpr int kCustomersPerIteration = 2000;

// Customer i as an import line: the person() fields of the floor, plus one
// consent with its evidence, one order and one touchpoint with notes.
std::string customer_line(int i) {
  json fields = json::object();
  for (const auto& [k, v] : person(i)) fields[k] = v;
  json line = {{"fields", fields},
               {"consents", {{{"purpose", "email_marketing"}, {"channel", "email"}, {"event", "granted"},
                              {"source", "import"}, {"at", "2026-01-01T00:00:00Z"},
                              {"evidence", {{"form", "signup-v3"}}}}}},
               {"orders", {{{"amount_minor", 1000 + i % 5000}, {"currency", "EUR"}, {"at", "2026-02-01T00:00:00Z"}}}},
               {"touchpoints", {{{"channel", "email"}, {"type", "newsletter_open"}, {"at", "2026-03-01T00:00:00Z"},
                                 {"notes", padded("note " + std::to_string(i))}}}}};
  return line.dump() + "\n";
}

std::string customers(int first, int count) {
  std::string text;
  for (int i = first; i < first + count; ++i) text += customer_line(i);
  return text;
}

void BM_LibraryBatchIngest(benchmark::State& state) {
  Core core;
  std::vector<records::FieldMap> people;
  int n = 0;
  for (auto _ : state) {
    state.PauseTiming();
    people.clear();
    for (int i = 0; i < kBatch; ++i) people.push_back(person(n + i));
    state.ResumeTiming();
    core.records->create(core.actor, people);
    n += kBatch;
  }
  state.SetItemsProcessed(n);
}
BENCHMARK(BM_LibraryBatchIngest)->Unit(benchmark::kMillisecond)->MinTime(3.0)->UseRealTime();

void BM_ServiceImport(benchmark::State& state) {
  TestVault vault;
  const service::Caller admin = vault.admin();
  int n = 0;
  for (auto _ : state) {
    state.PauseTiming();
    const std::string text = customers(n, kCustomersPerIteration);
    std::size_t at = 0;
    state.ResumeTiming();
    const json r = vault.service->import_ndjson(admin, {}, [&](char* buf, std::size_t cap) {
      const std::size_t k = std::min(cap, text.size() - at);
      std::memcpy(buf, text.data() + at, k);
      at += k;
      return k;
    });
    if (r["created"] != kCustomersPerIteration) {
      state.SkipWithError("import failed");
      break;
    }
    n += kCustomersPerIteration;
  }
  state.SetItemsProcessed(n);
}
BENCHMARK(BM_ServiceImport)->Unit(benchmark::kMillisecond)->MinTime(3.0)->UseRealTime();

// The real binary, as an operator runs it (process start and key loading
// included), on files of 2,000 and of 20,000 customers: the process's fixed
// cost (~60-90 ms here) weighs on the small file only.
void BM_CliImport(benchmark::State& state) {
  httptest::Vault vault;
  const auto file = vault.tmp.path() / "customers.ndjson";
  const int per_file = static_cast<int>(state.range(0));
  int n = 0;
  for (auto _ : state) {
    state.PauseTiming();
    {
      std::ofstream out(file, std::ios::binary | std::ios::trunc);
      out << customers(n, per_file);
    }
    state.ResumeTiming();
    const auto r = testing::run({CUSTOS_CLI_PATH, "--data-dir", vault.dir.string(), "import", file.string()});
    if (r.exit_code != 0) {
      state.SkipWithError(("custos import failed: " + r.err).c_str());
      break;
    }
    n += per_file;
  }
  state.SetItemsProcessed(n);
}
BENCHMARK(BM_CliImport)->Arg(kCustomersPerIteration)->Iterations(8)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_CliImport)->Arg(10 * kCustomersPerIteration)->Iterations(2)->Unit(benchmark::kMillisecond)->UseRealTime();

// POST /v1/import on a real custosd, the body sent with Content-Length over
// a raw socket (the client costs next to nothing).
void BM_HttpImport(benchmark::State& state) {
  httptest::Vault vault;
  auto daemon = httptest::start_daemon(vault.dir);
  if (!daemon) {
    state.SkipWithError("custosd did not start");
    return;
  }
  int n = 0;
  for (auto _ : state) {
    state.PauseTiming();
    const std::string body = customers(n, kCustomersPerIteration);
    const std::string request = httptest::raw_request(
        "POST", "/v1/import", {"Authorization: Bearer " + vault.admin, "Content-Type: application/x-ndjson",
                                         "Content-Length: " + std::to_string(body.size())},
        body);
    httptest::Fd fd = httptest::connect_raw(daemon->port());
    state.ResumeTiming();
    httptest::send_raw(fd.get(), request, std::chrono::seconds(60));
    const auto r = httptest::read_response(fd.get(), std::chrono::steady_clock::now() + std::chrono::seconds(120));
    if (r.status != 200 || r.json["created"] != kCustomersPerIteration) {
      // Google Benchmark checks that no timing call follows an error: stop here.
      state.SkipWithError(("POST /v1/import failed: HTTP " + std::to_string(r.status) + " " + r.body.substr(0, 300)).c_str());
      break;
    }
    n += kCustomersPerIteration;
  }
  state.SetItemsProcessed(n);
}
BENCHMARK(BM_HttpImport)->Unit(benchmark::kMillisecond)->Iterations(8)->UseRealTime();

// Collects items/s per benchmark (by wall time: UseRealTime, as the CLI and
// HTTP paths spend their CPU in another process) to print the ratios to the floor.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const auto& run : runs) {
      const auto it = run.counters.find("items_per_second");
      // By function name, and the argument when there is one (BM_CliImport/2000).
      std::string name = run.run_name.function_name;
      if (!run.run_name.args.empty()) name += "/" + run.run_name.args;
      if (!run.error_occurred && it != run.counters.end()) rates[name] = it->second.value;
    }
    ConsoleReporter::ReportRuns(runs);
  }
  std::map<std::string, double> rates;
};

}  // namespace
}  // namespace custos::bench

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  custos::bench::RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  const auto& rates = reporter.rates;
  const auto floor = rates.find("BM_LibraryBatchIngest");
  if (floor != rates.end() && floor->second > 0) {
    std::printf("\nfloor: library batch ingest %.0f subjects/s (subjects only)\n", floor->second);
    for (const auto& [name, rate] : rates)
      if (name != floor->first)
        std::printf("%-22s %8.0f customers/s (with a consent, an order, a touchpoint) = %5.1f %% of the floor\n",
                    name.c_str(), rate, 100.0 * rate / floor->second);
  }
  benchmark::Shutdown();
  return 0;
}
