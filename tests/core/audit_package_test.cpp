// Issue 15, finding 7: a subject's access package names only that subject,
// and stays provable offline. An audit entry that covers many subjects (a
// batch create, a campaign page) commits to its subject list; the package
// carries the subject's own opening, and `custos-audit` (the real binary)
// verifies membership, inclusion and the signed checkpoint end to end.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "custos/audit/audit_log.h"
#include "custos/crypto/signer.h"
#include "custos/store/sqlcipher_store.h"
#include "custos_audit/entry.h"
#include "custos_audit/verify.h"
#include "test_support.h"

namespace custos {
namespace {

using service::Json;
using testing::TestVault;

constexpr int kBatch = 1000;
constexpr int kConsented = 520;  // two campaign pages: 500 and 20

std::string email_of(int i) { return "u" + std::to_string(i) + "@example.com"; }

struct Package : ::testing::Test {
  TestVault v;
  std::vector<std::string> ids;  // the batch, in order
  std::string subject;           // whose package it is
  Json package;

  void SetUp() override {
    Json subjects = Json::array();
    for (int i = 0; i < kBatch; ++i) subjects.push_back({{"fields", {{"given_name", "G"}, {"email", email_of(i)}}}});
    const Json created = v.service->batch_create(v.admin(), {{"subjects", subjects}});
    ASSERT_EQ(created["created"], kBatch);
    for (const auto& r : created["results"]) ids.push_back(r["id"].get<std::string>());
    for (int i = 0; i < kConsented; ++i)
      v.service->record_consent(v.admin(), ids[static_cast<std::size_t>(i)],
                                {{"purpose", "email_marketing"}, {"channel", "email"}, {"event", "granted"},
                                 {"source", "web_form"}},
                                false);
    std::size_t served = 0;
    v.service->campaign_fetch(v.caller("marketing", "email_marketing"),
                              {{"purpose", "email_marketing"}, {"channel", "email"}, {"fields", {"email"}}},
                              [&](const std::string& line) {
                                if (Json::parse(line).contains("id")) ++served;
                                return true;
                              });
    ASSERT_EQ(served, static_cast<std::size_t>(kConsented));
    subject = ids[7];
    const auto officer = v.caller("compliance_officer", "dsr_fulfilment");
    const std::string request = v.service->dsr_create(officer, {{"type", "access"}, {"regime", "gdpr"},
                                                                {"identifier", {{"email", email_of(7)}}},
                                                                {"channel", "web_form"}})["id"];
    v.service->dsr_transition(officer, request, {{"to", "identity_verified"}, {"note", "checked"}});
    package = v.service->dsr_export(officer, request);
  }

  // The package and the verifier key as files; runs the real custos-audit.
  testing::RunResult verify(const Json& doc) {
    const auto file = v.dir.path() / "package.json";
    const auto key = v.dir.path() / "audit.vkey";
    std::ofstream(file) << doc.dump();
    std::ofstream(key) << v.service->audit_verifier_key() << "\n";
    return testing::run({CUSTOS_AUDIT_CLI_PATH, "verify-inclusion", file.string(), "--pubkey", key.string()});
  }

