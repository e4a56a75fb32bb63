// Vault-core benchmarks. Run: ./build/tests/bench_core --benchmark_min_time=1
//
// BM_RawFloor is the floor our ingest is compared with: the same crypto and
// the same rows (per subject: a random DEK wrapped by the KEK, 6 sealed
// fields of ~48 bytes, 2 keyed BLAKE2b indexes, one subject row and two index
// rows) written with libsodium and SQLCipher directly, in transactions of
// 1,000, with none of our layers (and no audit entries).
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <benchmark/benchmark.h>
#include <sodium.h>
#include <sqlcipher/sqlite3.h>

#include <nlohmann/json.hpp>

#include "custos/audit/audit_log.h"
#include "custos/crypto/keyring.h"
#include "custos/crypto/signer.h"
#include "custos/records/records.h"
#include "custos/records/storage.h"
#include "../../src/records/field_blob.h"
#include <random>
#include "custos/store/key_table.h"
#include "custos/store/sqlcipher_store.h"
#include "test_support.h"
#include "bench_support.h"

namespace {

using namespace custos;
using testing::TempDir;
using testing::TestVault;
using namespace custos::bench;

void check(int rc, sqlite3* db) {
  if (rc != SQLITE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW) throw std::runtime_error(sqlite3_errmsg(db));
}

void BM_RawFloor(benchmark::State& state) {
  if (sodium_init() < 0) return;
  TempDir dir;
  sqlite3* db = nullptr;
  sqlite3_open((dir.path() / "floor.db").c_str(), &db);
  unsigned char key[32];
  randombytes_buf(key, sizeof key);
  check(sqlite3_key(db, key, sizeof key), db);  // passphrase-style key: KDF once at open only
  sqlite3_exec(db, "PRAGMA cipher_page_size = 4096", nullptr, nullptr, nullptr);
  sqlite3_exec(db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA secure_delete = ON;"
               " PRAGMA cache_size = -16384", nullptr,
               nullptr, nullptr);
  sqlite3_exec(db,
               "CREATE TABLE subjects (id BLOB PRIMARY KEY, wrapped_dek BLOB, fields BLOB);"
               "CREATE TABLE blind_index (field TEXT, digest BLOB, subject_id BLOB, PRIMARY KEY (field, digest, subject_id));",
               nullptr, nullptr, nullptr);
  sqlite3_stmt* ins = nullptr;
  sqlite3_stmt* idx = nullptr;
  sqlite3_prepare_v2(db, "INSERT INTO subjects VALUES (?, ?, ?)", -1, &ins, nullptr);
  sqlite3_prepare_v2(db, "INSERT INTO blind_index VALUES (?, ?, ?)", -1, &idx, nullptr);
  unsigned char kek[32], ikey[32];
  randombytes_buf(kek, 32);
  randombytes_buf(ikey, 32);
  int n = 0;
  std::vector<records::FieldMap> people;
  for (int i = 0; i < kBatch; ++i) people.push_back(person(i));
  for (auto _ : state) {
    sqlite3_exec(db, "BEGIN", nullptr, nullptr, nullptr);
    for (int i = 0; i < kBatch; ++i, ++n) {
      unsigned char id[16], dek[32], nonce[24];
      randombytes_buf(id, 16);
      randombytes_buf(dek, 32);
      randombytes_buf(nonce, 24);
      unsigned char wrapped[32 + 16];
      unsigned long long wl = 0;
      crypto_aead_xchacha20poly1305_ietf_encrypt(wrapped, &wl, dek, 32, id, 16, nullptr, nonce, kek);
      std::string blob;
      for (const auto& [name, value] : people[i]) {
        std::vector<unsigned char> ct(value.size() + 16);
        unsigned long long cl = 0;
        randombytes_buf(nonce, 24);
        crypto_aead_xchacha20poly1305_ietf_encrypt(ct.data(), &cl, reinterpret_cast<const unsigned char*>(value.data()),
                                                   value.size(), reinterpret_cast<const unsigned char*>(name.data()),
                                                   name.size(), nullptr, nonce, dek);
        blob.append(name).append(reinterpret_cast<const char*>(nonce), 24).append(reinterpret_cast<const char*>(ct.data()), cl);
      }
      sqlite3_bind_blob(ins, 1, id, 16, SQLITE_STATIC);
      sqlite3_bind_blob(ins, 2, wrapped, static_cast<int>(wl), SQLITE_STATIC);
      sqlite3_bind_blob(ins, 3, blob.data(), static_cast<int>(blob.size()), SQLITE_STATIC);
      check(sqlite3_step(ins), db);
      sqlite3_reset(ins);
      for (const char* f : {"email", "external_id"}) {
        unsigned char digest[32];
        const std::string& v = people[i].at(f);
        crypto_generichash(digest, 32, reinterpret_cast<const unsigned char*>(v.data()), v.size(), ikey, 32);
        sqlite3_bind_text(idx, 1, f, -1, SQLITE_STATIC);
        sqlite3_bind_blob(idx, 2, digest, 32, SQLITE_STATIC);
        sqlite3_bind_blob(idx, 3, id, 16, SQLITE_STATIC);
        check(sqlite3_step(idx), db);
        sqlite3_reset(idx);
      }
    }
    sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
  }
  state.SetItemsProcessed(n);
  sqlite3_finalize(ins);
  sqlite3_finalize(idx);
  sqlite3_close(db);
}
BENCHMARK(BM_RawFloor)->Unit(benchmark::kMillisecond)->MinTime(2.0);

// The tuned floor for the library's ingest (issue 16: "a tuned floor for the
// same schema"): records' own tables and indexes (records::migrations(), run
// as they are), the same rows and bytes per subject as Records::create (id,
// status, times, KEK and DEK versions, the DEK wrapped under the KEK with the
// slot bound, 6 fields sealed with the versioned header and the subject/field
// /schema AD in the field-record framing, 2 keyed BLAKE2b index rows), written
// with libsodium and SQLCipher directly: raw key, 4 KiB pages, a 64 MiB page
// cache, WAL, one prepared statement per table, transactions of 1,000, and
// batched randomness (one randombytes_buf for the batch's DEKs, one for its
// ids and nonces). No validation, normalisation or audit entry.
void BM_TunedFloorSameSchema(benchmark::State& state) {
  if (sodium_init() < 0) return;
  TempDir dir;
  sqlite3* db = nullptr;
  sqlite3_open((dir.path() / "floor.db").c_str(), &db);
  unsigned char key[32];
  randombytes_buf(key, sizeof key);
  char key_pragma[16 + 64 + 3] = "PRAGMA key = \"x'";
  sodium_bin2hex(key_pragma + 16, 65, key, 32);
  std::string pragma = std::string(key_pragma) + "'\"";
  check(sqlite3_exec(db, pragma.c_str(), nullptr, nullptr, nullptr), db);
  check(sqlite3_exec(db,
                     "PRAGMA cipher_page_size = 4096; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;"
                     " PRAGMA secure_delete = ON; PRAGMA temp_store = MEMORY; PRAGMA cache_size = -65536",
                     nullptr, nullptr, nullptr),
        db);
  for (const auto& step : records::migrations().steps)
    for (auto sql : step.statements) check(sqlite3_exec(db, std::string(sql).c_str(), nullptr, nullptr, nullptr), db);
  sqlite3_stmt* ins = nullptr;
  sqlite3_stmt* idx = nullptr;
  check(sqlite3_prepare_v2(db,
                           "INSERT INTO subjects (id, status, created_at, updated_at, kek_version, dek_version,"
                           " wrapped_dek, fields) VALUES (?, 'active', ?, ?, ?, ?, ?, ?)",
                           -1, &ins, nullptr),
        db);
  check(sqlite3_prepare_v2(db, "INSERT INTO blind_index (field, digest, subject_id) VALUES (?, ?, ?)", -1, &idx,
                           nullptr),
        db);
  unsigned char kek[32], email_key[32], ext_key[32];
  randombytes_buf(kek, 32);
  randombytes_buf(email_key, 32);
  randombytes_buf(ext_key, 32);
  constexpr std::uint32_t kSchemaVersion = 1;
  constexpr std::size_t kFields = 6;
  constexpr std::size_t kPublicPerSubject = 16 + 24 * (kFields + 1);  // id, field nonces, wrap nonce
  std::vector<records::FieldMap> people;
  for (int i = 0; i < kBatch; ++i) people.push_back(person(i));
  auto* deks = static_cast<unsigned char*>(sodium_malloc(32 * kBatch));
  std::vector<unsigned char> pub(kPublicPerSubject * kBatch);
  std::vector<unsigned char> blob, ad;
  blob.reserve(4096);
  ad.reserve(256);
  const auto put_u32 = [](unsigned char* out, std::uint32_t v) {
    out[0] = static_cast<unsigned char>(v >> 24);
    out[1] = static_cast<unsigned char>(v >> 16);
    out[2] = static_cast<unsigned char>(v >> 8);
    out[3] = static_cast<unsigned char>(v);
  };
  std::int64_t n = 0;
  for (auto _ : state) {
    randombytes_buf(deks, 32 * kBatch);
    randombytes_buf(pub.data(), pub.size());
    const std::int64_t now = std::chrono::duration_cast<std::chrono::microseconds>(
                                 std::chrono::system_clock::now().time_since_epoch())
                                 .count();
    check(sqlite3_exec(db, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), db);
    for (int i = 0; i < kBatch; ++i, ++n) {
      const unsigned char* r = pub.data() + kPublicPerSubject * static_cast<std::size_t>(i);
      const unsigned char* id = r;
      const unsigned char* dek = deks + 32 * i;
      // Field record: u16 count, then name length, name, u32 sealed length, sealed.
      blob.clear();
      blob.push_back(0);
      blob.push_back(static_cast<unsigned char>(people[i].size()));
      std::size_t k = 0;
      for (const auto& [name, value] : people[i]) {
        const unsigned char* nonce = r + 16 + 24 * k++;
        unsigned char header[9] = {1, 0, 0, 0, 1};
        put_u32(header + 5, kSchemaVersion);
        ad.assign(header, header + 9);  // header, then id || 0 || field || 0 || schema version
        ad.insert(ad.end(), id, id + 16);
        ad.push_back(0);
        ad.insert(ad.end(), name.begin(), name.end());
        ad.push_back(0);
        ad.insert(ad.end(), header + 5, header + 9);
        const std::size_t sealed_len = 9 + 24 + value.size() + 16;
        blob.push_back(static_cast<unsigned char>(name.size()));
        blob.insert(blob.end(), name.begin(), name.end());
        unsigned char len[4];
        put_u32(len, static_cast<std::uint32_t>(sealed_len));
        blob.insert(blob.end(), len, len + 4);
        blob.insert(blob.end(), header, header + 9);
        blob.insert(blob.end(), nonce, nonce + 24);
        const std::size_t at = blob.size();
        blob.resize(at + value.size() + 16);
        unsigned long long cl = 0;
        crypto_aead_xchacha20poly1305_ietf_encrypt(blob.data() + at, &cl,
                                                   reinterpret_cast<const unsigned char*>(value.data()), value.size(),
                                                   ad.data(), ad.size(), nullptr, nonce, dek);
      }
      // The DEK wrapped under the KEK, slot "dek:<hex id>" bound as AD.
      char slot[4 + 33] = "dek:";
      sodium_bin2hex(slot + 4, 33, id, 16);
      unsigned char wrap_header[9] = {1, 0, 0, 0, 1, 0, 0, 0, 0};
      ad.assign(wrap_header, wrap_header + 9);
      const char prefix[] = "custos-wrap";
      ad.insert(ad.end(), prefix, prefix + sizeof prefix);  // with its NUL
      ad.insert(ad.end(), slot, slot + 36);
      const unsigned char* wrap_nonce = r + 16 + 24 * kFields;
      unsigned char wrapped[9 + 24 + 32 + 16];
      std::memcpy(wrapped, wrap_header, 9);
      std::memcpy(wrapped + 9, wrap_nonce, 24);
      unsigned long long wl = 0;
      crypto_aead_xchacha20poly1305_ietf_encrypt(wrapped + 33, &wl, dek, 32, ad.data(), ad.size(), nullptr, wrap_nonce,
                                                 kek);
      sqlite3_bind_blob(ins, 1, id, 16, SQLITE_STATIC);
      sqlite3_bind_int64(ins, 2, now);
      sqlite3_bind_int64(ins, 3, now);
      sqlite3_bind_int64(ins, 4, 1);
      sqlite3_bind_int64(ins, 5, 1);
      sqlite3_bind_blob(ins, 6, wrapped, sizeof wrapped, SQLITE_STATIC);
      sqlite3_bind_blob(ins, 7, blob.data(), static_cast<int>(blob.size()), SQLITE_STATIC);
      check(sqlite3_step(ins), db);
      sqlite3_reset(ins);
      for (const auto& [field, ikey] : {std::pair{"email", email_key}, std::pair{"external_id", ext_key}}) {
        unsigned char digest[32];
        const std::string& v = people[i].at(field);
        crypto_generichash(digest, 32, reinterpret_cast<const unsigned char*>(v.data()), v.size(), ikey, 32);
        sqlite3_bind_text(idx, 1, field, -1, SQLITE_STATIC);
        sqlite3_bind_blob(idx, 2, digest, 32, SQLITE_STATIC);
        sqlite3_bind_blob(idx, 3, id, 16, SQLITE_STATIC);
        check(sqlite3_step(idx), db);
        sqlite3_reset(idx);
      }
    }
    check(sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr), db);
  }
  state.SetItemsProcessed(n);
  sodium_free(deks);
  sqlite3_finalize(ins);
  sqlite3_finalize(idx);
  sqlite3_close(db);
}
BENCHMARK(BM_TunedFloorSameSchema)->Unit(benchmark::kMillisecond)->MinTime(2.0);

