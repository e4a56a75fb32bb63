#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>
#include <map>
#include <limits>
#include <random>
#include <sstream>
#include <thread>

#include "custos/error.h"
#include "custos/store/sqlcipher_store.h"
#include "custos/audit/audit_log.h"
#include "custos/crypto/keyring.h"
#include "custos/crypto/signer.h"
#include "custos_audit/checkpoint.h"
#include "custos_audit/merkle.h"
#include "custos_audit/verify.h"
#include "test_support.h"

namespace custos {
namespace {

using service::Json;
using testing::TestVault;

std::string verifier_key(TestVault& v) { return v.service->audit_verifier_key(); }

auditfmt::Hash from_hex(const Json& j) { return *auditfmt::hash_from_hex(j.get<std::string>()); }

TEST(AuditLog, InclusionAndConsistencyProofsVerify) {
  TestVault v;
  std::vector<std::string> ids;
  for (int i = 0; i < 37; ++i)
    ids.push_back(v.service->create_subject(v.admin(), {{"fields", {{"email", "p" + std::to_string(i) + "@x.example"}}}})["id"]);
  const auto auditor = v.caller("auditor", "audit");
  const Json cp = v.service->audit_checkpoint(auditor);
  const std::uint64_t size = cp["size"];
  ASSERT_GE(size, 37u);
  const auto root = from_hex(cp["root"]);
  for (std::uint64_t i = 0; i < size; i += 5) {
    const Json p = v.service->audit_inclusion_proof(auditor, std::to_string(i), std::to_string(size));
    std::vector<auditfmt::Hash> proof;
    for (const auto& h : p["proof"]) proof.push_back(from_hex(h));
    EXPECT_TRUE(auditfmt::verify_inclusion(i, size, from_hex(p["leaf_hash"]), proof, root)) << i;
  }
  for (std::uint64_t first : {1ull, 2ull, 7ull, 16ull, 30ull}) {
    const Json c = v.service->audit_consistency_proof(auditor, std::to_string(first), std::to_string(size));
    std::vector<auditfmt::Hash> proof;
    for (const auto& h : c["proof"]) proof.push_back(from_hex(h));
    EXPECT_TRUE(auditfmt::verify_consistency(first, size, from_hex(c["first_root"]), root, proof)) << first;
  }
  // The checkpoint is a valid signed note under the exported key.
  EXPECT_NO_THROW(auditfmt::parse_and_verify_checkpoint_vkey(cp["note"].get<std::string>(), verifier_key(v)));
}

TEST(AuditLog, ExportVerifiesAndContinuesAcrossRestart) {
  TestVault v;
  for (int i = 0; i < 10; ++i) v.service->create_subject(v.admin(), {{"fields", {{"given_name", "N"}}}});
  v.service.reset();  // "restart"
  service::OpenOptions o;
  o.data_dir = v.data_dir();
  v.service = service::Service::open(o);
  for (int i = 0; i < 10; ++i) v.service->create_subject(v.admin(), {{"fields", {{"given_name", "M"}}}});
  std::stringstream out;
  v.service->audit_export(v.caller("auditor", "audit"), out);
  const auto result = auditfmt::verify_export(out, verifier_key(v));
  EXPECT_TRUE(result.ok) << result.error;
  EXPECT_GE(result.entries, 20u);
}

TEST(AuditLog, ConcurrentAppendsFromEightThreadsStayConsistent) {
  TestVault v;
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i)
        v.service->create_subject(v.admin(), {{"fields", {{"given_name", "T" + std::to_string(t)}}}});
    });
  for (auto& th : threads) th.join();
  std::stringstream out;
  v.service->audit_export(v.caller("auditor", "audit"), out);
  const auto result = auditfmt::verify_export(out, verifier_key(v));
  EXPECT_TRUE(result.ok) << result.error;
  EXPECT_GE(result.entries, 200u);
}

// Writers hold the store's write lock when they append; checkpoints and
// exports running beside them must take locks in the same order (a
// lock-order inversion here once hung custosd under batch load). A deadlock
// shows up as this test hanging until ctest's timeout.
TEST(AuditLog, CheckpointsAndExportsRunBesideWriters) {
  TestVault v;
  std::atomic<bool> writing{true};
  std::vector<std::thread> writers;
  for (int t = 0; t < 3; ++t)
    writers.emplace_back([&, t] {
      for (int i = 0; i < 40; ++i)
        v.service->create_subject(v.admin(), {{"fields", {{"given_name", "W" + std::to_string(t)}}}});
    });
  std::thread checkpointer([&] {
    for (int i = 0; i < 200 && writing; ++i) v.service->audit_checkpoint(v.caller("auditor", "audit"));
  });
  std::size_t exports_ok = 0;
  for (int i = 0; i < 5; ++i) {
    std::stringstream out;
    v.service->audit_export(v.caller("auditor", "audit"), out);
    const auto r = auditfmt::verify_export(out, verifier_key(v));
    EXPECT_TRUE(r.ok) << r.error;  // every exported entry is covered by a checkpoint
    exports_ok += r.ok;
  }
  for (auto& th : writers) th.join();
  writing = false;
  checkpointer.join();
  EXPECT_EQ(exports_ok, 5u);
}

