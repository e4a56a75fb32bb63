#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "custos/error.h"
#include "test_support.h"

namespace custos {
namespace {

using service::Json;
using testing::TestVault;

using testing::code_of;

Json person() {
  return {{"fields",
           {{"given_name", "Jane"},
            {"family_name", "Doe"},
            {"email", "jane.doe@example.com"},
            {"phone", "+1 202 555 1234"},
            {"birth_date", "1985-11-02"},
            {"notes", "prefers mornings"}}}};
}

TEST(Service, MaskingFollowsRoleVisibility) {
  TestVault v;
  const std::string id = v.service->create_subject(v.admin(), person())["id"];
  // service: identity plain, contact masked, descriptive none, qualitative plain
  const Json s = v.service->get_subject(v.caller("service", "customer_service"), id);
  EXPECT_EQ(s["fields"]["given_name"], "Jane");
  EXPECT_EQ(s["fields"]["email"], "j***@example.com");
  EXPECT_EQ(s["fields"]["phone"], "***-***-1234");
  EXPECT_FALSE(s["fields"].contains("birth_date"));
  EXPECT_EQ(s["fields"]["notes"], "prefers mornings");
  // sales: descriptive masked -> year only
  const Json sales = v.service->get_subject(v.caller("sales", "sales"), id);
  EXPECT_EQ(sales["fields"]["birth_date"], "1985");
  EXPECT_EQ(sales["fields"]["email"], "jane.doe@example.com");
}

TEST(Service, DenialsAreExplicitAndAudited) {
  TestVault v;
  const std::string id = v.service->create_subject(v.admin(), person())["id"];
  EXPECT_EQ(code_of([&] { v.service->get_subject(v.caller("service", "email_marketing"), id); }),
            ErrorCode::purpose_not_allowed);
  EXPECT_EQ(code_of([&] { v.service->get_subject(v.caller("service", ""), id); }), ErrorCode::purpose_not_allowed);
  EXPECT_EQ(code_of([&] { v.service->get_subject(v.caller("analyst", "analytics"), id); }),
            ErrorCode::forbidden_role);
  EXPECT_EQ(code_of([&] { v.service->erase_subject(v.caller("marketing", ""), id, ""); }), ErrorCode::forbidden_role);
  const Json entries = v.service->audit_entries(v.caller("auditor", "audit"), {{"subject", id}});
  int denied = 0;
  for (const auto& e : entries["entries"])
    if (e["outcome"] == "denied") ++denied;
  EXPECT_EQ(denied, 4);
}

TEST(Service, AuditEntriesRecordFieldsServedAndMasked) {
  TestVault v;
  const std::string id = v.service->create_subject(v.admin(), person())["id"];
  v.service->get_subject(v.caller("service", "customer_service"), id);
  const Json entries = v.service->audit_entries(v.caller("auditor", "audit"),
                                                {{"subject", id}, {"operation", "subject.read"}});
  ASSERT_EQ(entries["entries"].size(), 1u);
  const Json& e = entries["entries"][0];
  EXPECT_EQ(e["principal"], "test-service");
  EXPECT_EQ(e["purpose"], "customer_service");
  EXPECT_EQ(e["outcome"], "allowed");
  const auto masked = e["masked_fields"].get<std::vector<std::string>>();
  EXPECT_NE(std::find(masked.begin(), masked.end(), "email"), masked.end());
  EXPECT_EQ(e.dump().find("jane"), std::string::npos);
}

TEST(Service, TokensAuthenticateAndRevoke) {
  TestVault v;
  const std::string token = v.service->create_token(v.admin(), "crm-marketing", "marketing")["token"];
  EXPECT_EQ(v.service->authenticate(token).role, "marketing");
  EXPECT_EQ(v.service->authenticate(v.init.admin_token).role, "admin");
  EXPECT_EQ(code_of([&] { v.service->authenticate("cst_nope"); }), ErrorCode::unauthenticated);
  EXPECT_EQ(code_of([&] { v.service->create_token(v.admin(), "crm-marketing", "marketing"); }), ErrorCode::conflict);
  EXPECT_EQ(code_of([&] { v.service->create_token(v.admin(), "x", "no_such_role"); }), ErrorCode::invalid_argument);
  v.service->revoke_token(v.admin(), "crm-marketing");
  EXPECT_EQ(code_of([&] { v.service->authenticate(token); }), ErrorCode::unauthenticated);
}

// segments.yaml is part of the policy snapshot: read once, reloaded with
// roles and purposes, and a broken file keeps the old segments in force.
TEST(Service, SegmentsReloadWithThePolicies) {
  TestVault v;
  const auto marketer = v.caller("marketing", "email_marketing");
  const Json fetch = {{"channel", "email"}, {"segment", "vip"}, {"fields", {"email"}}};
  const auto run = [&] { v.service->campaign_fetch(marketer, fetch, [](const std::string&) { return true; }); };
  EXPECT_EQ(code_of(run), ErrorCode::invalid_field);  // no such segment yet

  const auto file = v.data_dir() / "policies" / "segments.yaml";
  std::ifstream in(file);
  const std::string original((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::ofstream(file) << original << "  - {name: vip, r: [5, 5], f: [5, 5], m: [5, 5]}\n";
  EXPECT_EQ(code_of(run), ErrorCode::invalid_field);  // not before a reload
  std::string error;
  ASSERT_TRUE(v.service->reload_policies(&error)) << error;
  EXPECT_NO_THROW(run());

  std::ofstream(file) << "segments: [unclosed\n";
  EXPECT_FALSE(v.service->reload_policies(&error));
  EXPECT_NO_THROW(run());  // the old segments stay in force
}

// The echo of a create carries the times that were stored, not a later clock reading.
TEST(Service, CreateEchoesTheStoredTimes) {
  TestVault v;
  const Json made = v.service->create_subject(v.admin(), person());
  const Json got = v.service->get_subject(v.admin("customer_service"), made["id"].get<std::string>());
  EXPECT_EQ(made["created_at"], got["created_at"]);
  EXPECT_EQ(made["updated_at"], got["updated_at"]);
}

}  // namespace
}  // namespace custos