void BM_RecordsBatchIngest(benchmark::State& state) {
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
BENCHMARK(BM_RecordsBatchIngest)->Unit(benchmark::kMillisecond)->MinTime(2.0);

// The same batches through identity resolution (on_conflict reject, the
// default of POST /v1/subjects:batchCreate): every item's email and external
// id are probed in the blind index before it is created. No item conflicts,
// so the difference to BM_RecordsBatchIngest is the cost of the probes.
void BM_RecordsBatchIngestRejectingDuplicates(benchmark::State& state) {
  Core core;
  std::vector<records::FieldMap> people;
  int n = 0;
  for (auto _ : state) {
    state.PauseTiming();
    people.clear();
    for (int i = 0; i < kBatch; ++i) people.push_back(person(n + i));
    state.ResumeTiming();
    core.records->create_resolved(core.actor, people, records::OnConflict::reject);
    n += kBatch;
  }
  state.SetItemsProcessed(n);
}
BENCHMARK(BM_RecordsBatchIngestRejectingDuplicates)->Unit(benchmark::kMillisecond)->MinTime(2.0);

struct Populated {
  Core core;
  std::vector<records::SubjectId> ids;
  explicit Populated(int count) : ids(populate(core, count)) {}
};

void BM_LookupByEmailAndRead(benchmark::State& state) {
  Populated p(20000);
  records::ReadSpec spec{{"given_name", "email"}, {}, "subject.read"};
  int i = 0;
  for (auto _ : state) {
    const auto ids = p.core.records->find("email", "user" + std::to_string(i++ % 20000) + ".benchmark.address@example-mail.com");
    benchmark::DoNotOptimize(p.core.records->read(p.core.actor, ids.at(0), spec));
  }
  state.SetItemsProcessed(i);
}
BENCHMARK(BM_LookupByEmailAndRead)->Unit(benchmark::kMicrosecond);

void BM_LookupByEmailOnly(benchmark::State& state) {
  Populated p(20000);
  int i = 0;
  for (auto _ : state)
    benchmark::DoNotOptimize(p.core.records->find("email", "user" + std::to_string(i++ % 20000) + ".benchmark.address@example-mail.com"));
  state.SetItemsProcessed(i);
}
BENCHMARK(BM_LookupByEmailOnly)->Unit(benchmark::kMicrosecond);

void BM_FullScanDecryptAll(benchmark::State& state) {
  Populated p(20000);
  records::ReadSpec spec;
  for (const auto& f : p.core.schema.fields()) spec.fields.push_back(f.name);
  std::int64_t rows = 0;
  for (auto _ : state) p.core.records->scan(p.core.actor, spec, [&](const records::Subject&) { ++rows; });
  state.SetItemsProcessed(rows);
}
BENCHMARK(BM_FullScanDecryptAll)->Unit(benchmark::kMillisecond);

void BM_EraseSubjectWithTouchpoints(benchmark::State& state) {
  Core core;
  const int touchpoints = static_cast<int>(state.range(0));
  for (auto _ : state) {
    state.PauseTiming();
    const auto id = core.records->create(core.actor, {person(1)})[0];
    {
      // Bulk-load touchpoints directly: this benchmark measures erasure.
      auto tx = core.store->begin(store::TxMode::write);
      for (int t = 0; t < touchpoints; ++t) {
        std::array<std::uint8_t, 16> tp{};
        randombytes_buf(tp.data(), tp.size());
        const std::vector<std::uint8_t> notes(80, 0xab);
        tx->exec("INSERT INTO touchpoints (id, subject_id, channel, type, at, notes) VALUES (?, ?, 'email', 'x', ?, ?)",
                 {tp, id, std::int64_t{t}, notes});
      }
      tx->commit();
      core.store->checkpoint();
    }
    state.ResumeTiming();
    core.records->erase(core.actor, id);
  }
}
BENCHMARK(BM_EraseSubjectWithTouchpoints)->Arg(10)->Arg(10000)->Unit(benchmark::kMillisecond)->Iterations(20);

void BM_KeyRotation100k(benchmark::State& state) {
  Populated p(100000);
  for (auto _ : state) {
    const auto report = store::rotate_keys(*p.core.store, *p.core.keyring, p.core.vault.data_dir() / "keys",
                                           {records::subject_data_keys()}, nullptr);
    state.counters["data_keys"] = static_cast<double>(report.data_keys);
  }
}
BENCHMARK(BM_KeyRotation100k)->Unit(benchmark::kMillisecond)->Iterations(1);

// Audit overhead on a point read: the same read (row, DEK unwrap, 2 fields
// decrypted) with and without its audit entry, from 2 threads (the entry
// commits by group commit, as under HTTP load).
Populated& shared_population() {
  static Populated* p = new Populated(20000);
  return *p;
}

// Journal options that hold the fold back for a whole run (an interval
// longer than it, room for 800,000 entries), so the read path is timed alone.
audit::JournalOptions fold_held_back() {
  audit::JournalOptions o;
  o.segment_bytes = std::size_t{64} << 20;
  o.max_segments = 4;
  o.fold_interval_ms = 3600 * 1000;
  return o;
}

// A population whose reads go through the audit journal, as in custosd.
Populated& journaled_population(bool fold_deferred) {
  static Populated* with_fold = nullptr;
  static Populated* deferred = nullptr;
  Populated*& p = fold_deferred ? deferred : with_fold;
  if (!p) {
    p = new Populated(20000);
    p->core.enable_journal(fold_deferred ? fold_held_back() : audit::JournalOptions{});
  }
  return *p;
}

void BM_PointReadWithoutAudit(benchmark::State& state) {
  auto& p = shared_population();
  std::mt19937 rng(static_cast<unsigned>(state.thread_index()));
  for (auto _ : state) {
    const auto& id = p.ids[rng() % p.ids.size()];
    auto tx = p.core.store->begin(store::TxMode::read);
    tx->exec("SELECT wrapped_dek, fields FROM subjects WHERE id = ?", {id}, [&](const store::Row& r) {
      const crypto::SecretKey dek = p.core.keyring->unwrap(store::dek_slot(id), r.blob(0));
      const auto sealed = records::decode_fields(r.blob(1));
      for (const char* f : {"given_name", "email"}) {
        const auto& ct = sealed.at(f);
        benchmark::DoNotOptimize(crypto::open(dek, crypto::field_ad(id, f, crypto::peek_header(ct).schema_version), ct, f));
      }
    });
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_PointReadWithoutAudit)->Threads(1)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_PointReadWithoutAudit)->Threads(2)->UseRealTime()->Unit(benchmark::kMicrosecond);

// Reads random subjects through the library, each read audited, for the whole run.
void read_randomly(benchmark::State& state, Populated& p) {
  std::mt19937 rng(static_cast<unsigned>(state.thread_index()));
  const records::ReadSpec spec{{"given_name", "email"}, {}, "subject.read"};
  for (auto _ : state) benchmark::DoNotOptimize(p.core.records->read(p.core.actor, p.ids[rng() % p.ids.size()], spec));
  state.SetItemsProcessed(state.iterations());
}

// Folds what the journal still owes; returns how long it took (µs).
double timed_flush_of(audit::AuditLog& log) {
  const auto t0 = std::chrono::steady_clock::now();
  log.flush();
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
}
double timed_flush(Populated& p) { return timed_flush_of(*p.core.audit); }

void BM_PointReadWithAudit(benchmark::State& state) { read_randomly(state, shared_population()); }
BENCHMARK(BM_PointReadWithAudit)->Threads(2)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_PointReadWithAudit)->Threads(8)->UseRealTime()->Unit(benchmark::kMicrosecond);

