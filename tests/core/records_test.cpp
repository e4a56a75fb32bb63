#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "custos/error.h"
#include "custos/records/schema.h"
#include "test_support.h"

namespace custos {
namespace {

using service::Json;
using testing::TestVault;

Json alice() {
  return {{"fields",
           {{"given_name", "Alice"},
            {"family_name", "Liddell"},
            {"email", "  Alice.Liddell@Example.COM "},
            {"phone", "(202) 555-0143"},
            {"birth_date", "1990-05-04"},
            {"postal_address", "1 Rabbit Hole, Oxford"},
            {"external_id", "CRM-0001"}}}};
}

ErrorCode code_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.code();
  }
  ADD_FAILURE() << "expected an error";
  return ErrorCode::internal;
}

TEST(Records, CreateReadRoundTripWithNormalisation) {
  TestVault v;
  const Json created = v.service->create_subject(v.admin(), alice());
  const std::string id = created["id"];
  EXPECT_EQ(id.size(), 32u);
  const Json got = v.service->get_subject(v.admin("customer_service"), id);
  EXPECT_EQ(got["fields"]["given_name"], "Alice");
  EXPECT_EQ(got["fields"]["email"], "Alice.Liddell@Example.COM");  // trimmed, case kept
  EXPECT_EQ(got["fields"]["phone"], "+12025550143");               // E.164
  EXPECT_EQ(got["fields"]["birth_date"], "1990-05-04");
}

TEST(Records, BlindIndexLookupIsExactAndNormalised) {
  TestVault v;
  const std::string id = v.service->create_subject(v.admin(), alice())["id"];
  v.service->create_subject(v.admin(), {{"fields", {{"email", "bob@example.com"}}}});
  auto found = v.service->find_subjects(v.admin("customer_service"), "email", "alice.liddell@example.com");
  ASSERT_EQ(found["subjects"].size(), 1u);
  EXPECT_EQ(found["subjects"][0]["id"], id);
  found = v.service->find_subjects(v.admin("customer_service"), "phone", "+1 202-555-0143");
  ASSERT_EQ(found["subjects"].size(), 1u);
  found = v.service->find_subjects(v.admin("customer_service"), "external_id", "CRM-0001");
  ASSERT_EQ(found["subjects"].size(), 1u);
  found = v.service->find_subjects(v.admin("customer_service"), "email", "nobody@example.com");
  EXPECT_TRUE(found["subjects"].empty());
  EXPECT_EQ(code_of([&] { v.service->find_subjects(v.admin("customer_service"), "given_name", "Alice"); }),
            ErrorCode::invalid_argument);
}

TEST(Records, UpdateReindexesAndRemoves) {
  TestVault v;
  const std::string id = v.service->create_subject(v.admin(), alice())["id"];
  v.service->patch_subject(v.admin(), id, {{"fields", {{"email", "new@example.org"}, {"postal_address", nullptr}}}});
  EXPECT_TRUE(v.service->find_subjects(v.admin("customer_service"), "email", "alice.liddell@example.com")["subjects"].empty());
  EXPECT_EQ(v.service->find_subjects(v.admin("customer_service"), "email", "NEW@example.org")["subjects"].size(), 1u);
  const Json got = v.service->get_subject(v.admin("customer_service"), id);
  EXPECT_FALSE(got["fields"].contains("postal_address"));
  EXPECT_EQ(got["fields"]["email"], "new@example.org");
}

// schema.yaml `channels` at its oddest: a map, a name with capitals or a
// path, an empty name: each refused when the schema loads, naming the field.
TEST(Records, SchemaChannelsAreALowerCaseNameList) {
  const auto parse = [](const std::string& channels) {
    return records::Schema::parse("fields:\n  - {name: email, category: contact, type: email, channels: " + channels + "}\n",
                                  "schema.yaml");
  };
  EXPECT_EQ(parse("[email]").find("email")->channels, std::vector<std::string>{"email"});
  for (const char* bad : {"{email: 1}", "email", "[EMAIL]", "[../etc]", "['']", "[sms, 'x y']"}) {
    try {
      parse(bad);
      ADD_FAILURE() << bad << " accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_argument) << bad;
      EXPECT_NE(std::string(e.what()).find("field 'email'"), std::string::npos) << e.what();
    }
  }
}

