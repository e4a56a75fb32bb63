// The records promises of issue 15, each written as the attack that broke it:
// erasure is its own operation (finding 4), and a lookup cannot confirm a
// value the role only sees masked (finding 5). Run through the Service
// façade on a real vault.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "custos/error.h"
#include "test_support.h"

namespace custos {
namespace {

using service::Json;
using testing::code_of;
using testing::TestVault;

Json ada() {
  return {{"fields",
           {{"given_name", "Ada"},
            {"family_name", "Lovelace"},
            {"email", "ada@example.com"},
            {"phone", "+1 202 555 0142"},
            {"external_id", "crm-ada"}}}};
}

// The audit entries for one subject and operation.
Json entries_for(TestVault& v, const std::string& subject, const std::string& operation) {
  std::map<std::string, std::string> q = {{"operation", operation}};
  if (!subject.empty()) q["subject"] = subject;
  return v.service->audit_entries(v.caller("auditor", "audit"), q)["entries"];
}

std::string message_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Checks that every `operation` entry about `subject` is a denial with
// `code`; returns how many there are.
int denials(TestVault& v, const std::string& subject, const std::string& operation, const std::string& code) {
  int n = 0;
  for (const auto& e : entries_for(v, subject, operation)) {
    EXPECT_EQ(e["outcome"], "denied") << e;
    EXPECT_EQ(e["reason"], code) << e;
    ++n;
  }
  return n;
}

Json erase(TestVault& v, const service::Caller& c, const std::string& id, const std::string& reason) {
  return v.service->erase_subject(c, id, reason);
}

// ------------------------------------------------------------ finding 4: erasure

TEST(RecordsPromises, AWriteTokenCannotCryptoShredAnyone) {
  TestVault v;
  const std::string id = v.service->create_subject(v.admin(), ada())["id"];
  // `service` holds records.write, not records.erase: with or without a
  // purpose or a reason, nothing is erased.
  EXPECT_EQ(code_of([&] { erase(v, v.caller("service", ""), id, ""); }), ErrorCode::forbidden_role);
  EXPECT_EQ(code_of([&] { erase(v, v.caller("service", "customer_service"), id, "customer asked"); }),
            ErrorCode::forbidden_role);
  EXPECT_EQ(code_of([&] { erase(v, v.caller("sales", "sales"), id, "customer asked"); }), ErrorCode::forbidden_role);
  EXPECT_EQ(v.service->get_subject(v.admin("customer_service"), id)["fields"]["email"], "ada@example.com");
  EXPECT_EQ(denials(v, id, "subject.erase", "forbidden_role"), 3);
}

TEST(RecordsPromises, ErasureNeedsAPurposeThatJustifiesIt) {
  TestVault v;
  const std::string id = v.service->create_subject(v.admin(), ada())["id"];
  EXPECT_EQ(code_of([&] { erase(v, v.admin(""), id, "ticket CS-1"); }), ErrorCode::purpose_not_allowed);
  // A purpose the role may declare, but one that does not justify erasure.
  EXPECT_EQ(code_of([&] { erase(v, v.admin("customer_service"), id, "ticket CS-1"); }),
            ErrorCode::purpose_not_allowed);
  EXPECT_EQ(code_of([&] { erase(v, v.caller("compliance_officer", "analytics"), id, "ticket CS-1"); }),
            ErrorCode::purpose_not_allowed);
  EXPECT_EQ(v.service->get_subject(v.admin("customer_service"), id)["status"], "active");
  const Json denials = entries_for(v, id, "subject.erase");
  ASSERT_EQ(denials.size(), 3u);
  for (const auto& e : denials) EXPECT_EQ(e["reason"], "purpose_not_allowed") << e;
}

TEST(RecordsPromises, ErasureNeedsABoundedPrintableReason) {
  TestVault v;
  const std::string id = v.service->create_subject(v.admin(), ada())["id"];
  const auto officer = v.caller("compliance_officer", "dsr_fulfilment");
  EXPECT_EQ(code_of([&] { erase(v, officer, id, ""); }), ErrorCode::invalid_argument);
  EXPECT_EQ(code_of([&] { erase(v, officer, id, std::string(129, 'x')); }), ErrorCode::invalid_argument);
  EXPECT_EQ(code_of([&] { erase(v, officer, id, "line one\nline two"); }), ErrorCode::invalid_argument);
  EXPECT_EQ(code_of([&] { erase(v, officer, id, std::string("tab\there")); }), ErrorCode::invalid_argument);
  EXPECT_EQ(code_of([&] { erase(v, officer, id, std::string("del\x7f")); }), ErrorCode::invalid_argument);
  EXPECT_EQ(message_of([&] { erase(v, officer, id, ""); }).find("reason") != std::string::npos, true);
  EXPECT_EQ(v.service->get_subject(v.admin("customer_service"), id)["status"], "active");
  const Json denials = entries_for(v, id, "subject.erase");
  ASSERT_EQ(denials.size(), 6u);  // the five above and message_of's
  for (const auto& e : denials) {
    EXPECT_EQ(e["outcome"], "denied") << e;
    EXPECT_EQ(e["reason"], "invalid_argument") << e;
  }
}

TEST(RecordsPromises, ErasureByAnEraseRoleRecordsItsReason) {
  TestVault v;
  const std::string a = v.service->create_subject(v.admin(), ada())["id"];
  const std::string b =
      v.service->create_subject(v.admin(), {{"fields", {{"given_name", "Bob"}, {"email", "bob@example.com"}}}})["id"];
  const Json r = erase(v, v.caller("compliance_officer", "dsr_fulfilment"), a, "ticket CS-1234 (phone request)");
  EXPECT_EQ(r["status"], "erased");
  erase(v, v.admin("administration"), b, "test record");
  EXPECT_EQ(code_of([&] { v.service->get_subject(v.admin("customer_service"), a); }), ErrorCode::not_found);
  EXPECT_EQ(code_of([&] { v.service->get_subject(v.admin("customer_service"), b); }), ErrorCode::not_found);
  const Json ea = entries_for(v, a, "subject.erase");
  ASSERT_EQ(ea.size(), 1u);
  EXPECT_EQ(ea[0]["outcome"], "allowed");
  EXPECT_EQ(ea[0]["purpose"], "dsr_fulfilment");
  EXPECT_NE(ea[0]["detail"].get<std::string>().find("ticket CS-1234 (phone request)"), std::string::npos) << ea[0];
  const Json eb = entries_for(v, b, "subject.erase");
  ASSERT_EQ(eb.size(), 1u);
  EXPECT_NE(eb[0]["detail"].get<std::string>().find("test record"), std::string::npos) << eb[0];
}

TEST(RecordsPromises, ErasureThroughACompletedRequestStillWorks) {
  TestVault v;
  const std::string id = v.service->create_subject(v.admin(), ada())["id"];
  const auto officer = v.caller("compliance_officer", "dsr_fulfilment");
  const std::string req = v.service->dsr_create(officer, {{"type", "erasure"},
                                                          {"regime", "gdpr"},
                                                          {"identifier", {{"email", "ada@example.com"}}},
                                                          {"channel", "web_form"}})["id"];
  for (const char* to : {"identity_verified", "in_progress", "completed"})
    v.service->dsr_transition(officer, req, {{"to", to}, {"note", "step"}});
  EXPECT_EQ(code_of([&] { v.service->get_subject(v.admin("customer_service"), id); }), ErrorCode::not_found);
}

// ------------------------------------------------------------ finding 5: lookups

TEST(RecordsPromises, AMaskedFieldCannotBeConfirmedByLookup) {
  TestVault v;
  const std::string id = v.service->create_subject(v.admin(), ada())["id"];
  // `service` sees contact fields masked: a***@example.com, ***-***-0142.
  const auto svc = v.caller("service", "customer_service");
  ASSERT_EQ(v.service->get_subject(svc, id)["fields"]["email"], "a***@example.com");
  // A hit and a miss are refused alike, before any lookup.
  EXPECT_EQ(code_of([&] { v.service->find_subjects(svc, "email", "ada@example.com"); }), ErrorCode::forbidden_role);
  EXPECT_EQ(code_of([&] { v.service->find_subjects(svc, "email", "nobody@example.com"); }), ErrorCode::forbidden_role);
  EXPECT_EQ(code_of([&] { v.service->find_subjects(svc, "phone", "+1 202 555 0142"); }), ErrorCode::forbidden_role);
  const std::string hit = message_of([&] { v.service->find_subjects(svc, "email", "ada@example.com"); });
  const std::string miss = message_of([&] { v.service->find_subjects(svc, "email", "nobody@example.com"); });
  EXPECT_EQ(hit, miss);
  EXPECT_NE(hit.find("email"), std::string::npos) << hit;
  EXPECT_EQ(hit.find("ada"), std::string::npos) << hit;
  // Audited as denials; nothing was read, nothing names the subject.
  EXPECT_EQ(denials(v, "", "subject.lookup", "forbidden_role"), 5);
  for (const auto& e : entries_for(v, "", "subject.lookup")) EXPECT_EQ(e["subject_id"], "") << e;
}

TEST(RecordsPromises, LookupByAFieldSeenInPlainStillWorks) {
  TestVault v;
  const std::string id = v.service->create_subject(v.admin(), ada())["id"];
  // sales sees contact plain; service sees identity (external_id) plain.
  const Json s = v.service->find_subjects(v.caller("sales", "sales"), "email", "ADA@example.com");
  ASSERT_EQ(s["subjects"].size(), 1u);
  EXPECT_EQ(s["subjects"][0]["id"], id);
  const Json e = v.service->find_subjects(v.caller("service", "customer_service"), "external_id", "crm-ada");
  ASSERT_EQ(e["subjects"].size(), 1u);
  EXPECT_EQ(e["subjects"][0]["fields"]["email"], "a***@example.com");
  EXPECT_TRUE(v.service->find_subjects(v.caller("sales", "sales"), "email", "nobody@example.com")["subjects"].empty());
}

// ------------------------------------------------------------ finding 3: restriction

// A subject restricted by a completed restriction request (GDPR Art. 18).
struct Restricted : ::testing::Test {
  TestVault v;
  service::Caller officer = v.caller("compliance_officer", "dsr_fulfilment");
  std::string id;
  void SetUp() override {
    id = v.service->create_subject(v.admin(), ada())["id"];
    complete("restriction");
  }
  Json complete(const std::string& type, const Json& extra = Json::object()) {
    Json body = {{"type", type}, {"regime", "gdpr"}, {"identifier", {{"email", "ada@example.com"}}},
                 {"channel", "web_form"}};
    body.update(extra);
    const std::string req = v.service->dsr_create(officer, body)["id"];
    Json last;
    for (const char* to : {"identity_verified", "in_progress", "completed"})
      last = v.service->dsr_transition(officer, req, {{"to", to}, {"note", "step"}});
    return last;
  }
  int denials(const std::string& operation) {
    int n = 0;
    for (const auto& e : entries_for(v, id, operation))
      if (e["outcome"] == "denied" && e["reason"] == "subject_restricted") ++n;
    return n;
  }
};

TEST_F(Restricted, OnlyPurposesAllowedWhenRestrictedMayReadIt) {
  EXPECT_EQ(code_of([&] { v.service->get_subject(v.caller("sales", "sales"), id); }), ErrorCode::subject_restricted);
  EXPECT_EQ(code_of([&] { v.service->get_subject(v.caller("service", "customer_service"), id); }),
            ErrorCode::subject_restricted);
  EXPECT_EQ(code_of([&] { v.service->get_subject(v.admin("customer_service"), id); }), ErrorCode::subject_restricted);
  EXPECT_EQ(denials("subject.read"), 3);
  // dsr_fulfilment, legal_claims, audit may.
  EXPECT_EQ(v.service->get_subject(officer, id)["fields"]["email"], "ada@example.com");
  EXPECT_EQ(v.service->get_subject(v.caller("compliance_officer", "legal_claims"), id)["restricted"], true);
}

TEST_F(Restricted, BatchGetAndLookupsObeyIt) {
  const Json r = v.service->batch_get(v.caller("sales", "sales"), {{"ids", {id}}});
  ASSERT_EQ(r["results"].size(), 1u);
  EXPECT_EQ(r["results"][0]["status"], 403) << r;
  EXPECT_EQ(r["results"][0]["error"]["code"], "subject_restricted") << r;
  EXPECT_FALSE(r["results"][0].contains("subject")) << r;
  EXPECT_EQ(v.service->find_subjects(v.caller("sales", "sales"), "email", "ada@example.com").dump().find("ada@"),
            std::string::npos);
  EXPECT_EQ(v.service->find_subjects(officer, "email", "ada@example.com")["subjects"].size(), 1u);
}

TEST_F(Restricted, TheWholeVaultExportLeavesItOut) {
  const std::string other =
      v.service->create_subject(v.admin(), {{"fields", {{"email", "other@example.com"}}}})["id"];
  std::string dump;
  const Json done = v.service->export_subjects(v.admin("administration"), {}, [&](const std::string& line) {
    dump += line;
    return true;
  });
  EXPECT_EQ(done["subjects"], 1) << done;
  EXPECT_NE(dump.find(other), std::string::npos);
  EXPECT_EQ(dump.find(id), std::string::npos) << "a restricted subject left in an export";
  EXPECT_EQ(dump.find("ada@example.com"), std::string::npos);
}

TEST_F(Restricted, WritesAreRefusedButRectificationThroughARequestWorks) {
  EXPECT_EQ(code_of([&] {
              v.service->patch_subject(v.caller("service", "customer_service"), id,
                                       {{"fields", {{"email", "evil@example.com"}}}});
            }),
            ErrorCode::subject_restricted);
  EXPECT_EQ(code_of([&] {
              v.service->add_touchpoint(v.caller("sales", "sales"), id, {{"channel", "phone"}, {"type", "call"}});
            }),
            ErrorCode::subject_restricted);
  EXPECT_EQ(code_of([&] {
              v.service->add_order(v.caller("sales", "sales"), id, {{"amount_minor", 100}, {"currency", "EUR"}});
            }),
            ErrorCode::subject_restricted);
  EXPECT_EQ(denials("subject.update"), 1);
  EXPECT_EQ(v.service->get_subject(officer, id)["fields"]["email"], "ada@example.com");
  complete("rectification", {{"changes", {{"fields", {{"family_name", "King"}}}}}});
  EXPECT_EQ(v.service->get_subject(officer, id)["fields"]["family_name"], "King");
}

}  // namespace
}  // namespace custos