  // The access-log bundles of multi-subject entries (they carry a membership opening).
  std::vector<std::size_t> committed_bundles() const {
    std::vector<std::size_t> out;
    const Json& entries = package["access_log"]["entries"];
    for (std::size_t i = 0; i < entries.size(); ++i)
      if (entries[i].contains("membership")) out.push_back(i);
    return out;
  }
};

TEST_F(Package, NamesNoOtherSubjectOfABatchCreateOrACampaignPage) {
  std::set<std::string> operations;
  for (const std::size_t i : committed_bundles())
    operations.insert(package["access_log"]["entries"][i]["decoded"]["operation"].get<std::string>());
  EXPECT_EQ(operations, (std::set<std::string>{"subject.create", "campaign.fetch"}));
  // Every byte of the package, the base64 entries decoded too.
  std::string text = package.dump();
  for (const auto& e : package["access_log"]["entries"]) {
    const auto bytes = auditfmt::base64_decode(e["entry"].get<std::string>());
    ASSERT_TRUE(bytes);
    text.append(bytes->begin(), bytes->end());
  }
  int leaked = 0;
  for (const auto& other : ids)
    if (other != subject && text.find(other) != std::string::npos) ++leaked;
  EXPECT_EQ(leaked, 0) << "other subjects' ids in the access package";
  EXPECT_NE(text.find(subject), std::string::npos);
  EXPECT_LT(package.dump().size(), std::size_t{64} << 10) << "the package grew with other subjects";
}

TEST_F(Package, TheRealVerifierProvesMembershipInclusionAndCheckpoint) {
  ASSERT_EQ(committed_bundles().size(), 2u);
  const auto r = verify(package);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("ok: access package of subject " + subject), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("memberships=2"), std::string::npos) << r.out;
}

TEST_F(Package, ATamperedOpeningFailsWithExit5) {
  const std::size_t at = committed_bundles().at(0);
  const auto tampered = [&](const std::function<void(Json&)>& change) {
    Json doc = package;
    change(doc["access_log"]["entries"][at]["membership"]);
    return verify(doc);
  };
  const auto flip_hex = [](std::string s) {
    s[0] = s[0] == '0' ? '1' : '0';
    return s;
  };
  const std::vector<std::pair<std::string, std::function<void(Json&)>>> cases = {
      {"salt", [&](Json& m) { m["salt"] = flip_hex(m["salt"]); }},
      {"index", [&](Json& m) { m["index"] = m["index"].get<std::uint64_t>() ^ 1; }},
      {"count", [&](Json& m) { m["count"] = m["count"].get<std::uint64_t>() + 1; }},
      {"path", [&](Json& m) { m["path"][0] = flip_hex(m["path"][0]); }},
      {"shortened path", [&](Json& m) { m["path"].erase(m["path"].size() - 1); }},
      {"another subject", [&](Json& m) { m["subject_id"] = ids[8]; }},
      {"no opening", [&](Json& m) { m = nullptr; }},
  };
  for (const auto& [what, change] : cases) {
    const auto r = tampered(change);
    EXPECT_EQ(r.exit_code, 5) << what << ": " << r.out << r.err;
    EXPECT_NE(r.err.find("integrity failure"), std::string::npos) << what << ": " << r.err;
  }
}

TEST_F(Package, PerSubjectQueriesAndTheAuditorsViewStillNameEverySubject) {
  // The vault keeps the ids: a query by any subject of the batch finds the entry,
  // and the auditor (entitled to the full log) sees the whole list.
  const auto auditor = v.caller("auditor", "audit");
  const Json found = v.service->audit_entries(auditor, {{"subject", ids[999]}, {"operation", "subject.create"}});
  ASSERT_EQ(found["entries"].size(), 1u);
  EXPECT_EQ(found["entries"][0]["subject_ids"].size(), static_cast<std::size_t>(kBatch));
  EXPECT_EQ(found["entries"][0]["subject_count"], kBatch);
  // The auditor's export carries the openings beside each entry, and verifies.
  std::stringstream out;
  v.service->audit_export(auditor, out);
  const std::string bytes = out.str();
  EXPECT_NE(bytes.find(ids[999]), std::string::npos);
  std::istringstream in(bytes);
  const auto r = auditfmt::verify_export(in, v.service->audit_verifier_key());
  EXPECT_TRUE(r.ok) << r.error;
}

// ---- The journal path: the ids survive sealing, folding and a crash -----------

int in_child(const std::function<int()>& child) {
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(child());
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(AuditJournalSubjects, CommittedSubjectsSurviveTheJournalAndACrash) {
  testing::TempDir dir;
  const auto db_key = crypto::SecretKey::random();
  const auto journal_key = crypto::SecretKey::random();
  const crypto::Signer signer(crypto::SecretKey::random());
  const std::string a(32, 'a'), b(32, 'b'), c(32, 'c');
  const audit::Actor actor{"p", "role", "t", "purpose", "r"};
  const audit::Event page{"campaign.fetch", "", {"email"}, {}, true, "", "subjects=3", {a, b, c}};
  {  // Folded by the journal owner itself.
    auto store = testing::open_migrated_store(dir.path() / "db", db_key.clone());
    audit::AuditLog log(*store, signer, {});
    ASSERT_TRUE(log.enable_journal(dir.path() / "journal", journal_key));
    log.append_durable(actor, {page});
  }
  // Journaled, then the process dies before any fold.
  ASSERT_EQ(in_child([&] {
              auto store = store::open_sqlcipher(dir.path() / "db", db_key.clone()).release();
              auto* log = new audit::AuditLog(*store, signer, {});
              if (!log->enable_journal(dir.path() / "journal", journal_key)) return 20;
              log->append_durable(actor, {page});
              return log->journal_status().pending == 1 ? 0 : 21;
            }),
            0);
  auto store = store::open_sqlcipher(dir.path() / "db", db_key.clone());
  audit::AuditLog log(*store, signer, {});
  log.recover_journal(dir.path() / "journal", journal_key);
  for (const auto& sid : {a, b, c}) {
    audit::Query q;
    q.subject_id = sid;
    const auto entries = log.query(q);
    ASSERT_EQ(entries.size(), 2u) << sid;
    for (const auto& e : entries) {
      EXPECT_EQ(e.version, auditfmt::kEntryVersionCommitted);
      EXPECT_EQ(e.subject_ids, (std::vector<std::string>{a, b, c}));
      EXPECT_EQ(e.subject_count, 3u);
    }
  }
  // Nothing of the ids is in the entry bytes the tree hashes.
  const auto bytes = log.entry_bytes(0);
  EXPECT_EQ(std::string(bytes.begin(), bytes.end()).find(a), std::string::npos);
  std::stringstream out;
  log.export_to(out);
  const auto r = auditfmt::verify_export(out, log.verifier_key());
  EXPECT_TRUE(r.ok) << r.error;
}

}  // namespace
}  // namespace custos
