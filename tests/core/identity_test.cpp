// Identity resolution (issue 15, finding 6, the records side): a second
// import of the same person is refused, merged or deliberately duplicated;
// existing duplicates are reported; and a merge moves everything to one
// subject and crypto-shreds the other. Through the Service façade on a real
// vault, and at the Records level where a test needs the raw rows.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "custos/audit/audit_log.h"
#include "custos/consent/consent.h"
#include "custos/crypto/keyring.h"
#include "custos/crypto/signer.h"
#include "custos/error.h"
#include "custos/records/records.h"
#include "custos/store/key_table.h"
#include "custos/store/sqlcipher_store.h"
#include "test_support.h"

namespace custos {
namespace {

using service::Json;
using testing::code_of;
using testing::TestVault;

Json ada(const std::string& email = "ada@example.com") {
  return {{"fields",
           {{"given_name", "Ada"},
            {"family_name", "Lovelace"},
            {"email", email},
            {"phone", "+1 202 555 0142"},
            {"external_id", "crm-ada"}}}};
}

Json with(Json body, const std::string& on_conflict) {
  body["on_conflict"] = on_conflict;
  return body;
}

Json entries(TestVault& v, const std::map<std::string, std::string>& q) {
  return v.service->audit_entries(v.caller("auditor", "audit"), q)["entries"];
}

// Denied entries of `operation` naming `subject` (as subject_id or among subject_ids) with `code`.
int denials(TestVault& v, const std::string& subject, const std::string& operation, const std::string& code) {
  int n = 0;
  for (const auto& e : entries(v, {{"subject", subject}, {"operation", operation}}))
    if (e["outcome"] == "denied" && e["reason"] == code) ++n;
  return n;
}

std::vector<std::string> ids_by_email(TestVault& v, const std::string& email) {
  std::vector<std::string> out;
  const Json found = v.service->find_subjects(v.admin("customer_service"), "email", email);
  for (const auto& s : found["subjects"]) out.push_back(s["id"]);
  return out;
}

records::DuplicateSubject duplicate_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const records::DuplicateSubject& e) {
    return e;
  }
  ADD_FAILURE() << "expected DuplicateSubject";
  return records::DuplicateSubject({}, {});
}

// ------------------------------------------------------------ create: on_conflict

TEST(IdentityResolution, ReimportingTheSameEmailInOtherCaseIsRefusedNamingTheFirstSubject) {
  TestVault v;
  const std::string first = v.service->create_subject(v.admin(), ada())["id"];
  // The finding: the same person again, e-mail in capitals, no phone.
  const Json again = {{"fields", {{"given_name", "Ada"}, {"email", "  ADA@Example.COM "}}}};
  const auto e = duplicate_of([&] { v.service->create_subject(v.admin(), again); });
  EXPECT_EQ(e.code(), ErrorCode::duplicate_subject);
  EXPECT_EQ(e.subject_ids(), std::vector<std::string>{first});
  EXPECT_EQ(e.matched_on(), std::vector<std::string>{"email"});
  EXPECT_NE(std::string(e.what()).find(first), std::string::npos);
  EXPECT_EQ(std::string(e.what()).find("ada@"), std::string::npos) << "no value in the message";
  EXPECT_EQ(std::string(e.what()).find("ADA@"), std::string::npos) << "no value in the message";
  EXPECT_EQ(ids_by_email(v, "ada@example.com"), std::vector<std::string>{first});
  EXPECT_EQ(denials(v, first, "subject.create", "duplicate_subject"), 1);
}

TEST(IdentityResolution, PhoneNumbersAndExternalIdsMatchAfterNormalisation) {
  TestVault v;
  const std::string first = v.service->create_subject(v.admin(), ada())["id"];
  // The same number, national format for the schema's default region (US).
  auto e = duplicate_of(
      [&] { v.service->create_subject(v.admin(), {{"fields", {{"phone", "(202) 555-0142"}}}}); });
  EXPECT_EQ(e.subject_ids(), std::vector<std::string>{first});
  EXPECT_EQ(e.matched_on(), std::vector<std::string>{"phone"});
  e = duplicate_of([&] { v.service->create_subject(v.admin(), {{"fields", {{"external_id", "crm-ada"}}}}); });
  EXPECT_EQ(e.matched_on(), std::vector<std::string>{"external_id"});
  // All three at once: one subject, three identifiers.
  e = duplicate_of([&] { v.service->create_subject(v.admin(), ada("Ada@Example.com")); });
  EXPECT_EQ(e.subject_ids(), std::vector<std::string>{first});
  EXPECT_EQ(e.matched_on(), (std::vector<std::string>{"email", "external_id", "phone"}));
  // A different person is created as before.
  EXPECT_EQ(v.service->create_subject(v.admin(), {{"fields", {{"email", "bob@example.com"}}}})["id"].get<std::string>().size(),
            32u);
}

TEST(IdentityResolution, OnConflictCreateMakesADeliberateDuplicate) {
  TestVault v;
  const std::string first = v.service->create_subject(v.admin(), ada())["id"];
  const std::string second = v.service->create_subject(v.admin(), with(ada("ADA@example.com"), "create"))["id"];
  EXPECT_NE(first, second);
  EXPECT_EQ(ids_by_email(v, "ada@example.com").size(), 2u);
}