// The same read with its entry sealed into the audit journal (custosd's
// mode); the fold into the Merkle tables runs on a background thread and
// its cost is inside these figures whenever it shares the cores.
void BM_PointReadJournaled(benchmark::State& state) {
  auto& p = journaled_population(false);
  read_randomly(state, p);
  if (state.thread_index() == 0) state.counters["flush_ms"] = timed_flush(p) / 1000;
}
BENCHMARK(BM_PointReadJournaled)->Threads(1)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_PointReadJournaled)->Threads(2)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_PointReadJournaled)->Threads(8)->UseRealTime()->Unit(benchmark::kMicrosecond);

// What a caller waits for, apart from the fold's background work:
// fold_us_per_entry is that work, measured after the reads.
void BM_PointReadJournaledFoldDeferred(benchmark::State& state) {
  auto& p = journaled_population(true);
  read_randomly(state, p);
  if (state.thread_index() == 0)
    state.counters["fold_us_per_entry"] = timed_flush(p) / static_cast<double>(state.iterations() * state.threads());
}
BENCHMARK(BM_PointReadJournaledFoldDeferred)->Threads(1)->Iterations(200000)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_PointReadJournaledFoldDeferred)->Threads(2)->Iterations(100000)->UseRealTime()->Unit(benchmark::kMicrosecond);