TEST(Records, SchemaValidationNamesTheFieldNotTheValue) {
  TestVault v;
  struct Case {
    Json body;
    ErrorCode code;
    std::string names;
  };
  const std::string big(70 * 1024, 'x');
  const std::vector<Case> cases = {
      {{{"fields", {{"email", "not-an-email"}}}}, ErrorCode::invalid_field, "email"},
      {{{"fields", {{"phone", "12"}}}}, ErrorCode::invalid_field, "phone"},
      // A valid email beside a bad phone: nothing of the body may be stored.
      {{{"fields", {{"email", "half@example.com"}, {"phone", "12"}}}}, ErrorCode::invalid_field, "phone"},
      {{{"fields", {{"birth_date", "1990-02-30"}}}}, ErrorCode::invalid_field, "birth_date"},
      {{{"fields", {{"birth_date", "yesterday"}}}}, ErrorCode::invalid_field, "birth_date"},
      {{{"fields", {{"gender", "martian"}}}}, ErrorCode::invalid_field, "gender"},
      {{{"fields", {{"favourite_colour", "blue"}}}}, ErrorCode::invalid_field, "favourite_colour"},
      {{{"fields", {{"given_name", 42}}}}, ErrorCode::invalid_field, "given_name"},
      {{{"fields", {{"notes", big}}}}, ErrorCode::invalid_field, "notes"},
      {{{"fields", {{"given_name", "x"}}}, {"extra", 1}}, ErrorCode::invalid_argument, "extra"},
      {{{"fields", "nope"}}, ErrorCode::invalid_argument, "fields"},
      {Json::array(), ErrorCode::invalid_argument, "object"},
  };
  for (const auto& c : cases) {
    try {
      v.service->create_subject(v.admin(), c.body);
      ADD_FAILURE() << "accepted " << c.body.dump().substr(0, 80);
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), c.code) << e.what();
      EXPECT_NE(std::string(e.what()).find(c.names), std::string::npos) << e.what();
      EXPECT_EQ(std::string(e.what()).find("not-an-email"), std::string::npos);
      EXPECT_EQ(std::string(e.what()).find("martian"), std::string::npos);
    }
  }
  // Nothing half-written: the valid email of a refused body was not stored.
  EXPECT_TRUE(v.service->find_subjects(v.admin("customer_service"), "email", "half@example.com")["subjects"].empty());
  // The lookup itself works: the same body, made valid, is found afterwards.
  v.service->create_subject(v.admin(), {{"fields", {{"email", "half@example.com"}}}});
  EXPECT_EQ(v.service->find_subjects(v.admin("customer_service"), "email", "half@example.com")["subjects"].size(), 1u);
}

TEST(Records, BatchCreateIsPerItem) {
  TestVault v;
  const Json body = {{"subjects",
                      {{{"fields", {{"email", "a@example.com"}}}},
                       {{"fields", {{"email", "bad"}}}},
                       {{"fields", {{"email", "c@example.com"}}}}}}};
  const Json r = v.service->batch_create(v.admin(), body);
  EXPECT_EQ(r["created"], 2);
  EXPECT_EQ(r["failed"], 1);
  EXPECT_EQ(r["results"][1]["status"], 422);
  EXPECT_EQ(r["results"][1]["error"]["code"], "invalid_field");
  const Json got = v.service->batch_get(
      v.admin("customer_service"),
      {{"ids", {r["results"][0]["id"], r["results"][2]["id"], "00000000000000000000000000000000"}}});
  EXPECT_EQ(got["results"][0]["status"], 200);
  EXPECT_EQ(got["results"][1]["subject"]["fields"]["email"], "c@example.com");
  EXPECT_EQ(got["results"][2]["status"], 404);
}

TEST(Records, EraseShredsAndLeavesOrders) {
  TestVault v;
  const std::string id = v.service->create_subject(v.admin(), alice())["id"];
  v.service->add_touchpoint(v.admin(), id, {{"channel", "email"}, {"type", "inquiry"}, {"notes", "asked about X"}});
  v.service->add_order(v.admin(), id, {{"amount_minor", 1299}, {"currency", "EUR"}});
  const Json r = v.service->erase_subject(v.admin(), id, "records test");
  EXPECT_EQ(r["status"], "erased");
  EXPECT_EQ(r["fields_erased"].size(), 7u);
  EXPECT_EQ(code_of([&] { v.service->get_subject(v.admin("customer_service"), id); }), ErrorCode::not_found);
  EXPECT_TRUE(v.service->find_subjects(v.admin("customer_service"), "email", "alice.liddell@example.com")["subjects"].empty());
  EXPECT_EQ(code_of([&] { v.service->erase_subject(v.admin(), id, "records test"); }), ErrorCode::not_found);
}

TEST(Records, BadIdsAndMissingSubjects) {
  TestVault v;
  EXPECT_EQ(code_of([&] { v.service->get_subject(v.admin("customer_service"), "xyz"); }), ErrorCode::invalid_argument);
  EXPECT_EQ(code_of([&] { v.service->get_subject(v.admin("customer_service"), std::string(32, '0')); }),
            ErrorCode::not_found);
  EXPECT_EQ(code_of([&] {
              v.service->add_order(v.admin(), std::string(32, '0'), {{"amount_minor", 1}, {"currency", "EUR"}});
            }),
            ErrorCode::not_found);
}

}  // namespace
}  // namespace custos