TEST(IdentityResolution, OnConflictMergeFillsGapsAndTheExistingValuesWin) {
  TestVault v;
  const std::string first = v.service->create_subject(v.admin(), ada())["id"];
  const Json incoming = {{"fields",
                          {{"given_name", "Augusta"},  // differs: the vault's value wins
                           {"email", "ADA@example.com"},
                           {"birth_date", "1815-12-10"},  // missing: filled in
                           {"occupation", "mathematician"}}},
                         {"on_conflict", "merge"}};
  const Json r = v.service->create_subject(v.admin(), incoming);
  EXPECT_EQ(r["id"], first);
  EXPECT_EQ(r["merged"], true);
  EXPECT_EQ(r["fields_added"], Json({"birth_date", "occupation"}));
  EXPECT_EQ(r["fields_kept"], Json({"email", "given_name"}));
  const Json got = v.service->get_subject(v.admin("customer_service"), first);
  EXPECT_EQ(got["fields"]["given_name"], "Ada");
  EXPECT_EQ(got["fields"]["email"], "ada@example.com");
  EXPECT_EQ(got["fields"]["birth_date"], "1815-12-10");
  EXPECT_EQ(got["fields"]["occupation"], "mathematician");
  EXPECT_EQ(ids_by_email(v, "ada@example.com"), std::vector<std::string>{first});
  // Audited as an update of the existing subject, naming what was kept.
  const Json updates = entries(v, {{"subject", first}, {"operation", "subject.update"}});
  ASSERT_EQ(updates.size(), 1u);
  EXPECT_EQ(updates[0]["detail"], "on_conflict=merge kept=email,given_name");
  EXPECT_EQ(updates[0]["fields"], Json({"birth_date", "occupation"}));
}

TEST(IdentityResolution, AMergeCannotReplaceAnIdentifierOfTheExistingSubject) {
  TestVault v;
  const std::string first = v.service->create_subject(v.admin(), ada())["id"];
  // Someone who knows Ada's phone tries to attach their own e-mail to her.
  const Json r = v.service->create_subject(
      v.admin(), {{"fields", {{"phone", "+12025550142"}, {"email", "mallory@example.com"}}}, {"on_conflict", "merge"}});
  EXPECT_EQ(r["id"], first);
  EXPECT_EQ(r["fields_kept"], Json({"email", "phone"}));
  EXPECT_TRUE(ids_by_email(v, "mallory@example.com").empty());
  EXPECT_EQ(v.service->get_subject(v.admin("customer_service"), first)["fields"]["email"], "ada@example.com");
}

TEST(IdentityResolution, AMergeThatWouldPickOneOfTwoSubjectsIsRefused) {
  TestVault v;
  const std::string a = v.service->create_subject(v.admin(), {{"fields", {{"email", "ada@example.com"}}}})["id"];
  const std::string b = v.service->create_subject(v.admin(), {{"fields", {{"phone", "+12025550142"}}}})["id"];
  const auto e = duplicate_of([&] {
    v.service->create_subject(
        v.admin(), {{"fields", {{"email", "ada@example.com"}, {"phone", "+12025550142"}}}, {"on_conflict", "merge"}});
  });
  std::vector<std::string> both = {a, b};
  std::sort(both.begin(), both.end());
  EXPECT_EQ(e.subject_ids(), both);
  EXPECT_EQ(denials(v, a, "subject.create", "duplicate_subject"), 1);
  EXPECT_EQ(denials(v, b, "subject.create", "duplicate_subject"), 1);
}

TEST(IdentityResolution, OnConflictIsValidated) {
  TestVault v;
  EXPECT_EQ(code_of([&] { v.service->create_subject(v.admin(), with(ada(), "upsert")); }), ErrorCode::invalid_argument);
  EXPECT_EQ(code_of([&] { v.service->create_subject(v.admin(), {{"fields", {{"email", "x@example.com"}}}, {"on_conflict", 1}}); }),
            ErrorCode::invalid_argument);
  EXPECT_EQ(code_of([&] { v.service->batch_create(v.admin(), {{"subjects", Json::array()}, {"on_conflict", "x"}}); }),
            ErrorCode::invalid_argument);
}

TEST(IdentityResolution, BatchCreateReportsConflictsPerItemAndCreatesTheRest) {
  TestVault v;
  const std::string first = v.service->create_subject(v.admin(), ada())["id"];
  const Json body = {{"subjects",
                      {{{"fields", {{"email", "ADA@example.com"}}}},         // the existing Ada
                       {{"fields", {{"email", "bob@example.com"}}}},         // new
                       {{"fields", {{"email", "Bob@Example.com "}}}},        // Bob again, same batch
                       {{"fields", {{"email", "not an email"}}}},            // invalid, as before
                       {{"fields", {{"email", "carol@example.com"}}}}}}};    // new
  const Json r = v.service->batch_create(v.admin(), body);
  EXPECT_EQ(r["created"], 2);
  EXPECT_EQ(r["merged"], 0);
  EXPECT_EQ(r["failed"], 3);
  const Json& res = r["results"];
  EXPECT_EQ(res[0]["status"], 409);
  EXPECT_EQ(res[0]["error"]["code"], "duplicate_subject");
  EXPECT_EQ(res[0]["error"]["subject_ids"], Json({first}));
  EXPECT_EQ(res[0]["error"]["matched_on"], Json({"email"}));
  EXPECT_EQ(res[1]["status"], 201);
  const std::string bob = res[1]["id"];
  EXPECT_EQ(res[2]["status"], 409);
  EXPECT_EQ(res[2]["error"]["subject_ids"], Json({bob}));
  EXPECT_EQ(res[3]["status"], 422);
  EXPECT_EQ(res[4]["status"], 201);
  EXPECT_EQ(ids_by_email(v, "bob@example.com"), std::vector<std::string>{bob});
  EXPECT_EQ(denials(v, first, "subject.create", "duplicate_subject"), 1);
  EXPECT_EQ(denials(v, bob, "subject.create", "duplicate_subject"), 1);
  // The refused items' values reach no message.
  EXPECT_EQ(r.dump().find("example.com"), std::string::npos) << r;
}