// One read's entry into the journal, the fold held back (the read path's share).
void BM_AuditAppendJournaled(benchmark::State& state) {
  static Core* core = nullptr;
  if (state.thread_index() == 0) {
    core = new Core();
    core->enable_journal(fold_held_back());
  }
  const audit::Event e{"subject.read", "00112233445566778899aabbccddeeff", {"given_name", "email"}, {}, true, "", ""};
  for (auto _ : state) core->audit->append_durable(core->actor, {e});
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_AuditAppendJournaled)->Iterations(200000)->UseRealTime()->Unit(benchmark::kMicrosecond);

// Folding journaled entries into the tree: entries/s of the background work
// (appends included). Reads name random subjects of 20,000, as in
// BM_PointReadJournaled, so the subject index takes scattered inserts.
void BM_AuditJournalFold(benchmark::State& state) {
  Core core;
  core.enable_journal();
  std::vector<audit::Event> events;
  std::mt19937 rng(7);
  char hex[33];
  for (int i = 0; i < 20000; ++i) {
    std::snprintf(hex, sizeof hex, "%08x%08x%08x%08x", rng(), rng(), rng(), rng());
    events.push_back({"subject.read", hex, {"given_name", "email"}, {}, true, "", ""});
  }
  std::int64_t n = 0;
  for (auto _ : state) {
    for (int i = 0; i < 10000; ++i) core.audit->append_durable(core.actor, {events[rng() % events.size()]});
    core.audit->flush();
    n += 10000;
  }
  state.SetItemsProcessed(n);
}
BENCHMARK(BM_AuditJournalFold)->UseRealTime()->Unit(benchmark::kMillisecond);

