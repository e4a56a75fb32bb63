// PostgreSQL ingest benchmarks. Needs a cluster (command in docs/performance.md):
//   CUSTOS_TEST_PG_URL=$(scripts/pg_cluster.sh start DIR) ./build/tests/bench_pg_ingest
//   scripts/pg_cluster.sh stop DIR
//
// BM_PgFloorSealAndCopy is the floor the library is compared with, in the
// same run: per subject the same crypto as bench_core's BM_RawFloor (a
// random DEK wrapped by the KEK, 6 sealed fields of ~48 bytes, 2 keyed
// BLAKE2b indexes), written by libpq directly with binary COPY into a
// subject table and an index table, 1,000 subjects per transaction, with
// none of our layers and no audit entries.
// BM_PgRecordsBatchIngest is records::Records::create on the PostgreSQL
// store: the same work plus the key table, schema validation, the field
// blob, the writer lock and one audit entry per batch.
#include <arpa/inet.h>
#include <benchmark/benchmark.h>
#include <libpq-fe.h>
#include <sodium.h>

#include <sys/resource.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>

#include "bench_support.h"
#include "custos/store/postgres_store.h"

namespace {

using namespace custos;
using namespace custos::bench;

std::string pg_url_or_skip(benchmark::State& state) {
  const std::string base = testing::postgres_test_url();
  if (base.empty()) state.SkipWithError("no PostgreSQL cluster: set CUSTOS_TEST_PG_URL (scripts/pg_cluster.sh start)");
  return base;
}

void exec_or_throw(PGconn* c, const std::string& sql) {
  PGresult* r = PQexec(c, sql.c_str());
  const bool ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
  PQclear(r);
  if (!ok) throw std::runtime_error("floor: " + std::string(PQerrorMessage(c)));
}

struct CopyBuffer {
  std::string buf;
  void u16(std::uint16_t v) {
    v = htons(v);
    buf.append(reinterpret_cast<const char*>(&v), 2);
  }
  void u32(std::uint32_t v) {
    v = htonl(v);
    buf.append(reinterpret_cast<const char*>(&v), 4);
  }
  void field(const void* p, std::size_t n) {
    u32(static_cast<std::uint32_t>(n));
    buf.append(static_cast<const char*>(p), n);
  }
  void header() {
    buf.assign("PGCOPY\n\377\r\n\0", 11);
    u32(0);
    u32(0);
  }
};

void copy_in(PGconn* c, const std::string& sql, CopyBuffer& b) {
  b.u16(0xFFFF);
  PGresult* r = PQexec(c, sql.c_str());
  if (PQresultStatus(r) != PGRES_COPY_IN) throw std::runtime_error("floor: COPY did not start");
  PQclear(r);
  PQputCopyData(c, b.buf.data(), static_cast<int>(b.buf.size()));
  PQputCopyEnd(c, nullptr);
  r = PQgetResult(c);
  const bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
  PQclear(r);
  while ((r = PQgetResult(c)) != nullptr) PQclear(r);
  if (!ok) throw std::runtime_error("floor: COPY failed: " + std::string(PQerrorMessage(c)));
}

void BM_PgFloorSealAndCopy(benchmark::State& state) {
  const std::string base = pg_url_or_skip(state);
  if (base.empty() || sodium_init() < 0) return;
  const std::string url = testing::fresh_postgres_schema(base);
  PGconn* c = PQconnectdb(url.c_str());
  exec_or_throw(c,
                "CREATE TABLE subjects (id BYTEA PRIMARY KEY, wrapped_dek BYTEA, fields BYTEA);"
                "CREATE TABLE blind_index (field TEXT COLLATE \"C\", digest BYTEA, subject_id BYTEA,"
                " PRIMARY KEY (field, digest, subject_id))");
  unsigned char kek[32], ikey[32];
  randombytes_buf(kek, 32);
  randombytes_buf(ikey, 32);
  std::vector<records::FieldMap> people;
  for (int i = 0; i < kBatch; ++i) people.push_back(person(i));
  CopyBuffer subjects, index;
  int n = 0;
  for (auto _ : state) {
    subjects.header();
    index.header();
    for (int i = 0; i < kBatch; ++i, ++n) {
      unsigned char id[16], dek[32], nonce[24];
      randombytes_buf(id, 16);
      randombytes_buf(dek, 32);
      randombytes_buf(nonce, 24);
      unsigned char wrapped[32 + 16];
      unsigned long long wl = 0;
      crypto_aead_xchacha20poly1305_ietf_encrypt(wrapped, &wl, dek, 32, id, 16, nullptr, nonce, kek);
      std::string blob;
      for (const auto& [name, value] : people[static_cast<std::size_t>(i)]) {
        std::vector<unsigned char> ct(value.size() + 16);
        unsigned long long cl = 0;
        randombytes_buf(nonce, 24);
        crypto_aead_xchacha20poly1305_ietf_encrypt(ct.data(), &cl, reinterpret_cast<const unsigned char*>(value.data()),
                                                   value.size(), reinterpret_cast<const unsigned char*>(name.data()),
                                                   name.size(), nullptr, nonce, dek);
        blob.append(name).append(reinterpret_cast<const char*>(nonce), 24).append(reinterpret_cast<const char*>(ct.data()), cl);
      }
      subjects.u16(3);
      subjects.field(id, 16);
      subjects.field(wrapped, wl);
      subjects.field(blob.data(), blob.size());
      for (const char* f : {"email", "external_id"}) {
        unsigned char digest[32];
        const std::string& v = people[static_cast<std::size_t>(i)].at(f);
        crypto_generichash(digest, 32, reinterpret_cast<const unsigned char*>(v.data()), v.size(), ikey, 32);
        index.u16(3);
        index.field(f, std::strlen(f));
        index.field(digest, 32);
        index.field(id, 16);
      }
    }
    exec_or_throw(c, "BEGIN");
    copy_in(c, "COPY subjects (id, wrapped_dek, fields) FROM STDIN (FORMAT binary)", subjects);
    copy_in(c, "COPY blind_index (field, digest, subject_id) FROM STDIN (FORMAT binary)", index);
    exec_or_throw(c, "COMMIT");
  }
  state.SetItemsProcessed(n);
  PQfinish(c);
}
BENCHMARK(BM_PgFloorSealAndCopy)->Unit(benchmark::kMillisecond)->MinTime(2.0)->UseRealTime();

// The vault's components on a PostgreSQL store (a fresh schema).
struct PgCore {
  TempDir dir;
  std::unique_ptr<crypto::Keyring> keyring;
  std::unique_ptr<store::Store> store;
  std::unique_ptr<store::KeyTable> keys;
  records::Schema schema;
  std::unique_ptr<crypto::Signer> signer;
  std::unique_ptr<audit::AuditLog> audit;
  std::unique_ptr<records::Records> records;
  audit::Actor actor{"bench", "admin", "", "administration", "bench"};

