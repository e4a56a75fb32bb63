// The privacy page's link and session (issue 19) at the service façade,
// with an injected clock: a link is one subject's, spent once, refused when
// used or expired; its session lasts 30 minutes and can do nothing but read
// and change that subject's marketing consents and file its requests; the
// vault keeps no secret. The page itself is tested in the browser
// (tests/browser/console.test.mjs).
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <set>
#include <nlohmann/json.hpp>

#include "custos/audit/audit_log.h"
#include "custos/error.h"
#include "test_support.h"

namespace custos {
namespace {

using service::Json;
using testing::code_of;
using testing::TestVault;

constexpr std::int64_t kSecond = 1000000;
constexpr std::int64_t kHour = 3600 * kSecond;

struct Clocked {
  TestVault v;
  std::shared_ptr<std::atomic<std::int64_t>> now = std::make_shared<std::atomic<std::int64_t>>(1767225600LL * kSecond);
  Clocked() {
    auto n = now;
    v.use_clock([n] { return n->load(); });
  }
  void advance(std::int64_t us) { *now += us; }
  std::string subject(const std::string& email) {
    return v.service->create_subject(v.admin(), {{"fields", {{"given_name", "Pat"}, {"email", email}}}})["id"];
  }
  Json link(const std::string& id, Json body = Json::object()) {
    return v.service->privacy_link_create(v.caller("compliance_officer", ""), id, body);
  }
};

// The refusal's reason, or "" if `fn` was not refused as a spent link.
std::string refusal(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const service::PrivacyLinkRefused& e) {
    return e.reason();
  } catch (const Error&) {
    return "other error";
  }
  return "";
}

TEST(PrivacyLink, IsSpentOnceAndRefusedWhenUsedOrExpired) {
  Clocked t;
  const std::string id = t.subject("pat@example.com");
  const Json link = t.link(id, {{"ttl_hours", 2}});
  const std::string token = link["token"];
  EXPECT_EQ(link["url"], "/privacy/#t=" + token);
  EXPECT_EQ(link["link_id"].get<std::string>().size(), 24u);
  const Json s = t.v.service->privacy_session_open(token, "r1");
  EXPECT_FALSE(s["session"].get<std::string>().empty());
  EXPECT_EQ(refusal([&] { t.v.service->privacy_session_open(token, "r2"); }), "link_used");

  const std::string late = t.link(id, {{"ttl_hours", 2}})["token"];
  t.advance(2 * kHour);
  EXPECT_EQ(refusal([&] { t.v.service->privacy_session_open(late, "r3"); }), "link_expired");

  // A changed secret, a made-up token, or nothing at all: unauthenticated, not a hint.
  std::string forged = t.link(id)["token"];
  forged.back() = forged.back() == 'A' ? 'B' : 'A';
  EXPECT_EQ(code_of([&] { t.v.service->privacy_session_open(forged, "r4"); }), ErrorCode::unauthenticated);
  EXPECT_EQ(code_of([&] { t.v.service->privacy_session_open("nope", "r5"); }), ErrorCode::unauthenticated);
  EXPECT_EQ(code_of([&] { t.v.service->privacy_session_open("", "r6"); }), ErrorCode::unauthenticated);
}

TEST(PrivacyLink, SessionLastsThirtyMinutesAndIsNoBearerToken) {
  Clocked t;
  const std::string id = t.subject("s@example.com");
  const std::string token = t.link(id)["token"];
  const std::string session = t.v.service->privacy_session_open(token, "r1")["session"];
  EXPECT_EQ(t.v.service->privacy_consents(session, false, "r2")["gpc"], false);
  // Neither the link nor the session is an API token, and the link is no session.
  EXPECT_EQ(code_of([&] { t.v.service->authenticate(session); }), ErrorCode::unauthenticated);
  EXPECT_EQ(code_of([&] { t.v.service->authenticate(token); }), ErrorCode::unauthenticated);
  EXPECT_EQ(code_of([&] { t.v.service->privacy_consents(token, false, "r3"); }), ErrorCode::unauthenticated);
  t.advance(31 * 60 * kSecond);
  EXPECT_EQ(code_of([&] { t.v.service->privacy_consents(session, false, "r4"); }), ErrorCode::unauthenticated);
}

TEST(PrivacyLink, ConsentChangesCarryThePageAsEvidence) {
  Clocked t;
  const std::string id = t.subject("c@example.com");
  const Json link = t.link(id);
  const std::string session = t.v.service->privacy_session_open(link["token"].get<std::string>(), "r1")["session"];
  const Json view = t.v.service->privacy_record_consent(
      session, {{"purpose", "email_marketing"}, {"channel", "email"}, {"event", "granted"}}, false, "r2");
  bool shown = false;
  for (const auto& p : view["purposes"])
    for (const auto& c : p["channels"])
      if (p["purpose"] == "email_marketing" && c["channel"] == "email") shown = c["state"] == "granted";
  EXPECT_TRUE(shown) << view;
  const Json history = t.v.service->get_consents(t.v.admin(), id)["history"];
  ASSERT_EQ(history.size(), 1u) << history;
  EXPECT_EQ(history[0]["source"], "privacy_page");
  EXPECT_EQ(history[0]["proof"]["capture"], "privacy_page");
  EXPECT_EQ(history[0]["proof"]["link_id"], link["link_id"]);
  EXPECT_EQ(history[0]["recorded_by"], "privacy_link:" + link["link_id"].get<std::string>());
  // Only the page's own choices: a non-marketing purpose or an unknown channel is refused.
  EXPECT_EQ(code_of([&] {
              t.v.service->privacy_record_consent(
                  session, {{"purpose", "analytics"}, {"channel", "email"}, {"event", "granted"}}, false, "r3");
            }),
            ErrorCode::invalid_field);
  EXPECT_EQ(code_of([&] {
              t.v.service->privacy_record_consent(
                  session, {{"purpose", "email_marketing"}, {"channel", "carrier_pigeon"}, {"event", "granted"}},
                  false, "r4");
            }),
            ErrorCode::invalid_field);
  // Sec-GPC: 1 withdraws sale and sharing, recorded as the GPC signal.
  const Json gpc = t.v.service->privacy_consents(session, true, "r5");
  EXPECT_EQ(gpc["gpc"], true);
}

// An objection to direct marketing (Art. 21(3)) stops marketing whatever
// staff record afterwards; but when the subject, in their own session on
// the privacy page, says yes again to a purpose and channel, that ends the
// objection: the page showed "you agreed" while marketing was still refused.
// The page says whether an objection stands.
TEST(PrivacyLink, TheSubjectsOwnGrantOnThePageEndsTheirObjection) {
  Clocked t;
  const std::string id = t.subject("objector@example.com");
  t.v.service->record_consent(t.v.admin(), id, {{"event", "objection"}, {"source", "call_centre"}}, false);
  const auto marketing = t.v.caller("marketing", "email_marketing");
  // A grant recorded by staff does not end it.
  t.v.service->record_consent(
      t.v.admin(), id, {{"purpose", "email_marketing"}, {"channel", "email"}, {"event", "granted"}, {"source", "import"}},
      false);
  EXPECT_TRUE(t.v.service->get_consents(t.v.admin(), id)["objected"].get<bool>());
  EXPECT_EQ(code_of([&] { t.v.service->get_subject(marketing, id); }), ErrorCode::subject_restricted);

  // Nor does a link that marketing issued and opened itself: it may not grant at all.
  const std::string own = t.v.service->privacy_link_create(marketing, id, Json::object())["token"];
  const std::string own_session = t.v.service->privacy_session_open(own, "r0")["session"];
  EXPECT_EQ(code_of([&] {
              t.v.service->privacy_record_consent(
                  own_session, {{"purpose", "email_marketing"}, {"channel", "email"}, {"event", "granted"}}, false,
                  "r0b");
            }),
            ErrorCode::consent_capture_not_allowed);
  EXPECT_TRUE(t.v.service->get_consents(t.v.admin(), id)["objected"].get<bool>());

  const std::string session = t.v.service->privacy_session_open(t.link(id)["token"].get<std::string>(), "r1")["session"];
  EXPECT_EQ(t.v.service->privacy_consents(session, false, "r2")["objected"], true);
  const Json view = t.v.service->privacy_record_consent(
      session, {{"purpose", "email_marketing"}, {"channel", "email"}, {"event", "granted"}}, false, "r3");
  EXPECT_EQ(view["objected"], false) << view;
  EXPECT_FALSE(t.v.service->get_consents(t.v.admin(), id)["objected"].get<bool>());
  EXPECT_EQ(t.v.service->get_subject(marketing, id)["fields"]["email"], "objector@example.com");
  // The audit log says so.
  bool lifted = false;
  const Json audit = t.v.service->audit_entries(t.v.caller("auditor", "audit"), {{"subject", id}});
  for (const auto& e : audit["entries"])
    if (e["operation"] == "consent.record" && e.value("detail", "").find("objection_lifted=1") != std::string::npos)
      lifted = true;
  EXPECT_TRUE(lifted) << audit.dump(1);
  // Withdrawing on the page does not object again: an objection is its own act.
  t.v.service->privacy_record_consent(
      session, {{"purpose", "email_marketing"}, {"channel", "email"}, {"event", "withdrawn"}}, false, "r4");
  EXPECT_FALSE(t.v.service->get_consents(t.v.admin(), id)["objected"].get<bool>());
  EXPECT_EQ(code_of([&] { t.v.service->get_subject(marketing, id); }), ErrorCode::consent_missing);
}

TEST(PrivacyLink, RequestsAreTakenInAsVerifiedRequests) {
  Clocked t;
  const std::string id = t.subject("r@example.com");
  const std::string session =
      t.v.service->privacy_session_open(t.link(id, {{"regime", "us-ca"}})["token"].get<std::string>(), "r1")["session"];
  const Json r = t.v.service->privacy_request(session, {{"type", "access"}}, false, "r2");
  const Json q = t.v.service->dsr_get(t.v.caller("compliance_officer", ""), r["request_id"].get<std::string>());
  EXPECT_EQ(q["status"], "identity_verified");
  EXPECT_EQ(q["identified_by"], "privacy_link");
  EXPECT_EQ(q["channel"], "privacy_page");
  EXPECT_EQ(q["regime"], "us-ca");
  EXPECT_EQ(q["subject_id"], id);
  const Json fix = t.v.service->privacy_request(
      session, {{"type", "rectification"}, {"changes", {{"fields", {{"given_name", "Patricia"}}}}}}, false, "r3");
  EXPECT_EQ(fix["status"], "identity_verified");
  EXPECT_EQ(code_of([&] { t.v.service->privacy_request(session, {{"type", "restriction"}}, false, "r4"); }),
            ErrorCode::invalid_field);
}

TEST(PrivacyLink, OnlyARoleWithConsentCreatesOneForALiveSubject) {
  Clocked t;
  const std::string id = t.subject("a@example.com");
  EXPECT_EQ(code_of([&] { t.v.service->privacy_link_create(t.v.caller("analyst", ""), id, Json::object()); }),
            ErrorCode::forbidden_role);
  EXPECT_EQ(code_of([&] { t.link(id, {{"ttl_hours", 169}}); }), ErrorCode::invalid_field);
  EXPECT_EQ(code_of([&] { t.link(id, {{"ttl_hours", 0}}); }), ErrorCode::invalid_field);
  EXPECT_EQ(code_of([&] { t.link("00000000000000000000000000000000"); }), ErrorCode::not_found);
}

// Erasure and the CCPA opt-out filed from the page act on the link's subject
// and no one else: the request starts verified, the desk completes it, and
// from then on the page's session is dead (the subject is gone).
TEST(PrivacyLink, ErasureAndOptOutFromThePageActOnTheLinksSubjectOnly) {
  Clocked t;
  const std::string pat = t.subject("pat@example.com"), other = t.subject("other@example.com");
  for (const auto& id : {pat, other})
    t.v.service->record_consent(t.v.admin(), id,
                                {{"purpose", "partner_sharing"}, {"channel", "email"}, {"event", "granted"}}, false);
  const service::Caller officer = t.v.caller("compliance_officer", "dsr_fulfilment");
  auto complete = [&](const std::string& request) {
    for (const char* to : {"in_progress", "completed"})
      t.v.service->dsr_transition(officer, request, {{"to", to}, {"note", "done at the desk"}});
    return t.v.service->dsr_get(officer, request);
  };
  auto partner_state = [&](const std::string& id) {
    const Json consents = t.v.service->get_consents(t.v.admin(), id);
    for (const auto& c : consents["current"])
      if (c["purpose"] == "partner_sharing" && c["channel"] == "email") return c["state"].get<std::string>();
    return std::string("none");
  };
  const std::string session =
      t.v.service->privacy_session_open(t.link(pat, {{"regime", "us-ca"}})["token"].get<std::string>(), "r1")["session"];

  const Json opt_out = t.v.service->privacy_request(session, {{"type", "opt_out_sale_share"}}, false, "r2");
  EXPECT_EQ(opt_out["status"], "identity_verified");
  EXPECT_EQ(complete(opt_out["request_id"])["status"], "completed");
  EXPECT_EQ(partner_state(pat), "withdrawn");
  EXPECT_EQ(partner_state(other), "granted");

  const Json erase = t.v.service->privacy_request(session, {{"type", "erasure"}}, false, "r3");
  EXPECT_EQ(erase["status"], "identity_verified");
  const Json done = complete(erase["request_id"]);
  EXPECT_EQ(done["status"], "completed") << done;
  EXPECT_EQ(done["subject_id"], pat);
  EXPECT_EQ(code_of([&] { t.v.service->get_subject(t.v.admin("customer_service"), pat); }), ErrorCode::not_found);
  EXPECT_EQ(t.v.service->get_subject(t.v.admin("customer_service"), other)["fields"]["email"], "other@example.com");
  EXPECT_TRUE(testing::files_containing(t.v.dir.path(), "pat@example.com").empty());
  // The erased subject's session can do nothing more.
  EXPECT_EQ(code_of([&] { t.v.service->privacy_consents(session, false, "r4"); }), ErrorCode::unauthenticated);
  EXPECT_EQ(code_of([&] { t.v.service->privacy_request(session, {{"type", "access"}}, false, "r5"); }),
            ErrorCode::unauthenticated);
}

// A hostile review (2026-12-03): a request filed on the page covered only the
// link's subject, so a duplicate record (same e-mail or phone) kept its data
// through an erasure and was missing from the access package. A page request
// covers every subject sharing an identifier, as the desk's intake would.
TEST(PrivacyLink, RequestsFromThePageCoverTheSubjectsDuplicates) {
  Clocked t;
  const auto create = [&](Json fields) {
    fields["given_name"] = "Pat";
    return t.v.service->create_subject(t.v.admin(), {{"fields", fields}, {"on_conflict", "create"}})["id"].get<std::string>();
  };
  const std::string pat = create({{"email", "pat@example.com"}, {"phone", "+4915112345678"}});
  const std::string same_email = create({{"email", "PAT@example.com"}});
  const std::string same_phone = create({{"email", "pat.other@example.com"}, {"phone", "+4915112345678"}});
  const std::string other = t.subject("someone@example.com");
  const service::Caller officer = t.v.caller("compliance_officer", "dsr_fulfilment");
  const auto complete = [&](const Json& filed) {
    for (const char* to : {"in_progress", "completed"})
      t.v.service->dsr_transition(officer, filed["request_id"].get<std::string>(), {{"to", to}});
    return t.v.service->dsr_get(officer, filed["request_id"].get<std::string>());
  };
  const std::string session =
      t.v.service->privacy_session_open(t.link(pat)["token"].get<std::string>(), "r1")["session"];
  const Json access = t.v.service->dsr_get(
      officer, t.v.service->privacy_request(session, {{"type", "access"}}, false, "r2")["request_id"].get<std::string>());
  std::set<std::string> covered;
  for (const auto& id : access["subject_ids"]) covered.insert(id.get<std::string>());
  EXPECT_EQ(covered, (std::set<std::string>{pat, same_email, same_phone})) << access.dump();
  // A correction is sealed where the desk opens it, whichever subject sorts first.
  const Json fixed = complete(t.v.service->privacy_request(
      session, {{"type", "rectification"}, {"changes", {{"fields", {{"given_name", "Patricia"}}}}}}, false, "r3"));
  EXPECT_EQ(fixed["status"], "completed") << fixed.dump();
  for (const auto& id : {pat, same_email, same_phone})
    EXPECT_EQ(t.v.service->get_subject(t.v.admin("customer_service"), id)["fields"]["given_name"], "Patricia") << id;
  const Json erased = complete(t.v.service->privacy_request(session, {{"type", "erasure"}}, false, "r4"));
  EXPECT_EQ(erased["status"], "completed") << erased.dump();
  for (const auto& id : {pat, same_email, same_phone})
    EXPECT_EQ(code_of([&] { t.v.service->get_subject(t.v.admin("customer_service"), id); }), ErrorCode::not_found) << id;
  EXPECT_EQ(t.v.service->get_subject(t.v.admin("customer_service"), other)["fields"]["given_name"], "Pat");
}

// A hostile review (2026-12-03): the note a subject typed on the page ("I
// am Ada, 12 Baker St, ...") stayed readable in the request's timeline after
// the erasure it asked for. It is sealed under the subject's key and shredded
// with it; the timeline also says who issued the link.
TEST(PrivacyLink, TheRequestersNoteIsErasedWithTheSubject) {
  Clocked t;
  const std::string id = t.subject("ada@example.com");
  const service::Caller officer = t.v.caller("compliance_officer", "dsr_fulfilment");
  const std::string session =
      t.v.service->privacy_session_open(t.link(id)["token"].get<std::string>(), "r1")["session"];
  const std::string request = t.v.service->privacy_request(
      session, {{"type", "erasure"}, {"note", "I am Ada Lovelace, 12 Baker St, +4915112345678"}}, false, "r2")["request_id"];
  const auto intake_note = [&] { return t.v.service->dsr_get(officer, request)["timeline"][0]["note"].get<std::string>(); };
  EXPECT_NE(intake_note().find("12 Baker St"), std::string::npos) << intake_note();
  EXPECT_NE(intake_note().find("issued by test-compliance_officer as compliance_officer"), std::string::npos) << intake_note();
  for (const char* to : {"in_progress", "completed"}) t.v.service->dsr_transition(officer, request, {{"to", to}});
  EXPECT_EQ(intake_note().find("Baker"), std::string::npos) << intake_note();
  EXPECT_NE(intake_note().find("no longer readable"), std::string::npos) << intake_note();
}

// The page's evidence cannot be forged by staff: only the page's own session
// records source privacy_page (and its events name principal privacy_link:…).
TEST(PrivacyLink, AStaffTokenCannotRecordConsentAsThePrivacyPage) {
  Clocked t;
  const std::string id = t.subject("f@example.com");
  EXPECT_EQ(code_of([&] {
              t.v.service->record_consent(t.v.admin(), id,
                                          {{"purpose", "email_marketing"}, {"channel", "email"}, {"event", "granted"},
                                           {"source", "privacy_page"}},
                                          false);
            }),
            ErrorCode::invalid_field);
  EXPECT_TRUE(t.v.service->get_consents(t.v.admin(), id)["history"].empty());
}

// Consent rates (the console's analytics) apply expiry as campaigns do: a
// grant stops counting once its expires_at is reached.
TEST(ConsentRates, AnExpiredGrantStopsCounting) {
  Clocked t;  // 2026-01-01T00:00:00Z
  const std::string lapsing = t.subject("lapse@example.com"), lasting = t.subject("last@example.com");
  t.v.service->record_consent(t.v.admin(), lapsing,
                              {{"purpose", "email_marketing"}, {"channel", "email"}, {"event", "granted"},
                               {"expires_at", "2026-02-05T00:00:00Z"}},
                              false);
  t.v.service->record_consent(t.v.admin(), lasting,
                              {{"purpose", "email_marketing"}, {"channel", "email"}, {"event", "granted"}}, false);
  t.advance(40 * 24 * kHour);  // 2026-02-10
  const Json rates = t.v.service->analytics_consents(t.v.admin("analytics"), {{"months", "2"}});
  ASSERT_EQ(rates["months"], Json({"2026-01", "now"})) << rates;
  bool found = false;
  for (const auto& series : rates["series"]) {
    if (series["purpose"] != "email_marketing" || series["channel"] != "email") continue;
    found = true;
    EXPECT_EQ(series["points"][0]["granted"], 2) << "both grants were in force at the end of January";
    EXPECT_EQ(series["points"][1]["granted"], 1) << "one grant expired on 5 February";
    EXPECT_EQ(series["points"][1]["subjects"], 2);
  }
  EXPECT_TRUE(found) << rates;
}

}  // namespace
}  // namespace custos
