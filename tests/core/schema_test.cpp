// The schema is contributed module by module (store/migrations.h). These
// tests hold the runner to its promises: a data directory written by the
// global runner (schema versions 1..9, before per-module versions) opens
// unchanged and loses nothing; a schema newer than the binary is refused,
// naming both versions; steps run once, in order.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "custos/crypto/keyring.h"
#include "custos/error.h"
#include "custos/records/records.h"
#include "custos/service/schema.h"
#include "custos/store/migrations.h"
#include "custos/store/key_table.h"
#include "custos/store/sqlcipher_store.h"
#include "test_support.h"

namespace custos {
namespace {

using service::Json;
using testing::TempDir;
using testing::TestVault;

struct LegacyStep {
  int version;
  std::vector<std::string_view> statements;
};

// src/store/migrations.cpp as the last release with one global schema
// version shipped it (commit 4b845b0), frozen: the layout every existing
// data directory has. Do not edit.
const std::vector<LegacyStep>& legacy_global_migrations() {
  static const std::vector<LegacyStep> all = {
      {1,
       {
           "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
           // Keys wrapped by a KEK version: blind-index keys, the audit signing seed.
           "CREATE TABLE wrapped_keys (slot TEXT PRIMARY KEY, kek_version INTEGER NOT NULL, wrapped BLOB NOT NULL)",
           // One row per data subject. `fields` holds each personal field sealed
           // separately under the subject's DEK (see records/field_blob.h).
           "CREATE TABLE subjects (id BLOB PRIMARY KEY, status TEXT NOT NULL, created_at INTEGER NOT NULL,"
           " updated_at INTEGER NOT NULL, kek_version INTEGER, dek_version INTEGER, wrapped_dek BLOB,"
           " fields BLOB, legal_hold INTEGER NOT NULL DEFAULT 0, restricted INTEGER NOT NULL DEFAULT 0)",
           "CREATE INDEX subjects_by_kek ON subjects (kek_version)",
           "CREATE TABLE blind_index (field TEXT NOT NULL, digest BLOB NOT NULL, subject_id BLOB NOT NULL,"
           " PRIMARY KEY (field, digest, subject_id))",
           "CREATE INDEX blind_index_by_subject ON blind_index (subject_id)",
           "CREATE TABLE touchpoints (id BLOB PRIMARY KEY, subject_id BLOB NOT NULL, channel TEXT NOT NULL,"
           " type TEXT NOT NULL, at INTEGER NOT NULL, notes BLOB)",
           "CREATE INDEX touchpoints_by_subject ON touchpoints (subject_id, at)",
           "CREATE TABLE orders (id BLOB PRIMARY KEY, subject_id BLOB NOT NULL, amount_minor INTEGER NOT NULL,"
           " currency TEXT NOT NULL, at INTEGER NOT NULL)",
           "CREATE INDEX orders_by_subject ON orders (subject_id, at)",
           // The audit log: canonical entries (leaves), stored perfect-subtree
           // hashes (level >= 1), and every signed checkpoint.
           "CREATE TABLE audit_entries (seq INTEGER PRIMARY KEY, at INTEGER NOT NULL, principal TEXT NOT NULL,"
           " purpose TEXT NOT NULL, operation TEXT NOT NULL, subject_id TEXT NOT NULL, outcome TEXT NOT NULL,"
           " entry BLOB NOT NULL, leaf BLOB NOT NULL)",
           "CREATE INDEX audit_by_subject ON audit_entries (subject_id, seq)",
           "CREATE INDEX audit_by_principal ON audit_entries (principal, seq)",
           "CREATE INDEX audit_by_purpose ON audit_entries (purpose, seq)",
           "CREATE INDEX audit_by_operation ON audit_entries (operation, seq)",
           "CREATE INDEX audit_by_time ON audit_entries (at)",
           "CREATE TABLE audit_nodes (level INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL,"
           " PRIMARY KEY (level, idx))",
           "CREATE TABLE audit_checkpoints (size INTEGER PRIMARY KEY, root BLOB NOT NULL, note TEXT NOT NULL,"
           " at INTEGER NOT NULL)",
           // API tokens: only a keyed hash is stored.
           "CREATE TABLE tokens (name TEXT PRIMARY KEY, token_id TEXT NOT NULL UNIQUE, role TEXT NOT NULL,"
           " hash BLOB NOT NULL UNIQUE, created_at INTEGER NOT NULL, revoked_at INTEGER)",
       }},
      {2,
       {
           // The consent ledger: append-only events, and the derived current
           // state per subject x purpose x channel (materialised).
           "CREATE TABLE consent_events (id INTEGER PRIMARY KEY, subject_id BLOB NOT NULL, purpose TEXT NOT NULL,"
           " channel TEXT NOT NULL, event TEXT NOT NULL, status TEXT NOT NULL, at INTEGER NOT NULL,"
           " recorded_at INTEGER NOT NULL, source TEXT NOT NULL, lawful_basis TEXT NOT NULL,"
           " notice_version TEXT NOT NULL, expires_at INTEGER, principal TEXT NOT NULL, proof TEXT NOT NULL,"
           " confirm_hash BLOB, confirm_expires INTEGER, confirmed_by INTEGER)",
           "CREATE INDEX consent_events_by_subject ON consent_events (subject_id, id)",
           "CREATE UNIQUE INDEX consent_events_by_confirm ON consent_events (confirm_hash)",
           "CREATE TABLE consent_state (subject_id BLOB NOT NULL, purpose TEXT NOT NULL, channel TEXT NOT NULL,"
           " state TEXT NOT NULL, since INTEGER NOT NULL, expires_at INTEGER, event_id INTEGER NOT NULL,"
           " PRIMARY KEY (subject_id, purpose, channel))",
           "CREATE INDEX consent_state_by_purpose ON consent_state (purpose, channel, state, subject_id)",
           "ALTER TABLE subjects ADD COLUMN objected INTEGER NOT NULL DEFAULT 0",
           // RFM scores and segments, materialised for campaign filters.
           "CREATE TABLE rfm_scores (subject_id BLOB PRIMARY KEY, r INTEGER NOT NULL, f INTEGER NOT NULL,"
           " m INTEGER NOT NULL, segment TEXT NOT NULL, clv_minor INTEGER NOT NULL, computed_at INTEGER NOT NULL)",
           "CREATE INDEX rfm_by_segment ON rfm_scores (segment, subject_id)",
           // Subjects named by multi-subject audit entries (campaign pages).
           "CREATE TABLE audit_subject_refs (subject_id TEXT NOT NULL, seq INTEGER NOT NULL,"
           " PRIMARY KEY (subject_id, seq))",
       }},
      {3,
       {
           // Data-subject requests and their timelines.
           "CREATE TABLE dsr_requests (id TEXT PRIMARY KEY, type TEXT NOT NULL, regime TEXT NOT NULL,"
           " status TEXT NOT NULL, subject_id BLOB, identified_by TEXT NOT NULL, channel TEXT NOT NULL,"
           " received_at INTEGER NOT NULL, due_at INTEGER NOT NULL, confirm_by INTEGER, extensions INTEGER NOT NULL,"
           " duplicate_of TEXT, denial_reason TEXT, changes TEXT, report TEXT, created_by TEXT NOT NULL,"
           " updated_at INTEGER NOT NULL)",
           "CREATE INDEX dsr_by_status_due ON dsr_requests (status, due_at)",
           "CREATE INDEX dsr_by_due ON dsr_requests (due_at)",
           "CREATE INDEX dsr_by_subject ON dsr_requests (subject_id, type, status)",
           "CREATE TABLE dsr_events (request_id TEXT NOT NULL, seq INTEGER NOT NULL, at INTEGER NOT NULL,"
           " actor TEXT NOT NULL, from_status TEXT NOT NULL, to_status TEXT NOT NULL, note TEXT NOT NULL,"
           " PRIMARY KEY (request_id, seq))",
       }},
      {4,
       {
           // Personal-data breaches, their timelines and affected subjects.
           "CREATE TABLE breaches (id TEXT PRIMARY KEY, status TEXT NOT NULL, discovered_at INTEGER NOT NULL,"
           " occurred_from INTEGER, occurred_to INTEGER, description TEXT NOT NULL, categories TEXT NOT NULL,"
           " regimes TEXT NOT NULL, severity TEXT NOT NULL, high_risk INTEGER NOT NULL, affected_count INTEGER,"
           " residents TEXT, computation TEXT, created_by TEXT NOT NULL, updated_at INTEGER NOT NULL)",
           "CREATE INDEX breaches_by_status ON breaches (status, discovered_at)",
           "CREATE TABLE breach_events (breach_id TEXT NOT NULL, seq INTEGER NOT NULL, at INTEGER NOT NULL,"
           " recorded_at INTEGER NOT NULL, actor TEXT NOT NULL, type TEXT NOT NULL, note TEXT NOT NULL,"
           " PRIMARY KEY (breach_id, seq))",
           "CREATE TABLE breach_affected (breach_id TEXT NOT NULL, subject_id BLOB NOT NULL, fields TEXT NOT NULL,"
           " PRIMARY KEY (breach_id, subject_id))",
       }},
      {5,
       {
           // RFM reads (subject, time, amount) of every order: a covering
           // index turns 1 M random row lookups into one index scan. It
           // supersedes orders_by_subject (same leading columns).
           "CREATE INDEX orders_by_subject_at_amount ON orders (subject_id, at, amount_minor)",
           "DROP INDEX orders_by_subject",
       }},
      {6,
       {
           // Subject refs of multi-subject audit entries (campaign pages):
           // WITHOUT ROWID keeps them in one B-tree instead of a rowid table
           // plus its primary-key index, halving the index writes a campaign
           // page commits before its plaintext is handed out.
           "CREATE TABLE audit_subject_refs_v6 (subject_id TEXT NOT NULL, seq INTEGER NOT NULL,"
           " PRIMARY KEY (subject_id, seq)) WITHOUT ROWID",
           "INSERT INTO audit_subject_refs_v6 (subject_id, seq) SELECT subject_id, seq FROM audit_subject_refs",
           "DROP TABLE audit_subject_refs",
           "ALTER TABLE audit_subject_refs_v6 RENAME TO audit_subject_refs",
       }},
      {7,
       {
           // One subject index for every audit entry (its subject_id and each
           // of its subject_ids), in buckets of consecutive entries: the audit
           // fold inserts only into the newest bucket, a few MiB that stay in
           // the page cache, where (subject_id, seq) scattered every insert
           // over the whole index (fold cost tripled by 1 M entries). A
           // subject query seeks once per bucket from the one its paging
           // cursor falls in (audit_subject_buckets: where each starts).
           // Existing rows are bucketed by seq / 65536; new buckets are cut
           // by row count (AuditLog).
           "CREATE TABLE audit_subject_index (bucket INTEGER NOT NULL, subject_id TEXT NOT NULL,"
           " seq INTEGER NOT NULL, PRIMARY KEY (bucket, subject_id, seq)) WITHOUT ROWID",
           "CREATE TABLE audit_subject_buckets (bucket INTEGER PRIMARY KEY, first_seq INTEGER NOT NULL)",
           "INSERT OR IGNORE INTO audit_subject_index (bucket, subject_id, seq)"
           " SELECT seq / 65536, subject_id, seq FROM audit_entries WHERE subject_id <> ''",
           "INSERT OR IGNORE INTO audit_subject_index (bucket, subject_id, seq)"
           " SELECT seq / 65536, subject_id, seq FROM audit_subject_refs",
           "INSERT INTO audit_subject_buckets (bucket, first_seq)"
           " SELECT bucket, min(seq) FROM audit_subject_index GROUP BY bucket",
           "DROP INDEX audit_by_subject",
           "DROP TABLE audit_subject_refs",
       }},
      {8,
       {
           // Every subject a data-subject request's identifier matched (an
           // identifier can match duplicates): fulfilment covers them all.
           "CREATE TABLE dsr_subjects (request_id TEXT NOT NULL, subject_id BLOB NOT NULL,"
           " PRIMARY KEY (request_id, subject_id))",
           "CREATE INDEX dsr_subjects_by_subject ON dsr_subjects (subject_id)",
           "INSERT INTO dsr_subjects (request_id, subject_id)"
           " SELECT id, subject_id FROM dsr_requests WHERE subject_id IS NOT NULL",
       }},
      {9,
       {
           // The openings of audit entries that commit to their subjects
           // (entry version 2, audit/FORMAT.md §1.5): each subject's id and
           // salt, in the entry's order, as one blob. The entry's bytes hold
           // only the count and a Merkle root, so a subject's access package
           // can prove its membership without naming the others; the ids live
           // here (and in audit_subject_index) for queries, breach scans and
           // the auditor's export.
           "CREATE TABLE audit_subject_openings (seq INTEGER PRIMARY KEY, openings BLOB NOT NULL)",
       }},

  };
  return all;
}

// What the global runner did: each version in its own transaction with
// PRAGMA user_version.
void apply_legacy(store::Store& s, int up_to) {
  for (const auto& step : legacy_global_migrations()) {
    if (step.version > up_to) break;
    auto tx = s.begin(store::TxMode::write);
    for (auto sql : step.statements) tx->exec(sql);
    tx->exec("PRAGMA user_version = " + std::to_string(step.version));
    tx->commit();
  }
}

// Every schema object but the runner's own bookkeeping: (type, name) -> sql.
std::map<std::string, std::string> schema_objects(store::Store& s) {
  std::map<std::string, std::string> out;
  auto tx = s.begin(store::TxMode::read);
  tx->exec("SELECT type, name, coalesce(sql, '') FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'", {},
           [&](const store::Row& r) {
             const std::string name(r.text(1));
             if (name == "schema_versions") return;
             out[std::string(r.text(0)) + " " + name] = std::string(r.text(2));
           });
  return out;
}

// Every row of every table (but schema_versions), sorted: what "no data loss" compares.
std::map<std::string, std::vector<std::string>> all_rows(store::Store& s) {
  std::vector<std::string> tables;
  auto tx = s.begin(store::TxMode::read);
  tx->exec("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'", {},
           [&](const store::Row& r) { tables.emplace_back(r.text(0)); });
  std::map<std::string, std::vector<std::string>> out;
  for (const auto& t : tables) {
    if (t == "schema_versions") continue;
    auto& rows = out[t];
    // quote() renders every value (blobs as X'..') so rows compare as text.
    std::string cols;
    // PRAGMA table_info (SQLCipher's SQLite predates pragma_table_info()).
    tx->exec("PRAGMA table_info(" + t + ")", {}, [&](const store::Row& r) {
      cols += (cols.empty() ? "" : " || '|' || ") + std::string("quote(") + std::string(r.text(1)) + ")";
    });
    tx->exec("SELECT " + cols + " FROM " + t, {}, [&](const store::Row& r) { rows.emplace_back(r.text(0)); });
    std::sort(rows.begin(), rows.end());
  }
  return out;
}

std::unique_ptr<store::Store> open_raw(const TestVault& v) {
  auto ring = crypto::Keyring::open(v.data_dir() / "keys", std::nullopt);
  return store::open_sqlcipher(v.data_dir() / "custos.db", store::read_db_key(*ring, v.data_dir() / "keys"));
}

service::OpenOptions options_for(const TestVault& v) {
  service::OpenOptions o;
  o.data_dir = v.data_dir();
  return o;
}

std::string message_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return std::string(code_name(e.code())) + ": " + e.what();
  }
  return "(no error)";
}

