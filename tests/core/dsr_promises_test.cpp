// Issue 15's data-subject-request promises, each written as the attack or
// the oversight first:
//   finding 6  an identifier shared by duplicates: the request covers them all
//   finding 7  the export needs dsr_fulfilment (not any purpose the role holds)
//   finding 9  exports stream (JSON package and CSV tables)
//   four eyes  dsr.erasure_second_approver
//   holds      dsr.erasure_under_hold: deny
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "custos/error.h"
#include "custos_audit/verify.h"
#include "test_support.h"

namespace custos {
namespace {

using service::Json;
using testing::code_of;
using testing::TestVault;

// Sets `key: value` in the `dsr:` section of the vault's roles.yaml and reloads.
void set_dsr_policy(TestVault& v, const std::string& key, const std::string& value) {
  const auto file = v.data_dir() / "policies" / "roles.yaml";
  std::stringstream text;
  text << std::ifstream(file).rdbuf();
  std::string yaml = text.str();
  const std::string line = "  " + key + ": ";
  const auto at = yaml.find(line);
  ASSERT_NE(at, std::string::npos) << key;
  yaml.replace(at, yaml.find('\n', at) - at, line + value);
  std::ofstream(file) << yaml;
  std::string error;
  ASSERT_TRUE(v.service->reload_policies(&error)) << error;
}

struct DsrPromises : ::testing::Test {
  TestVault v;
  service::Caller officer = v.caller("compliance_officer", "dsr_fulfilment");