TEST(IdentityResolution, BatchCreateMergesPerItemAndWithinTheBatch) {
  TestVault v;
  const std::string first = v.service->create_subject(v.admin(), ada())["id"];
  const Json body = {{"on_conflict", "merge"},
                     {"subjects",
                      {{{"fields", {{"email", "ada@example.com"}, {"birth_date", "1815-12-10"}}}},
                       {{"fields", {{"email", "bob@example.com"}}}},
                       {{"fields", {{"email", "bob@example.com"}, {"given_name", "Bob"}}}}}}};
  const Json r = v.service->batch_create(v.admin(), body);
  EXPECT_EQ(r["created"], 1);
  EXPECT_EQ(r["merged"], 2);
  EXPECT_EQ(r["failed"], 0);
  EXPECT_EQ(r["results"][0]["status"], 200);
  EXPECT_EQ(r["results"][0]["id"], first);
  EXPECT_EQ(r["results"][0]["merged"], true);
  EXPECT_EQ(r["results"][2]["id"], r["results"][1]["id"]);
  EXPECT_EQ(r["results"][2]["fields_added"], Json({"given_name"}));
  const std::string bob = r["results"][1]["id"];
  EXPECT_EQ(v.service->get_subject(v.admin("customer_service"), bob)["fields"]["given_name"], "Bob");
}

// A subject restricted by a completed restriction request (GDPR Art. 18).
std::string restrict_by_request(TestVault& v, const std::string& email) {
  const auto officer = v.caller("compliance_officer", "dsr_fulfilment");
  const std::string req = v.service->dsr_create(officer, {{"type", "restriction"},
                                                          {"regime", "gdpr"},
                                                          {"identifier", {{"email", email}}},
                                                          {"channel", "web_form"}})["id"];
  for (const char* to : {"identity_verified", "in_progress", "completed"})
    v.service->dsr_transition(officer, req, {{"to", to}, {"note", "step"}});
  return req;
}

TEST(IdentityResolution, AMergeOnCreateNeverWritesToARestrictedSubject) {
  TestVault v;
  const std::string first = v.service->create_subject(v.admin(), ada())["id"];
  restrict_by_request(v, "ada@example.com");
  EXPECT_EQ(code_of([&] {
              v.service->create_subject(v.admin(), {{"fields", {{"email", "ada@example.com"}, {"birth_date", "1815-12-10"}}},
                                                    {"on_conflict", "merge"}});
            }),
            ErrorCode::subject_restricted);
  EXPECT_EQ(denials(v, first, "subject.create", "subject_restricted"), 1);
  const Json got = v.service->get_subject(v.caller("compliance_officer", "legal_claims"), first);
  EXPECT_FALSE(got["fields"].contains("birth_date"));
}

// ------------------------------------------------------------ duplicates report

TEST(IdentityResolution, DuplicatesReportGroupsSubjectsByTheSharedIdentifier) {
  TestVault v;
  auto make = [&](const Json& fields) {
    return v.service->create_subject(v.admin(), {{"fields", fields}, {"on_conflict", "create"}})["id"].get<std::string>();
  };
  const std::string a = make({{"email", "ada@example.com"}});
  const std::string b = make({{"email", "ADA@example.com"}, {"phone", "+12025550142"}});
  const std::string c = make({{"phone", "(202) 555-0142"}});
  make({{"email", "dan@example.com"}});
  const auto officer = v.caller("compliance_officer", "dsr_fulfilment");
  const Json r = v.service->subject_duplicates(officer, {});
  ASSERT_EQ(r["clusters"].size(), 2u) << r;
  auto sorted = [](std::vector<std::string> ids) {
    std::sort(ids.begin(), ids.end());
    return Json(ids);
  };
  EXPECT_EQ(r["clusters"][0]["matched_on"], "email");
  EXPECT_EQ(r["clusters"][0]["subject_ids"], sorted({a, b}));
  EXPECT_EQ(r["clusters"][1]["matched_on"], "phone");
  EXPECT_EQ(r["clusters"][1]["subject_ids"], sorted({b, c}));
  EXPECT_TRUE(r["next_after"].is_null());
  EXPECT_EQ(r.dump().find("example.com"), std::string::npos);
  // Paged.
  const Json p1 = v.service->subject_duplicates(officer, {{"limit", "1"}});
  ASSERT_EQ(p1["clusters"].size(), 1u);
  ASSERT_TRUE(p1["next_after"].is_string());
  const Json p2 = v.service->subject_duplicates(officer, {{"limit", "1"}, {"after", p1["next_after"].get<std::string>()}});
  ASSERT_EQ(p2["clusters"].size(), 1u);
  EXPECT_EQ(p2["clusters"][0]["matched_on"], "phone");
  const Json p3 = v.service->subject_duplicates(officer, {{"limit", "1"}, {"after", p2["next_after"].is_string() ? p2["next_after"].get<std::string>() : std::string()}});
  EXPECT_TRUE(p3["clusters"].empty());
  // Audited, naming the subjects whose links were shown.
  const Json seen = entries(v, {{"subject", c}, {"operation", "subject.duplicates"}});
  EXPECT_EQ(seen.size(), 2u);  // the full report and page 2
}