double thread_cpu_us() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e6 + static_cast<double>(ts.tv_nsec) / 1e3;
}

// A SQLCipher store's size on disk: its file and its WAL.
double store_bytes(const std::filesystem::path& db) {
  std::uintmax_t bytes = 0;
  for (const auto& file : {db, std::filesystem::path(db.string() + "-wal")}) {
    std::error_code ec;
    const auto n = std::filesystem::file_size(file, ec);
    if (!ec) bytes += n;
  }
  return static_cast<double>(bytes);
}

// What each fold batch cost, as the log grows: wall and CPU time (of this
// thread, which folds in flush()) over the first and the last 100,000
// entries, and CPU over all of them.
struct GrowthCost {
  static constexpr int kBatch = 50000;
  int batches;
  double first_us = 0, last_us = 0, first_cpu = 0, last_cpu = 0, all_cpu = 0;
  void add(int b, double us, double cpu) {
    all_cpu += cpu;
    if (b < 2) first_us += us, first_cpu += cpu;
    if (b >= batches - 2) last_us += us, last_cpu += cpu;
  }
  void report(benchmark::State& state, const std::string& prefix) const {
    state.counters[prefix + "_us_first_100k"] = first_us / (2 * kBatch);
    state.counters[prefix + "_us_last_100k"] = last_us / (2 * kBatch);
    state.counters[prefix + "_cpu_us_first_100k"] = first_cpu / (2 * kBatch);
    state.counters[prefix + "_cpu_us_last_100k"] = last_cpu / (2 * kBatch);
    state.counters[prefix + "_cpu_us_mean"] = all_cpu / (static_cast<double>(batches) * kBatch);
  }
};

