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
  EXPECT_EQ(b["deadlines"][0]["due_at"], "2026-03-30T12:00:00.000000Z");
  EXPECT_EQ(b["deadlines"][0]["notify"], "authority");
  EXPECT_EQ(b["deadlines"][1]["without_undue_delay"], true);
  // Across a month end: 30 April 15:30 -> 3 May 15:30.
  now = at("2026-04-30T16:00:00Z");
  b = open("2026-04-30T15:30:00Z");
  EXPECT_EQ(b["deadlines"][0]["due_at"], "2026-05-03T15:30:00.000000Z");
  // Other regimes as data.
  b = open("2026-04-30T15:30:00Z", {"hipaa", "texas"});
  EXPECT_EQ(b["deadlines"].size(), 4u);
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

TEST_F(Breach, EventsMustBeInOrderAndNotSkipSteps) {
  const std::string id = open("2026-03-27T07:00:00Z")["id"];
  EXPECT_EQ(code_of([&] { event(id, "authority_notified", "2026-03-27T07:30:00Z"); }), ErrorCode::conflict);
  EXPECT_EQ(code_of([&] { event(id, "contained", "2026-03-26T07:30:00Z"); }), ErrorCode::invalid_field);
  event(id, "contained", "2026-03-27T07:40:00Z");
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
  EXPECT_EQ(b["timeline"].size(), 2u);
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
  EXPECT_EQ(list["subjects"].size(), 5u);
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