  explicit PgCore(const std::string& base) {
    service::InitOptions o;
    o.data_dir = dir.path() / "data";
    o.store_url = testing::fresh_postgres_schema(base);
    o.fast_kdf = true;
    o.shipped_policies = testing::shipped_policies();
    service::init_data_dir(o);
    keyring = crypto::Keyring::open(o.data_dir / "keys", std::nullopt);
    store = store::open_postgres(o.store_url);
    keys = std::make_unique<store::KeyTable>(*store, *keyring);
    schema = records::Schema::load(o.data_dir / "policies" / "schema.yaml");
    signer = std::make_unique<crypto::Signer>(keys->named_key("audit:signing"));
    audit = std::make_unique<audit::AuditLog>(*store, *signer, audit::Options{});
    records = std::make_unique<records::Records>(*store, *keys, schema, *audit);
  }
};

void ingest(benchmark::State& state, records::OnConflict on_conflict) {
  const std::string base = pg_url_or_skip(state);
  if (base.empty()) return;
  PgCore core(base);
  std::vector<records::FieldMap> people;
  int n = 0;
  for (auto _ : state) {
    state.PauseTiming();
    people.clear();
    for (int i = 0; i < kBatch; ++i) people.push_back(person(n + i));
    state.ResumeTiming();
    core.records->create_resolved(core.actor, people, on_conflict);
    n += kBatch;
  }
  state.SetItemsProcessed(n);
}

void BM_PgRecordsBatchIngest(benchmark::State& state) { ingest(state, records::OnConflict::create); }
BENCHMARK(BM_PgRecordsBatchIngest)->Unit(benchmark::kMillisecond)->MinTime(2.0)->UseRealTime();

// Identity resolution (on_conflict reject, the HTTP default): every item's
// email and external id are probed first; no item conflicts.
void BM_PgRecordsBatchIngestRejectingDuplicates(benchmark::State& state) {
  ingest(state, records::OnConflict::reject);
}
BENCHMARK(BM_PgRecordsBatchIngestRejectingDuplicates)->Unit(benchmark::kMillisecond)->MinTime(2.0)->UseRealTime();

// CPU seconds (user + system) used so far by the processes named
// "postgres" (the cluster the benchmark talks to; nothing else runs one here).
double postgres_cpu_seconds() {
  double ticks = 0;
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.empty() || !std::isdigit(static_cast<unsigned char>(name[0]))) continue;
    std::ifstream in(e.path() / "stat");
    std::string line;
    if (!std::getline(in, line)) continue;
    const auto open = line.find('('), close = line.rfind(')');
    if (open == std::string::npos || close == std::string::npos || line.substr(open + 1, close - open - 1) != "postgres")
      continue;
    std::istringstream rest(line.substr(close + 2));
    std::string field;
    for (int i = 3; i <= 13; ++i) rest >> field;  // state .. cmajflt
    double utime = 0, stime = 0;
    rest >> utime >> stime;
    ticks += utime + stime;
  }
  return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