TEST(AuditLog, CrashBetweenEntriesAndCheckpointLosesNothing) {
  TestVault v;
  v.service.reset();
  const pid_t pid = ::fork();
  if (pid == 0) {
    service::OpenOptions o;
    o.data_dir = v.data_dir();
    o.checkpoint_every_entries = 1000000;  // nothing signed before the "crash"
    o.checkpoint_every_ms = 1000000000;
    auto s = service::Service::open(o);
    for (int i = 0; i < 30; ++i) s->create_subject(v.admin(), {{"fields", {{"given_name", "C"}}}});
    ::_exit(0);  // no destructors, no clean close
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  service::OpenOptions o;
  o.data_dir = v.data_dir();
  auto s = service::Service::open(o);
  const std::uint64_t before = s->audit_size();
  EXPECT_GE(before, 31u);
  s->create_subject(v.admin(), {{"fields", {{"given_name", "D"}}}});
  std::stringstream out;
  s->audit_export(v.caller("auditor", "audit"), out);
  const auto result = auditfmt::verify_export(out, s->audit_verifier_key());
  EXPECT_TRUE(result.ok) << result.error;
  EXPECT_EQ(result.entries, before + 2);  // + the create + the export's own entry
}

// The log's storage fails for real: the process may not extend any file
// (RLIMIT_FSIZE, as on a full disk). A read must then fail with
// audit_unavailable and release nothing; a write must fail and leave nothing.
// The subject index is cut into runs of consecutive blocks (and, for a log
// from before audit migration 8, buckets of consecutive entries); a subject
// query walks them, then the blocks of the open run, then the open block.
// Tiny runs here, so every query crosses many.
// Subject ids as the log records them: 32 lowercase hex digits.
const std::string kAa(32, 'a'), kBb(32, 'b'), kCc(32, 'c');

TEST(AuditLog, SubjectQueriesSpanRunsBlocksAndTheOpenBlockInSequenceOrder) {
  testing::TempDir dir;
  auto store = testing::open_migrated_store(dir.path() / "db", crypto::SecretKey::random());
  const crypto::Signer signer(crypto::SecretKey::random());
  audit::Options o;
  o.subject_run_blocks = 2;
  auto log = std::make_unique<audit::AuditLog>(*store, signer, o);
  const audit::Actor actor{"p", "role", "t", "purpose", "r"};
  const std::vector<std::string> subjects{kAa, kBb, kCc};
  std::map<std::string, std::vector<std::uint64_t>> expected;
  std::size_t campaign_pages_of_bb = 0;
  std::mt19937 rng(3);
  std::uint64_t seq = 0;
  for (int i = 0; i < 600; ++i, ++seq) {
    audit::Event e{i % 7 ? "subject.read" : "campaign.fetch", subjects[rng() % 3], {"email"}, {}, true, "", ""};
    if (i % 7 == 0) e.subject_ids = {kBb, kCc, e.subject_id}, ++campaign_pages_of_bb;  // names its own subject twice
    if (i % 11 == 0) e.subject_id.clear();
    if (i % 13 == 0) e.subject_id = "not-an-id";  // an invalid_subject marker names nobody
    std::set<std::string> named(e.subject_ids.begin(), e.subject_ids.end());
    if (auditfmt::is_subject_id(e.subject_id)) named.insert(e.subject_id);
    for (const auto& sid : named) expected[sid].push_back(seq);
    if (i == 60 || i == 255) {  // a rolled-back append (at 255: one that merges a run) leaves no trace
      auto tx = store->begin(store::TxMode::write);
      log->append(*tx, actor, {"subject.read", kAa, {}, {}, true, "", ""});
    }
    log->append_now(actor, e);
  }
  // Reopened: the open run is continued.
  log = std::make_unique<audit::AuditLog>(*store, signer, o);
  for (int i = 0; i < 9; ++i, ++seq) {
    log->append_now(actor, {"subject.read", kAa, {}, {}, true, "", ""});
    expected[kAa].push_back(seq);
  }
  {  // 609 entries: blocks 0-7 in four runs, block 8 waiting for its run, block 9 open
    auto tx = store->begin(store::TxMode::read);
    EXPECT_EQ(tx->scalar("SELECT count(DISTINCT first_block) FROM audit_subject_runs").value_or(-1), 4);
    EXPECT_EQ(tx->scalar("SELECT count(*) FROM audit_block_subjects").value_or(-1), 1);
    EXPECT_EQ(tx->scalar("SELECT count(*) FROM audit_subject_index").value_or(-1), 0);
  }
  for (const auto& sid : subjects) {
    for (std::size_t page : {1u, 4u, 1000u}) {
      std::vector<std::uint64_t> got;
      audit::Query q;
      q.subject_id = sid;
      q.limit = page;
      for (int guard = 0; guard < 1000; ++guard) {
        const auto entries = log->query(q);
        for (const auto& e : entries) got.push_back(e.seq);
        if (entries.size() < page) break;
        q.after_seq = entries.back().seq;
      }
      EXPECT_EQ(got, expected[sid]) << sid << " in pages of " << page;
    }
  }
  audit::Query campaign;
  campaign.subject_id = kBb;
  campaign.operation = "campaign.fetch";
  campaign.limit = 1000;
  for (const auto& e : log->query(campaign)) EXPECT_EQ(e.operation, "campaign.fetch");
  EXPECT_EQ(log->query(campaign).size(), campaign_pages_of_bb);
  audit::Query nobody;
  nobody.subject_id = "not-an-id";
  EXPECT_TRUE(log->query(nobody).empty());
}

// A vault from before the bucketed index: its subject rows move into it.
TEST(AuditLog, MigrationBucketsTheSubjectsOfAnExistingLog) {
  testing::TempDir dir;
  const auto key = crypto::SecretKey::random();
  const crypto::Signer signer(crypto::SecretKey::random());
  const audit::Actor actor{"p", "role", "t", "purpose", "r"};
  {
    auto store = testing::open_migrated_store(dir.path() / "db", key);
    audit::AuditLog log(*store, signer, {});
    for (int i = 0; i < 10; ++i) log.append_now(actor, {"subject.read", i % 2 ? kAa : kBb, {}, {}, true, "", ""});
    log.append_now(actor, {"campaign.fetch", "", {}, {}, true, "", "", {kAa, kCc}});
    // Back to the version 6 layout, with its rows.
    auto tx = store->begin(store::TxMode::write);
    tx->exec("CREATE TABLE audit_subject_refs (subject_id TEXT NOT NULL, seq INTEGER NOT NULL,"
             " PRIMARY KEY (subject_id, seq)) WITHOUT ROWID");
    tx->exec("INSERT INTO audit_subject_refs (subject_id, seq) VALUES (?, 10), (?, 10)", {kAa, kCc});
    tx->exec("CREATE INDEX audit_by_subject ON audit_entries (subject_id, seq)");
    tx->exec("DROP TABLE audit_subject_index");
    tx->exec("DROP TABLE audit_subject_buckets");
    for (const char* runs : {"audit_block_subjects", "audit_subject_runs", "audit_subject_runs_start"})
      tx->exec(std::string("DROP TABLE ") + runs);  // audit migration 8
    tx->exec("DROP TABLE dsr_subjects");            // migration 8 (runs again)
    tx->exec("DROP TABLE audit_subject_openings");  // migration 9
    // As the global runner of that release left it: user_version 6, no module versions.
    testing::regress_to_global_schema(*tx, 6);
    tx->commit();
  }
  auto store = testing::open_migrated_store(dir.path() / "db", key);
  audit::Options small;
  small.subject_bucket_rows = 2;  // new buckets after the migrated one
  audit::AuditLog log(*store, signer, small);
  for (int i = 0; i < 5; ++i) log.append_now(actor, {"subject.read", i % 2 ? kAa : kCc, {}, {}, true, "", ""});
  EXPECT_GE(store->begin(store::TxMode::read)->scalar("SELECT max(bucket) FROM audit_subject_buckets").value(), 2);
  const auto seqs = [&](const std::string& sid) {
    audit::Query q;
    q.subject_id = sid;
    std::vector<std::uint64_t> out;
    for (const auto& e : log.query(q)) out.push_back(e.seq);
    return out;
  };
  EXPECT_EQ(seqs(kAa), (std::vector<std::uint64_t>{1, 3, 5, 7, 9, 10, 12, 14}));
  EXPECT_EQ(seqs(kBb), (std::vector<std::uint64_t>{0, 2, 4, 6, 8}));
  EXPECT_EQ(seqs(kCc), (std::vector<std::uint64_t>{10, 11, 13, 15}));
}

// Entry times are formatted and parsed without libc's time-zone functions;
// these must agree with gmtime_r/timegm everywhere, and refuse impossible dates.
TEST(AuditLog, EntryTimesRoundTripAndAgreeWithLibc) {
  std::mt19937_64 rng(42);
  for (int i = 0; i < 20000; ++i) {
    // 1900..2400, both signs of the epoch, every microsecond digit.
    const std::int64_t us = static_cast<std::int64_t>(rng() % (std::uint64_t{15778800000} * 1000000)) -
                            std::int64_t{2208988800} * 1000000;
    const std::string text = audit::format_time_us(us);
    const std::time_t secs = static_cast<std::time_t>(us >= 0 ? us / 1000000 : -((-us + 999999) / 1000000));
    std::tm tm{};
    gmtime_r(&secs, &tm);
    char expect[40];
    std::snprintf(expect, sizeof expect, "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900, tm.tm_mon + 1,
                  tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    ASSERT_EQ(text.substr(0, 19), expect) << us;
    ASSERT_EQ(audit::parse_time_us(text), us) << text;
  }
  EXPECT_EQ(audit::format_time_us(-1), "1969-12-31T23:59:59.999999Z");
  EXPECT_EQ(audit::format_time_us(-1000000), "1969-12-31T23:59:59.000000Z");
  // Every int64 formats (found by the block_row fuzz target: INT64_MIN + 1
  // overflowed a negation, undefined behaviour the UBSan run reports).
  for (const std::int64_t us : {std::numeric_limits<std::int64_t>::min(), std::numeric_limits<std::int64_t>::min() + 1,
                                std::numeric_limits<std::int64_t>::max()})
    EXPECT_FALSE(audit::format_time_us(us).empty()) << us;
  EXPECT_EQ(audit::parse_time_us("2024-02-29T12:00:00Z"), std::int64_t{1709208000} * 1000000);
  EXPECT_EQ(audit::parse_time_us("2024-02-29T14:30:00.5+02:30"), std::int64_t{1709208000} * 1000000 + 500000);
  EXPECT_EQ(audit::parse_time_us("1970-01-01 00:00:00z"), 0);
  for (const char* bad : {"2023-02-29T00:00:00Z", "2024-04-31T00:00:00Z", "2024-13-01T00:00:00Z",
                          "2024-01-01T24:00:00Z", "2024-01-01T00:00:00", "2024-01-01T00:00:00.Z",
                          "2024-01-01T00:00:00+0100", "2024-01-01T00:00:00Zjunk", "2024-1-01T00:00:00Z",
                          "2024-01-01T00:00:00+01:xx"})
    EXPECT_FALSE(audit::parse_time_us(bad).has_value()) << bad;
}

TEST(AuditLog, FailsClosedWhenTheLogCannotBeWritten) {
  // The file-size limit starves a local SQLCipher file; a PostgreSQL server
  // writes its own files (its failures: PostgresStore.ALostConnection…).
  if (!testing::postgres_test_url().empty() && std::getenv("CUSTOS_TEST_STORE"))
    GTEST_SKIP() << "RLIMIT_FSIZE does not reach the PostgreSQL server";
  TestVault v;
  const std::string id = v.service->create_subject(v.admin(), {{"fields", {{"email", "closed@example.com"}}}})["id"];
  v.service.reset();
  const pid_t pid = ::fork();
  if (pid == 0) {
    service::OpenOptions o;
    o.data_dir = v.data_dir();
    auto s = service::Service::open(o);
    ::signal(SIGXFSZ, SIG_IGN);
    rlimit lim{1, 1};
    ::setrlimit(RLIMIT_FSIZE, &lim);
    int rc = 0;
    try {
      const Json got = s->get_subject(v.admin("customer_service"), id);
      rc = 10;  // plaintext escaped
    } catch (const Error& e) {
      if (e.code() != ErrorCode::audit_unavailable) rc = 11;
    }
    try {
      s->create_subject(v.admin(), {{"fields", {{"email", "lost@example.com"}}}});
      rc = rc ? rc : 12;
    } catch (const Error& e) {
      if (e.code() != ErrorCode::audit_unavailable && e.code() != ErrorCode::storage) rc = rc ? rc : 13;
    }
    ::_exit(rc);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "10: read returned data, 11: wrong code, 12: write succeeded, 13: wrong code";
  // With storage back, nothing half-done is visible and the log still verifies.
  service::OpenOptions o;
  o.data_dir = v.data_dir();
  auto s = service::Service::open(o);
  EXPECT_TRUE(s->find_subjects(v.admin("customer_service"), "email", "lost@example.com")["subjects"].empty());
  std::stringstream out;
  s->audit_export(v.caller("auditor", "audit"), out);
  const auto result = auditfmt::verify_export(out, s->audit_verifier_key());
  EXPECT_TRUE(result.ok) << result.error;
}

}  // namespace
}  // namespace custos

namespace custos {
namespace {

using service::Json;
using testing::TestVault;

// custosd's mode: reads record their entries in the audit journal.
std::unique_ptr<service::Service> open_journaled(const TestVault& v, std::size_t segment_bytes = 0,
                                                 std::int64_t fold_interval_ms = 0) {
  service::OpenOptions o;
  o.data_dir = v.data_dir();
  o.audit_journal = true;
  if (segment_bytes) o.audit_journal_options.segment_bytes = segment_bytes;
  if (fold_interval_ms) o.audit_journal_options.fold_interval_ms = fold_interval_ms;
  return service::Service::open(o);
}

// Polls (bounded: 10 s) until the folder thread has folded every journaled entry.
bool folder_caught_up(service::Service& s) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (s.audit_journal_status().pending > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::yield();
  return s.audit_journal_status().pending == 0;
}

std::size_t reads_of(service::Service& s, TestVault& v, const std::string& id) {
  const Json page = s.audit_entries(v.caller("auditor", "audit"),
                                    {{"subject", id}, {"operation", "subject.read"}, {"limit", "1000"}});
  return page["entries"].size();
}

bool export_verifies(service::Service& s, TestVault& v, std::uint64_t* entries = nullptr) {
  std::stringstream out;
  s.audit_export(v.caller("auditor", "audit"), out);
  const auto result = auditfmt::verify_export(out, s.audit_verifier_key());
  EXPECT_TRUE(result.ok) << result.error;
  if (entries) *entries = result.entries;
  return result.ok;
}

// One subject in a fresh vault, whose service is then closed (each test
// opens the vault the way it needs).
std::string one_subject_then_close(TestVault& v) {
  const std::string id = v.service->create_subject(v.admin(), {{"fields", {{"email", "j@example.com"}}}})["id"];
  v.service.reset();
  return id;
}

// Runs `child` in a forked process that ends with _exit (static destructors
// do not run; objects the child leaks are never closed: a crash as far as
// the vault can tell); returns its exit code, -1 if it died.
int in_child(const std::function<int()>& child) {
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(child());
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// The folder moves reads into the tree by itself, one interval after they
// arrive, with no query asking; reads go on meanwhile.
TEST(AuditJournal, TheFolderFoldsOnItsOwnWithinItsInterval) {
  TestVault v;
  const std::string id = one_subject_then_close(v);
  // ~50 reads a segment: segments roll over too (on PostgreSQL the journal
  // is the pending table, and the segment size means nothing).
  auto s = open_journaled(v, 16 << 10, 20);
  ASSERT_TRUE(s->audit_journal_active());
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 40; ++i) s->get_subject(v.admin("customer_service"), id);
    ASSERT_TRUE(folder_caught_up(*s)) << "round " << round;
  }
  EXPECT_EQ(reads_of(*s, v, id), 120u);
  EXPECT_TRUE(export_verifies(*s, v));
}

// A request's reads share one snapshot (custosd opens one per quick
// request). The folder thread may fold and commit after it began; the
// query's flush then finds nothing left to fold, and must still read what
// the folder committed, not the snapshot's older state.
TEST(AuditJournal, AQueryInsideARequestsSnapshotSeesWhatTheFolderFoldedMeanwhile) {
  if (testing::vaults_on_postgres()) GTEST_SKIP() << "the local audit journal is SQLCipher-only: on PostgreSQL every entry commits to the database (multinode_test)";
  TestVault v;
  const std::string id = one_subject_then_close(v);
  auto s = open_journaled(v, 0, 20);
  ASSERT_TRUE(s->audit_journal_active());
  const auto snapshot = s->read_snapshot();
  s->get_subject(v.admin("customer_service"), id);  // the snapshot's state is from here
  std::thread([&] {
    for (int i = 0; i < 10; ++i) s->get_subject(v.admin("customer_service"), id);
  }).join();
  ASSERT_TRUE(folder_caught_up(*s)) << "the folder did not fold within 10 s";
  EXPECT_EQ(reads_of(*s, v, id), 11u);
}

TEST(AuditJournal, ReadsAreInTheTreeBeforeAnyQuerySeesTheLog) {
  if (testing::vaults_on_postgres()) GTEST_SKIP() << "the local audit journal is SQLCipher-only: on PostgreSQL every entry commits to the database (multinode_test)";
  TestVault v;
  const std::string id = one_subject_then_close(v);
  auto s = open_journaled(v);
  ASSERT_TRUE(s->audit_journal_active());
  for (int i = 0; i < 25; ++i) s->get_subject(v.admin("customer_service"), id);
  // No waiting: the query folds what is pending first.
  EXPECT_EQ(reads_of(*s, v, id), 25u);
  EXPECT_TRUE(export_verifies(*s, v));
  // A second process cannot take the journal; its reads commit directly.
  auto other = open_journaled(v);
  EXPECT_FALSE(other->audit_journal_active());
  other->get_subject(v.admin("customer_service"), id);
  EXPECT_EQ(reads_of(*s, v, id), 26u);
  EXPECT_FALSE(other->retry_audit_journal());  // still held
  s.reset();                                    // the holder goes away
  EXPECT_TRUE(other->retry_audit_journal());
  EXPECT_TRUE(other->audit_journal_active());
  other->get_subject(v.admin("customer_service"), id);
  EXPECT_EQ(other->audit_journal_status().pending, 1u);
  EXPECT_EQ(reads_of(*other, v, id), 27u);
}

// The CLI beside a running custosd: its audit queries wait (bounded) for
// custosd to fold the reads it had answered, so none is missing.
TEST(AuditJournal, AnotherProcessSeesTheReadsTheJournalOwnerAnswered) {
  if (testing::vaults_on_postgres()) GTEST_SKIP() << "the local audit journal is SQLCipher-only: on PostgreSQL every entry commits to the database (multinode_test)";
  TestVault v;
  const std::string id = one_subject_then_close(v);
  auto owner = open_journaled(v);
  for (int i = 0; i < 10; ++i) owner->get_subject(v.admin("customer_service"), id);
  ASSERT_EQ(owner->audit_journal_status().pending, 10u);  // nothing folded yet (1 s interval)
  service::OpenOptions o;  // the CLI's mode
  o.data_dir = v.data_dir();
  auto cli = service::Service::open(o);
  EXPECT_EQ(reads_of(*cli, v, id), 10u);
}

// kill -9 after the reads returned: every read's entry is recovered into the
// tree by the next process, once, and the log verifies.
TEST(AuditJournal, ACrashLosesNoReadThatReturned) {
  if (testing::vaults_on_postgres()) GTEST_SKIP() << "the local audit journal is SQLCipher-only: on PostgreSQL every entry commits to the database (multinode_test)";
  TestVault v;
  const std::string id = one_subject_then_close(v);
  ASSERT_EQ(in_child([&] {
              // Never destroyed: like a crash, nothing is folded on the way out.
              auto* s = open_journaled(v).release();
              int rc = s->audit_journal_active() ? 0 : 20;
              for (int i = 0; i < 40 && rc == 0; ++i)
                if (s->get_subject(v.admin("customer_service"), id)["id"] != id) rc = 21;
              return rc;
            }),
            0);
  {
    service::OpenOptions o;  // the CLI's mode: folds the leftovers, does not journal
    o.data_dir = v.data_dir();
    auto s = service::Service::open(o);
    EXPECT_FALSE(s->audit_journal_active());
    EXPECT_EQ(reads_of(*s, v, id), 40u);
    EXPECT_TRUE(export_verifies(*s, v));
  }
  auto s = open_journaled(v);  // the journal is not folded twice
  EXPECT_EQ(reads_of(*s, v, id), 40u);
  s->get_subject(v.admin("customer_service"), id);
  EXPECT_EQ(reads_of(*s, v, id), 41u);
  EXPECT_TRUE(export_verifies(*s, v));
}

// The journal cannot take a segment (RLIMIT_FSIZE, as on a full disk): the
// read fails with audit_unavailable and returns nothing; once the file
// system takes writes again, reads work and only the read that returned is logged.
TEST(AuditJournal, FailsClosedWhenNoSegmentCanBeWritten) {
  if (testing::vaults_on_postgres()) GTEST_SKIP() << "the local audit journal is SQLCipher-only: on PostgreSQL every entry commits to the database (multinode_test)";
  TestVault v;
  const std::string id = one_subject_then_close(v);
  // Segments of 16 KiB (~50 entries): the one made at start fills, and the
  // next cannot be created under a 1-byte file-size limit.
  const int rc = in_child([&] {
    auto s = open_journaled(v, 16 << 10);
    ::signal(SIGXFSZ, SIG_IGN);
    rlimit lim{};
    ::getrlimit(RLIMIT_FSIZE, &lim);
    const rlimit saved = lim;
    lim.rlim_cur = 1;
    ::setrlimit(RLIMIT_FSIZE, &lim);
    int code = 10;  // no read failed: plaintext would escape without an entry
    int served = 0;
    for (int i = 0; i < 1000 && code == 10; ++i) {
      try {
        s->get_subject(v.admin("customer_service"), id);
        ++served;
      } catch (const Error& e) {
        code = e.code() == ErrorCode::audit_unavailable ? 0 : 11;
      }
    }
    ::setrlimit(RLIMIT_FSIZE, &saved);
    try {
      s->get_subject(v.admin("customer_service"), id);
      ++served;
    } catch (const Error&) {
      code = code ? code : 12;
    }
    if (code == 0) code = reads_of(*s, v, id) == static_cast<std::size_t>(served) ? 0 : 13;
    return code;
  });
  EXPECT_EQ(rc, 0) << "10: no read failed, 11: wrong code, 12: no recovery, 13: a served read is not in the log";
  auto s = open_journaled(v);
  EXPECT_GT(reads_of(*s, v, id), 0u);
  EXPECT_TRUE(export_verifies(*s, v));
}

// Many reads through small segments: segments fill, are sealed, folded and
// reused; a concurrent auditor sees a consistent, growing log; nothing in
// the journal is readable without the vault's keys.
TEST(AuditJournal, SegmentsRollOverUnderConcurrentReadsAndHoldNoPlaintext) {
  if (testing::vaults_on_postgres()) GTEST_SKIP() << "the local audit journal is SQLCipher-only: on PostgreSQL every entry commits to the database (multinode_test)";
  TestVault v;
  const std::string id = one_subject_then_close(v);
  auto s = open_journaled(v, 64 * 1024);  // ~150 entries per segment
  std::atomic<int> failures{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 4; ++t)
    readers.emplace_back([&] {
      for (int i = 0; i < 500; ++i) try {
          s->get_subject(v.admin("customer_service"), id);
        } catch (...) {
          ++failures;
        }
    });
  for (int i = 0; i < 5; ++i) s->audit_checkpoint(v.caller("auditor", "audit"));
  for (auto& r : readers) r.join();
  EXPECT_EQ(failures.load(), 0);
  std::uint64_t entries = 0;
  EXPECT_TRUE(export_verifies(*s, v, &entries));
  EXPECT_GE(entries, 2000u);
  std::size_t seen = 0;
  std::map<std::string, std::string> q{{"subject", id}, {"operation", "subject.read"}, {"limit", "1000"}};
  for (int page = 0; page < 10; ++page) {
    const Json got = s->audit_entries(v.caller("auditor", "audit"), q);
    seen += got["entries"].size();
    if (got["entries"].size() < 1000) break;
    q["after"] = std::to_string(got["entries"].back()["seq"].get<std::uint64_t>());
  }
  EXPECT_EQ(seen, 2000u);
  const auto journal = v.data_dir() / "audit-journal";
  EXPECT_TRUE(testing::files_containing(journal, id).empty());
  EXPECT_TRUE(testing::files_containing(journal, "customer_service").empty());
  EXPECT_TRUE(testing::files_containing(journal, "subject.read").empty());
}

// A journal altered on disk while nobody held it: the records before the
// damage are folded, the segment is set aside (never reused), and the loss
// is itself an entry in the log rather than a silent gap.
TEST(AuditJournal, DamageFoundOnRecoveryIsRecordedInTheLog) {
  if (testing::vaults_on_postgres()) GTEST_SKIP() << "the local audit journal is SQLCipher-only: on PostgreSQL every entry commits to the database (multinode_test)";
  TestVault v;
  const std::string id = one_subject_then_close(v);
  ASSERT_EQ(in_child([&] {
              auto* s = open_journaled(v).release();  // never destroyed: a crash
              for (int i = 0; i < 30; ++i) s->get_subject(v.admin("customer_service"), id);
              return 0;
            }),
            0);
  std::filesystem::path segment;
  for (const auto& e : std::filesystem::directory_iterator(v.data_dir() / "audit-journal"))
    if (e.path().extension() == ".aj") segment = e.path();
  ASSERT_FALSE(segment.empty());
  {
    // Flip one ciphertext byte of the 11th record (records: u32 length, sealed bytes).
    std::fstream f(segment, std::ios::in | std::ios::out | std::ios::binary);
    std::uint64_t off = 4096;
    for (int i = 0; i < 10; ++i) {
      unsigned char len[4];
      f.seekg(static_cast<std::streamoff>(off));
      f.read(reinterpret_cast<char*>(len), 4);
      off += 4 + (len[0] | len[1] << 8 | len[2] << 16 | static_cast<std::uint32_t>(len[3]) << 24);
    }
    f.seekg(static_cast<std::streamoff>(off + 20));
    char c = 0;
    f.read(&c, 1);
    c = static_cast<char>(c ^ 0x01);
    f.seekp(static_cast<std::streamoff>(off + 20));
    f.write(&c, 1);
  }
  auto s = open_journaled(v);
  EXPECT_EQ(reads_of(*s, v, id), 10u);
  EXPECT_FALSE(std::filesystem::exists(segment));
  EXPECT_TRUE(std::filesystem::exists(segment.string() + ".damaged"));
  const Json damaged = s->audit_entries(v.caller("auditor", "audit"), {{"operation", "audit.journal_damaged"}});
  ASSERT_EQ(damaged["entries"].size(), 1u) << damaged.dump();
  EXPECT_NE(damaged["entries"][0]["detail"].get<std::string>().find(segment.filename().string()), std::string::npos);
  s->get_subject(v.admin("customer_service"), id);  // the journal goes on with a fresh segment
  EXPECT_EQ(reads_of(*s, v, id), 11u);
  EXPECT_TRUE(export_verifies(*s, v));
}

// ---- The pending table: the audit journal of a shared database ----------
// custosd on PostgreSQL (issue 16): a read's entry commits to audit_pending
// before its plaintext leaves, and any node folds the table into the tree.

constexpr char kNotShared[] =
    "the pending table is the audit journal of a shared database (PostgreSQL); SQLCipher's is a local file (AuditJournal.*)";

// A row that is no entry, put into the pending table by something else with
// write access to the database (first in fold order: `at` 0), until remove().
class IntruderRow {
 public:
  explicit IntruderRow(const TestVault& v)
      : keyring_(crypto::Keyring::open(v.data_dir() / "keys", std::nullopt)),
        raw_(testing::open_vault_store(v.data_dir(), *keyring_)) {
    const std::vector<std::uint8_t> junk = {1, 2, 3};
    auto tx = raw_->begin(store::TxMode::write);
    tx->exec("INSERT INTO audit_pending (stream, counter, at, payload) VALUES (?, ?, ?, ?)",
             {"intruder", 1, 0, store::Blob(junk)});
    tx->commit();
  }
  void remove() {
    auto tx = raw_->begin(store::TxMode::write);
    tx->exec("DELETE FROM audit_pending WHERE stream = 'intruder'");
    tx->commit();
  }

 private:
  std::unique_ptr<crypto::Keyring> keyring_;
  std::unique_ptr<store::Store> raw_;
};

TEST(AuditPendingTable, ReadsCommitToTheDatabaseAndAnotherNodesQueryFoldsThem) {
  if (!testing::vaults_on_postgres()) GTEST_SKIP() << kNotShared;
  TestVault v;
  const std::string id = one_subject_then_close(v);
  auto node = open_journaled(v, 0, 3600 * 1000);  // its own folder waits an hour
  ASSERT_TRUE(node->audit_journal_active());
  const std::uint64_t before = node->audit_size();
  for (int i = 0; i < 10; ++i) node->get_subject(v.admin("customer_service"), id);
  EXPECT_EQ(node->audit_journal_status().pending, 10u);
  EXPECT_EQ(node->audit_size(), before + 10);  // counted while they wait
  service::OpenOptions o;  // another node, the CLI's mode: it folds before it answers
  o.data_dir = v.data_dir();
  auto other = service::Service::open(o);
  EXPECT_EQ(reads_of(*other, v, id), 10u);
  EXPECT_EQ(node->audit_journal_status().pending, 0u);
  EXPECT_TRUE(export_verifies(*other, v));
}

// kill -9 of a node after its reads returned: its disk plays no part, and
// another node folds every one of its entries, once.
TEST(AuditPendingTable, ANodeKilledAfterItsReadsReturnedLosesNone) {
  if (!testing::vaults_on_postgres()) GTEST_SKIP() << kNotShared;
  TestVault v;
  const std::string id = one_subject_then_close(v);
  ASSERT_EQ(in_child([&] {
              // Never destroyed: like a crash, nothing is folded on the way out.
              auto* s = open_journaled(v, 0, 3600 * 1000).release();
              for (int i = 0; i < 7; ++i) s->get_subject(v.admin("customer_service"), id);
              return 0;
            }),
            0);
  auto survivor = open_journaled(v);
  EXPECT_EQ(survivor->audit_journal_status().pending, 7u);
  EXPECT_EQ(reads_of(*survivor, v, id), 7u);
  EXPECT_TRUE(export_verifies(*survivor, v));
  EXPECT_EQ(reads_of(*survivor, v, id), 7u);  // folded once
}

// Something else with write access to the database puts a row that is no
// entry into the pending table: the fold refuses the whole batch (an
// integrity failure, which the audit query reports), placing and deleting
// nothing, so the reads' entries beside it stay; once the row is gone the
// next fold places every one of them.
TEST(AuditPendingTable, ARowThatIsNoEntryStopsTheFoldAndLosesNothing) {
  if (!testing::vaults_on_postgres()) GTEST_SKIP() << kNotShared;
  TestVault v;
  const std::string id = one_subject_then_close(v);
  auto node = open_journaled(v, 0, 3600 * 1000);
  for (int i = 0; i < 5; ++i) node->get_subject(v.admin("customer_service"), id);
  IntruderRow intruder(v);
  EXPECT_EQ(testing::code_of([&] { reads_of(*node, v, id); }), ErrorCode::integrity);
  EXPECT_EQ(node->audit_journal_status().pending, 6u);
  intruder.remove();
  EXPECT_EQ(reads_of(*node, v, id), 5u);
  EXPECT_TRUE(export_verifies(*node, v));
}

// While the background fold fails (a row that is no entry stops every fold),
// a node's reads fail closed once max_pending_while_fold_fails of its
// entries wait in the table: it does not grow without a tree, as a local
// journal cannot outgrow its segments. Once the row is gone the folder
// recovers, reads are served again, and every read that returned is logged.
TEST(AuditPendingTable, WhileFoldsFailReadsStopAtTheBoundAndNoneIsLost) {
  if (!testing::vaults_on_postgres()) GTEST_SKIP() << kNotShared;
  TestVault v;
  const std::string id = one_subject_then_close(v);
  service::OpenOptions o;
  o.data_dir = v.data_dir();
  o.audit_journal = true;
  o.audit_journal_options.fold_interval_ms = 2;
  o.audit_journal_options.max_pending_while_fold_fails = 20;
  auto node = service::Service::open(o);
  IntruderRow intruder(v);
  const auto poll = [&](bool want_error) {  // bounded: 10 s
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (node->audit_journal_status().fold_error.empty() == want_error && std::chrono::steady_clock::now() < deadline)
      std::this_thread::yield();
    return node->audit_journal_status().fold_error.empty() != want_error;
  };
  ASSERT_TRUE(poll(true)) << "the folder never tried the poisoned table";
  std::size_t served = 0;
  ErrorCode refused = ErrorCode::internal;
  for (int i = 0; i < 200 && refused == ErrorCode::internal; ++i) try {
      node->get_subject(v.admin("customer_service"), id);
      ++served;
    } catch (const Error& e) {
      refused = e.code();
    }
  EXPECT_EQ(refused, ErrorCode::audit_unavailable);
  EXPECT_GE(served, 1u);
  EXPECT_LE(served, 20u);
  EXPECT_EQ(node->audit_journal_status().pending, served + 1);  // and the intruder's row
  intruder.remove();
  ASSERT_TRUE(poll(false)) << node->audit_journal_status().fold_error;
  node->get_subject(v.admin("customer_service"), id);
  EXPECT_EQ(reads_of(*node, v, id), served + 1);
  EXPECT_TRUE(export_verifies(*node, v));
}

// Two nodes read from four threads each while both fold every few
// milliseconds: the folds take each stream's rows in order and delete
// exactly what they placed, so no entry is lost or placed twice.
TEST(AuditPendingTable, TwoNodesReadingWhileBothFoldLoseNoEntryAndPlaceNoneTwice) {
  if (!testing::vaults_on_postgres()) GTEST_SKIP() << kNotShared;
  TestVault v;
  const std::string id = one_subject_then_close(v);
  auto a = open_journaled(v, 0, 3);
  auto b = open_journaled(v, 0, 3);
  std::vector<std::thread> readers;
  for (service::Service* node : {a.get(), b.get()})
    for (int t = 0; t < 4; ++t)
      readers.emplace_back([&, node] {
        for (int i = 0; i < 40; ++i) node->get_subject(v.admin("customer_service"), id);
      });
  for (auto& r : readers) r.join();
  EXPECT_EQ(reads_of(*a, v, id), 320u);
  std::uint64_t entries = 0;
  EXPECT_TRUE(export_verifies(*b, v, &entries));
  EXPECT_EQ(a->audit_journal_status().pending, 0u);
}

}  // namespace
}  // namespace custos