TEST(IdentityResolution, DuplicatesReportIsForComplianceRolesWithAPurpose) {
  TestVault v;
  v.service->create_subject(v.admin(), ada());
  EXPECT_EQ(code_of([&] { v.service->subject_duplicates(v.caller("sales", "sales"), {}); }), ErrorCode::forbidden_role);
  EXPECT_EQ(code_of([&] { v.service->subject_duplicates(v.caller("marketing", "email_marketing"), {}); }),
            ErrorCode::forbidden_role);
  EXPECT_EQ(code_of([&] { v.service->subject_duplicates(v.caller("compliance_officer", ""), {}); }),
            ErrorCode::purpose_not_allowed);
  EXPECT_EQ(code_of([&] { v.service->subject_duplicates(v.caller("compliance_officer", "analytics"), {}); }),
            ErrorCode::purpose_not_allowed);
  EXPECT_EQ(code_of([&] { v.service->subject_duplicates(v.admin("administration"), {{"after", "given_name:00"}}); }),
            ErrorCode::invalid_argument);
  EXPECT_EQ(code_of([&] { v.service->subject_duplicates(v.admin("administration"), {{"limit", "0"}}); }),
            ErrorCode::invalid_argument);
  v.service->subject_duplicates(v.admin("administration"), {});
  int denied = 0;
  for (const auto& e : entries(v, {{"operation", "subject.duplicates"}})) denied += e["outcome"] == "denied";
  EXPECT_EQ(denied, 4);
}

// ------------------------------------------------------------ merge

struct Merge : ::testing::Test {
  TestVault v;
  service::Caller officer = v.caller("compliance_officer", "dsr_fulfilment");
  std::string a, b;
  void SetUp() override {
    a = v.service->create_subject(v.admin(), ada())["id"];
    b = v.service->create_subject(v.admin(), {{"fields",
                                               {{"given_name", "Augusta"},
                                                {"email", "ADA@example.com"},
                                                {"postal_address", "12 St James's Square, London"}}},
                                              {"on_conflict", "create"}})["id"];
  }
  Json merge(const service::Caller& c, const std::string& into, const Json& subjects,
             const std::string& reason = "ticket DQ-7") {
    Json body = {{"subjects", subjects}};
    if (!reason.empty()) body["reason"] = reason;
    return v.service->merge_subjects(c, into, body);
  }
};

TEST_F(Merge, MovesFieldsTouchpointsOrdersAndConsentToTheSurvivor) {
  v.service->add_touchpoint(v.admin(), b, {{"channel", "email"}, {"type", "support"}, {"notes", "asked about gears"}});
  v.service->add_order(v.admin(), b, {{"amount_minor", 1250}, {"currency", "GBP"}});
  v.service->record_consent(v.admin(), b, {{"purpose", "email_marketing"}, {"channel", "email"}, {"event", "granted"},
                                           {"source", "import"}, {"proof", {{"form", "spring-fair"}}}}, false);
  const Json r = merge(officer, a, {b});
  EXPECT_EQ(r["id"], a);
  EXPECT_EQ(r["merged"], Json({b}));
  EXPECT_EQ(r["fields_added"], Json({"postal_address"}));
  EXPECT_EQ(r["fields_kept"], Json({"email", "given_name"}));
  EXPECT_EQ(r["touchpoints_moved"], 1);
  EXPECT_EQ(r["orders_moved"], 1);
  // The merged-away subject is gone; the survivor holds everything.
  EXPECT_EQ(code_of([&] { v.service->get_subject(v.admin("customer_service"), b); }), ErrorCode::not_found);
  EXPECT_EQ(ids_by_email(v, "ada@example.com"), std::vector<std::string>{a});
  const Json got = v.service->get_subject(v.admin("customer_service"), a);
  EXPECT_EQ(got["fields"]["given_name"], "Ada");
  EXPECT_EQ(got["fields"]["postal_address"], "12 St James's Square, London");
  const Json ex = v.service->dsr_export(officer, [&] {
    const std::string req = v.service->dsr_create(officer, {{"type", "access"}, {"regime", "gdpr"},
                                                            {"identifier", {{"email", "ada@example.com"}}},
                                                            {"channel", "web_form"}})["id"];
    for (const char* to : {"identity_verified", "in_progress", "completed"})
      v.service->dsr_transition(officer, req, {{"to", to}, {"note", "step"}});
    return req;
  }());
  ASSERT_EQ(ex["touchpoints"].size(), 1u) << ex["touchpoints"];
  EXPECT_EQ(ex["touchpoints"][0]["notes"], "asked about gears");  // re-sealed under the survivor's key
  ASSERT_EQ(ex["orders"].size(), 1u);
  const Json consents = v.service->get_consents(v.admin(), a);
  ASSERT_EQ(consents["current"].size(), 1u) << consents;
  EXPECT_EQ(consents["current"][0]["state"], "granted");
  EXPECT_EQ(consents["history"].size(), 1u);
  // The merged-away subject's key is destroyed, but its consent moved first:
  // the survivor's proof is not erased with it (Ledger::erase_caller_proofs).
  EXPECT_EQ(consents["history"][0]["proof"].value("form", ""), "spring-fair") << consents;
  // One entry names both ids, found from either.
  const Json merges = entries(v, {{"subject", b}, {"operation", "subject.merge"}});
  ASSERT_EQ(merges.size(), 1u);
  EXPECT_EQ(merges[0]["subject_id"], a);
  EXPECT_EQ(merges[0]["subject_ids"], Json({b}));
  EXPECT_NE(merges[0]["detail"].get<std::string>().find("reason=ticket DQ-7"), std::string::npos);
  EXPECT_EQ(entries(v, {{"subject", a}, {"operation", "subject.merge"}}).size(), 1u);
  // Nothing left to report.
  EXPECT_TRUE(v.service->subject_duplicates(officer, {})["clusters"].empty());
}