// Every global version's layout, adopted by the module runner, ends exactly
// where a fresh database does: the split into modules changed no statement.
TEST(Schema, EveryGlobalVersionAdoptsToTheFreshSchema) {
  TempDir dir;
  auto fresh = testing::open_migrated_store(dir.path() / "fresh", crypto::SecretKey::random());
  const auto want = schema_objects(*fresh);
  ASSERT_GT(want.size(), 30u);
  for (int g = 1; g <= store::kLastLegacyGlobalVersion; ++g) {
    const auto file = dir.path() / ("legacy-" + std::to_string(g));
    auto s = store::open_sqlcipher(file, crypto::SecretKey::random());
    apply_legacy(*s, g);
    service::migrate_schema(*s);
    EXPECT_EQ(schema_objects(*s), want) << "from global version " << g;
    auto tx = s->begin(store::TxMode::read);
    const auto versions = store::schema_versions(*tx);
    for (const auto& m : service::schema()) EXPECT_EQ(versions.at(std::string(m.module)), m.latest()) << m.module;
  }
}

// A data directory as the global runner left it (user_version 9, no module
// versions) opens with every row unchanged, and the vault works on it.
TEST(Schema, DataDirFromTheGlobalRunnerOpensWithNoDataLoss) {
  if (custos::testing::vaults_on_postgres()) GTEST_SKIP() << "releases with a global schema version were SQLCipher-only";
  TestVault v;
  const std::string id =
      v.service->create_subject(v.admin(), {{"fields", {{"email", "legacy@example.com"}, {"given_name", "Lee"}}}})["id"];
  v.service->record_consent(v.admin(), id, {{"event", "objection"}, {"source", "web_form"}}, false);
  const std::string token = v.service->create_token(v.admin(), "legacy-reader", "admin")["token"];
  v.service.reset();
  std::map<std::string, std::vector<std::string>> before;
  {
    // Back to the global runner's bookkeeping; its layout is the frozen one.
    auto s = open_raw(v);
    auto tx = s->begin(store::TxMode::write);
    custos::testing::regress_to_global_schema(*tx, 9);
    tx->commit();
    TempDir other;
    auto frozen = store::open_sqlcipher(other.path() / "db", crypto::SecretKey::random());
    apply_legacy(*frozen, 9);
    ASSERT_EQ(schema_objects(*s), schema_objects(*frozen));
    before = all_rows(*s);
  }
  ASSERT_GT(before.at("subjects").size(), 0u);
  ASSERT_GT(before.at("audit_entries").size(), 0u);
  {
    auto s = open_raw(v);
    service::migrate_schema(*s);
    // Every table the old layout had keeps every row; tables of later steps
    // (audit blocks, outbox, imports) are new and hold only what they derive.
    auto after = all_rows(*s);
    for (auto it = after.begin(); it != after.end();) it = before.count(it->first) ? std::next(it) : after.erase(it);
    EXPECT_EQ(after, before);
    auto tx = s->begin(store::TxMode::read);
    EXPECT_EQ(store::schema_versions(*tx).at("audit"), 9);
  }
  v.service = service::Service::open(options_for(v));
  const Json subject = v.service->get_subject(v.admin("customer_service"), id);
  EXPECT_EQ(subject["fields"]["email"], "legacy@example.com") << subject.dump();
  EXPECT_TRUE(v.service->get_consents(v.admin(), id)["objected"].get<bool>());
  EXPECT_EQ(v.service->authenticate(token).name, "legacy-reader");
}