// Whether the fold slows as the log grows: range(0) reads of distinct
// subjects (1 M or 10 M), each with a request id of its own (as custosd's
// are), folded 50,000 at a time (issue 16: <= 4 µs CPU per entry). Compare
// with BM_AuditFoldFloor/range(0) of the same run. store_bytes_per_entry:
// the store's file and WAL after the last fold, per entry.
void BM_AuditJournalFoldAsTheLogGrows(benchmark::State& state) {
  Core core;
  core.enable_journal(fold_held_back());
  std::mt19937 rng(7);
  char hex[33];
  audit::Actor actor = core.actor;
  for (auto _ : state) {
    GrowthCost cost{static_cast<int>(state.range(0) / GrowthCost::kBatch)};
    for (int b = 0; b < cost.batches; ++b) {
      for (int i = 0; i < GrowthCost::kBatch; ++i) {
        std::snprintf(hex, sizeof hex, "%08x%08x%08x%08x", rng(), rng(), rng(), rng());
        actor.request_id = hex;
        std::snprintf(hex, sizeof hex, "%08x%08x%08x%08x", rng(), rng(), rng(), rng());
        core.audit->append_durable(actor, {{"subject.read", hex, {"given_name", "email"}, {}, true, "", ""}});
      }
      const double cpu0 = thread_cpu_us();
      const double us = timed_flush_of(*core.audit);
      cost.add(b, us, thread_cpu_us() - cpu0);
    }
    cost.report(state, "fold");
  }
  state.counters["store_bytes_per_entry"] = store_bytes(core.vault.data_dir() / "custos.db") / static_cast<double>(state.range(0));
}
BENCHMARK(BM_AuditJournalFoldAsTheLogGrows)->Arg(1000000)->Iterations(1)->Unit(benchmark::kSecond);
BENCHMARK(BM_AuditJournalFoldAsTheLogGrows)->Arg(10000000)->Iterations(1)->Unit(benchmark::kSecond);