double process_cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// The audit log's writes on PostgreSQL, where custosd has no local journal:
// every read's entry is group-committed (AuditLog::append_durable) before its
// plaintext leaves. range(0) entries of distinct subjects from 8 threads, as
// under HTTP load; CPU per entry of this process (the vault's side) and of
// the PostgreSQL server, beside the SQLCipher fold's (bench_core
// BM_AuditJournalFoldAsTheLogGrows). One iteration.
void BM_PgAuditGroupCommit(benchmark::State& state) {
  const std::string base = pg_url_or_skip(state);
  if (base.empty()) return;
  PgCore core(base);
  const auto entries = static_cast<int>(state.range(0));
  constexpr int kThreads = 8;
  for (auto _ : state) {
    const double client0 = process_cpu_seconds(), server0 = postgres_cpu_seconds();
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t)
      threads.emplace_back([&, t] {
        std::mt19937 rng(static_cast<unsigned>(t));
        char hex[33];
        for (int i = t; i < entries; i += kThreads) {
          std::snprintf(hex, sizeof hex, "%08x%08x%08x%08x", static_cast<unsigned>(rng()), static_cast<unsigned>(rng()),
                        static_cast<unsigned>(rng()), static_cast<unsigned>(rng()));
          core.audit->append_durable(core.actor, {{"subject.read", hex, {"given_name", "email"}, {}, true, "", ""}});
        }
      });
    for (auto& t : threads) t.join();
    const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    state.counters["entries_per_s"] = entries / wall;
    state.counters["vault_cpu_us_per_entry"] = (process_cpu_seconds() - client0) * 1e6 / entries;
    state.counters["server_cpu_us_per_entry"] = (postgres_cpu_seconds() - server0) * 1e6 / entries;
  }
}
BENCHMARK(BM_PgAuditGroupCommit)->Arg(100000)->Iterations(1)->Unit(benchmark::kSecond)->UseRealTime();

