// Crash and fault injection (issue 20): the vault under a simulated power cut
// that drops every write not synced, and under a failure of the N-th file
// operation, for every N of a scenario. Real SQLCipher files, the real
// Service façade; the work runs in a forked child that ends with _exit (no
// destructor, nothing closed: a crash as far as the vault can tell), after
// FaultVfs and FaultJournalFs have put the files back to what a power cut
// would leave when the test asks for one. The parent then reopens the vault
// as the CLI does (which folds a crashed custosd's journal) and checks.
#define SQLITE_HAS_CODEC 1
#include <gtest/gtest.h>
#include <sqlcipher/sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>

#include "custos/error.h"
#include "custos_audit/verify.h"
#include "fault_journal_fs.h"
#include "fault_vfs.h"
#include "test_support.h"

namespace custos {
namespace {

using service::Json;
using testing::FaultJournalFs;
using testing::FaultVfs;
using testing::TempDir;
using testing::TestVault;

constexpr char kEmailA[] = "fault-a@example.com";
constexpr char kEmailB[] = "fault-b@example.com";

// custosd's mode (journal on) or the CLI's. The folder waits an hour, so
// only what the scenario does moves records into the tree (the file
// operations a scenario makes do not depend on a timer); small segments, so
// reads roll over segments and the journal creates files while reads run.
service::OpenOptions open_options(const TestVault& v, bool journal) {
  service::OpenOptions o;
  o.data_dir = v.data_dir();
  o.audit_journal = journal;
  o.audit_journal_options.segment_bytes = 16 << 10;  // ~50 entries
  o.audit_journal_options.fold_interval_ms = 3'600'000;
  o.checkpoint_every_ms = 3'600'000;  // no signed checkpoint on a timer either
  return o;
}

// Runs `child` in a forked process that ends with _exit; its exit code, -1 if it died.
int in_child(const std::function<int()>& child) {
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::alarm(60);  // a child that hangs (a deadlock after a fault) dies and fails the test
    int rc = 99;
    try {
      rc = child();
    } catch (...) {
      rc = 98;  // the harness itself failed
    }
    ::_exit(rc);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// What the child saw: the steps acknowledged (returned), the step that threw
// and its error code, the reads that returned plaintext per subject.
struct Outcome {
  Json j;
  bool acked(const std::string& step) const {
    for (const auto& s : j["acked"])
      if (s == step) return true;
    return false;
  }
  std::size_t reads_returned(const std::string& id) const {
    return j["reads"].contains(id) ? j["reads"][id].get<std::size_t>() : 0;
  }
};

// The scenario's steps, run on `s` while recording into `out`. Stops at the
// first step that throws (a later step would only meet the same broken
// connection) unless `go_on` (reads, which are independent).
class Steps {
 public:
  Steps(service::Service& s, Json& out) : s_(s), out_(out) {
    if (!out_.contains("acked")) out_["acked"] = Json::array();
    if (!out_.contains("reads")) out_["reads"] = Json::object();
  }

  bool run(const std::string& name, const std::function<void()>& step, bool go_on = false) {
    if (stopped_) return false;
    try {
      step();
      out_["acked"].push_back(name);
      return true;
    } catch (const Error& e) {
      out_["failed"].push_back({{"step", name}, {"code", code_name(e.code())}});
    } catch (const std::exception& e) {
      out_["failed"].push_back({{"step", name}, {"code", "not a custos::Error"}, {"what", e.what()}});
      out_["foreign_exception"] = true;
    }
    if (!go_on) stopped_ = true;
    return false;
  }

  // One audited read that must return the subject's expected given name.
  bool read(const std::string& name, const std::string& id, const std::string& given_name, bool go_on = false) {
    return run(name, [&] {
      const Json subject = s_.get_subject(caller("customer_service"), id);
      if (subject["fields"]["given_name"] != given_name) out_["wrong_plaintext"] = true;
      out_["reads"][id] = out_["reads"].value(id, 0) + 1;
    }, go_on);
  }

  service::Caller caller(const std::string& purpose) {
    service::Caller c;
    c.principal = s_.local_operator();
    c.purpose = purpose;
    return c;
  }

 private:
  service::Service& s_;
  Json& out_;
  bool stopped_ = false;
};

// create A, consent, update, two reads, create B, read B, erase A, read B:
// every kind of write the façade makes, audited reads, and an erasure (whose
// WAL checkpoint is the one sync a write makes with synchronous=NORMAL).
void lifecycle(service::Service& s, TestVault&, Json& out) {
  Steps st(s, out);
  std::string a, b;
  st.run("create A", [&] {
    a = s.create_subject(st.caller("administration"), {{"fields", {{"email", kEmailA}, {"given_name", "Ada"}}}})["id"];
    out["a"] = a;
  });
  st.run("consent A", [&] {
    s.record_consent(st.caller("administration"), a,
                     {{"purpose", "email_marketing"}, {"channel", "email"}, {"event", "granted"}, {"source", "web_form"}},
                     false);
  });
  st.run("update A", [&] { s.patch_subject(st.caller("administration"), a, {{"fields", {{"given_name", "Grace"}}}}); });
  st.read("read A 1", a, "Grace");
  st.read("read A 2", a, "Grace");
  st.run("create B", [&] {
    b = s.create_subject(st.caller("administration"), {{"fields", {{"email", kEmailB}, {"given_name", "Bea"}}}})["id"];
    out["b"] = b;
  });
  st.read("read B 1", b, "Bea");
  st.run("erase A", [&] { s.erase_subject(st.caller("administration"), a, "fault test"); });
  st.read("read B 2", b, "Bea");
}

// Many reads of one subject (created before any fault is armed): segments
// fill and roll over. Reads go on after one fails.
void reads(service::Service& s, Json& out, int n) {
  Steps st(s, out);
  const std::string a = out["a"];
  for (int i = 0; i < n; ++i) st.read("read A " + std::to_string(i), a, "Ada", true);
}

enum class Fault { none, store, journal, allocation };

struct Run {
  bool journal = false;
  Fault fault = Fault::none;
  std::uint64_t nth = 0;  // with fault: which call fails
  bool power_cut = false;
  bool persistent = false;  // journal faults: every call from the n-th on fails
  std::function<void(service::Service&, TestVault&, Json&)> scenario;
};

// Runs `run` in a child over the vault `v` (closed) and returns what it saw,
// with "exit" (the child's exit code), "fired" (the call that failed) and
// "calls" (the calls of the faulted kind the scenario made).
Outcome in_crashing_child(TestVault& v, const Run& run, const Json& before = Json::object()) {
  const std::filesystem::path file = v.dir.path() / "outcome.json";
  std::filesystem::remove(file);
  const int rc = in_child([&] {
    // Never destroyed either: the leaked service's threads and connections
    // use them until _exit.
    if (run.fault == Fault::allocation) testing::sqlite_malloc_fault::install();
    FaultVfs& vfs = *new FaultVfs(v.data_dir());
    FaultJournalFs& jfs = *new FaultJournalFs;
    Json out = before;
    // Never destroyed: a crash, as far as the vault can tell.
    service::Service* s = nullptr;
    try {
      s = service::Service::open(open_options(v, run.journal)).release();
      if (run.journal && !s->audit_journal_active()) out["journal_inactive"] = true;
    } catch (const std::exception& e) {
      out["open_failed"] = e.what();
    }
    if (s) {
      if (run.fault == Fault::store) vfs.fail_nth(run.nth);
      if (run.fault == Fault::journal) jfs.fail_nth(run.nth, run.persistent);
      if (run.fault == Fault::allocation) testing::sqlite_malloc_fault::fail_nth(run.nth);
      vfs.reset_counts();
      run.scenario(*s, v, out);
      switch (run.fault) {
        case Fault::journal:
          out["fired"] = jfs.fired();
          out["calls"] = jfs.calls();
          break;
        case Fault::allocation:
          out["fired"] = testing::sqlite_malloc_fault::fired() ? "malloc" : "";
          out["calls"] = testing::sqlite_malloc_fault::calls();
          break;
        default:
          out["fired"] = vfs.fired();
          out["calls"] = vfs.counts().total();
      }
    }
    {
      std::ofstream f(file);
      f << out.dump();
    }
    if (run.power_cut) {
      vfs.power_cut();
      jfs.power_cut();
    }
    return 0;
  });
  Outcome o;
  std::ifstream f(file);
  if (rc == 0 && f) o.j = Json::parse(f);
  o.j["exit"] = rc;
  return o;
}

// ---- What the reopened vault holds ----------------------------------------

struct Reopened {
  TestVault& v;
  std::unique_ptr<service::Service> s;

  explicit Reopened(TestVault& vault) : v(vault) {
    service::OpenOptions o;  // the CLI's mode: folds what a crashed custosd left
    o.data_dir = v.data_dir();
    s = service::Service::open(o);
  }

  // Allowed entries of `operation` on `subject`.
  std::size_t entries(const std::string& subject, const std::string& operation) {
    const Json page = s->audit_entries(v.caller("auditor", "audit"),
                                       {{"subject", subject}, {"operation", operation}, {"limit", "1000"}});
    std::size_t n = 0;
    for (const auto& e : page["entries"]) n += e["outcome"] == "allowed" ? 1 : 0;
    return n;
  }

  bool log_verifies(std::string* error) {
    std::stringstream out;
    s->audit_export(v.caller("auditor", "audit"), out);
    const auto result = auditfmt::verify_export(out, s->audit_verifier_key());
    *error = result.error;
    return result.ok;
  }

  // The id of the subject with `email`, empty if none (an erased one has no index entry).
  std::string find(const std::string& email) {
    const Json found = s->find_subjects(v.admin("customer_service"), "email", email);
    return found["subjects"].empty() ? "" : found["subjects"][0]["id"].get<std::string>();
  }
};

// A subject as the reopened vault holds it, and the audit entries about it,
// counted before anything here reads it (reads are audited too).
struct SubjectState {
  std::string id;
  std::size_t creates = 0, updates = 0, consents = 0, erases = 0, reads = 0;
  enum { absent, active, erased } state = absent;
  std::string given_name;
  std::size_t consent_history = 0;
};

SubjectState subject_state(Reopened& r, const std::string& known_id, const std::string& email) {
  SubjectState st;
  st.id = known_id;
  if (st.id.empty()) st.id = r.find(email);  // its create never returned: maybe it landed anyway
  if (st.id.empty()) return st;
  st.creates = r.entries(st.id, "subject.create");
  st.updates = r.entries(st.id, "subject.update");
  st.consents = r.entries(st.id, "consent.record");
  st.erases = r.entries(st.id, "subject.erase");
  st.reads = r.entries(st.id, "subject.read");
  try {
    const Json subject = r.s->get_subject(r.v.admin("customer_service"), st.id);
    st.state = SubjectState::active;
    st.given_name = subject["fields"].value("given_name", "");
    st.consent_history = r.s->get_consents(r.v.admin(), st.id)["history"].size();
  } catch (const Error& e) {
    if (e.code() != ErrorCode::not_found) throw;
    st.state = st.creates ? SubjectState::erased : SubjectState::absent;
  }
  return st;
}

// Nothing half-applied: each write is in the vault exactly when its audit
// entry is (they commit in one transaction), and the log verifies.
void expect_whole(Reopened& r, const SubjectState& a, const std::string& context) {
  SCOPED_TRACE(context);
  std::string error;
  EXPECT_TRUE(r.log_verifies(&error)) << error;
  if (a.id.empty()) return;
  // A create that returned may be lost to a power cut (synchronous=NORMAL), with its entry.
  EXPECT_EQ(a.creates, a.state == SubjectState::absent ? 0u : 1u) << "a subject without its create entry, or two";
  EXPECT_EQ(a.erases, a.state == SubjectState::erased ? 1u : 0u);
  if (a.state == SubjectState::active) {
    EXPECT_EQ(a.updates, a.given_name == "Grace" ? 1u : 0u) << "given_name " << a.given_name;
    EXPECT_EQ(a.consents, a.consent_history);
  }
}

// Everything acknowledged is there: each returned write, and the audit
// entry of each read that returned plaintext.
void expect_acknowledged(const Outcome& o, const SubjectState& a, const SubjectState& b, const std::string& context) {
  SCOPED_TRACE(context);
  if (o.acked("create A")) { EXPECT_NE(a.state, SubjectState::absent); }
  if (o.acked("consent A") && a.state == SubjectState::active) { EXPECT_EQ(a.consent_history, 1u); }
  if (o.acked("update A") && a.state == SubjectState::active) { EXPECT_EQ(a.given_name, "Grace"); }
  if (o.acked("update A")) { EXPECT_EQ(a.updates, 1u); }
  if (o.acked("erase A")) { EXPECT_EQ(a.state, SubjectState::erased); }
  if (o.acked("create B")) { EXPECT_EQ(b.state, SubjectState::active); }
  if (!a.id.empty()) { EXPECT_GE(a.reads, o.reads_returned(a.id)) << "a read that returned plaintext has no entry"; }
  if (!b.id.empty()) { EXPECT_GE(b.reads, o.reads_returned(b.id)) << "a read that returned plaintext has no entry"; }
}

// The child ended on its own and every failure it met was a custos::Error
// (the process reports, it does not crash), and no read returned wrong data.
void expect_reported(const Outcome& o, const std::string& context) {
  SCOPED_TRACE(context);
  EXPECT_EQ(o.j["exit"], 0) << "the process crashed: " << o.j.dump();
  EXPECT_FALSE(o.j.contains("foreign_exception")) << o.j.dump();
  EXPECT_FALSE(o.j.contains("wrong_plaintext")) << o.j.dump();
  EXPECT_FALSE(o.j.contains("open_failed")) << o.j.dump();
  EXPECT_FALSE(o.j.contains("journal_inactive")) << o.j.dump();
}

std::string mode(bool journal) { return journal ? "journal on" : "journal off"; }

// ---- The shim itself ------------------------------------------------------

// The model, on a bare SQLite file: a commit that was synced survives the
// power cut, one that was not is gone, and the file still opens.
TEST(FaultVfs, APowerCutKeepsSyncedCommitsAndDropsTheRest) {
  TempDir dir;
  const std::string file = (dir.path() / "t.db").string();
  {
    FaultVfs vfs(dir.path());
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(file.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db,
                           "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; CREATE TABLE t(x);"
                           "INSERT INTO t VALUES (1); PRAGMA synchronous=OFF; INSERT INTO t VALUES (2);",
                           nullptr, nullptr, nullptr),
              SQLITE_OK);
    EXPECT_GT(vfs.counts().syncs, 0u);
    vfs.power_cut();
    sqlite3_close(db);  // its writes fail now: the power is off
  }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(file.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "SELECT group_concat(x) FROM t", -1, &st, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(st, 0)), "1");
  sqlite3_finalize(st);
  sqlite3_close(db);
}

// ---- Crashes and power cuts -----------------------------------------------

// A crash of the process (no power cut) in either mode: every write that
// returned and the entry of every read that returned are in the reopened
// vault, and the log verifies.
TEST(Crash, LosesNoReadThatReturnedAndNoAcknowledgedWrite) {
  if (testing::vaults_on_postgres()) GTEST_SKIP() << "SQLCipher files and the local journal only";
  for (const bool journal : {false, true}) {
    TestVault v;
    v.service.reset();
    const Outcome o = in_crashing_child(v, {journal, Fault::none, 0, false, false, lifecycle});
    expect_reported(o, mode(journal));
    ASSERT_FALSE(o.j.contains("failed")) << o.j.dump();
    Reopened r(v);
    const SubjectState a = subject_state(r, o.j.value("a", ""), kEmailA);
    const SubjectState b = subject_state(r, o.j.value("b", ""), kEmailB);
    EXPECT_EQ(a.reads, 2u) << mode(journal);
    EXPECT_EQ(b.reads, 2u) << mode(journal);
    expect_acknowledged(o, a, b, mode(journal));
    expect_whole(r, a, mode(journal));
  }
}

// A power cut after the scenario: what was never synced is gone, but the
// vault opens, nothing is half-applied, the log verifies, and the erasure
// that returned stays done (its WAL checkpoint syncs; a subject must not
// come back after a power cut).
TEST(PowerCut, KeepsTheErasureAndLeavesNothingHalfApplied) {
  if (testing::vaults_on_postgres()) GTEST_SKIP() << "SQLCipher files and the local journal only";
  for (const bool journal : {false, true}) {
    TestVault v;
    v.service.reset();
    const Outcome o = in_crashing_child(v, {journal, Fault::none, 0, true, false, lifecycle});
    expect_reported(o, mode(journal));
    ASSERT_TRUE(o.acked("erase A")) << o.j.dump();
    Reopened r(v);
    const SubjectState a = subject_state(r, o.j.value("a", ""), kEmailA);
    EXPECT_EQ(a.state, SubjectState::erased) << mode(journal) << ": an erased subject came back after a power cut";
    // Everything before the erasure was synced with it.
    EXPECT_EQ(a.updates, 1u) << mode(journal);
    EXPECT_EQ(a.consents, 1u) << mode(journal);
    if (!journal) { EXPECT_EQ(a.reads, 2u) << "the reads' entries committed before the erasure's checkpoint"; }
    expect_whole(r, a, mode(journal));
  }
}

// custosd's mode: reads whose entries were folded (a query folds at once,
// committing with an fsync before the journal space can be reused) survive
// a power cut; the reads after it live only in the kernel's page cache and
// are lost with it (docs/performance.md: "not a power cut in the next
// moments"), which the log must survive too.
TEST(PowerCut, KeepsEveryFoldedReadOfTheJournal) {
  if (testing::vaults_on_postgres()) GTEST_SKIP() << "SQLCipher files and the local journal only";
  TestVault v;
  const std::string a =
      v.service->create_subject(v.admin(), {{"fields", {{"email", kEmailA}, {"given_name", "Ada"}}}})["id"];
  v.service.reset();
  const Outcome o = in_crashing_child(
      v,
      {true, Fault::none, 0, true, false,
       [](service::Service& s, TestVault& tv, Json& out) {
         reads(s, out, 30);
         // An auditor's query folds the journal first (durably).
         s.audit_entries(tv.caller("auditor", "audit"), {{"limit", "1"}});
         out["folded"] = out["reads"][out["a"].get<std::string>()];
         reads(s, out, 20);
       }},
      {{"a", a}});
  expect_reported(o, "journal on");
  ASSERT_EQ(o.j["folded"], 30) << o.j.dump();
  Reopened r(v);
  const SubjectState st = subject_state(r, a, kEmailA);
  EXPECT_GE(st.reads, 30u) << "a folded read was lost to the power cut";
  EXPECT_LE(st.reads, 50u);
  expect_whole(r, st, "journal on");
}

// ---- The N-th operation fails ---------------------------------------------

// For every N: the N-th write, sync or truncate of the store fails (once),
// in the lifecycle scenario, with the journal on and off; then the process
// crashes, with and without a power cut. The process reports an error; on
// reopening nothing is half-applied and the log verifies; without the power
// cut nothing acknowledged is lost either.
TEST(FaultLoop, EveryFailedStoreWriteSyncOrTruncate) {
  if (testing::vaults_on_postgres()) GTEST_SKIP() << "SQLCipher files and the local journal only";
  constexpr std::uint64_t kBound = 400;  // the scenario makes far fewer (counted below)
  for (const bool journal : {false, true}) {
    std::uint64_t calls = 0;
    {
      TestVault v;
      v.service.reset();
      const Outcome o = in_crashing_child(v, {journal, Fault::none, 0, false, false, lifecycle});
      expect_reported(o, mode(journal));
      calls = o.j["calls"];
    }
    ASSERT_GT(calls, 5u) << mode(journal);
    ASSERT_LT(calls, kBound) << mode(journal);
    RecordProperty(journal ? "store_calls_journal_on" : "store_calls_journal_off", static_cast<int>(calls));
    std::size_t fired = 0;
    for (std::uint64_t n = 1; n <= calls; ++n) {
      for (const bool cut : {false, true}) {
        const std::string context = mode(journal) + ", store call " + std::to_string(n) + (cut ? ", power cut" : "");
        TestVault v;
        v.service.reset();
        const Outcome o = in_crashing_child(v, {journal, Fault::store, n, cut, false, lifecycle});
        expect_reported(o, context);
        if (!o.j.value("fired", "").empty()) ++fired;
        Reopened r(v);
        const SubjectState a = subject_state(r, o.j.value("a", ""), kEmailA);
        const SubjectState b = subject_state(r, o.j.value("b", ""), kEmailB);
        expect_whole(r, a, context);
        if (!cut) expect_acknowledged(o, a, b, context);
        if (cut && o.acked("erase A")) { EXPECT_EQ(a.state, SubjectState::erased) << context; }
        if (::testing::Test::HasFailure()) return;  // one N's report is enough
      }
    }
    // Every N hits a call when the scenario repeats itself exactly; allow a
    // few misses for a background fold or checkpoint that moved.
    EXPECT_GE(10 * fired, 9 * 2 * calls) << mode(journal) << ": " << fired << " of " << 2 * calls << " runs hit a call";
  }
}

// For every N: the N-th file call of the journal (open, allocate, sync of
// its directory, rename, remove) fails, while 120 reads roll over 16 KiB
// segments. A read that cannot journal fails with audit_unavailable and
// returns nothing; every read that returned is in the log after a crash.
TEST(FaultLoop, EveryFailedJournalFileCall) {
  if (testing::vaults_on_postgres()) GTEST_SKIP() << "SQLCipher files and the local journal only";
  constexpr std::uint64_t kBound = 200;
  const auto scenario = [](service::Service& s, TestVault&, Json& out) { reads(s, out, 120); };
  auto fresh = [](TestVault& v) {
    const std::string a =
        v.service->create_subject(v.admin(), {{"fields", {{"email", kEmailA}, {"given_name", "Ada"}}}})["id"];
    v.service.reset();
    return a;
  };
  std::uint64_t calls = 0;
  {
    TestVault v;
    const std::string a = fresh(v);
    const Outcome o = in_crashing_child(v, {true, Fault::journal, 0, false, false, scenario}, {{"a", a}});
    expect_reported(o, "count");
    calls = o.j["calls"];
  }
  ASSERT_GT(calls, 2u);
  ASSERT_LT(calls, kBound);
  RecordProperty("journal_calls", static_cast<int>(calls));
  std::size_t failed_reads = 0;
  for (std::uint64_t n = 1; n <= calls + 2; ++n) {  // +2: the background spare may come later in one run
    for (const auto& [persistent, cut] : {std::pair{false, false}, {false, true}, {true, false}, {true, true}}) {
      const std::string context = "journal call " + std::to_string(n) + (persistent ? " and every later one" : "") +
                                  (cut ? ", power cut" : "");
      TestVault v;
      const std::string a = fresh(v);
      const Outcome o = in_crashing_child(v, {true, Fault::journal, n, cut, persistent, scenario}, {{"a", a}});
      failed_reads += o.j.value("failed", Json::array()).size();
      expect_reported(o, context);
      for (const auto& f : o.j.value("failed", Json::array()))
        EXPECT_EQ(f["code"], "audit_unavailable") << context;
      Reopened r(v);
      const SubjectState st = subject_state(r, a, kEmailA);
      expect_whole(r, st, context);
      if (!cut) { EXPECT_GE(st.reads, o.reads_returned(a)) << context << ": a read that returned has no entry"; }
      if (::testing::Test::HasFailure()) return;
    }
  }
  EXPECT_GT(failed_reads, 0u) << "no fault ever reached a read: the loop tests nothing";
}

// Allocations: SQLite (and SQLCipher, through it) fails the N-th
// allocation of the lifecycle scenario, journal off. There are thousands,
// so the loop takes every k-th, k chosen for at most kRuns runs (the first
// 50 are all taken: opening statements and the first transaction). The
// process reports an error; nothing acknowledged is lost or half-applied.
TEST(FaultLoop, SampledFailedSqliteAllocations) {
  if (testing::vaults_on_postgres()) GTEST_SKIP() << "SQLCipher files only";
  constexpr std::uint64_t kRuns = 150;
  std::uint64_t calls = 0;
  {
    TestVault v;
    v.service.reset();
    const Outcome o = in_crashing_child(v, {false, Fault::allocation, 0, false, false, lifecycle});
    expect_reported(o, "count");
    calls = o.j["calls"];
  }
  ASSERT_GT(calls, 50u);
  RecordProperty("sqlite_allocations", static_cast<int>(calls));
  const std::uint64_t stride = std::max<std::uint64_t>(1, (calls - 50) / (kRuns - 50));
  for (std::uint64_t n = 1; n <= calls; n += n < 50 ? 1 : stride) {
    const std::string context = "allocation " + std::to_string(n);
    TestVault v;
    v.service.reset();
    const Outcome o = in_crashing_child(v, {false, Fault::allocation, n, false, false, lifecycle});
    expect_reported(o, context);
    Reopened r(v);
    const SubjectState a = subject_state(r, o.j.value("a", ""), kEmailA);
    const SubjectState b = subject_state(r, o.j.value("b", ""), kEmailB);
    expect_whole(r, a, context);
    expect_acknowledged(o, a, b, context);
    if (::testing::Test::HasFailure()) return;
  }
}

}  // namespace
}  // namespace custos
