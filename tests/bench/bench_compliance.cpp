// Compliance benchmarks: the consented campaign fetch against its floor,
// RFM over 1 M orders, a data-subject access export, erasure, the overdue
// listing, breach affected-subject computation and the retention purge.
//
// Run: ./build/tests/bench_compliance
// Populations are built directly through the records layer (not measured),
// then the service façade is opened on the same data directory and measured,
// as custosd would call it. CUSTOS_BENCH_AUDIT_ENTRIES sets the audit-log size
// for BM_ComputeAffected (default 10,000,000; the window holds a tenth).
#include <benchmark/benchmark.h>
#include <sodium.h>

#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "../../src/records/field_blob.h"
#include "bench_support.h"

namespace {

using namespace custos;
using namespace custos::bench;
using service::Json;

constexpr std::int64_t kDayUs = 86400LL * 1000000;

std::int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// ----------------------------------------------------------- campaign fetch

// `population` subjects, every tenth with an active email_marketing grant.
struct CampaignWorld {
  Core core;
  std::vector<records::SubjectId> ids;
  std::unique_ptr<service::Service> svc;
  std::unique_ptr<crypto::Keyring> keyring;  // for the floor's own connection
  std::unique_ptr<store::Store> floor_store;

  explicit CampaignWorld(int population) {
    ids = populate(core, population);
    {
      auto tx = core.store->begin(store::TxMode::write);
      for (std::size_t i = 0; i < ids.size(); i += 10)
        tx->exec("INSERT INTO consent_state (subject_id, purpose, channel, state, since, expires_at, event_id)"
                 " VALUES (?, 'email_marketing', 'email', 'granted', 0, NULL, 0)",
                 {ids[i]});
      tx->commit();
    }
    const auto dir = core.vault.data_dir();
    svc = reopen_as_service(core);
    keyring = crypto::Keyring::open(dir / "keys", std::nullopt);
    floor_store = store::open_sqlcipher(dir / "custos.db", store::read_db_key(*keyring, dir / "keys"));
  }
};

CampaignWorld& campaign_world(int population) {
  static std::map<int, std::unique_ptr<CampaignWorld>> worlds;
  auto& w = worlds[population];
  if (!w) {
    worlds.clear();  // one population in memory at a time
    worlds[population] = std::make_unique<CampaignWorld>(population);
  }
  return *worlds[population];
}

void BM_CampaignFetch(benchmark::State& state) {
  auto& w = campaign_world(static_cast<int>(state.range(0)));
  const service::Caller marketing{{"bench-marketing", "marketing", ""}, "email_marketing", "bench"};
  const Json body = {{"purpose", "email_marketing"}, {"channel", "email"}, {"fields", {"email", "given_name"}}};
  std::int64_t subjects = 0, bytes = 0;
  const double rss_before = rss_mib();
  reset_peak_rss();
  for (auto _ : state) {
    const Json summary = w.svc->campaign_fetch(marketing, body, [&](const std::string& line) {
      bytes += static_cast<std::int64_t>(line.size());
      return true;
    });
    subjects += summary["count"].get<std::int64_t>();
  }
  state.SetItemsProcessed(subjects);
  state.counters["subjects_per_fetch"] = static_cast<double>(subjects) / static_cast<double>(state.iterations());
  state.counters["rss_growth_MiB"] = peak_rss_mib() - rss_before;
}

// The floor: one SQL scan of the same consented subjects, decrypting the same
// two fields with libsodium, no policy, masking, JSON or audit.
void BM_CampaignFloor(benchmark::State& state) {
  auto& w = campaign_world(static_cast<int>(state.range(0)));
  std::int64_t subjects = 0;
  const double rss_before = rss_mib();
  reset_peak_rss();
  for (auto _ : state) {
    auto tx = w.floor_store->begin(store::TxMode::read);
    tx->exec("SELECT s.id, s.wrapped_dek, s.fields FROM consent_state c JOIN subjects s ON s.id = c.subject_id"
             " WHERE c.purpose = 'email_marketing' AND c.channel = 'email' AND c.state = 'granted'",
             {}, [&](const store::Row& r) {
               const auto idb = r.blob(0);
               records::SubjectId id{};
               std::copy(idb.begin(), idb.end(), id.begin());
               const crypto::SecretKey dek = w.keyring->unwrap(store::dek_slot(id), r.blob(1));
               // The two fields as views into the row (as the library opens them), not a copy of all six.
               records::visit_fields(r.blob(2), [&](std::string_view f, std::span<const std::uint8_t> ct) {
                 if (f != "email" && f != "given_name") return;
                 benchmark::DoNotOptimize(
                     crypto::open(dek, crypto::field_ad(id, f, crypto::peek_header(ct).schema_version), ct, f));
               });
               ++subjects;
             });
  }
  state.SetItemsProcessed(subjects);
  state.counters["rss_growth_MiB"] = peak_rss_mib() - rss_before;
}
// Registered population by population, the floor right after its fetch:
// Google Benchmark runs in registration order and campaign_world() keeps one
// population at a time, so fetch-then-floor per size builds each population
// once (families of two Args each built the 1 M population twice: > 500 s).
BENCHMARK(BM_CampaignFetch)->Arg(100000)->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK(BM_CampaignFloor)->Arg(100000)->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK(BM_CampaignFetch)->Arg(1000000)->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK(BM_CampaignFloor)->Arg(1000000)->Unit(benchmark::kMillisecond)->Iterations(3);

// Retention over the 1 M population, a tenth of it inactive for ten years.
// Dry run first (nothing changes), then the real purge (once).
void BM_RetentionRun1M(benchmark::State& state) {
  auto& w = campaign_world(1000000);
  const bool dry = state.range(0) == 1;
  {
    auto tx = w.floor_store->begin(store::TxMode::write);
    tx->exec("UPDATE subjects SET updated_at = ?, created_at = ? WHERE rowid % 10 = 3",
             {now_us() - 3650 * kDayUs, now_us() - 3650 * kDayUs});
    tx->commit();
  }
  const service::Caller admin{{"bench-admin", "admin", ""}, "administration", "bench"};
  std::size_t purged = 0;
  for (auto _ : state) purged = w.svc->retention_run(admin, dry)["purged"].size();
  state.counters["purged"] = static_cast<double>(purged);
}
BENCHMARK(BM_RetentionRun1M)->Arg(1)->Arg(0)->ArgName("dry_run")->Unit(benchmark::kMillisecond)->Iterations(1);

// ----------------------------------------------------------- RFM

void BM_Rfm1MOrders(benchmark::State& state) {
  Core core;
  std::vector<records::SubjectId> ids;
  for (int base = 0; base < 100000; base += kBatch) {
    std::vector<records::FieldMap> people;
    for (int i = base; i < base + kBatch; ++i) people.push_back(person(i));
    const auto got = core.records->create(core.actor, people);
    ids.insert(ids.end(), got.begin(), got.end());
  }
  {
    std::mt19937_64 rng(7);
    auto tx = core.store->begin(store::TxMode::write);
    for (int i = 0; i < 1000000; ++i) {
      std::array<std::uint8_t, 16> oid{};
      randombytes_buf(oid.data(), oid.size());
      tx->exec("INSERT INTO orders (id, subject_id, amount_minor, currency, at) VALUES (?, ?, ?, 'EUR', ?)",
               {oid, ids[rng() % ids.size()], static_cast<std::int64_t>(500 + rng() % 50000),
                now_us() - static_cast<std::int64_t>(rng() % 700) * kDayUs});
    }
    tx->commit();
  }
  auto svc = reopen_as_service(core);
  const service::Caller analyst{{"bench-analyst", "analyst", ""}, "analytics", "bench"};
  const double rss_before = rss_mib();
  reset_peak_rss();
  for (auto _ : state) benchmark::DoNotOptimize(svc->analytics_rfm(analyst));
  state.counters["orders"] = 1e6;
  state.counters["rss_growth_MiB"] = peak_rss_mib() - rss_before;
}
BENCHMARK(BM_Rfm1MOrders)->Unit(benchmark::kMillisecond)->Iterations(3);

// ----------------------------------------------------------- DSR

// One subject with 10,000 touchpoints (notes sealed), an access request
// verified, then the export measured.
void BM_DsrAccessExport10kTouchpoints(benchmark::State& state) {
  Core core;
  const auto id = core.records->create(core.actor, {person(1)})[0];
  for (int t = 0; t < 10000; ++t) {
    records::Touchpoint tp;
    tp.channel = "email";
    tp.type = "newsletter_open";
    tp.at_us = now_us() - t * 60LL * 1000000;
    tp.notes = "Opened the spring newsletter, clicked offer " + std::to_string(t);
    core.records->add_touchpoint(core.actor, id, tp);
  }
  auto svc = reopen_as_service(core);
  const service::Caller officer{{"bench-dpo", "compliance_officer", ""}, "dsr_fulfilment", "bench"};
  const std::string email = person(1).at("email");
  const std::string req =
      svc->dsr_create(officer, {{"type", "access"}, {"regime", "gdpr"}, {"identifier", {{"email", email}}}})["id"];
  svc->dsr_transition(officer, req, {{"to", "identity_verified"}});
  std::size_t bytes = 0;
  const bool streamed = state.range(0) == 1;
  const double rss_before = rss_mib();
  reset_peak_rss();
  for (auto _ : state) {
    if (streamed) {
      // As custosd sends it: chunk by chunk to a socket (here a byte count).
      bytes = 0;
      svc->dsr_export(officer, req, {}, [&](std::string_view chunk) {
        bytes += chunk.size();
        benchmark::DoNotOptimize(chunk.data());
        return true;
      });
    } else {
      // The whole package as one JSON document (what every export was before streaming).
      bytes = svc->dsr_export(officer, req).dump().size();
    }
  }
  state.counters["export_MiB"] = static_cast<double>(bytes) / (1024.0 * 1024.0);
  state.counters["rss_growth_MiB"] = peak_rss_mib() - rss_before;
}
// Arg 1: streamed (the product's path); arg 0: the whole document, the "before".
BENCHMARK(BM_DsrAccessExport10kTouchpoints)->Arg(1)->Arg(0)->Unit(benchmark::kMillisecond)->Iterations(3);

// Erasure through the façade of subjects with 10 and with 10,000 touchpoints.
void BM_DsrEraseSubject(benchmark::State& state) {
  Core core;
  const int touchpoints = static_cast<int>(state.range(0));
  constexpr int kSubjects = 5;
  std::vector<records::SubjectId> ids;
  for (int s = 0; s < kSubjects; ++s) {
    const auto id = core.records->create(core.actor, {person(s)})[0];
    ids.push_back(id);
    records::Touchpoint tp;
    tp.channel = "email";
    tp.type = "x";
    tp.notes = "sealed note";
    for (int t = 0; t < touchpoints; ++t) {
      tp.at_us = now_us() - t;
      core.records->add_touchpoint(core.actor, id, tp);
    }
  }
  auto svc = reopen_as_service(core);
  const service::Caller admin{{"bench-admin", "admin", ""}, "administration", "bench"};
  std::size_t next = 0;
  for (auto _ : state) svc->erase_subject(admin, records::to_hex(ids.at(next++)), "bench");
}
BENCHMARK(BM_DsrEraseSubject)->Arg(10)->Arg(10000)->Unit(benchmark::kMillisecond)->Iterations(5);

// The overdue report among 100,000 requests (5 % overdue).
void BM_DsrOverdueAmong100k(benchmark::State& state) {
  Core core;
  const std::int64_t now = now_us();
  {
    auto tx = core.store->begin(store::TxMode::write);
    for (int i = 0; i < 100000; ++i) {
      const bool closed = i % 3 == 0;
      const bool overdue = i % 20 == 1;
      const std::int64_t due = overdue ? now - (1 + i % 30) * kDayUs : now + (1 + i % 60) * kDayUs;
      tx->exec("INSERT INTO dsr_requests (id, type, regime, status, subject_id, identified_by, channel, received_at,"
               " due_at, confirm_by, extensions, duplicate_of, denial_reason, changes, report, created_by, updated_at)"
               " VALUES (?, 'access', 'gdpr', ?, NULL, 'email', 'api', ?, ?, NULL, 0, NULL, '', NULL, '', 'bench', ?)",
               {"dsr_bench_" + std::to_string(i), std::string(closed && !overdue ? "completed" : "in_progress"),
                due - 30 * kDayUs, due, now});
    }
    tx->commit();
  }
  auto svc = reopen_as_service(core);
  const service::Caller officer{{"bench-dpo", "compliance_officer", ""}, "dsr_fulfilment", "bench"};
  std::int64_t listed = 0;
  for (auto _ : state) listed = svc->dsr_list(officer, {{"overdue", "true"}, {"limit", "1000"}})["count"].get<std::int64_t>();
  state.counters["listed"] = static_cast<double>(listed);
}
BENCHMARK(BM_DsrOverdueAmong100k)->Unit(benchmark::kMicrosecond);

// ----------------------------------------------------------- breaches

// An audit log of N entries, one per millisecond, by 20 principals reading
// 200,000 subjects; one principal ("crm-sales") is compromised; the window
// covers the middle tenth of the log.
void BM_ComputeAffected(benchmark::State& state) {
  const char* env = std::getenv("CUSTOS_BENCH_AUDIT_ENTRIES");
  const std::int64_t n = env ? std::atoll(env) : 10000000;
  const std::int64_t t0 = now_us() - n * 1000 - kDayUs;
  std::int64_t tick = 0;
  audit::Options options;
  options.now_us = [&] { return t0 + tick * 1000; };
  Core core(options);
  {
    auto tx = core.store->begin(store::TxMode::write);
    tx->exec("INSERT INTO tokens (name, token_id, role, hash, created_at) VALUES ('crm-sales', 'tok_bench', 'sales', ?, 0)",
             {std::vector<std::uint8_t>(32, 0)});
    tx->commit();
  }
  std::vector<audit::Actor> actors;
  for (int p = 0; p < 20; ++p)
    actors.push_back({p == 0 ? "crm-sales" : "crm-" + std::to_string(p), "sales", "", "sales", "bench"});
  std::mt19937_64 rng(3);
  for (std::int64_t done = 0; done < n;) {
    auto tx = core.store->begin(store::TxMode::write);
    for (int i = 0; i < 20000 && done < n; ++i, ++done, ++tick) {
      char hex[33];
      const std::uint64_t subject = rng() % 200000;
      std::snprintf(hex, sizeof hex, "%032llx", static_cast<unsigned long long>(subject));
      core.audit->append(*tx, actors[rng() % actors.size()], {"subject.read", hex, {"email", "given_name"}, {}, true, "", ""});
    }
    tx->commit();
  }
  auto svc = reopen_as_service(core);
  const service::Caller officer{{"bench-dpo", "compliance_officer", ""}, "breach_notification", "bench"};
  const std::string breach =
      svc->breach_create(officer, {{"description", "sales token leaked"}, {"categories", {"contact"}}})["id"];
  const Json window = {{"principals", {"crm-sales"}},
                       {"from", audit::format_time_us(t0 + (n * 45 / 100) * 1000)},
                       {"to", audit::format_time_us(t0 + (n * 55 / 100) * 1000)}};
  std::int64_t affected = 0, scanned = 0;
  const double rss_before = rss_mib();
  reset_peak_rss();
  for (auto _ : state) {
    const Json r = svc->breach_compute_affected(officer, breach, window);
    affected = r["count"].get<std::int64_t>();
    scanned = r["audit_range"]["entries_scanned"].get<std::int64_t>();
  }
  state.counters["log_entries"] = static_cast<double>(n);
  state.counters["window_entries"] = static_cast<double>(scanned);
  state.counters["affected"] = static_cast<double>(affected);
  state.counters["rss_growth_MiB"] = peak_rss_mib() - rss_before;
}
BENCHMARK(BM_ComputeAffected)->Unit(benchmark::kMillisecond)->Iterations(1);

}  // namespace

BENCHMARK_MAIN();