double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

// `count` reads' entries of distinct subjects appended from 8 threads.
void append_reads(audit::AuditLog& log, const audit::Actor& actor, int count, unsigned seed) {
  constexpr int kThreads = 8;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      std::mt19937 rng(seed * kThreads + static_cast<unsigned>(t));
      char hex[33];
      for (int i = t; i < count; i += kThreads) {
        std::snprintf(hex, sizeof hex, "%08x%08x%08x%08x", static_cast<unsigned>(rng()), static_cast<unsigned>(rng()),
                      static_cast<unsigned>(rng()), static_cast<unsigned>(rng()));
        log.append_durable(actor, {{"subject.read", hex, {"given_name", "email"}, {}, true, "", ""}});
      }
    });
  for (auto& t : threads) t.join();
}

// custosd's mode on PostgreSQL since the pending table
// (AuditLog::enable_pending_table): a read's entry is one insert into
// audit_pending, group-committed without the writers' lock, and a fold
// moves entries into the tree in batches. Split as bench_core splits the
// SQLCipher journal: the readers' side (8 threads, as BM_PgAuditGroupCommit,
// whose figures it replaces), then the fold, as the log grows to range(0)
// entries: 50,000 reads, then one fold of them, timed on the folding thread
// (CLOCK_THREAD_CPUTIME_ID; the vault's CPU) and on the server. One iteration.
void BM_PgAuditPendingTable(benchmark::State& state) {
  const std::string base = pg_url_or_skip(state);
  if (base.empty()) return;
  PgCore core(base);
  core.audit->enable_pending_table(std::chrono::hours(1), audit::JournalOptions{}.max_pending_while_fold_fails);  // folded below, not by the timer
  const auto total = static_cast<int>(state.range(0));
  constexpr int kBatch = 50000;
  for (auto _ : state) {
    const std::uint64_t size0 = core.audit->size();
    double read_wall = 0, read_cpu = 0, read_server = 0;
    double fold_cpu = 0, fold_server = 0, first_cpu = 0, last_cpu = 0;
    const int batches = total / kBatch;
    for (int b = 0; b < batches; ++b) {
      const double c0 = process_cpu_seconds(), s0 = postgres_cpu_seconds();
      const auto t0 = std::chrono::steady_clock::now();
      append_reads(*core.audit, core.actor, kBatch, static_cast<unsigned>(b));
      read_wall += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      read_cpu += process_cpu_seconds() - c0;
      const double s1 = postgres_cpu_seconds();
      read_server += s1 - s0;
      const double f0 = thread_cpu_seconds();
      core.audit->flush();  // folds on this thread
      const double cpu = thread_cpu_seconds() - f0;
      fold_server += postgres_cpu_seconds() - s1;
      fold_cpu += cpu;
      if (b < 2) first_cpu += cpu;
      if (b >= batches - 2) last_cpu += cpu;
    }
    const double n = static_cast<double>(batches) * kBatch;
    state.counters["reads_per_s"] = n / read_wall;
    state.counters["read_vault_cpu_us"] = read_cpu * 1e6 / n;
    state.counters["read_server_cpu_us"] = read_server * 1e6 / n;
    state.counters["fold_cpu_us_mean"] = fold_cpu * 1e6 / n;
    state.counters["fold_cpu_us_first_100k"] = first_cpu * 1e6 / (2 * kBatch);
    state.counters["fold_cpu_us_last_100k"] = last_cpu * 1e6 / (2 * kBatch);
    state.counters["fold_server_cpu_us"] = fold_server * 1e6 / n;
    if (core.audit->size() - size0 != static_cast<std::uint64_t>(n)) state.SkipWithError("entries lost or doubled");
  }
}
BENCHMARK(BM_PgAuditPendingTable)->Arg(1000000)->Arg(10000000)->Iterations(1)->Unit(benchmark::kSecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