TEST_F(Merge, AWithdrawalOnEitherSubjectIsNeverHiddenByAGrantOnTheOther) {
  const Json grant = {{"purpose", "email_marketing"}, {"channel", "email"}, {"event", "granted"}, {"source", "import"}};
  v.service->record_consent(v.admin(), a, grant, false);
  v.service->record_consent(v.admin(), b, grant, false);
  // The later word: a withdrawal through the duplicate.
  v.service->record_consent(v.admin(), b, {{"purpose", "email_marketing"}, {"channel", "email"},
                                           {"event", "withdrawn"}, {"source", "email_link"}}, false);
  merge(officer, a, {b});
  const Json c = v.service->get_consents(v.admin(), a);
  ASSERT_EQ(c["current"].size(), 1u) << c;
  EXPECT_EQ(c["current"][0]["state"], "withdrawn");
  EXPECT_EQ(c["history"].size(), 3u);
  EXPECT_EQ(code_of([&] { v.service->get_subject(v.caller("marketing", "email_marketing"), a); }),
            ErrorCode::consent_missing);
}

TEST_F(Merge, AnObjectionMadeThroughTheMergedAwayRecordStaysInForce) {
  v.service->record_consent(v.admin(), b, {{"event", "objection"}, {"source", "email_link"}}, false);
  merge(officer, a, {b});
  // A grant captured later, through the survivor's record, does not undo the objection (Art. 21(3)).
  v.service->record_consent(v.admin(), a, {{"purpose", "email_marketing"}, {"channel", "email"}, {"event", "granted"},
                                           {"source", "import"}}, false);
  EXPECT_EQ(code_of([&] { v.service->get_subject(v.caller("marketing", "email_marketing"), a); }),
            ErrorCode::subject_restricted);
  std::size_t fetched = 0;
  v.service->campaign_fetch(v.caller("marketing", "email_marketing"),
                            {{"purpose", "email_marketing"}, {"channel", "email"}, {"fields", {"email"}}},
                            [&](const std::string& line) {
                              fetched += Json::parse(line).contains("id");
                              return true;
                            });
  EXPECT_EQ(fetched, 0u);
}

TEST_F(Merge, IsRefusedForHeldOrRestrictedSubjectsAndWritesNothing) {
  const std::string c = v.service->create_subject(v.admin(), {{"fields", {{"email", "ada.l@example.com"}}}})["id"];
  v.service->add_order(v.admin(), b, {{"amount_minor", 100}, {"currency", "GBP"}});
  v.service->set_legal_hold(officer, c, true);
  // b is fine, c is held: nothing of b moves either.
  EXPECT_EQ(code_of([&] { merge(officer, a, {b, c}); }), ErrorCode::conflict);
  EXPECT_EQ(v.service->get_subject(v.admin("customer_service"), b)["fields"]["given_name"], "Augusta");
  EXPECT_EQ(ids_by_email(v, "ada@example.com").size(), 2u);
  EXPECT_EQ(code_of([&] { merge(officer, c, {b}); }), ErrorCode::conflict);
  EXPECT_EQ(denials(v, a, "subject.merge", "conflict"), 1);
  EXPECT_EQ(denials(v, c, "subject.merge", "conflict"), 1);
  v.service->set_legal_hold(officer, c, false);
  restrict_by_request(v, "ada.l@example.com");
  EXPECT_EQ(code_of([&] { merge(officer, a, {c}); }), ErrorCode::subject_restricted);
  EXPECT_EQ(code_of([&] { merge(officer, c, {b}); }), ErrorCode::subject_restricted);
  EXPECT_EQ(denials(v, a, "subject.merge", "subject_restricted"), 1);
  EXPECT_EQ(v.service->get_subject(v.admin("customer_service"), b)["fields"]["given_name"], "Augusta");
}

TEST_F(Merge, NeedsTheEraseOperationAJustifyingPurposeAndAReason) {
  EXPECT_EQ(code_of([&] { merge(v.caller("sales", "sales"), a, {b}); }), ErrorCode::forbidden_role);
  EXPECT_EQ(code_of([&] { merge(v.caller("service", "customer_service"), a, {b}); }), ErrorCode::forbidden_role);
  EXPECT_EQ(code_of([&] { merge(v.caller("compliance_officer", "audit"), a, {b}); }), ErrorCode::purpose_not_allowed);
  EXPECT_EQ(code_of([&] { merge(officer, a, {b}, ""); }), ErrorCode::invalid_argument);
  EXPECT_EQ(code_of([&] { merge(officer, a, {b}, "line\nbreak"); }), ErrorCode::invalid_argument);
  EXPECT_EQ(code_of([&] { merge(officer, a, {a}); }), ErrorCode::invalid_argument);
  EXPECT_EQ(code_of([&] { merge(officer, a, {b, b}); }), ErrorCode::invalid_argument);
  EXPECT_EQ(code_of([&] { merge(officer, a, Json::array()); }), ErrorCode::invalid_argument);
  EXPECT_EQ(code_of([&] { merge(officer, a, {std::string(32, '0')}); }), ErrorCode::not_found);
  EXPECT_EQ(denials(v, a, "subject.merge", "forbidden_role"), 2);
  EXPECT_EQ(denials(v, a, "subject.merge", "purpose_not_allowed"), 1);
  EXPECT_EQ(denials(v, a, "subject.merge", "invalid_argument"), 4);
  EXPECT_EQ(denials(v, a, "subject.merge", "not_found"), 1);
  EXPECT_EQ(ids_by_email(v, "ada@example.com").size(), 2u);
  // A merged-away subject cannot be merged or erased again.
  merge(v.admin("administration"), a, {b});
  EXPECT_EQ(code_of([&] { merge(officer, a, {b}); }), ErrorCode::not_found);
  EXPECT_EQ(code_of([&] { v.service->erase_subject(v.admin("administration"), b, "again"); }), ErrorCode::not_found);
}

