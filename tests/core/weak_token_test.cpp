// What a caller with a weak token tried in the second hostile review
// (2026-12-03), each attack as it was run against custosd, through the
// Service façade on a real vault:
//   1. a marketing token minted a privacy link, opened it as the subject and
//      granted itself the consent it needs (and undid a do-not-sell), and
//      the requests it filed there started as identity-verified;
//   2. a consent purpose became a file path before it was validated (a NUL
//      cut off ".txt": a directory gave a 500, a FIFO held a worker);
//   3. the service desk, which sees e-mail only masked and may not look
//      subjects up by it, created a subject with a victim's e-mail and was
//      told the victim's subject id (then read the name with it);
//   4. an import forged the privacy page's evidence (source privacy_page);
//   5. marketing read a subject's Art. 18 restriction in its consent view
//      (a refused read still says so: subject_restricted; not changed);
//   6. (the review of the fixes) a restricted subject was still named in a
//      duplicate refusal to a purpose that may not read it.
#include <gtest/gtest.h>

#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "custos/error.h"
#include "custos/records/records.h"
#include "test_support.h"

namespace custos {
namespace {

using service::Json;
using testing::code_of;
using testing::TestVault;

std::string subject(TestVault& v, const std::string& email) {
  return v.service->create_subject(
      v.admin(), {{"fields", {{"given_name", "Pat"}, {"family_name", "Victim"}, {"email", email}}}})["id"];
}

Json import_text(TestVault& v, const service::Caller& caller, const std::string& text) {
  std::size_t at = 0;
  return v.service->import_ndjson(caller, {}, [&](char* buf, std::size_t cap) {
    const std::size_t n = std::min(cap, text.size() - at);
    std::memcpy(buf, text.data() + at, n);
    at += n;
    return n;
  });
}

std::string open_session(TestVault& v, const service::Caller& issuer, const std::string& id) {
  const Json link = v.service->privacy_link_create(issuer, id, Json::object());
  return v.service->privacy_session_open(link["token"].get<std::string>(), "r-open")["session"];
}

Json page_event(const std::string& purpose, const std::string& event) {
  return {{"purpose", purpose}, {"channel", "email"}, {"event", event}};
}

// ------------------------------------------------------------ 1. privacy links

TEST(WeakToken, APrivacyLinkFromMarketingCannotGrantTheConsentMarketingNeeds) {
  TestVault v;
  const std::string id = subject(v, "pat@example.com");
  const std::string session = open_session(v, v.caller("marketing", ""), id);
  EXPECT_EQ(code_of([&] { v.service->privacy_record_consent(session, page_event("email_marketing", "granted"), false, "r1"); }),
            ErrorCode::consent_capture_not_allowed);
  EXPECT_TRUE(campaign_ids(v, "email_marketing", "email").empty());
  EXPECT_TRUE(v.service->get_consents(v.admin(), id)["history"].empty());
  // Withdrawing stays as easy as giving was (Art. 7(3)): the same link withdraws.
  v.service->privacy_record_consent(session, page_event("email_marketing", "withdrawn"), false, "r2");
  EXPECT_EQ(v.service->get_consents(v.admin(), id)["history"].size(), 1u);
}

// A hostile review (2026-12-03): a stolen CRM token minted privacy links
// (up to 7 days each), and after the token was revoked its links still
// opened sessions that withdrew consent and filed rectifications. Revoking a
// token ends the links it issued and their open sessions; another token's
// links are untouched.
TEST(WeakToken, RevokingATokenEndsThePrivacyLinksItIssued) {
  TestVault v;
  const std::string id = subject(v, "rv@example.com");
  const auto real_caller = [&](const std::string& name, const std::string& role) {
    const std::string token = v.service->create_token(v.admin(), name, role)["token"];
    return service::Caller{v.service->authenticate(token), "", "req-test"};
  };
  const service::Caller stolen = real_caller("crm-marketing", "marketing");
  const service::Caller other = real_caller("crm-sales", "sales");
  const std::string unopened = v.service->privacy_link_create(stolen, id, {{"ttl_hours", 168}})["token"];
  const std::string session = open_session(v, stolen, id);
  const std::string kept = v.service->privacy_link_create(other, id, Json::object())["token"];
  v.service->revoke_token(v.admin(), "crm-marketing");
  EXPECT_EQ(code_of([&] { v.service->privacy_session_open(unopened, "r1"); }), ErrorCode::unauthenticated);
  EXPECT_EQ(code_of([&] { v.service->privacy_record_consent(session, page_event("email_marketing", "withdrawn"), false, "r2"); }),
            ErrorCode::unauthenticated);
  EXPECT_EQ(code_of([&] { v.service->privacy_request(session, {{"type", "access"}}, false, "r3"); }),
            ErrorCode::unauthenticated);
  const std::string live = v.service->privacy_session_open(kept, "r4")["session"];
  v.service->privacy_record_consent(live, page_event("email_marketing", "withdrawn"), false, "r5");
  const Json revoked = v.service->audit_entries(v.caller("auditor", "audit"), {{"operation", "token.revoke"}});
  ASSERT_EQ(revoked["entries"].size(), 1u);
  EXPECT_NE(revoked["entries"][0]["detail"].get<std::string>().find("privacy_links_ended=2"), std::string::npos)
      << revoked.dump();
}

// A hostile review (2026-12-03): the service desk, which sees no birth date,
// income band or gender, could overwrite or remove them blind. A role
// changes only fields it sees (plain or masked); the refusal is audited and
// changes nothing.
TEST(WeakToken, ARoleChangesOnlyTheFieldsItSees) {
  TestVault v;
  const std::string id = v.service->create_subject(
      v.admin(), {{"fields", {{"email", "bl@example.com"}, {"given_name", "Bo"}, {"birth_date", "1980-02-03"}}}})["id"];
  const service::Caller desk = v.caller("service", "customer_service");
  for (const Json& body : {Json{{"fields", {{"birth_date", "1999-01-01"}}}}, Json{{"fields", {{"birth_date", nullptr}}}},
                           Json{{"fields", {{"given_name", "Bob"}, {"income_band", "low"}}}}})
    EXPECT_EQ(code_of([&] { v.service->patch_subject(desk, id, body); }), ErrorCode::forbidden_role) << body.dump();
  const Json now = v.service->get_subject(v.admin("customer_service"), id);
  EXPECT_EQ(now["fields"]["birth_date"], "1980-02-03");
  EXPECT_EQ(now["fields"]["given_name"], "Bo");
  // What it sees, plain or masked, it may correct.
  v.service->patch_subject(desk, id, {{"fields", {{"given_name", "Bob"}, {"email", "bob@example.com"}}}});
  EXPECT_EQ(v.service->get_subject(v.admin("customer_service"), id)["fields"]["email"], "bob@example.com");
}

// A hostile review (2026-12-03): a service token recorded an objection with
// proof {capture: privacy_page, link_id: ...}, evidence that reads as the
// subject's own act on the privacy page. The keys the vault writes into the
// evidence are refused from a caller, on the API and in an import.
TEST(WeakToken, ConsentEvidenceCannotCarryTheVaultsOwnKeys) {
  TestVault v;
  const std::string id = subject(v, "ev@example.com");
  const service::Caller desk = v.caller("service", "customer_service");
  for (const char* key : {"capture", "link_id", "signal", "captured_by_role"}) {
    const Json objection = {{"event", "objection"}, {"source", "web_form"}, {"proof", {{key, "privacy_page"}}}};
    EXPECT_EQ(code_of([&] { v.service->record_consent(desk, id, objection, false); }), ErrorCode::invalid_field) << key;
    Json withdrawal = page_event("email_marketing", "withdrawn");
    withdrawal["source"] = "web_form";
    withdrawal["proof"] = {{key, "x"}};
    EXPECT_EQ(code_of([&] { v.service->record_consent(desk, id, withdrawal, false); }), ErrorCode::invalid_field) << key;
  }
  EXPECT_TRUE(v.service->get_consents(v.admin(), id)["history"].empty());
  const Json report = import_text(
      v, v.admin(),
      R"({"fields":{"email":"ev2@example.com"},"consents":[{"purpose":"email_marketing","channel":"email","event":"withdrawn","at":"2026-01-01T00:00:00Z","evidence":{"link_id":"forged"}}]})"
      "\n");
  EXPECT_NE(report.dump().find("written by the vault itself"), std::string::npos) << report.dump();
  // Evidence of the caller's own is kept.
  const Json fine = {{"event", "objection"}, {"source", "web_form"}, {"proof", {{"ticket", "T-1"}}}};
  v.service->record_consent(desk, id, fine, false);
}

TEST(WeakToken, APrivacyLinkFromMarketingCannotUndoADoNotSell) {
  TestVault v;
  const std::string id = subject(v, "dns@example.com");
  v.service->record_consent(v.caller("marketing", ""), id, {{"event", "opt_out_sale_share"}}, false);
  const std::string session = open_session(v, v.caller("marketing", ""), id);
  EXPECT_EQ(code_of([&] { v.service->privacy_record_consent(session, page_event("partner_sharing", "granted"), false, "r1"); }),
            ErrorCode::consent_capture_not_allowed);
  EXPECT_TRUE(campaign_ids(v, "partner_sharing", "email").empty());
}

TEST(WeakToken, ARequestFiledThroughALinkFromARoleWithoutDsrWaitsForVerification) {
  TestVault v;
  const std::string id = subject(v, "req@example.com");
  for (const char* role : {"marketing", "sales", "service"}) {
    const std::string session = open_session(v, v.caller(role, ""), id);
    const Json r = v.service->privacy_request(session, {{"type", "erasure"}}, false, "r1");
    EXPECT_EQ(r["status"], "received") << role;
    const Json q = v.service->dsr_get(v.caller("compliance_officer", ""), r["request_id"].get<std::string>());
    EXPECT_EQ(q["status"], "received") << role;
  }
  // A link from the compliance team (which verifies identities itself) still starts verified.
  const std::string session = open_session(v, v.caller("compliance_officer", ""), id);
  EXPECT_EQ(v.service->privacy_request(session, {{"type", "access"}}, false, "r2")["status"], "identity_verified");
}

// ------------------------------------------------------------ 2. consent purposes

TEST(WeakToken, AConsentPurposeNeverReachesTheFileSystem) {
  TestVault v;
  const std::string id = subject(v, "nul@example.com");
  const std::string dir = (v.data_dir() / "").string();
  for (const std::string& purpose : {std::string(".\0", 2), std::string("..\0", 3), dir + std::string("\0", 1),
                                     std::string("../../../../../../etc/hostname\0", 31), std::string("..")}) {
    EXPECT_EQ(code_of([&] {
                v.service->record_consent(v.caller("marketing", ""), id,
                                          {{"purpose", purpose}, {"channel", "email"}, {"event", "withdrawn"}}, false);
              }),
              ErrorCode::invalid_field);
  }
  // The same purpose in an import is that line's error; the import goes on.
  const Json line = {{"fields", {{"email", "imp@example.com"}}},
                     {"consents", {{{"purpose", std::string(".\0", 2)}, {"channel", "email"}, {"event", "withdrawn"},
                                    {"at", "2026-01-01T00:00:00Z"}}}}};
  const Json good = {{"fields", {{"email", "imp2@example.com"}}}};
  const Json r = import_text(v, v.admin(), line.dump() + "\n" + good.dump() + "\n");
  EXPECT_EQ(r["failed"], 1) << r;
  EXPECT_EQ(r["succeeded"], 1) << r;
  ASSERT_EQ(r["errors"].size(), 1u) << r;
  EXPECT_EQ(r["errors"][0]["code"], "invalid_field") << r;
  EXPECT_NE(r["errors"][0]["detail"].get<std::string>().find("'purpose'"), std::string::npos) << r;
}

// ------------------------------------------------------------ 3. duplicate answers

TEST(WeakToken, ADuplicateRefusalNamesNoSubjectToARoleThatMayNotLookItUp) {
  TestVault v;
  const std::string victim = subject(v, "alice@example.com");
  const auto desk = v.caller("service", "customer_service");
  ASSERT_EQ(code_of([&] { v.service->find_subjects(desk, "email", "alice@example.com"); }), ErrorCode::forbidden_role);
  // create
  try {
    v.service->create_subject(desk, {{"fields", {{"given_name", "Eve"}, {"email", "alice@example.com"}}}});
    ADD_FAILURE() << "a duplicate was created";
  } catch (const records::DuplicateSubject& e) {
    EXPECT_TRUE(e.subject_ids().empty());
    EXPECT_EQ(std::string(e.what()).find(victim), std::string::npos) << e.what();
    EXPECT_EQ(e.matched_on(), std::vector<std::string>{"email"});
  }
  // batchCreate, up to a thousand probes a call
  const Json batch = v.service->batch_create(desk, {{"subjects", {{{"fields", {{"email", "alice@example.com"}}}}}}});
  EXPECT_EQ(batch["results"][0]["status"], 409) << batch;
  EXPECT_EQ(batch.dump().find(victim), std::string::npos) << batch;
  // PATCH of the caller's own subject
  const std::string own = v.service->create_subject(desk, {{"fields", {{"given_name", "Eve"}}}})["id"];
  try {
    v.service->patch_subject(desk, own, {{"fields", {{"email", "alice@example.com"}}}});
    ADD_FAILURE() << "the update took another subject's e-mail";
  } catch (const records::DuplicateSubject& e) {
    EXPECT_TRUE(e.subject_ids().empty());
    EXPECT_EQ(std::string(e.what()).find(victim), std::string::npos) << e.what();
  }
  // import
  const Json r = import_text(v, desk, Json({{"fields", {{"email", "alice@example.com"}}}}).dump() + "\n");
  EXPECT_EQ(r["failed"], 1) << r;
  EXPECT_EQ(r.dump().find(victim), std::string::npos) << r;
  // A role that may look subjects up by e-mail is still told which subject it is.
  try {
    v.service->create_subject(v.admin(), {{"fields", {{"email", "alice@example.com"}}}});
    ADD_FAILURE() << "a duplicate was created";
  } catch (const records::DuplicateSubject& e) {
    EXPECT_EQ(e.subject_ids(), std::vector<std::string>{victim});
  }
}

TEST(WeakToken, AMergeOnAnIdentifierTheRoleSeesMaskedIsRefusedBeforeAnyMatch) {
  TestVault v;
  const std::string victim = subject(v, "alice@example.com");
  const auto desk = v.caller("service", "customer_service");
  // Refused whether or not a subject holds the e-mail: a hit and a miss look the same.
  for (const char* email : {"alice@example.com", "nobody@example.com"}) {
    const Json body = {{"fields", {{"email", email}, {"notes", "x"}}}, {"on_conflict", "merge"}};
    EXPECT_EQ(code_of([&] { v.service->create_subject(desk, body); }), ErrorCode::forbidden_role) << email;
    const Json batch = v.service->batch_create(
        desk, {{"on_conflict", "merge"}, {"subjects", {{{"fields", {{"email", email}}}}}}});
    EXPECT_EQ(batch["results"][0]["status"], 403) << batch;
    EXPECT_EQ(batch["results"][0]["error"]["code"], "forbidden_role") << batch;
    const Json r = import_text(v, desk, Json({{"fields", {{"email", email}}}, {"on_conflict", "merge"}}).dump() + "\n");
    ASSERT_EQ(r["errors"].size(), 1u) << r;
    EXPECT_EQ(r["errors"][0]["code"], "forbidden_role") << r;
  }
  EXPECT_FALSE(v.service->get_subject(v.admin("customer_service"), victim)["fields"].contains("notes"));
  // On an identifier it sees in plain (external_id), the desk merges, and is
  // told only of fields it may see at all (not birth_date: descriptive is none).
  const std::string held = v.service->create_subject(
      v.admin(), {{"fields", {{"external_id", "crm-7"}, {"birth_date", "1990-01-01"}, {"given_name", "Bo"}}}})["id"];
  const Json merged = v.service->create_subject(
      desk, {{"fields", {{"external_id", "crm-7"}, {"birth_date", "1991-01-01"}, {"notes", "called"}}},
             {"on_conflict", "merge"}});
  EXPECT_EQ(merged["id"], held);
  EXPECT_EQ(merged["fields_added"], Json({"notes"})) << merged;
  EXPECT_EQ(merged.dump().find("birth_date"), std::string::npos) << merged;
}

// ------------------------------------------------------------ 5. restriction status

TEST(WeakToken, TheConsentViewShowsAnArt18RestrictionOnlyToRolesThatWorkRequests) {
  TestVault v;
  const std::string id = subject(v, "art18@example.com");
  const auto officer = v.caller("compliance_officer", "dsr_fulfilment");
  const std::string req = v.service->dsr_create(officer, {{"type", "restriction"},
                                                          {"regime", "gdpr"},
                                                          {"identifier", {{"email", "art18@example.com"}}},
                                                          {"channel", "web_form"}})["id"];
  for (const char* to : {"identity_verified", "in_progress", "completed"})
    v.service->dsr_transition(officer, req, {{"to", to}, {"note", "step"}});
  EXPECT_FALSE(v.service->get_consents(v.caller("marketing", ""), id).contains("restricted"));
  EXPECT_EQ(v.service->get_consents(v.caller("compliance_officer", ""), id)["restricted"], true);
}

TEST(WeakToken, ADuplicateRefusalNamesNoRestrictedSubjectToAPurposeThatMayNotReadIt) {
  TestVault v;
  const std::string id = subject(v, "held@example.com");
  const auto officer = v.caller("compliance_officer", "dsr_fulfilment");
  const std::string req = v.service->dsr_create(officer, {{"type", "restriction"},
                                                          {"regime", "gdpr"},
                                                          {"identifier", {{"email", "held@example.com"}}},
                                                          {"channel", "web_form"}})["id"];
  for (const char* to : {"identity_verified", "in_progress", "completed"})
    v.service->dsr_transition(officer, req, {{"to", to}, {"note", "step"}});
  // Sales sees e-mail in plain, but its lookup leaves the restricted subject out: so does the 409.
  ASSERT_TRUE(v.service->find_subjects(v.caller("sales", "sales"), "email", "held@example.com")["subjects"].empty());
  const Json dup = {{"fields", {{"email", "held@example.com"}}}};
  try {
    v.service->create_subject(v.caller("sales", "sales"), dup);
    ADD_FAILURE() << "a duplicate was created";
  } catch (const records::DuplicateSubject& e) {
    EXPECT_TRUE(e.subject_ids().empty());
    EXPECT_EQ(std::string(e.what()).find(id), std::string::npos) << e.what();
  }
  Json merge = dup;
  merge["on_conflict"] = "merge";
  try {
    v.service->create_subject(v.caller("sales", "sales"), merge);
    ADD_FAILURE() << "merged into a restricted subject";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::subject_restricted);
    EXPECT_EQ(std::string(e.what()).find(id), std::string::npos) << e.what();
  }
  // Under a purpose that may read restricted subjects, it is named.
  try {
    v.service->create_subject(v.caller("compliance_officer", "legal_claims"), dup);
    ADD_FAILURE() << "a duplicate was created";
  } catch (const records::DuplicateSubject& e) {
    EXPECT_EQ(e.subject_ids(), std::vector<std::string>{id});
  }
}

// ------------------------------------------------------------ 4. forged evidence

TEST(WeakToken, AnImportCannotForgeThePrivacyPagesEvidence) {
  TestVault v;
  const Json line = {{"fields", {{"email", "forged@example.com"}}},
                     {"consents",
                      {{{"purpose", "email_marketing"}, {"channel", "email"}, {"event", "withdrawn"},
                        {"source", "privacy_page"}, {"at", "2026-01-01T00:00:00Z"}}}}};
  for (const auto& caller : {v.caller("service", ""), v.admin()}) {
    const Json r = import_text(v, caller, line.dump() + "\n");
    ASSERT_EQ(r["errors"].size(), 1u) << r;
    EXPECT_EQ(r["errors"][0]["code"], "invalid_field") << r;
    EXPECT_NE(r["errors"][0]["detail"].get<std::string>().find("'source'"), std::string::npos) << r;
  }
}

}  // namespace
}  // namespace custos