TEST(Schema, AModuleVersionNewerThanTheBinaryIsRefusedNamingBoth) {
  TempDir dir;
  const auto key = crypto::SecretKey::random();
  { testing::open_migrated_store(dir.path() / "db", key); }
  {
    auto s = store::open_sqlcipher(dir.path() / "db", key);
    auto tx = s->begin(store::TxMode::write);
    tx->exec("UPDATE schema_versions SET version = 42 WHERE module = 'audit'");
    tx->commit();
  }
  auto s = store::open_sqlcipher(dir.path() / "db", key);
  const std::string msg = message_of([&] { service::migrate_schema(*s); });
  EXPECT_NE(msg.find("storage: "), std::string::npos) << msg;
  EXPECT_NE(msg.find("module 'audit' is version 42"), std::string::npos) << msg;
  EXPECT_NE(msg.find("supports (version 9)"), std::string::npos) << msg;
}

TEST(Schema, AModuleTheBinaryDoesNotKnowIsRefused) {
  TempDir dir;
  const auto key = crypto::SecretKey::random();
  auto s = testing::open_migrated_store(dir.path() / "db", key);
  {
    auto tx = s->begin(store::TxMode::write);
    tx->exec("INSERT INTO schema_versions (module, version) VALUES ('ledger2', 3)");
    tx->commit();
  }
  const std::string msg = message_of([&] { service::migrate_schema(*s); });
  EXPECT_NE(msg.find("module 'ledger2' at version 3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(version 0)"), std::string::npos) << msg;
}