// ------------------------------------------------------------ merge: open requests follow

// A request taken in before a merge matched the merged-away subject only (by
// an identifier the survivor did not have). The data moves to the survivor;
// the request must move with it, or an erasure erases nothing and an export
// leaves out what moved.
struct MergeWithOpenRequest : Merge {
  std::string c;  // Ada's second record, known by another email
  void SetUp() override {
    Merge::SetUp();
    c = v.service->create_subject(v.admin(), {{"fields",
                                               {{"given_name", "Augusta Ada"},
                                                {"email", "augusta@example.com"},
                                                {"birth_date", "1815-12-10"}}}})["id"];
    v.service->add_touchpoint(v.admin(), c, {{"channel", "phone"}, {"type", "support"}, {"notes", "asked about looms"}});
  }
  std::string open_request(const std::string& type, const Json& changes = nullptr) {
    Json body = {{"type", type}, {"regime", "gdpr"}, {"identifier", {{"email", "augusta@example.com"}}},
                 {"channel", "web_form"}};
    if (!changes.is_null()) body["changes"] = changes;
    const std::string req = v.service->dsr_create(officer, body)["id"];
    for (const char* to : {"identity_verified", "in_progress"})
      v.service->dsr_transition(officer, req, {{"to", to}, {"note", "step"}});
    return req;
  }
  std::set<std::string> subject_ids(const std::string& req) {
    std::set<std::string> out;
    const Json q = v.service->dsr_get(officer, req);  // alive across the loop (a temporary's member would dangle)
    for (const auto& id : q["subject_ids"]) out.insert(id.get<std::string>());
    return out;
  }
};

TEST_F(MergeWithOpenRequest, AnOpenErasureRequestErasesTheSurvivorThatHoldsTheMergedData) {
  const std::string req = open_request("erasure");
  ASSERT_EQ(subject_ids(req), (std::set<std::string>{c}));
  EXPECT_EQ(merge(officer, a, {c})["open_requests_followed"], 1);
  EXPECT_EQ(subject_ids(req), (std::set<std::string>{a, c}));
  const Json done = v.service->dsr_transition(officer, req, {{"to", "completed"}});
  EXPECT_EQ(done["status"], "completed") << done.dump();
  EXPECT_EQ(done["report"]["erased"]["subjects"], Json({a})) << done["report"].dump();
  // The birth date and the touchpoint that moved from c are gone with a.
  EXPECT_EQ(code_of([&] { v.service->get_subject(v.admin("customer_service"), a); }), ErrorCode::not_found);
  // b (another record sharing a's email, not merged) was not asked about.
  EXPECT_EQ(v.service->get_subject(v.admin("customer_service"), b)["fields"]["given_name"], "Augusta");
  // The timeline says why the request covers a.
  bool noted = false;
  const Json request = v.service->dsr_get(officer, req);
  for (const auto& e : request["timeline"])
    noted = noted || e["note"].get<std::string>().find("merged into " + a) != std::string::npos;
  EXPECT_TRUE(noted) << v.service->dsr_get(officer, req)["timeline"].dump();
}

TEST_F(MergeWithOpenRequest, AnOpenAccessRequestExportsWhatMovedToTheSurvivor) {
  const std::string closed = open_request("access");
  v.service->dsr_transition(officer, closed, {{"to", "completed"}});
  const std::string req = open_request("access");
  merge(officer, a, {c});
  const Json ex = v.service->dsr_export(officer, req);
  std::map<std::string, Json> subjects;
  for (const auto& s : ex["subjects"]) subjects[s["id"]] = s;
  ASSERT_EQ(subjects.size(), 2u) << ex["subjects"].dump();
  EXPECT_EQ(subjects[c]["status"], "merged");
  EXPECT_EQ(subjects[a]["fields"]["birth_date"], "1815-12-10");
  ASSERT_EQ(ex["touchpoints"].size(), 1u) << ex["touchpoints"].dump();
  EXPECT_EQ(ex["touchpoints"][0]["subject_id"], a);
  EXPECT_EQ(ex["touchpoints"][0]["notes"], "asked about looms");
  // Both access logs are there: c's history did not vanish with its key.
  ASSERT_EQ(ex["further_access_logs"].size(), 1u);
  // A completed request is history: it still names what it covered then.
  EXPECT_EQ(subject_ids(closed), (std::set<std::string>{c}));
}

TEST_F(MergeWithOpenRequest, AnOpenRectificationIsStillReadableAfterItsSubjectsKeyIsShredded) {
  // The corrections are sealed under c's key, which the merge destroys.
  const std::string req = open_request("rectification", {{"fields", {{"family_name", "King"}}}});
  merge(officer, a, {c});
  const Json done = v.service->dsr_transition(officer, req, {{"to", "completed"}});
  EXPECT_EQ(done["status"], "completed") << done.dump();
  EXPECT_EQ(v.service->get_subject(v.admin("customer_service"), a)["fields"]["family_name"], "King");
}