// A subject's entries out of a log of range(0) entries, as a DSR access
// package asks for them: every 2,000th entry names the subject, every other
// one a subject of its own (folded 50,000 at a time, as above). A page of
// 100 and the whole history (limit 10,000) are timed: the subject index
// costs a seek per run of 1,024 blocks, a read of the open run's block rows
// (~1.5 KB each) and of the open block.
void BM_AuditSubjectQuery(benchmark::State& state) {
  Core core;
  core.enable_journal(fold_held_back());
  const std::string hot(32, 'e');
  std::mt19937 rng(11);
  char hex[33];
  const auto entries = static_cast<std::int64_t>(state.range(0));
  for (std::int64_t i = 0; i < entries; ++i) {
    std::snprintf(hex, sizeof hex, "%08x%08x%08x%08x", rng(), rng(), rng(), rng());
    core.audit->append_durable(core.actor, {{"subject.read", i % 2000 == 7 ? hot : std::string(hex), {"email"}, {}, true, "", ""}});
    if (i % 50000 == 49999) core.audit->flush();
  }
  core.audit->flush();
  audit::Query page;
  page.subject_id = hot;
  page.limit = static_cast<std::size_t>(state.range(1));
  std::size_t found = 0;
  for (auto _ : state) found = core.audit->query(page).size();
  state.counters["entries_found"] = static_cast<double>(found);
}
BENCHMARK(BM_AuditSubjectQuery)->Args({1000000, 100})->Args({1000000, 10000})->Unit(benchmark::kMillisecond);

