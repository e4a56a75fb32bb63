#include <gtest/gtest.h>

#include <fstream>

#include <atomic>
#include <nlohmann/json.hpp>
#include <sstream>

#include "custos/audit/audit_log.h"
#include "custos/error.h"
#include "custos_audit/entry.h"
#include "custos_audit/export.h"
#include "test_support.h"

namespace custos {
namespace {

using service::Json;
using testing::TestVault;

std::int64_t at(const std::string& t) { return *audit::parse_time_us(t); }

using testing::code_of;

struct Breach : ::testing::Test {
  TestVault v;
  std::atomic<std::int64_t> now{at("2026-03-27T08:00:00Z")};
  service::Caller officer = v.caller("compliance_officer", "breach_notification");
  void SetUp() override {
    v.use_clock([this] { return now.load(); });
  }
  Json open(const std::string& discovered, std::vector<std::string> regimes = {"gdpr"}) {
    return v.service->breach_create(officer, {{"discovered_at", discovered},
                                              {"description", "laptop with CRM export stolen"},
                                              {"categories", {"contact", "identity"}},
                                              {"regimes", regimes},
                                              {"severity", "high"},
                                              {"high_risk", true}});
  }
  Json event(const std::string& id, const std::string& type, const std::string& when) {
    return v.service->breach_add_event(officer, id, {{"type", type}, {"at", when}, {"note", "n"}});
  }
};

TEST_F(Breach, GdprClockIs72HoursAcrossDstAndMonthEnd) {
  // Discovered Friday 27 March 2026 12:00 UTC; Berlin moves to CEST on Sunday 29 March.
  now = at("2026-03-27T12:30:00Z");
  Json b = open("2026-03-27T12:00:00Z");
  ASSERT_GE(b["deadlines"].size(), 2u);
  EXPECT_EQ(b["deadlines"][0]["due_at"], "2026-03-30T12:00:00.000000Z");
  EXPECT_EQ(b["deadlines"][0]["notify"], "authority");
  EXPECT_EQ(b["deadlines"][1]["without_undue_delay"], true);
  // Across a month end: 30 April 15:30 -> 3 May 15:30.
  now = at("2026-04-30T16:00:00Z");
  b = open("2026-04-30T15:30:00Z");
  ASSERT_GE(b["deadlines"].size(), 1u);
  EXPECT_EQ(b["deadlines"][0]["due_at"], "2026-05-03T15:30:00.000000Z");
  // Other regimes as data, each recipient on its own clock: HIPAA individuals,
  // media, HHS and the HHS annual log (45 CFR 164.404-408); Texas residents,
  // Attorney General and consumer reporting agencies (Tex. Bus. & Com. Code
  // 521.053). (Was 4: one authority and one subjects clock per regime.)
  b = open("2026-04-30T15:30:00Z", {"hipaa", "texas"});
  EXPECT_EQ(b["deadlines"].size(), 7u);
  EXPECT_EQ(b["regimes"], Json({"us-hipaa", "us-tx"}));  // canonical names
}

// The deadline entry for one regime's recipient.
Json clock(const Json& incident, const std::string& regime, const std::string& recipient) {
  for (const auto& d : incident["deadlines"])
    if (d["regime"] == regime && d["notify"] == recipient) return d;
  ADD_FAILURE() << "no clock " << regime << "/" << recipient << " in " << incident["deadlines"].dump();
  return Json::object();
}

struct BreachClocks : Breach {
  Json open_with(const std::string& discovered, std::vector<std::string> regimes, Json residents, bool high_risk = true) {
    Json body = {{"discovered_at", discovered}, {"description", "CRM export on a public bucket"},
                 {"categories", {"contact"}},   {"regimes", regimes},
                 {"high_risk", high_risk}};
    if (!residents.is_null()) body["residents"] = residents;
    return v.service->breach_create(officer, body);
  }
  Json notify(const std::string& id, const std::string& regime, const std::string& recipient, const std::string& when) {
    Json body = {{"type", "notified"}, {"recipient", recipient}, {"at", when}};
    if (!regime.empty()) body["regime"] = regime;
    return v.service->breach_add_event(officer, id, body);
  }
};

// Cal. Civ. Code 1798.82(a)(2) as amended by SB 446 (from 2026-01-01):
// residents within 30 calendar days of discovery; 1798.82(f): a sample notice
// to the Attorney General within 15 calendar days of notifying residents when
// more than 500 residents are notified.
TEST_F(BreachClocks, CaliforniaSb446ResidentsIn30DaysAndTheAttorneyGeneral15DaysAfter) {
  now = at("2026-03-25T10:00:00Z");
  Json b = open_with("2026-03-02T10:00:00Z", {"us-ca"}, {{"CA", 700u}});
  // 2 March + 30 days = 1 April (end of the day in the controller's zone, CEST).
  EXPECT_EQ(clock(b, "us-ca", "individuals")["due_at"], "2026-04-01T21:59:59.999999Z");
  Json ag = clock(b, "us-ca", "attorney_general");
  EXPECT_EQ(ag["required"], true);
  EXPECT_EQ(ag["projected"], true);  // from the residents' due date until they are told
  EXPECT_EQ(ag["due_at"], "2026-04-16T21:59:59.999999Z");
  // Residents told on 20 March: the AG's 15 days run from then (4 April).
  b = notify(b["id"], "", "individuals", "2026-03-20T10:00:00Z");
  ag = clock(b, "us-ca", "attorney_general");
  EXPECT_FALSE(ag.contains("projected"));
  EXPECT_EQ(ag["due_at"], "2026-04-04T21:59:59.999999Z");
  EXPECT_EQ(clock(b, "us-ca", "individuals")["met"], true);
  EXPECT_EQ(clock(b, "us-ca", "individuals")["late"], false);
  // "more than 500": 500 is below the line, 501 above.
  EXPECT_EQ(clock(open_with("2026-03-02T10:00:00Z", {"us-ca"}, {{"CA", 500u}}), "us-ca", "attorney_general")["required"], false);
  EXPECT_EQ(clock(open_with("2026-03-02T10:00:00Z", {"us-ca"}, {{"CA", 501u}}), "us-ca", "attorney_general")["required"], true);
  // No Californians affected: nothing to do under California law.
  EXPECT_EQ(clock(open_with("2026-03-02T10:00:00Z", {"california"}, {{"NV", 900u}}), "us-ca", "individuals")["required"], false);
}

// 45 CFR 164.406: media notice when more than 500 residents of a State;
// 164.408(b): HHS with the individuals when 500 or more; 164.408(c): fewer
// than 500 go into a log due 60 days after the end of the calendar year.
TEST_F(BreachClocks, HipaaMediaHhsAndTheAnnualLogAtTheirThresholds) {
  now = at("2027-06-01T10:00:00Z");
  const auto required = [&](Json residents, const std::string& recipient) {
    return clock(open_with("2026-05-10T10:00:00Z", {"us-hipaa"}, residents), "us-hipaa", recipient)["required"].get<bool>();
  };
  EXPECT_FALSE(required({{"CA", 499u}}, "hhs"));
  EXPECT_TRUE(required({{"CA", 499u}}, "hhs_annual_log"));
  EXPECT_TRUE(required({{"CA", 500u}}, "hhs"));
  EXPECT_FALSE(required({{"CA", 500u}}, "hhs_annual_log"));
  EXPECT_FALSE(required({{"CA", 500u}}, "media"));
  EXPECT_TRUE(required({{"CA", 501u}}, "media"));
  // 600 people but no single State above 500: HHS yes, media no.
  EXPECT_TRUE(required({{"CA", 300u}, {"NV", 300u}}, "hhs"));
  EXPECT_FALSE(required({{"CA", 300u}, {"NV", 300u}}, "media"));
  // The log: 31 Dec 2026 + 60 days = 1 March 2027; in a leap year 29 February.
  EXPECT_EQ(clock(open_with("2026-05-10T10:00:00Z", {"hipaa"}, {{"CA", 10u}}), "us-hipaa", "hhs_annual_log")["due_at"],
            "2027-03-01T22:59:59.999999Z");
  EXPECT_EQ(clock(open_with("2027-05-10T10:00:00Z", {"hipaa"}, {{"CA", 10u}}), "us-hipaa", "hhs_annual_log")["due_at"],
            "2028-02-29T22:59:59.999999Z");
  // Individuals: 60 calendar days (164.404(b)).
  EXPECT_EQ(clock(open_with("2026-05-10T10:00:00Z", {"hipaa"}, {{"CA", 10u}}), "us-hipaa", "individuals")["due_at"],
            "2026-07-09T21:59:59.999999Z");
}

// Every residents threshold of the shipped breach regimes, just below and at
// or above its line, as each statute words it ("more than N" -> N is below;
// "N or more" / "at least N" -> N is above). Written from the statutes, not
// read from regulations.yaml, so that a wrong number in the file fails here.
TEST_F(BreachClocks, EveryResidentsThresholdJustBelowAndAboveItsLimit) {
  now = at("2026-05-01T10:00:00Z");
  struct Case {
    const char* cite;
    const char* regime;
    const char* recipient;
    const char* state;
    unsigned below, above;
  } cases[] = {
      {"Cal. Civ. Code 1798.82(f): more than 500", "us-ca", "attorney_general", "CA", 500, 501},
      {"C.R.S. 6-1-716(2)(f): 500 or more", "us-co", "attorney_general", "CO", 499, 500},
      {"C.R.S. 6-1-716(2)(d): more than 1,000", "us-co", "consumer_reporting_agencies", "CO", 1000, 1001},
      {"Fla. Stat. 501.171(3)(a): 500 or more", "us-fl", "attorney_general", "FL", 499, 500},
      {"Fla. Stat. 501.171(5): more than 1,000", "us-fl", "consumer_reporting_agencies", "FL", 1000, 1001},
      {"Tex. Bus. & Com. Code 521.053(i): at least 250", "us-tx", "attorney_general", "TX", 249, 250},
      {"Tex. Bus. & Com. Code 521.053(h): more than 10,000", "us-tx", "consumer_reporting_agencies", "TX", 10000, 10001},
      {"RCW 19.255.010(7): more than 500", "us-wa", "attorney_general", "WA", 500, 501},
      {"6 Del. C. 12B-102(d): more than 500", "us-de", "attorney_general", "DE", 500, 501},
      {"R.I. Gen. Laws 11-49.3-4(a)(2): more than 500", "us-ri", "attorney_general", "RI", 500, 501},
      {"NMSA 57-12C-10: more than 1,000", "us-nm", "attorney_general", "NM", 1000, 1001},
      {"Ala. Code 8-38-6(a): more than 1,000", "us-al", "attorney_general", "AL", 1000, 1001},
      {"A.R.S. 18-552(B)(2): more than 1,000", "us-az", "attorney_general", "AZ", 1000, 1001},
      {"SDCL 22-40-20: more than 250", "us-sd", "attorney_general", "SD", 250, 251},
      {"ORS 646A.604(1)(b): more than 250", "us-or", "attorney_general", "OR", 250, 251},
      {"45 CFR 164.408(b): 500 or more", "us-hipaa", "hhs", "CA", 499, 500},
      {"45 CFR 164.406: more than 500 residents of a State", "us-hipaa", "media", "CA", 500, 501},
      {"state laws: any resident affected", "us-ny", "individuals", "NY", 0, 1},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.cite);
    const auto required = [&](unsigned n) {
      return clock(open_with("2026-04-20T10:00:00Z", {c.regime}, {{c.state, n}}), c.regime, c.recipient)["required"];
    };
    EXPECT_EQ(required(c.below), false);
    EXPECT_EQ(required(c.above), true);
  }
  // 45 CFR 164.408(c): the annual log is for fewer than 500.
  EXPECT_EQ(clock(open_with("2026-04-20T10:00:00Z", {"us-hipaa"}, {{"CA", 499u}}), "us-hipaa", "hhs_annual_log")["required"], true);
  EXPECT_EQ(clock(open_with("2026-04-20T10:00:00Z", {"us-hipaa"}, {{"CA", 500u}}), "us-hipaa", "hhs_annual_log")["required"], false);
}

// Res. CD/ANPD 15/2024 Art. 6 and 9: ANPD and data subjects within 3 business
// days (Brazilian calendar), where the risk is relevant (Art. 5).
TEST_F(BreachClocks, LgpdThreeBusinessDaysOnTheBrazilianCalendar) {
  now = at("2026-04-02T10:00:00Z");
  // Wednesday 1 April 2026: Thu 2 (1), Good Friday 3 skipped, Mon 6 (2), Tue 7 (3).
  Json b = open_with("2026-04-01T12:00:00Z", {"br-lgpd"}, nullptr);
  EXPECT_EQ(clock(b, "br-lgpd", "authority")["due_at"], "2026-04-07T21:59:59.999999Z");
  EXPECT_EQ(clock(b, "br-lgpd", "individuals")["due_at"], "2026-04-07T21:59:59.999999Z");
  b = open_with("2026-04-01T12:00:00Z", {"br-lgpd"}, nullptr, false);
  EXPECT_EQ(clock(b, "br-lgpd", "authority")["required"], false);
  // GDPR Art. 34: individuals only where the risk is high; Art. 33 authority always.
  b = open_with("2026-04-01T12:00:00Z", {"eu-gdpr"}, nullptr, false);
  EXPECT_EQ(clock(b, "eu-gdpr", "individuals")["required"], false);
  EXPECT_EQ(clock(b, "eu-gdpr", "authority")["required"], true);
}

// Each notice satisfies one recipient of one regime; closing waits for all
// required notices.
TEST_F(BreachClocks, EachNotificationNamesTheRecipientItSatisfies) {
  now = at("2026-03-28T10:00:00Z");
  const std::string id = open_with("2026-03-27T10:00:00Z", {"eu-gdpr", "uk-gdpr"}, nullptr)["id"];
  // "authority" of which regime? Both have one.
  EXPECT_EQ(code_of([&] { notify(id, "", "authority", "2026-03-27T11:00:00Z"); }), ErrorCode::invalid_field);
  EXPECT_EQ(code_of([&] { notify(id, "uk-gdpr", "attorney_general", "2026-03-27T11:00:00Z"); }), ErrorCode::invalid_field);
  EXPECT_EQ(code_of([&] { notify(id, "us-ca", "individuals", "2026-03-27T11:00:00Z"); }), ErrorCode::invalid_field);
  Json b = notify(id, "uk-gdpr", "authority", "2026-03-27T11:00:00Z");
  EXPECT_EQ(clock(b, "uk-gdpr", "authority")["met"], true);
  EXPECT_EQ(clock(b, "eu-gdpr", "authority")["met"], false);
  EXPECT_EQ(b["timeline"].back()["recipient"], "authority");
  EXPECT_EQ(b["timeline"].back()["regime"], "uk-gdpr");
  EXPECT_EQ(code_of([&] { event(id, "closed", "2026-03-27T12:00:00Z"); }), ErrorCode::conflict);
  notify(id, "eu-gdpr", "authority", "2026-03-27T12:00:00Z");
  notify(id, "eu-gdpr", "individuals", "2026-03-27T12:00:00Z");
  notify(id, "uk-gdpr", "individuals", "2026-03-27T12:00:00Z");
  EXPECT_EQ(event(id, "closed", "2026-03-27T13:00:00Z")["status"], "closed");
  EXPECT_EQ(code_of([&] { notify(id, "eu-gdpr", "authority", "2026-03-27T14:00:00Z"); }), ErrorCode::conflict);
  // Late is shown as late.
  const std::string late = open_with("2026-03-20T10:00:00Z", {"eu-gdpr"}, nullptr)["id"];
  EXPECT_EQ(clock(notify(late, "", "authority", "2026-03-24T10:00:00Z"), "eu-gdpr", "authority")["late"], true);
  // Dates outside 1970..2100 are refused.
  EXPECT_EQ(code_of([&] { open_with("1969-12-30T10:00:00Z", {"eu-gdpr"}, nullptr); }), ErrorCode::invalid_field);
  EXPECT_EQ(code_of([&] { open_with("2026-03-20T10:00:00Z", {"atlantis"}, nullptr); }), ErrorCode::invalid_field);
}

// A rule file that names an unknown calendar (or does not parse) is refused
// on reload and the rules in force stay; a good edit takes effect.
TEST_F(BreachClocks, ReloadRefusesBrokenRuleFilesAndKeepsTheOldRules) {
  now = at("2026-03-28T10:00:00Z");
  const auto file = v.data_dir() / "policies" / "regulations.yaml";
  std::ifstream in(file);
  const std::string good((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::string error;
  for (const std::string& broken : {std::string(good).replace(good.find("calendar: uk-ew"), 15, "calendar: xx-yy"),
                                    good + "\n  ]]] not yaml\n"}) {
    std::ofstream(file) << broken;
    EXPECT_FALSE(v.service->reload_policies(&error));
    EXPECT_NE(error.find("regulations.yaml"), std::string::npos) << error;
    EXPECT_EQ(clock(open_with("2026-03-27T10:00:00Z", {"uk-gdpr"}, nullptr), "uk-gdpr", "authority")["due_at"],
              "2026-03-30T10:00:00.000000Z");
  }
  std::string edited = good;
  const std::string ico = "authority: {name: \"Information Commissioner's Office\", hours: 72";
  ASSERT_NE(edited.find(ico), std::string::npos);
  edited.replace(edited.find(ico), ico.size(), "authority: {name: \"Information Commissioner's Office\", hours: 48");
  std::ofstream(file) << edited;
  ASSERT_TRUE(v.service->reload_policies(&error)) << error;
  EXPECT_EQ(clock(open_with("2026-03-27T10:00:00Z", {"uk-gdpr"}, nullptr), "uk-gdpr", "authority")["due_at"],
            "2026-03-29T10:00:00.000000Z");
}

// The previous release's rule file (tests/fixtures/policies-v1) put back by
// an operator: refused on SIGHUP with the way out named, the rules in force stay.
TEST_F(BreachClocks, ReloadRefusesThePreviousReleasesRuleFileNamingTheUpgrade) {
  now = at("2026-03-28T10:00:00Z");
  std::ifstream old(std::filesystem::path(CUSTOS_SOURCE_DIR) / "tests" / "fixtures" / "policies-v1" / "regulations.yaml");
  const std::string previous((std::istreambuf_iterator<char>(old)), std::istreambuf_iterator<char>());
  ASSERT_FALSE(previous.empty());
  std::ofstream(v.data_dir() / "policies" / "regulations.yaml") << previous;
  std::string error;
  EXPECT_FALSE(v.service->reload_policies(&error));
  EXPECT_NE(error.find("custos policy upgrade"), std::string::npos) << error;
  EXPECT_EQ(clock(open_with("2026-03-27T10:00:00Z", {"uk-gdpr"}, nullptr), "uk-gdpr", "authority")["due_at"],
            "2026-03-30T10:00:00.000000Z");
}

TEST_F(Breach, AtRiskAndOverdueAtChosenClockValues) {
  const std::string id = open("2026-03-27T08:00:00Z")["id"];
  now = at("2026-03-28T08:00:00Z");  // 48 h left
  EXPECT_EQ(v.service->breach_list(officer, {{"at_risk", "true"}})["count"], 0);
  now = at("2026-03-29T20:00:00Z");  // 12 h left
  EXPECT_EQ(v.service->breach_list(officer, {{"at_risk", "true"}})["count"], 1);
  EXPECT_EQ(v.service->breach_list(officer, {{"overdue", "true"}})["count"], 0);
  now = at("2026-03-30T08:00:01Z");
  EXPECT_EQ(v.service->breach_list(officer, {{"overdue", "true"}})["count"], 1);
  now = at("2026-03-30T10:00:00Z");
  event(id, "contained", "2026-03-27T09:00:00Z");
  event(id, "authority_notified", "2026-03-30T09:00:00Z");
  EXPECT_EQ(v.service->breach_list(officer, {{"overdue", "true"}})["count"], 0);
}

// Notifying the authority before containment is normal (GDPR Art. 33(1):
// within 72 h, "where feasible"; Art. 33(4) allows information in phases), so
// it is no longer refused as a skipped step (it was a 409 before).
TEST_F(Breach, EventsMustBeInOrderAndNotificationNeedsNoContainment) {
  const std::string id = open("2026-03-27T07:00:00Z")["id"];
  EXPECT_EQ(code_of([&] { event(id, "contained", "2026-03-26T07:30:00Z"); }), ErrorCode::invalid_field);
  const Json notified = event(id, "authority_notified", "2026-03-27T07:30:00Z");
  EXPECT_EQ(notified["status"], "open");
  ASSERT_GE(notified["deadlines"].size(), 1u);
  EXPECT_EQ(notified["deadlines"][0]["met"], true);
  event(id, "contained", "2026-03-27T07:40:00Z");
  EXPECT_EQ(code_of([&] { event(id, "contained", "2026-03-27T07:41:00Z"); }), ErrorCode::conflict);
  EXPECT_EQ(code_of([&] { event(id, "note", "2026-03-27T07:35:00Z"); }), ErrorCode::invalid_field);
  EXPECT_EQ(code_of([&] { event(id, "note", "2026-03-29T07:35:00Z"); }), ErrorCode::invalid_field);  // future
  EXPECT_EQ(code_of([&] {
              v.service->breach_create(officer, {{"discovered_at", "2026-03-27T07:00:00Z"},
                                                 {"occurred_from", "2026-03-27T06:00:00Z"},
                                                 {"occurred_to", "2026-03-27T05:00:00Z"},
                                                 {"description", "x"},
                                                 {"categories", {"contact"}}});
            }),
            ErrorCode::invalid_field);
  EXPECT_EQ(code_of([&] {
              v.service->breach_create(officer, {{"description", "x"}, {"categories", {"genome"}}});
            }),
            ErrorCode::invalid_field);
  const Json b = v.service->breach_get(officer, id);
  EXPECT_EQ(b["timeline"].size(), 3u);
}

TEST_F(Breach, AffectedSubjectsFromTheAuditLogMatchAnIndependentRecount) {
  std::vector<std::string> ids;
  for (int i = 0; i < 12; ++i)
    ids.push_back(v.service->create_subject(v.admin(), {{"fields", {{"email", "s" + std::to_string(i) + "@example.com"},
                                                                     {"given_name", "S"}}}})["id"]);
  v.service->create_token(v.admin(), "crm-sales", "sales");
  v.service->create_token(v.admin(), "crm-service", "service");
  const auto sales = v.caller("sales", "sales");
  service::Caller bad = sales;
  bad.principal.name = "crm-sales";
  service::Caller good = v.caller("service", "customer_service");
  good.principal.name = "crm-service";
  now = at("2026-03-27T09:00:00Z");
  for (int i = 0; i < 5; ++i) v.service->get_subject(bad, ids[i]);      // in the window
  for (int i = 5; i < 9; ++i) v.service->get_subject(good, ids[i]);     // someone else
  now = at("2026-03-27T11:00:00Z");
  v.service->get_subject(bad, ids[10]);                                 // after the window
  now = at("2026-03-27T12:00:00Z");
  const std::string id = open("2026-03-27T11:30:00Z")["id"];
  const Json r = v.service->breach_compute_affected(
      officer, id, {{"principals", {"crm-sales"}}, {"from", "2026-03-27T08:30:00Z"}, {"to", "2026-03-27T10:00:00Z"}});
  EXPECT_EQ(r["count"], 5);
  // Independent recount from an audit export.
  std::stringstream out;
  v.service->audit_export(v.caller("auditor", "audit"), out);
  std::set<std::string> recount;
  auditfmt::ExportVisitor visitor;
  visitor.on_entry = [&](std::span<const std::uint8_t> bytes) {
    const auto e = auditfmt::decode(bytes);
    const auto t = audit::parse_time_us(e.time).value();
    if (e.principal == "crm-sales" && e.outcome == "allowed" && !e.subject_id.empty() && t >= at("2026-03-27T08:30:00Z") &&
        t < at("2026-03-27T10:00:00Z") && e.seq < r["checkpoint"]["size"].get<std::uint64_t>())
      recount.insert(e.subject_id);
    return true;
  };
  std::string err;
  ASSERT_TRUE(auditfmt::read_export(out, visitor, err)) << err;
  std::set<std::string> computed;
  for (const auto& s : r["subjects"]) computed.insert(s["subject_id"].get<std::string>());
  EXPECT_EQ(computed, recount);
  // Listing for notification needs the breach_notification purpose.
  const Json list = v.service->breach_affected(officer, id, {});
  ASSERT_EQ(list["subjects"].size(), 5u);
  EXPECT_TRUE(list["subjects"][0]["fields"].contains("email"));
  EXPECT_EQ(code_of([&] { v.service->breach_affected(v.caller("compliance_officer", "dsr_fulfilment"), id, {}); }),
            ErrorCode::purpose_not_allowed);
  // Categories leaked from the store itself: everyone with contact data.
  EXPECT_EQ(v.service->breach_compute_affected(officer, id, {{"categories", {"contact"}}})["count"], 12);
  EXPECT_EQ(code_of([&] {
              v.service->breach_compute_affected(officer, id, {{"principals", {"nobody"}}, {"from", "2026-03-27T08:30:00Z"},
                                                               {"to", "2026-03-27T10:00:00Z"}});
            }),
            ErrorCode::invalid_field);
  EXPECT_EQ(code_of([&] {
              v.service->breach_compute_affected(officer, id, {{"principals", {"crm-sales"}}, {"from", "2026-03-27T10:30:00Z"},
                                                               {"to", "2026-03-27T10:00:00Z"}});
            }),
            ErrorCode::invalid_field);
}

// Which purpose may list affected subjects is policy: purposes.yaml
// `required_for`, reloaded like the rest (default breach_notification).
TEST_F(Breach, TheNotificationListPurposeComesFromPurposesYaml) {
  const std::string id = open("2026-03-27T07:00:00Z")["id"];
  const auto legal = v.caller("compliance_officer", "legal_claims");
  EXPECT_NO_THROW(v.service->breach_affected(officer, id, {}));
  EXPECT_EQ(code_of([&] { v.service->breach_affected(legal, id, {}); }), ErrorCode::purpose_not_allowed);

  const auto file = v.data_dir() / "policies" / "purposes.yaml";
  std::ifstream in(file);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string from = "legal_obligation, required_for: [breach.notify_list]}";
  ASSERT_NE(text.find(from), std::string::npos);
  text.replace(text.find(from), from.size(), "legal_obligation}");
  const std::string claims = "legal_claims:       {description: \"Establishing or defending legal claims\", lawful_basis: legal_obligation";
  ASSERT_NE(text.find(claims), std::string::npos);
  text.insert(text.find(claims) + claims.size(), ", required_for: [breach.notify_list]");
  std::ofstream(file) << text;
  std::string error;
  ASSERT_TRUE(v.service->reload_policies(&error)) << error;
  EXPECT_NO_THROW(v.service->breach_affected(legal, id, {}));
  EXPECT_EQ(code_of([&] { v.service->breach_affected(officer, id, {}); }), ErrorCode::purpose_not_allowed);

  std::ofstream(file) << text.replace(text.find("[breach.notify_list]"), 20, "[NotAnOperation]");
  EXPECT_FALSE(v.service->reload_policies(&error));
  EXPECT_NE(error.find("required_for"), std::string::npos) << error;
}

TEST_F(Breach, RetentionDryRunEqualsRealRunAndRespectsLegalHold) {
  now = at("2020-01-01T00:00:00Z");
  const std::string old1 = v.service->create_subject(v.admin(), {{"fields", {{"email", "old1@example.com"}}}})["id"];
  const std::string old2 = v.service->create_subject(v.admin(), {{"fields", {{"email", "old2@example.com"}}}})["id"];
  const std::string held = v.service->create_subject(v.admin(), {{"fields", {{"email", "held@example.com"}}}})["id"];
  now = at("2024-06-01T00:00:00Z");
  v.service->add_order(v.admin(), old2, {{"amount_minor", 100}, {"currency", "EUR"}, {"at", "2024-06-01T00:00:00Z"}});
  const std::string fresh = v.service->create_subject(v.admin(), {{"fields", {{"email", "fresh@example.com"}}}})["id"];
  now = at("2026-03-27T08:00:00Z");
  // The legal hold is set by the records layer (as a DSR officer would).
  {
    v.service.reset();
    service::OpenOptions o;
    o.data_dir = v.data_dir();
    o.clock_us = [this] { return now.load(); };
    v.service = service::Service::open(o);
  }
  v.service->set_legal_hold(v.admin(), held, true);
  const Json dry = v.service->retention_run(v.admin(), true);
  const Json real = v.service->retention_run(v.admin(), false);
  EXPECT_EQ(dry["purged"], real["purged"]);
  EXPECT_EQ(dry["kept"], real["kept"]);
  ASSERT_EQ(real["purged"].size(), 1u);
  ASSERT_EQ(real["kept"].size(), 1u);
  EXPECT_EQ(real["purged"][0]["subject_id"], old1);
  EXPECT_EQ(real["kept"][0]["subject_id"], held);
  EXPECT_EQ(code_of([&] { v.service->get_subject(v.admin("customer_service"), old1); }), ErrorCode::not_found);
  EXPECT_NO_THROW(v.service->get_subject(v.admin("customer_service"), old2));
  EXPECT_NO_THROW(v.service->get_subject(v.admin("customer_service"), held));
  EXPECT_NO_THROW(v.service->get_subject(v.admin("customer_service"), fresh));
  EXPECT_TRUE(testing::files_containing(v.dir.path(), "old1@example.com").empty());
}

}  // namespace
}  // namespace custos