// ------------------------------------------------------------ update: the same dedupe rule as create

TEST(IdentityResolution, AnUpdateToAnotherSubjectsIdentifierIsRefusedNamingItAndChangesNothing) {
  TestVault v;
  const std::string a = v.service->create_subject(v.admin(), ada())["id"];
  const std::string c =
      v.service->create_subject(v.admin(), {{"fields", {{"given_name", "Charles"}, {"email", "charles@example.com"},
                                                        {"external_id", "crm-charles"}}}})["id"];
  for (const Json& fields : {Json{{"email", "ADA@example.com"}, {"given_name", "Ada?"}},
                             Json{{"phone", "(202) 555-0142"}}, Json{{"external_id", "crm-ada"}}}) {
    const auto e = duplicate_of([&] { v.service->patch_subject(v.admin(), c, {{"fields", fields}}); });
    EXPECT_EQ(e.code(), ErrorCode::duplicate_subject) << fields;
    EXPECT_EQ(e.subject_ids(), std::vector<std::string>{a}) << fields;
    EXPECT_EQ(std::string(e.what()).find("example.com"), std::string::npos) << e.what();
  }
  // Nothing half-applied: c is as it was, and the email still finds a alone.
  const Json got = v.service->get_subject(v.admin("customer_service"), c);
  EXPECT_EQ(got["fields"]["given_name"], "Charles");
  EXPECT_EQ(got["fields"]["email"], "charles@example.com");
  EXPECT_EQ(got["fields"].count("phone"), 0u);
  EXPECT_EQ(ids_by_email(v, "ada@example.com"), std::vector<std::string>{a});
  EXPECT_TRUE(v.service->subject_duplicates(v.admin("administration"), {})["clusters"].empty());
  EXPECT_EQ(denials(v, c, "subject.update", "duplicate_subject"), 3);
  EXPECT_EQ(denials(v, a, "subject.update", "duplicate_subject"), 3);
  // A subject may keep (or re-send) its own identifiers, and take free ones.
  v.service->patch_subject(v.admin(), a, {{"fields", {{"email", "Ada@Example.com"}, {"external_id", "crm-ada"}}}});
  v.service->patch_subject(v.admin(), c, {{"fields", {{"email", "charles.b@example.com"}}}});
  EXPECT_EQ(ids_by_email(v, "charles.b@example.com"), std::vector<std::string>{c});
}

TEST(IdentityResolution, ARectificationOfMatchedDuplicatesSetsThemAllButNotAnotherSubjectsIdentifier) {
  TestVault v;
  const auto officer = v.caller("compliance_officer", "dsr_fulfilment");
  const std::string a = v.service->create_subject(v.admin(), ada())["id"];
  const std::string b =
      v.service->create_subject(v.admin(), with({{"fields", {{"email", "ada@example.com"}}}}, "create"))["id"];
  const std::string c =
      v.service->create_subject(v.admin(), {{"fields", {{"email", "charles@example.com"}}}})["id"];
  const auto rectify = [&](const std::string& email) {
    const std::string req = v.service->dsr_create(officer, {{"type", "rectification"}, {"regime", "gdpr"},
                                                            {"identifier", {{"email", "ada@example.com"}}},
                                                            {"channel", "web_form"},
                                                            {"changes", {{"fields", {{"email", email}}}}}})["id"];
    for (const char* to : {"identity_verified", "in_progress"})
      v.service->dsr_transition(officer, req, {{"to", to}, {"note", "step"}});
    return req;
  };
  // Onto a third subject's email: refused, neither duplicate changed, the request still open.
  const std::string refused = rectify("charles@example.com");
  EXPECT_EQ(code_of([&] { v.service->dsr_transition(officer, refused, {{"to", "completed"}}); }),
            ErrorCode::duplicate_subject);
  EXPECT_EQ(ids_by_email(v, "ada@example.com").size(), 2u);
  EXPECT_EQ(ids_by_email(v, "charles@example.com"), std::vector<std::string>{c});
  EXPECT_EQ(v.service->dsr_get(officer, refused)["status"], "in_progress");
  v.service->dsr_transition(officer, refused, {{"to", "canceled"}, {"reason", "wrong address"}});
  // Onto a new email: both matched subjects take it (they may share it).
  const std::string req = rectify("ada.lovelace@example.com");
  EXPECT_EQ(v.service->dsr_transition(officer, req, {{"to", "completed"}})["status"], "completed");
  std::vector<std::string> both = {a, b};
  std::sort(both.begin(), both.end());
  auto found = ids_by_email(v, "ada.lovelace@example.com");
  std::sort(found.begin(), found.end());
  EXPECT_EQ(found, both);
}

// ------------------------------------------------------------ merge: the key is shredded

// The vault's components without the façade: the raw rows and Records.
struct Direct {
  TestVault vault;
  std::unique_ptr<crypto::Keyring> keyring;
  std::unique_ptr<store::Store> store;
  std::unique_ptr<store::KeyTable> keys;
  records::Schema schema;
  std::unique_ptr<crypto::Signer> signer;
  std::unique_ptr<audit::AuditLog> audit;
  std::unique_ptr<records::Records> records;
  audit::Actor actor{"test", "admin", "", "administration", "test"};