TEST(Schema, AGlobalVersionNewerThanTheLastIsRefusedNamingBoth) {
  TempDir dir;
  auto s = store::open_sqlcipher(dir.path() / "db", crypto::SecretKey::random());
  apply_legacy(*s, 9);
  {
    auto tx = s->begin(store::TxMode::write);
    tx->exec("PRAGMA user_version = 12");
    tx->commit();
  }
  const std::string msg = message_of([&] { service::migrate_schema(*s); });
  EXPECT_NE(msg.find("is version 12"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(version 9)"), std::string::npos) << msg;
}

// Refused by the service too: custosd and the CLI start on nothing newer.
TEST(Schema, ServiceOpenRefusesANewerSchema) {
  if (custos::testing::vaults_on_postgres()) GTEST_SKIP() << "releases with a global schema version were SQLCipher-only";
  TestVault v;
  v.service.reset();
  {
    auto s = open_raw(v);
    auto tx = s->begin(store::TxMode::write);
    tx->exec("UPDATE schema_versions SET version = 7 WHERE module = 'consent'");
    tx->commit();
  }
  const std::string msg = message_of([&] { service::Service::open(options_for(v)); });
  EXPECT_NE(msg.find("module 'consent' is version 7"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(version 1)"), std::string::npos) << msg;
}

// Steps run once each, in order, per module; a later binary's new step runs alone.
TEST(Schema, ModuleStepsRunOnceInOrder) {
  TempDir dir;
  auto s = store::open_sqlcipher(dir.path() / "db", crypto::SecretKey::random());
  store::ModuleMigrations v1{"demo", {{1, 0, {"CREATE TABLE demo (n INTEGER)", "INSERT INTO demo VALUES (1)"}}}};
  store::migrate(*s, {v1});
  store::migrate(*s, {v1});
  store::ModuleMigrations v2 = v1;
  v2.steps.push_back({2, 0, {"INSERT INTO demo VALUES (2)"}});
  store::migrate(*s, {v2});
  store::migrate(*s, {v2});
  auto tx = s->begin(store::TxMode::read);
  EXPECT_EQ(tx->scalar("SELECT count(*) FROM demo").value_or(-1), 2);
  EXPECT_EQ(tx->scalar("SELECT sum(n) FROM demo").value_or(-1), 3);
  EXPECT_EQ(store::schema_versions(*tx).at("demo"), 2);
  // A step that fails leaves its module at the previous version, nothing half-applied.
  store::ModuleMigrations v3 = v2;
  v3.steps.push_back({3, 0, {"INSERT INTO demo VALUES (3)", "INSERT INTO no_such_table VALUES (1)"}});
  tx.reset();
  EXPECT_THROW(store::migrate(*s, {v3}), Error);
  tx = s->begin(store::TxMode::read);
  EXPECT_EQ(tx->scalar("SELECT count(*) FROM demo").value_or(-1), 2);
  EXPECT_EQ(store::schema_versions(*tx).at("demo"), 2);
  EXPECT_EQ(testing::code_of([&] { store::migrate(*s, {v1, v1}); }), ErrorCode::internal);
}

// The service audits a migration it runs on open: a vault taken back to
// the last global layout gets one schema.migrate entry naming what moved.
TEST(Upgrade, AMigrationOnOpenIsAudited) {
  if (custos::testing::vaults_on_postgres()) GTEST_SKIP() << "releases with a global schema version were SQLCipher-only";
  TestVault v;
  v.service.reset();
  {
    auto s = open_raw(v);
    auto tx = s->begin(store::TxMode::write);
    custos::testing::regress_to_global_schema(*tx, 9);
    tx->commit();
  }
  v.service = service::Service::open(options_for(v));
  const Json found = v.service->audit_entries(v.admin("audit"), {{"operation", "schema.migrate"}});
  ASSERT_EQ(found["entries"].size(), 1u) << found.dump();
  const std::string detail = found["entries"][0]["detail"];
  EXPECT_EQ(detail.rfind("from global 9;", 0), 0u) << detail;
  EXPECT_NE(detail.find("->"), std::string::npos) << detail;
  EXPECT_EQ(found["entries"][0]["operation"], "schema.migrate");
}

// The data dir of the previous release's own binary: tests/fixtures/upgrade/
// 5d7a4d2 was made by that commit's `custos` (make_fixture.sh): Ada created
// and read, Bob found by email, Eve erased, a service token, one key
// rotation, a checkpoint. Copied, it must open with this release (after
// `custos policy upgrade`, as its regulations.yaml is format 1), end up with
// exactly the schema a new vault has, keep every subject, token and key, audit
// the migration, and export a log that custos-audit verifies old entries and all.
TEST(Upgrade, ADataDirOfThePreviousReleaseOpensAndMigrates) {
  if (custos::testing::vaults_on_postgres()) GTEST_SKIP() << "the previous release's data dir is SQLCipher";
  namespace fs = std::filesystem;
  using custos::testing::run;
  const fs::path fixture = fs::path(CUSTOS_SOURCE_DIR) / "tests/fixtures/upgrade/5d7a4d2";
  TempDir work;
  const fs::path data = work.path() / "data";
  fs::copy(fixture, data, fs::copy_options::recursive);
  // Git keeps no modes; the release left the dir and its keys private.
  fs::permissions(data, fs::perms::owner_all);
  fs::permissions(data / "keys", fs::perms::owner_all);
  for (const auto& f : fs::recursive_directory_iterator(data))
    if (f.is_regular_file() && f.path().filename() != "audit.pub")
      fs::permissions(f.path(), fs::perms::owner_read | fs::perms::owner_write);
  const auto line_of = [](const fs::path& file, int n) {
    std::ifstream in(file);
    std::string line;
    for (int i = 0; i <= n; ++i) std::getline(in, line);
    return line;
  };
  const std::string ada = line_of(data / "fixture-subject-ids", 0), bob = line_of(data / "fixture-subject-ids", 1),
                    eve = line_of(data / "fixture-subject-ids", 2);
  const std::string token = line_of(data / "fixture-service-token", 0);
  ASSERT_EQ(ada.size(), 32u);
  ASSERT_FALSE(token.empty());
  const std::string cli = CUSTOS_CLI_PATH;

  // The old policies are the old format: converted (and audited) first.
  const auto upgraded = run({cli, "--data-dir", data.string(), "policy", "upgrade"});
  ASSERT_EQ(upgraded.exit_code, 0) << upgraded.err;
  EXPECT_NE(upgraded.out.find("\"changed\": true"), std::string::npos) << upgraded.out;
  // Today's binary reads what the old one wrote.
  const auto got = run({cli, "--data-dir", data.string(), "subject", "get", ada, "--purpose", "customer_service"});
  ASSERT_EQ(got.exit_code, 0) << got.err;
  EXPECT_NE(got.out.find("\"Ada\""), std::string::npos);
  EXPECT_NE(got.out.find("ada@example.com"), std::string::npos);

  // The migrated schema is a new vault's, object for object: a skipped or
  // half-run step leaves a table, column or index out.
  TestVault fresh;
  fresh.service.reset();
  std::map<std::string, int> fresh_versions;
  std::map<std::string, std::string> fresh_schema;
  {
    auto s = open_raw(fresh);
    fresh_schema = schema_objects(*s);
    fresh_versions = store::schema_versions(*s->begin(store::TxMode::read));
  }
  {
    auto ring = crypto::Keyring::open(data / "keys", std::nullopt);
    EXPECT_EQ(ring->newest_version(), 2u);  // the rotation the old release made
    auto s = store::open_sqlcipher(data / "custos.db", store::read_db_key(*ring, data / "keys"));
    EXPECT_EQ(schema_objects(*s), fresh_schema);
    EXPECT_EQ(store::schema_versions(*s->begin(store::TxMode::read)), fresh_versions);
  }

  service::OpenOptions o;
  o.data_dir = data;
  auto svc = service::Service::open(o);
  const auto admin = [](const std::string& purpose) {
    return service::Caller{access::Principal{"test-admin", "admin", "tok-admin"}, purpose, "req-upgrade"};
  };
  const Json found = svc->find_subjects(admin("customer_service"), "email", "bob@example.com");
  ASSERT_EQ(found["subjects"].size(), 1u) << found.dump();
  EXPECT_EQ(found["subjects"][0]["id"], bob);
  EXPECT_EQ(testing::code_of([&] { svc->get_subject(admin("customer_service"), eve); }), ErrorCode::not_found);
  EXPECT_EQ(svc->find_subjects(admin("customer_service"), "email", "eve@example.com")["subjects"].size(), 0u);
  // The old release's service token still authenticates, with its role.
  const access::Principal service_principal = svc->authenticate(token);
  EXPECT_EQ(service_principal.name, "fixture-service");
  EXPECT_EQ(service_principal.role, "service");
  const Json as_service = svc->get_subject(service::Caller{service_principal, "customer_service", "req-upgrade"}, ada);
  EXPECT_EQ(as_service["fields"]["given_name"], "Ada") << as_service.dump();
  // Everything the old rotation re-wrapped is under version 2: retiring
  // version 1 loses nothing.
  svc->retire_keys(admin("administration"));
  EXPECT_FALSE(fs::exists(data / "keys/master-1.key"));
  EXPECT_EQ(svc->get_subject(admin("customer_service"), ada)["fields"]["email"], "ada@example.com");

  // One audited migration, from the old global layout; the old entries kept.
  const Json migrations = svc->audit_entries(admin("audit"), {{"operation", "schema.migrate"}});
  ASSERT_EQ(migrations["entries"].size(), 1u) << migrations.dump();
  const std::string detail = migrations["entries"][0]["detail"];
  EXPECT_EQ(detail.rfind("from global ", 0), 0u) << detail;
  EXPECT_EQ(svc->audit_entries(admin("audit"), {{"operation", "key.rotate"}})["entries"].size(), 1u);
  EXPECT_EQ(svc->audit_entries(admin("audit"), {{"operation", "subject.erase"}})["entries"].size(), 1u);
  svc.reset();

  const fs::path exported = work.path() / "audit.export";
  const auto ex = run({cli, "--data-dir", data.string(), "audit", "export", "--out", exported.string()});
  ASSERT_EQ(ex.exit_code, 0) << ex.err;
  const auto verified =
      run({CUSTOS_AUDIT_CLI_PATH, "verify", exported.string(), "--pubkey", (data / "audit.pub").string()});
  ASSERT_EQ(verified.exit_code, 0) << verified.out << verified.err;
  EXPECT_NE(verified.out.find("ok: entries="), std::string::npos) << verified.out;
}

// A vault that is already current records no migration when it opens.
TEST(Upgrade, OpeningACurrentVaultRecordsNoMigration) {
  TestVault v;
  v.service.reset();
  service::OpenOptions o;
  o.data_dir = v.data_dir();
  v.service = service::Service::open(o);
  EXPECT_EQ(v.service->audit_entries(v.admin("audit"), {{"operation", "schema.migrate"}})["entries"].size(), 0u);
}

}  // namespace
}  // namespace custos