// The fold's floor: what no durable, tamper-evident store of an entry can
// skip. Per entry its leaf hash and one row holding its canonical bytes (the
// same entries BM_AuditJournalFoldAsTheLogGrows folds) and leaf, through the
// same store (SQLCipher, the same pragmas), in transactions of 50,000 with
// one fsync each; no indexes, no tree nodes, no journal.
void BM_AuditFoldFloor(benchmark::State& state) {
  TempDir dir;
  auto store = store::open_sqlcipher(dir.path() / "floor.db", crypto::SecretKey::random());
  {
    auto tx = store->begin(store::TxMode::write);
    tx->exec("CREATE TABLE floor_entries (seq INTEGER PRIMARY KEY, entry BLOB NOT NULL, leaf BLOB NOT NULL)");
    tx->commit();
  }
  std::mt19937 rng(7);
  char hex[33];
  const audit::Actor actor{"bench", "admin", "", "administration", "bench"};
  std::int64_t seq = 0;
  std::vector<std::vector<std::uint8_t>> batch(GrowthCost::kBatch);
  for (auto _ : state) {
    GrowthCost cost{static_cast<int>(state.range(0) / GrowthCost::kBatch)};
    for (int b = 0; b < cost.batches; ++b) {
      for (auto& bytes : batch) {  // encoded outside the timed part, as the fold's entries are
        auditfmt::Entry e;
        std::snprintf(hex, sizeof hex, "%08x%08x%08x%08x", rng(), rng(), rng(), rng());
        e.request_id = hex;
        std::snprintf(hex, sizeof hex, "%08x%08x%08x%08x", rng(), rng(), rng(), rng());
        e.seq = static_cast<std::uint64_t>(seq);
        e.time = audit::format_time_us(1700000000LL * 1000000 + seq);
        e.principal = actor.principal, e.role = actor.role, e.purpose = actor.purpose;
        e.operation = "subject.read", e.subject_id = hex, e.fields = {"given_name", "email"};
        e.outcome = "allowed", e.node_id = "node-1";
        bytes = auditfmt::encode(e);
      }
      const auto t0 = std::chrono::steady_clock::now();
      const double cpu0 = thread_cpu_us();
      auto tx = store->begin_durable();
      for (const auto& bytes : batch) {
        const auditfmt::Hash leaf = auditfmt::leaf_hash(bytes);
        tx->exec("INSERT INTO floor_entries (seq, entry, leaf) VALUES (?, ?, ?)", {seq++, bytes, leaf});
      }
      tx->commit();
      cost.add(b, std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count(),
               thread_cpu_us() - cpu0);
    }
    cost.report(state, "floor");
  }
  state.counters["store_bytes_per_entry"] = store_bytes(dir.path() / "floor.db") / static_cast<double>(state.range(0));
}
BENCHMARK(BM_AuditFoldFloor)->Arg(1000000)->Iterations(1)->Unit(benchmark::kSecond);
BENCHMARK(BM_AuditFoldFloor)->Arg(10000000)->Iterations(1)->Unit(benchmark::kSecond);

void BM_AuditAppend(benchmark::State& state) {
  static Core* core = nullptr;
  if (state.thread_index() == 0) core = new Core();
  const audit::Event e{"subject.read", "00112233445566778899aabbccddeeff", {"email"}, {}, true, "", ""};
  for (auto _ : state) core->audit->append_durable(core->actor, {e});
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_AuditAppend)->Threads(1)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_AuditAppend)->Threads(2)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_AuditAppend)->Threads(8)->UseRealTime()->Unit(benchmark::kMicrosecond);

// Proof generation at 1,000,000 entries (appended 10,000 per transaction).
void BM_ProofsAt1M(benchmark::State& state) {
  Core core;
  const audit::Event e{"subject.read", "00112233445566778899aabbccddeeff", {"email"}, {}, true, "", ""};
  for (int t = 0; t < 100; ++t) {
    auto tx = core.store->begin(store::TxMode::write);
    for (int i = 0; i < 10000; ++i) core.audit->append(*tx, core.actor, e);
    tx->commit();
  }
  const std::uint64_t n = core.audit->size();
  std::mt19937_64 rng(1);
  for (auto _ : state) {
    benchmark::DoNotOptimize(core.audit->inclusion_proof(rng() % n, n));
    benchmark::DoNotOptimize(core.audit->consistency_proof(1 + rng() % (n - 1), n));
  }
  state.counters["entries"] = static_cast<double>(n);
}
BENCHMARK(BM_ProofsAt1M)->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