  Direct() {
    vault.service.reset();
    const auto dir = vault.data_dir();
    keyring = crypto::Keyring::open(dir / "keys", vault.open_options().passphrase);
    store = testing::open_vault_store(dir, *keyring);
    keys = std::make_unique<store::KeyTable>(*store, *keyring);
    schema = records::Schema::load(dir / "policies" / "schema.yaml");
    signer = std::make_unique<crypto::Signer>(keys->named_key("audit:signing"));
    audit = std::make_unique<audit::AuditLog>(*store, *signer, audit::Options{});
    records = std::make_unique<records::Records>(*store, *keys, schema, *audit);
  }
  // (status, wrapped DEK or empty) of a subject row.
  std::pair<std::string, std::vector<std::uint8_t>> row(const records::SubjectId& id) {
    std::pair<std::string, std::vector<std::uint8_t>> out;
    auto tx = store->begin(store::TxMode::read);
    tx->exec("SELECT status, wrapped_dek FROM subjects WHERE id = ?", {id}, [&](const store::Row& r) {
      out.first = std::string(r.text(0));
      if (!r.is_null(1)) out.second = r.blob_copy(1);
    });
    return out;
  }
  std::int64_t count(const std::string& sql, const records::SubjectId& id) {
    auto tx = store->begin(store::TxMode::read);
    return tx->scalar(sql, {id}).value_or(-1);
  }
};

TEST(IdentityMergeKeys, TheMergedAwayKeyIsDestroyedAndItsNotesNoLongerDecrypt) {
  Direct d;
  const auto ids = d.records->create(d.actor, {{{"email", "ada@example.com"}, {"given_name", "Ada"}},
                                               {{"email", "ada@example.com"}, {"birth_date", "1815-12-10"}}});
  const auto& a = ids[0];
  const auto& b = ids[1];
  d.records->add_touchpoint(d.actor, b, {"", "email", "support", 1, std::string("asked about gears")});
  const std::string sealed = d.records->seal_note(b, "dsr.changes", "pending rectification");
  ASSERT_EQ(d.records->open_note(b, "dsr.changes", sealed), "pending rectification");
  const auto wrapped_before = d.row(b).second;
  ASSERT_FALSE(wrapped_before.empty());

  const auto report = d.records->merge(d.actor, a, {b}, "reason=test", {});
  EXPECT_EQ(report.fields_added, std::vector<std::string>{"birth_date"});
  EXPECT_EQ(report.touchpoints_moved, 1);

  // b: a tombstone with no key, no fields, no index rows.
  const auto [status, wrapped_after] = d.row(b);
  EXPECT_EQ(status, "merged");
  EXPECT_TRUE(wrapped_after.empty());
  EXPECT_EQ(d.count("SELECT count(*) FROM subjects WHERE id = ? AND fields IS NOT NULL", b), 0);
  EXPECT_EQ(d.count("SELECT count(*) FROM blind_index WHERE subject_id = ?", b), 0);
  // What was sealed under b's key no longer opens: there is no key.
  EXPECT_EQ(code_of([&] { d.records->open_note(b, "dsr.changes", sealed); }), ErrorCode::not_found);
  EXPECT_EQ(code_of([&] { d.records->seal_note(b, "x", "y"); }), ErrorCode::not_found);
  // The touchpoint's notes were re-sealed for a, and open under a's key.
  const auto tps = d.records->touchpoints(d.actor, a, true);
  ASSERT_EQ(tps.size(), 1u);
  EXPECT_EQ(tps[0].notes.value_or(""), "asked about gears");
  EXPECT_TRUE(d.records->touchpoints(d.actor, b, true).empty());
  // b's wrapped key is in no row of the database any more.
  std::int64_t copies = 0;
  {
    auto tx = d.store->begin(store::TxMode::read);
    tx->exec("SELECT wrapped_dek FROM subjects WHERE wrapped_dek IS NOT NULL", {}, [&](const store::Row& r) {
      copies += r.blob_copy(0) == wrapped_before;
    });
  }
  EXPECT_EQ(copies, 0);
  // The survivor reads whole, with one email index row.
  const auto s = d.records->read(d.actor, a, {{"email", "given_name", "birth_date"}, {}, "subject.read"});
  EXPECT_EQ(s.fields.at("birth_date"), "1815-12-10");
  EXPECT_EQ(d.records->find("email", "ADA@example.com"), std::vector<records::SubjectId>{a});
}

TEST(IdentityMergeKeys, AFailingDependantMoveLeavesBothSubjectsAsTheyWere) {
  Direct d;
  const auto ids = d.records->create(d.actor, {{{"email", "ada@example.com"}}, {{"email", "ada@example.com"},
                                                                                 {"birth_date", "1815-12-10"}}});
  d.records->add_order(d.actor, ids[1], {"", 100, "GBP", 1});
  EXPECT_EQ(code_of([&] {
              d.records->merge(d.actor, ids[0], {ids[1]}, "reason=test",
                               [](store::Transaction&, const records::SubjectId&, const records::SubjectId&,
                                  const records::Records::NoteResealer&) {
                                 throw Error(ErrorCode::storage, "injected");
                               });
            }),
            ErrorCode::storage);
  EXPECT_EQ(d.row(ids[1]).first, "active");
  EXPECT_FALSE(d.row(ids[1]).second.empty());
  EXPECT_EQ(d.records->orders(ids[1]).size(), 1u);
  EXPECT_EQ(d.records->find("email", "ada@example.com").size(), 2u);
  EXPECT_EQ(d.records->read(d.actor, ids[0], {{"birth_date"}, {}, "subject.read"}).fields.count("birth_date"), 0u);
}

}  // namespace
}  // namespace custos