  // A subject; the same email twice makes a deliberate duplicate (on_conflict: create).
  std::string add(const std::string& email, const std::string& name) {
    return v.service->create_subject(v.admin(),
                                     {{"fields", {{"email", email}, {"given_name", name}}}, {"on_conflict", "create"}})["id"];
  }
  std::string request(const std::string& type, const std::string& email) {
    const Json q = v.service->dsr_create(
        officer, {{"type", type}, {"regime", "gdpr"}, {"identifier", {{"email", email}}}, {"channel", "web_form"}});
    return q["id"];
  }
  Json move(const std::string& id, Json body, const service::Caller* who = nullptr) {
    return v.service->dsr_transition(who ? *who : officer, id, body);
  }
  std::string verified(const std::string& type, const std::string& email) {
    const std::string id = request(type, email);
    move(id, {{"to", "identity_verified"}});
    move(id, {{"to", "in_progress"}});
    return id;
  }
  bool readable(const std::string& subject) {
    return code_of([&] { v.service->get_subject(v.admin("dsr_fulfilment"), subject); }) == ErrorCode::internal;
  }
};

// ---- Finding 6: duplicates break data-subject requests -----------------------

TEST_F(DsrPromises, IntakeRecordsEveryMatchedSubject) {
  const std::string a = add("ada@example.com", "Ada");
  const std::string b = add("ADA@example.com", "Ada L.");  // the re-import
  add("someone@example.com", "Other");
  const Json q = v.service->dsr_get(officer, request("access", "ada@example.com"));
  std::set<std::string> matched;
  for (const auto& id : q["subject_ids"]) matched.insert(id.get<std::string>());
  EXPECT_EQ(matched, (std::set<std::string>{a, b})) << q.dump();
  // Both subjects' audit trails show the intake.
  for (const auto& s : {a, b}) {
    const Json entries = v.service->audit_entries(v.caller("auditor", "audit"), {{"subject", s}, {"operation", "dsr.intake"}});
    EXPECT_EQ(entries["entries"].size(), 1u) << s;
  }
}

TEST_F(DsrPromises, ErasureCoversEveryMatchedSubject) {
  const std::string a = add("ada@example.com", "Ada");
  const std::string b = add("ADA@example.com", "Ada L.");
  const std::string other = add("someone@example.com", "Other");
  const std::string id = verified("erasure", "ada@example.com");
  const Json done = move(id, {{"to", "completed"}});
  EXPECT_EQ(done["status"], "completed") << done.dump();
  EXPECT_FALSE(readable(a));
  EXPECT_FALSE(readable(b));
  EXPECT_TRUE(readable(other));
  std::set<std::string> erased;
  for (const auto& s : done["report"]["erased"]["subjects"]) erased.insert(s.get<std::string>());
  EXPECT_EQ(erased, (std::set<std::string>{a, b}));
}

TEST_F(DsrPromises, AccessExportCoversEveryMatchedSubject) {
  const std::string a = add("ada@example.com", "Ada");
  const std::string b = add("ADA@example.com", "Ada L.");
  v.service->add_touchpoint(v.admin(), b, {{"channel", "email"}, {"type", "inquiry"}, {"notes", "second record"}});
  const std::string id = verified("access", "ada@example.com");
  const Json ex = v.service->dsr_export(officer, id);
  ASSERT_EQ(ex["subjects"].size(), 2u) << ex.dump();
  std::set<std::string> names;
  for (const auto& s : ex["subjects"]) names.insert(s["fields"]["given_name"].get<std::string>());
  EXPECT_EQ(names, (std::set<std::string>{"Ada", "Ada L."}));
  ASSERT_EQ(ex["touchpoints"].size(), 1u);
  EXPECT_EQ(ex["touchpoints"][0]["subject_id"], b);
  EXPECT_EQ(ex["touchpoints"][0]["notes"], "second record");
  // Each subject has its own access log, each entry proven, none naming the other.
  ASSERT_EQ(ex["further_access_logs"].size(), 1u);
  std::map<std::string, const Json*> logs = {{ex["access_log"]["subject_id"], &ex["access_log"]},
                                             {ex["further_access_logs"][0]["subject_id"], &ex["further_access_logs"][0]}};
  ASSERT_EQ(logs.size(), 2u);
  bool saw_b_create = false;
  for (const auto& [owner, log] : logs) {
    const std::string other = owner == a ? b : a;
    EXPECT_EQ((*log)["entries"].dump().find(other), std::string::npos) << owner << "'s log names " << other;
    for (const auto& e : (*log)["entries"]) {
      const auto r = auditfmt::verify_inclusion_bundle(e.dump(), v.service->audit_verifier_key());
      EXPECT_TRUE(r.ok) << r.error;
      saw_b_create = saw_b_create || (owner == b && e["decoded"]["operation"] == "subject.create" &&
                                      e["decoded"]["subject_id"] == b);
    }
  }
  EXPECT_TRUE(saw_b_create);
}

TEST_F(DsrPromises, OfficerNamesWhichMatchedSubjectsAndWhy) {
  const std::string a = add("ada@example.com", "Ada");
  const std::string b = add("ADA@example.com", "Ada Lovelace (other person)");
  const std::string id = verified("erasure", "ada@example.com");
  // Leaving subjects out needs a reason, and only matched subjects can be named.
  EXPECT_EQ(code_of([&] { move(id, {{"to", "completed"}, {"subjects", {a}}}); }), ErrorCode::invalid_field);
  const std::string stranger = add("someone@example.com", "Other");
  EXPECT_EQ(code_of([&] { move(id, {{"to", "completed"}, {"subjects", {stranger}}, {"reason", "x"}}); }),
            ErrorCode::invalid_field);
  const Json done = move(id, {{"to", "completed"}, {"subjects", {a}}, {"reason", "b is a different person (DOB differs)"}});
  EXPECT_EQ(done["status"], "completed_with_exceptions");
  EXPECT_FALSE(readable(a));
  EXPECT_TRUE(readable(b));
  const Json& ex = done["report"]["exceptions"];
  ASSERT_EQ(ex.size(), 1u) << done.dump();
  EXPECT_EQ(ex[0]["subject_id"], b);
  EXPECT_NE(ex[0]["detail"].get<std::string>().find("different person"), std::string::npos);
}

// A hostile review (2026-12-03): the export ignored the officer's exclusion
// and handed the requester the other person's whole record. Once completed,
// the package holds only the covered subjects: not the excluded one's data,
// touchpoints, access log or id, in JSON and in every CSV table.
TEST_F(DsrPromises, AnAccessPackageLeavesOutTheSubjectsTheOfficerExcluded) {
  const std::string eve = add("family@example.com", "Eve");
  const std::string frank = add("family@example.com", "Frank");
  v.service->add_touchpoint(v.admin(), frank, {{"channel", "email"}, {"type", "inquiry"}, {"notes", "Frank private note"}});
  const std::string id = verified("access", "family@example.com");
  EXPECT_EQ(v.service->dsr_export(officer, id)["subjects"].size(), 2u);  // the officer's review copy
  const Json done = move(id, {{"to", "completed"}, {"subjects", {eve}}, {"reason", "Frank is a different person"}});
  ASSERT_EQ(done["status"], "completed_with_exceptions") << done.dump();
  const Json ex = v.service->dsr_export(officer, id);
  ASSERT_EQ(ex["subjects"].size(), 1u) << ex.dump();
  EXPECT_EQ(ex["subject"]["fields"]["given_name"], "Eve");
  EXPECT_EQ(ex["access_log"]["subject_id"], eve);
  EXPECT_FALSE(ex.contains("further_access_logs"));
  EXPECT_EQ(ex.dump().find(frank), std::string::npos) << "the package names the excluded subject";
  EXPECT_EQ(ex.dump().find("Frank"), std::string::npos) << "the package holds the excluded subject's data";
  for (const std::string table : {"fields", "touchpoints", "orders", "consent_history", "access_log"}) {
    std::string csv;
    v.service->dsr_export(officer, id, {"csv", table}, [&](std::string_view chunk) {
      csv.append(chunk);
      return true;
    });
    EXPECT_EQ(csv.find(frank), std::string::npos) << table;
    EXPECT_EQ(csv.find("Frank"), std::string::npos) << table;
  }
}

// A hostile review (2026-12-03): a refused attempt to give Bob Ada's e-mail
// is committed to Ada too (she is the subject matched), and her access
// package showed the entry with Bob's id. The entry is withheld (inclusion
// proven, bytes not given) and the package still verifies.
TEST_F(DsrPromises, AnAccessPackageNamesNoSubjectARefusalWasAbout) {
  const std::string ada = add("ada@example.com", "Ada");
  const std::string bob = add("bob@example.com", "Bob");
  EXPECT_EQ(code_of([&] { v.service->patch_subject(v.caller("sales", "sales"), bob, {{"fields", {{"email", "ada@example.com"}}}}); }),
            ErrorCode::duplicate_subject);
  const std::string id = verified("access", "ada@example.com");
  const Json ex = v.service->dsr_export(officer, id);
  EXPECT_EQ(ex.dump().find(bob), std::string::npos) << "Ada's package names Bob";
  std::size_t withheld = 0;
  for (const auto& b : ex["access_log"]["entries"]) withheld += b.contains("withheld") ? 1 : 0;
  EXPECT_GE(withheld, 1u) << ex["access_log"].dump();
  std::istringstream package(ex.dump());
  const auto r = auditfmt::verify_package(package, v.service->audit_verifier_key());
  EXPECT_TRUE(r.ok) << r.error;
}

// A hostile review (2026-12-03): values a CRM role stored went into the CSV
// tables as they were, so "=HYPERLINK(...)" ran where the package was opened
// in a spreadsheet. A cell that reads as a formula gets a leading apostrophe;
// a phone number or an amount does not.
TEST_F(DsrPromises, CsvTablesCarryNoFormula) {
  const std::string id = v.service->create_subject(
      v.admin(), {{"fields", {{"email", "f@example.com"}, {"given_name", "=1+2"}, {"phone", "+4915112345678"}}}})["id"];
  v.service->add_touchpoint(v.caller("service", "customer_service"), id,
                            {{"channel", "phone"}, {"type", "=HYPERLINK(\"http://evil.example/\",\"open\")"},
                             {"notes", "@SUM(1+1)*cmd|' /C calc'!A0"}});
  const std::string request = verified("access", "f@example.com");
  const auto table = [&](const std::string& name) {
    std::string csv;
    v.service->dsr_export(officer, request, {"csv", name}, [&](std::string_view chunk) {
      csv.append(chunk);
      return true;
    });
    return csv;
  };
  const std::string fields = table("fields"), touchpoints = table("touchpoints");
  EXPECT_NE(fields.find(",given_name,'=1+2"), std::string::npos) << fields;
  EXPECT_NE(fields.find(",phone,+4915112345678"), std::string::npos) << fields;
  EXPECT_NE(touchpoints.find(",\"'=HYPERLINK("), std::string::npos) << touchpoints;
  EXPECT_NE(touchpoints.find(",'@SUM(1+1)"), std::string::npos) << touchpoints;
  for (const std::string& csv : {fields, touchpoints})
    for (const std::string bad : {",=", ",\"=", ",@", ",\"@"}) EXPECT_EQ(csv.find(bad), std::string::npos) << bad << "\n" << csv;
}

// A hostile review (2026-12-03): a touchpoint or order dated in 2099 kept its
// subject "active" and so out of retention for decades.
TEST_F(DsrPromises, ActivityCannotBeDatedInTheFuture) {
  const std::string id = add("late@example.com", "Late");
  const service::Caller sales = v.caller("sales", "sales");
  EXPECT_EQ(code_of([&] {
              v.service->add_touchpoint(sales, id, {{"channel", "phone"}, {"type", "call"}, {"at", "2099-12-31T00:00:00Z"}});
            }),
            ErrorCode::invalid_field);
  EXPECT_EQ(code_of([&] {
              v.service->add_order(sales, id, {{"amount_minor", 100}, {"currency", "EUR"}, {"at", "2099-12-31T00:00:00Z"}});
            }),
            ErrorCode::invalid_field);
  v.service->add_touchpoint(sales, id, {{"channel", "phone"}, {"type", "call"}, {"at", "2020-01-01T00:00:00Z"}});
}

// ---- Finding 7 (part): the export is for dsr_fulfilment only -----------------

TEST_F(DsrPromises, ExportNeedsThePurposeDsrFulfilment) {
  add("ada@example.com", "Ada");
  const std::string id = verified("access", "ada@example.com");
  // The officer's role holds other purposes (e.g. audit, legal_claims); none opens the package.
  for (const std::string purpose : {"audit", "legal_claims", "administration"}) {
    const ErrorCode code = code_of([&] { v.service->dsr_export(v.caller("compliance_officer", purpose), id); });
    EXPECT_TRUE(code == ErrorCode::purpose_not_allowed) << purpose << " " << code_name(code);
  }
  EXPECT_EQ(code_of([&] { v.service->dsr_export(v.caller("compliance_officer", ""), id); }),
            ErrorCode::purpose_not_allowed);
  const Json denials = v.service->audit_entries(v.caller("auditor", "audit"), {{"operation", "dsr.export"}});
  std::size_t denied = 0;
  for (const auto& e : denials["entries"]) denied += e["outcome"] == "denied" ? 1 : 0;
  EXPECT_GE(denied, 2u);
}

// ---- Finding 9: streamed exports -------------------------------------------

TEST_F(DsrPromises, ExportStreamsInChunksAndAsCsvTables) {
  const std::string a = add("ada@example.com", "Ada");
  for (int i = 0; i < 300; ++i)
    v.service->add_touchpoint(v.admin(), a,
                              {{"channel", "email"}, {"type", "inquiry"}, {"notes", "note, \"quoted\" " + std::to_string(i)}});
  const std::string id = verified("access", "ada@example.com");
  std::size_t chunks = 0;
  std::string text;
  v.service->dsr_export(officer, id, {}, [&](std::string_view c) {
    ++chunks;
    text.append(c);
    return true;
  });
  const Json doc = Json::parse(text);
  EXPECT_EQ(doc["touchpoints"].size(), 300u);
  EXPECT_EQ(doc["subject"]["fields"]["email"], "ada@example.com");
  EXPECT_GE(chunks, 2u) << "the package was handed over whole";
  // A reader that leaves stops the export without an error.
  std::size_t calls = 0;
  v.service->dsr_export(officer, id, {}, [&](std::string_view) { return ++calls < 1; });
  EXPECT_EQ(calls, 1u);
  // CSV, one table at a time, RFC 4180 quoting.
  std::string csv;
  v.service->dsr_export(officer, id, {"csv", "touchpoints"}, [&](std::string_view c) {
    csv.append(c);
    return true;
  });
  EXPECT_EQ(csv.rfind("subject_id,id,channel,type,at,notes\r\n", 0), 0u) << csv.substr(0, 80);
  EXPECT_NE(csv.find("\"note, \"\"quoted\"\" 299\""), std::string::npos);
  std::size_t lines = 0;
  for (char c : csv) lines += c == '\n';
  EXPECT_EQ(lines, 301u);
  const auto sink = [](std::string_view) { return true; };
  EXPECT_EQ(code_of([&] { v.service->dsr_export(officer, id, {"csv", "secrets"}, sink); }), ErrorCode::invalid_argument);
  EXPECT_EQ(code_of([&] { v.service->dsr_export(officer, id, {"xml", ""}, sink); }), ErrorCode::invalid_argument);
  for (const std::string table : {"fields", "orders", "consent_history", "access_log"}) {
    std::string t;
    v.service->dsr_export(officer, id, {"csv", table}, [&](std::string_view c) {
      t.append(c);
      return true;
    });
    EXPECT_NE(t.find("\r\n"), std::string::npos) << table;
  }
}

// ---- Four eyes on erasure ------------------------------------------------------

TEST_F(DsrPromises, SecondApproverCompletesAnErasure) {
  set_dsr_policy(v, "erasure_second_approver", "true");
  const std::string a = add("ada@example.com", "Ada");
  const std::string id = verified("erasure", "ada@example.com");
  const Json asked = move(id, {{"to", "completed"}, {"note", "checked the ID"}});
  EXPECT_EQ(asked["status"], "awaiting_approval") << asked.dump();
  EXPECT_TRUE(readable(a)) << "erased before the second approval";
  // The same principal cannot approve its own request.
  EXPECT_EQ(code_of([&] { move(id, {{"to", "completed"}}); }), ErrorCode::second_approver_required);
  EXPECT_TRUE(readable(a));
  // Nor can anyone ask for awaiting_approval directly.
  EXPECT_EQ(code_of([&] { move(id, {{"to", "awaiting_approval"}}); }), ErrorCode::invalid_argument);
  service::Caller second = v.admin("dsr_fulfilment");
  const Json done = move(id, {{"to", "completed"}}, &second);
  EXPECT_EQ(done["status"], "completed") << done.dump();
  EXPECT_FALSE(readable(a));
  std::vector<std::string> actors;
  for (const auto& e : done["timeline"])
    if (e["to"] == "awaiting_approval" || e["to"] == "completed") actors.push_back(e["actor"]);
  ASSERT_EQ(actors.size(), 2u);
  EXPECT_NE(actors[0], actors[1]);
  // The refusal is audited.
  const Json denials = v.service->audit_entries(v.caller("auditor", "audit"), {{"operation", "dsr.transition"}});
  bool refused = false;
  for (const auto& e : denials["entries"]) refused = refused || e["reason"] == "second_approver_required";
  EXPECT_TRUE(refused);
  // Other request types are not held up.
  add("bob@example.com", "Bob");
  const std::string access = verified("access", "bob@example.com");
  EXPECT_EQ(move(access, {{"to", "completed"}})["status"], "completed");
}

TEST_F(DsrPromises, PolicyMayDenyAnErasureUnderHoldWithItsBasis) {
  set_dsr_policy(v, "erasure_under_hold", "deny");
  const std::string a = add("ada@example.com", "Ada");
  v.service->set_legal_hold(officer, a, true);
  const std::string id = verified("erasure", "ada@example.com");
  const Json done = move(id, {{"to", "completed"}});
  EXPECT_EQ(done["status"], "denied");
  EXPECT_NE(done["denial_reason"].get<std::string>().find("17(3)(e)"), std::string::npos) << done.dump();
  EXPECT_TRUE(readable(a));
}

TEST(DsrPolicy, UnknownOrBadDsrSettingsDoNotLoad) {
  TestVault v;
  const auto file = v.data_dir() / "policies" / "roles.yaml";
  std::stringstream text;
  text << std::ifstream(file).rdbuf();
  const std::string original = text.str();
  ASSERT_NE(original.find("\ndsr:\n"), std::string::npos);
  for (const std::string bad : {"  erasure_under_hold: maybe\n", "  four_eyes: true\n"}) {
    std::ofstream(file) << original << bad;
    std::string error;
    EXPECT_FALSE(v.service->reload_policies(&error)) << bad;
    EXPECT_NE(error.find("dsr"), std::string::npos) << error;
  }
}

}  // namespace
}  // namespace custos
