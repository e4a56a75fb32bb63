#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "custos/audit/audit_log.h"
#include "custos/error.h"
#include "custos/util/calendar.h"
#include "custos_audit/verify.h"
#include "test_support.h"

namespace custos {
namespace {

using service::Json;
using testing::TestVault;

std::int64_t at(const std::string& rfc3339) { return *audit::parse_time_us(rfc3339); }
std::string iso(std::int64_t us) { return audit::format_time_us(us); }

const std::set<std::string> kHolidays = {"2026-12-25", "2026-12-26", "2027-01-01"};

TEST(Deadlines, TableDriven) {
  const util::Calendar berlin("Europe/Berlin", kHolidays);
  const util::Calendar la("America/Los_Angeles", kHolidays);
  struct Case {
    const util::Calendar* cal;
    std::string start;
    util::Period period;
    std::string due;  // UTC
  };
  const std::vector<Case> cases = {
      // One month, same day: 15 March -> 15 April (end of the local day, CEST).
      {&berlin, "2026-03-15T09:00:00Z", {1, 0, 0, 0}, "2026-04-15T21:59:59.999999Z"},
      // 31 January + 1 month: February has no 31st -> its last day.
      {&berlin, "2026-01-31T10:00:00Z", {1, 0, 0, 0}, "2026-02-28T22:59:59.999999Z"},
      // ... and in a leap year, the 29th.
      {&berlin, "2028-01-31T10:00:00Z", {1, 0, 0, 0}, "2028-02-29T22:59:59.999999Z"},
      // Receipt late on 31 March UTC is already 1 April in Berlin.
      {&berlin, "2026-03-31T23:30:00Z", {1, 0, 0, 0}, "2026-05-01T21:59:59.999999Z"},
      // Three months (GDPR one + extension of two), across year end.
      {&berlin, "2026-11-30T12:00:00Z", {3, 0, 0, 0}, "2027-02-28T22:59:59.999999Z"},
      // 45 calendar days (CCPA) in Los Angeles, across the DST end.
      {&la, "2026-10-20T18:00:00Z", {0, 45, 0, 0}, "2026-12-05T07:59:59.999999Z"},
      // 10 business days from Friday 18 December 2026 skip weekends, 25/26 Dec and 1 Jan.
      {&berlin, "2026-12-18T10:00:00Z", {0, 0, 10, 0}, "2027-01-05T22:59:59.999999Z"},
      // 15 business days starting on a Saturday.
      {&berlin, "2026-11-21T10:00:00Z", {0, 0, 15, 0}, "2026-12-11T22:59:59.999999Z"},
      // 72 hours is exact elapsed time, also across the spring DST change.
      {&berlin, "2026-03-27T12:00:00Z", {0, 0, 0, 72}, "2026-03-30T12:00:00.000000Z"},
  };
  for (const auto& c : cases) EXPECT_EQ(iso(c.cal->deadline(at(c.start), c.period)), c.due) << c.start;
  EXPECT_THROW(util::Calendar("Mars/Olympus"), Error);
}

using testing::code_of;

struct Dsr : ::testing::Test {
  TestVault v;
  service::Caller officer = v.caller("compliance_officer", "dsr_fulfilment");
  std::string subject;
  void SetUp() override {
    subject = v.service->create_subject(
        v.admin(), {{"fields", {{"email", "dora@example.com"}, {"given_name", "Dora"}, {"family_name", "Explorer"}}}})["id"];
  }
  Json create(const std::string& type, const std::string& regime = "gdpr", const std::string& email = "dora@example.com") {
    return v.service->dsr_create(officer, {{"type", type}, {"regime", regime}, {"identifier", {{"email", email}}},
                                           {"channel", "web_form"}});
  }
  Json move(const std::string& id, const std::string& to, const std::string& reason = "") {
    Json body = {{"to", to}, {"note", "step"}};
    if (!reason.empty()) body["reason"] = reason;
    return v.service->dsr_transition(officer, id, body);
  }
};

TEST_F(Dsr, IntakeMatchesThroughBlindIndexAndFlagsDuplicates) {
  const Json a = create("access");
  EXPECT_EQ(a["subject_id"], subject);
  EXPECT_EQ(a["status"], "received");
  EXPECT_FALSE(a.contains("duplicate"));
  const Json b = create("access");
  EXPECT_EQ(b["duplicate"], true);
  EXPECT_EQ(b["duplicate_of"], a["id"]);
  const Json none = create("access", "ccpa", "nobody@example.com");
  EXPECT_EQ(none["no_data_held"], true);
  EXPECT_TRUE(none.contains("confirm_receipt_by"));
  EXPECT_EQ(code_of([&] { create("teleport"); }), ErrorCode::invalid_field);
  EXPECT_EQ(code_of([&] { create("access", "atlantis"); }), ErrorCode::invalid_field);
}

TEST_F(Dsr, LifecycleTransitionsAndExtension) {
  const std::string id = create("access")["id"];
  EXPECT_EQ(code_of([&] { move(id, "completed"); }), ErrorCode::conflict);
  EXPECT_EQ(code_of([&] { move(id, "denied"); }), ErrorCode::invalid_field);  // reason required
  const std::string due_before = v.service->dsr_get(officer, id)["due_at"];
  move(id, "identity_verified");
  const Json ext = move(id, "extended", "complex request");
  EXPECT_GT(ext["due_at"].get<std::string>(), due_before);
  EXPECT_EQ(ext["extensions"], 1);
  move(id, "in_progress");
  EXPECT_EQ(code_of([&] { move(id, "extended", "again"); }), ErrorCode::conflict);
  const Json done = move(id, "completed");
  EXPECT_EQ(done["status"], "completed");
  EXPECT_GE(done["timeline"].size(), 5u);
  EXPECT_EQ(code_of([&] { move(id, "in_progress"); }), ErrorCode::conflict);
  // Transitions are in the audit log.
  const Json entries = v.service->audit_entries(v.caller("auditor", "audit"), {{"operation", "dsr.transition"}});
  EXPECT_EQ(entries["entries"].size(), 4u);
}

// The lifecycle is a state machine, not a free choice of status: work on a
// request starts only once the requester's identity is verified, and a
// closed request does not reopen. (Completion has a second guard of its own;
// these moves have only the table; awaiting_approval is never asked for.)
TEST_F(Dsr, NoStepOfTheLifecycleCanBeSkippedOrUndone) {
  const std::string id = create("access")["id"];
  for (const char* to : {"in_progress", "awaiting_confirmation"})
    EXPECT_EQ(code_of([&] { move(id, to); }), ErrorCode::conflict) << "received -> " << to;
  move(id, "identity_verified");
  for (const char* to : {"awaiting_confirmation", "identity_verified"})
    EXPECT_EQ(code_of([&] { move(id, to); }), ErrorCode::conflict) << "identity_verified -> " << to;
  move(id, "canceled", "withdrawn by the requester");
  for (const char* to : {"received", "identity_verified", "in_progress"})
    EXPECT_EQ(code_of([&] { move(id, to); }), ErrorCode::conflict) << "canceled -> " << to;
  EXPECT_EQ(v.service->dsr_get(officer, id)["status"], "canceled");
}

TEST_F(Dsr, AccessExportHasEverythingAndVerifiableProofs) {
  v.service->add_touchpoint(v.admin(), subject, {{"channel", "email"}, {"type", "inquiry"}, {"notes", "asked about shoes"}});
  v.service->add_order(v.admin(), subject, {{"amount_minor", 4999}, {"currency", "EUR"}});
  v.service->record_consent(v.admin(), subject,
                            {{"purpose", "email_marketing"}, {"channel", "email"}, {"event", "granted"}, {"source", "web_form"}},
                            false);
  v.service->get_subject(v.caller("service", "customer_service"), subject);
  const std::string id = create("access")["id"];
  move(id, "identity_verified");
  const Json ex = v.service->dsr_export(officer, id);
  EXPECT_EQ(ex["subject"]["fields"]["email"], "dora@example.com");
  EXPECT_EQ(ex["touchpoints"][0]["notes"], "asked about shoes");
  EXPECT_EQ(ex["orders"][0]["amount_minor"], 4999);
  EXPECT_EQ(ex["consent_history"][0]["event"], "granted");
  EXPECT_FALSE(ex["disclosures"].empty());
  std::string orders_csv;
  v.service->dsr_export(officer, id, {"csv", "orders"}, [&](std::string_view c) {
    orders_csv.append(c);
    return true;
  });
  EXPECT_NE(orders_csv.find(",4999,EUR,"), std::string::npos) << orders_csv;
  const Json& log = ex["access_log"];
  ASSERT_GE(log["entries"].size(), 3u);
  // The export's own verifier_key is only a convenience: a package proves
  // itself against the key the auditor holds, the vault's, obtained apart.
  const std::string vault_key = v.service->audit_verifier_key();
  EXPECT_EQ(log["verifier_key"], vault_key);
  bool saw_service_read = false;
  for (const auto& e : log["entries"]) {
    const auto r = auditfmt::verify_inclusion_bundle(e.dump(), vault_key);
    EXPECT_TRUE(r.ok) << r.error;
    saw_service_read = saw_service_read || e["decoded"]["principal"] == "test-service";
  }
  EXPECT_TRUE(saw_service_read);
}

TEST_F(Dsr, ErasureShredsButKeepsOrdersWithTheirBasis) {
  v.service->add_order(v.admin(), subject, {{"amount_minor", 1234}, {"currency", "EUR"}});
  const std::string id = create("erasure")["id"];
  move(id, "identity_verified");
  move(id, "in_progress");
  const Json done = move(id, "completed");
  const Json& report = done["report"];
  EXPECT_EQ(report["erased"]["fields"].size(), 3u);
  EXPECT_EQ(report["retained"][0]["record"], "orders");
  EXPECT_FALSE(report["notify_downstream"].empty());
  EXPECT_EQ(code_of([&] { v.service->get_subject(v.admin("customer_service"), subject); }), ErrorCode::not_found);
  EXPECT_TRUE(testing::files_containing(v.dir.path(), "dora@example.com").empty());
  EXPECT_TRUE(testing::files_containing(v.dir.path(), "Explorer").empty());
}

// Issue 15, finding 8: an erasure blocked by a legal hold is not reported as
// done. It ends as completed_with_exceptions, its report has the same shape
// as any erasure's (erased is an object), names the hold as the exception,
// and lists no downstream system to notify, since nothing was erased.
TEST_F(Dsr, ErasureUnderLegalHoldEndsWithExceptionsAndNotifiesNoOne) {
  v.service->set_legal_hold(officer, subject, true);
  const std::string id = create("erasure")["id"];
  move(id, "identity_verified");
  move(id, "in_progress");
  const Json done = move(id, "completed");
  EXPECT_EQ(done["status"], "completed_with_exceptions") << done;
  const Json& report = done["report"];
  ASSERT_TRUE(report["erased"].is_object()) << report;
  EXPECT_TRUE(report["erased"]["fields"].empty()) << report;
  ASSERT_EQ(report["exceptions"].size(), 1u) << report;
  EXPECT_EQ(report["exceptions"][0]["basis"], "legal hold");
  EXPECT_TRUE(report["notify_downstream"].empty()) << report;
  // Nothing was erased, and the request is closed (not overdue, not open).
  EXPECT_EQ(v.service->get_subject(v.admin("customer_service"), subject)["fields"]["given_name"], "Dora");
  EXPECT_EQ(code_of([&] { move(id, "in_progress"); }), ErrorCode::conflict);
  EXPECT_EQ(v.service->dsr_list(officer, {{"status", "completed_with_exceptions"}})["requests"].size(), 1u);

  // The same request type without a hold: the same report keys.
  v.service->set_legal_hold(officer, subject, false);
  const std::string again = create("erasure")["id"];
  move(again, "identity_verified");
  move(again, "in_progress");
  const Json erased = move(again, "completed");
  EXPECT_EQ(erased["status"], "completed");
  for (const char* key : {"erased", "retained", "exceptions", "notify_downstream"})
    EXPECT_TRUE(erased["report"].contains(key)) << key;
  EXPECT_TRUE(erased["report"]["exceptions"].empty());
  EXPECT_FALSE(erased["report"]["notify_downstream"].empty());
}

TEST_F(Dsr, RectificationObjectionAndRestriction) {
  Json body = {{"type", "rectification"}, {"regime", "gdpr"}, {"identifier", {{"email", "dora@example.com"}}},
               {"changes", {{"fields", {{"family_name", "Explorer-Smith"}}}}}};
  const std::string id = v.service->dsr_create(officer, body)["id"];
  move(id, "identity_verified");
  move(id, "in_progress");
  EXPECT_EQ(move(id, "completed")["report"]["fields_changed"][0], "family_name");
  EXPECT_EQ(v.service->get_subject(v.admin("customer_service"), subject)["fields"]["family_name"], "Explorer-Smith");
  // Bad corrections are refused at intake, naming the field.
  body["changes"] = {{"fields", {{"email", "not-an-email"}}}};
  EXPECT_EQ(code_of([&] { v.service->dsr_create(officer, body); }), ErrorCode::invalid_field);

  v.service->record_consent(v.admin(), subject,
                            {{"purpose", "email_marketing"}, {"channel", "email"}, {"event", "granted"}, {"source", "api"}},
                            false);
  const std::string obj = create("objection")["id"];
  move(obj, "identity_verified");
  move(obj, "in_progress");
  EXPECT_FALSE(move(obj, "completed")["report"]["withdrawn"].empty());
  const std::string res = create("restriction")["id"];
  move(res, "identity_verified");
  move(res, "in_progress");
  move(res, "completed");
  // Restricted (Art. 18): only purposes allowed_when_restricted still read it.
  EXPECT_EQ(v.service->get_subject(officer, subject)["restricted"], true);
  EXPECT_EQ(code_of([&] { v.service->get_subject(v.admin("customer_service"), subject); }),
            ErrorCode::subject_restricted);
}

TEST_F(Dsr, OverdueListing) {
  const std::string id = v.service->dsr_create(officer, {{"type", "access"}, {"regime", "gdpr"},
                                                         {"identifier", {{"email", "dora@example.com"}}},
                                                         {"received_at", "2020-01-01T00:00:00Z"}})["id"];
  create("erasure");
  const Json overdue = v.service->dsr_list(officer, {{"overdue", "true"}});
  ASSERT_EQ(overdue["requests"].size(), 1u);
  EXPECT_EQ(overdue["requests"][0]["id"], id);
  EXPECT_EQ(overdue["requests"][0]["overdue"], true);
  EXPECT_EQ(v.service->dsr_list(officer, {{"due_within_days", "40"}})["requests"].size(), 2u);
  EXPECT_EQ(code_of([&] { v.service->dsr_list(officer, {{"overdue", "maybe"}}); }), ErrorCode::invalid_argument);
  EXPECT_EQ(code_of([&] { move(id, "extended", "late"); }), ErrorCode::conflict);
}

}  // namespace
}  // namespace custos
