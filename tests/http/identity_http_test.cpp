// Identity resolution over HTTP (issue 15, finding 6): the real custosd,
// the routes POST /v1/subjects and :batchCreate with on_conflict,
// GET /v1/subjects:duplicates and POST /v1/subjects/{id}:merge.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "http_support.h"
#include "test_support.h"

namespace {

using namespace custos::httptest;

class HttpIdentity : public ::testing::Test {
 protected:
  void SetUp() override {
    vault_ = std::make_unique<Vault>();
    d_ = start_daemon(vault_->dir);
    ASSERT_TRUE(d_->alive()) << d_->err();
    admin_ = vault_->admin;
    officer_ = vault_->token("compliance_officer", "officer");
  }
  void TearDown() override {
    if (d_) {
      EXPECT_EQ(d_->stop(), 0) << d_->err();
    }
  }
  std::string create(const Json& body) {
    const Resp r = d_->post("/v1/subjects", admin_, body);
    EXPECT_EQ(r.status, 201) << r;
    return r.json.value("id", "");
  }

  std::unique_ptr<Vault> vault_;
  std::unique_ptr<Daemon> d_;
  std::string admin_, officer_;
};

const Json kAda = {{"fields", {{"given_name", "Ada"}, {"email", "ada@example.com"}, {"phone", "+1 202 555 0142"}}}};

TEST_F(HttpIdentity, ReimportIs409NamingTheFirstSubjectOnly) {
  const std::string first = create(kAda);
  const Resp r = d_->post("/v1/subjects", admin_, {{"fields", {{"email", "ADA@example.com"}}}});
  expect_problem(r, 409, "duplicate_subject");
  EXPECT_EQ(r.json["subject_id"], first) << r;
  EXPECT_EQ(r.json["subject_ids"], Json({first}));
  EXPECT_EQ(r.json["matched_on"], Json({"email"}));
  EXPECT_EQ(r.body.find("example.com"), std::string::npos) << r;
  // Audited as a denial naming the existing subject.
  const Resp audit = d_->get("/v1/audit/entries?subject=" + first + "&operation=subject.create", admin_, "audit");
  ASSERT_EQ(audit.status, 200);
  int denied = 0;
  for (const auto& e : audit.json["entries"]) denied += e["reason"] == "duplicate_subject";
  EXPECT_EQ(denied, 1) << audit;
  // The same number in national form matches too.
  expect_problem(d_->post("/v1/subjects", admin_, {{"fields", {{"phone", "(202) 555-0142"}}}}), 409,
                 "duplicate_subject");
}

TEST_F(HttpIdentity, MergeOnCreateIs200WithTheExistingIdAndCreateIsADeliberateDuplicate) {
  const std::string first = create(kAda);
  Resp r = d_->post("/v1/subjects", admin_,
                    {{"fields", {{"email", "ada@example.com"}, {"occupation", "mathematician"}}}, {"on_conflict", "merge"}});
  EXPECT_EQ(r.status, 200) << r;
  EXPECT_EQ(r.json["id"], first);
  EXPECT_EQ(r.json["merged"], true);
  EXPECT_EQ(r.json["fields_added"], Json({"occupation"}));
  EXPECT_EQ(r.header("Location"), "");
  r = d_->post("/v1/subjects", admin_, {{"fields", {{"email", "ada@example.com"}}}, {"on_conflict", "create"}});
  EXPECT_EQ(r.status, 201) << r;
  EXPECT_NE(r.json["id"], first);
  expect_problem(d_->post("/v1/subjects", admin_, {{"fields", {{"email", "x@example.com"}}}, {"on_conflict", "maybe"}}),
                 400, "invalid_argument");
}

TEST_F(HttpIdentity, BatchCreateReportsEachConflictAndCreatesTheRest) {
  const std::string first = create(kAda);
  const Resp r = d_->post("/v1/subjects:batchCreate", admin_,
                          {{"subjects",
                            {{{"fields", {{"email", "Ada@Example.com"}}}},
                             {{"fields", {{"email", "bob@example.com"}}}},
                             {{"fields", {{"email", "bob@example.com"}}}}}}});
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_EQ(r.json["created"], 1);
  EXPECT_EQ(r.json["failed"], 2);
  EXPECT_EQ(r.json["results"][0]["status"], 409);
  EXPECT_EQ(r.json["results"][0]["error"]["code"], "duplicate_subject");
  EXPECT_EQ(r.json["results"][0]["error"]["subject_ids"], Json({first}));
  EXPECT_EQ(r.json["results"][1]["status"], 201);
  EXPECT_EQ(r.json["results"][2]["error"]["subject_ids"], Json::array({r.json["results"][1]["id"]}));
}

TEST_F(HttpIdentity, DuplicatesReportIsPagedAndOnlyForComplianceRoles) {
  const std::string a = create(kAda);
  const std::string b = create({{"fields", {{"email", "ada@example.com"}}}, {"on_conflict", "create"}});
  const std::string c = create({{"fields", {{"phone", "+12025550142"}}}, {"on_conflict", "create"}});
  Resp r = d_->get("/v1/subjects:duplicates", officer_, "dsr_fulfilment");
  ASSERT_EQ(r.status, 200) << r;
  ASSERT_EQ(r.json["clusters"].size(), 2u) << r;
  EXPECT_EQ(r.json["clusters"][0]["matched_on"], "email");
  EXPECT_EQ(r.json["clusters"][1]["matched_on"], "phone");
  EXPECT_EQ(r.body.find("example.com"), std::string::npos);
  r = d_->get("/v1/subjects:duplicates?limit=1", officer_, "dsr_fulfilment");
  ASSERT_EQ(r.json["clusters"].size(), 1u);
  const std::string after = r.json["next_after"];
  r = d_->get("/v1/subjects:duplicates?limit=1&after=" + after, officer_, "dsr_fulfilment");
  ASSERT_EQ(r.json["clusters"].size(), 1u) << r;
  EXPECT_EQ(r.json["clusters"][0]["matched_on"], "phone");
  expect_problem(d_->get("/v1/subjects:duplicates", vault_->token("sales", "s"), "sales"), 403, "forbidden_role");
  expect_problem(d_->get("/v1/subjects:duplicates", officer_), 403, "purpose_not_allowed");
  expect_problem(d_->get("/v1/subjects:duplicates", officer_, "audit"), 403, "purpose_not_allowed");
  expect_problem(d_->get("/v1/subjects:duplicates?limit=5000", officer_, "dsr_fulfilment"), 400, "invalid_argument");
  expect_problem(d_->get("/v1/subjects:duplicates?email=x", officer_, "dsr_fulfilment"), 400, "invalid_argument");
  (void)a, (void)b, (void)c;
}

TEST_F(HttpIdentity, PatchOntoAnotherSubjectsIdentifierIs409NamingItAndChangesNothing) {
  const std::string first = create(kAda);
  const std::string other = create({{"fields", {{"given_name", "Charles"}, {"email", "charles@example.com"}}}});
  const std::string path = "/v1/subjects/" + other;
  const Resp r = d_->post(path, admin_, {{"fields", {{"email", "ADA@example.com"}, {"given_name", "X"}}}}, "", "PATCH");
  expect_problem(r, 409, "duplicate_subject");
  EXPECT_EQ(r.json["subject_id"], first) << r;
  EXPECT_EQ(r.json["matched_on"], Json({"email"}));
  EXPECT_EQ(r.body.find("example.com"), std::string::npos) << r;
  expect_problem(d_->post(path, admin_, {{"fields", {{"phone", "(202) 555-0142"}}}}, "", "PATCH"), 409,
                 "duplicate_subject");
  // Nothing applied; the email still finds one subject; the daemon is up.
  const Resp got = d_->get(path, admin_, "customer_service");
  ASSERT_EQ(got.status, 200) << got;
  EXPECT_EQ(got.json["fields"]["given_name"], "Charles");
  EXPECT_EQ(got.json["fields"]["email"], "charles@example.com");
  EXPECT_EQ(d_->get("/v1/subjects?email=ada@example.com", admin_, "customer_service").json["subjects"].size(), 1u);
  const Resp audit = d_->get("/v1/audit/entries?subject=" + other + "&operation=subject.update", admin_, "audit");
  int denied = 0;
  for (const auto& e : audit.json["entries"]) denied += e["reason"] == "duplicate_subject";
  EXPECT_EQ(denied, 2) << audit;
  EXPECT_EQ(d_->post(path, admin_, {{"fields", {{"email", "charles.b@example.com"}}}}, "", "PATCH").status, 200);
}

TEST_F(HttpIdentity, MergeMovesEverythingAndRefusalsAreProblems) {
  const std::string a = create(kAda);
  const std::string b = create({{"fields", {{"email", "ada@example.com"}, {"birth_date", "1815-12-10"}}},
                                {"on_conflict", "create"}});
  ASSERT_EQ(d_->post("/v1/subjects/" + b + "/orders", admin_, {{"amount_minor", 500}, {"currency", "GBP"}}).status, 201);
  const std::string path = "/v1/subjects/" + a + ":merge";
  expect_problem(d_->post(path, vault_->token("service", "svc"), {{"subjects", {b}}, {"reason", "x"}}, "customer_service"),
                 403, "forbidden_role");
  expect_problem(d_->post(path, officer_, {{"subjects", {b}}, {"reason", "x"}}, "audit"), 403, "purpose_not_allowed");
  expect_problem(d_->post(path, officer_, {{"subjects", {b}}}, "dsr_fulfilment"), 400, "invalid_argument");
  expect_problem(d_->post(path, officer_, {{"subjects", {std::string(32, 'f')}}, {"reason", "x"}}, "dsr_fulfilment"),
                 404, "not_found");
  // Held: 409, nothing moved.
  ASSERT_EQ(d_->post("/v1/subjects/" + b + ":legalHold", officer_, {{"hold", true}}).status, 200);
  expect_problem(d_->post(path, officer_, {{"subjects", {b}}, {"reason", "DQ-9"}}, "dsr_fulfilment"), 409, "conflict");
  EXPECT_EQ(d_->get("/v1/subjects/" + b, admin_, "customer_service").status, 200);
  ASSERT_EQ(d_->post("/v1/subjects/" + b + ":legalHold", officer_, {{"hold", false}}).status, 200);

  const Resp r = d_->post(path, officer_, {{"subjects", {b}}, {"reason", "DQ-9"}}, "dsr_fulfilment");
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_EQ(r.json["id"], a);
  EXPECT_EQ(r.json["merged"], Json({b}));
  EXPECT_EQ(r.json["fields_added"], Json({"birth_date"}));
  EXPECT_EQ(r.json["orders_moved"], 1);
  expect_problem(d_->get("/v1/subjects/" + b, admin_, "customer_service"), 404, "not_found");
  const Resp got = d_->get("/v1/subjects/" + a, admin_, "customer_service");
  EXPECT_EQ(got.json["fields"]["birth_date"], "1815-12-10");
  const Resp found = d_->get("/v1/subjects?email=ada@example.com", admin_, "customer_service");
  ASSERT_EQ(found.json["subjects"].size(), 1u);
  const Resp audit = d_->get("/v1/audit/entries?subject=" + b + "&operation=subject.merge", admin_, "audit");
  int merged = 0, denied = 0;
  for (const auto& e : audit.json["entries"]) (e["outcome"] == "allowed" ? merged : denied)++;
  EXPECT_EQ(merged, 1) << audit;
}

}  // namespace
