// End-to-end tests of the HTTP transport: each test starts the real
// `custosd` binary on a free loopback port over a vault initialised with the
// real `custos` CLI, and talks to it with cpprestsdk's http_client.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <atomic>
#include <chrono>
#include <cpprest/http_client.h>
#include <fstream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "http_support.h"
#include "server.h"
#include "test_support.h"

namespace {

using custos::testing::run;
using custos::testing::TempDir;
using namespace custos::httptest;
using namespace std::chrono_literals;

// Fixture: a vault and a running daemon, stopped with SIGTERM (exit 0 checked).
class HttpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    vault_ = std::make_unique<Vault>();
    d_ = start_daemon(vault_->dir);
    ASSERT_TRUE(d_->alive()) << d_->err();
    admin_ = vault_->admin;
  }
  void TearDown() override {
    if (d_) {
      EXPECT_EQ(d_->stop(), 0) << d_->err();
    }
  }

  std::string create(const Json& fields) {
    const Resp r = d_->post("/v1/subjects", admin_, {{"fields", fields}});
    EXPECT_EQ(r.status, 201) << r;
    return r.json.value("id", "");
  }

  std::unique_ptr<Vault> vault_;
  std::unique_ptr<Daemon> d_;
  std::string admin_;
};

// ------------------------------------------------------------------ auth

TEST_F(HttpTest, HealthzNeedsNoTokenEverythingElseDoes) {
  EXPECT_EQ(d_->get("/healthz", "").status, 200);
  expect_problem(d_->get("/v1/subjects/00000000000000000000000000000000", "", "customer_service"), 401,
                 "unauthenticated");
  const Resp no_token = d_->get("/v1/audit/checkpoint", "");
  expect_problem(no_token, 401, "unauthenticated");
  EXPECT_NE(no_token.header("WWW-Authenticate").find("Bearer"), std::string::npos);
  expect_problem(d_->get("/v1/audit/checkpoint", "cst_not-a-real-token"), 401, "unauthenticated");
  Req basic;
  basic.path = "/v1/audit/checkpoint";
  basic.headers = {{"Authorization", "Basic YWRtaW46YWRtaW4="}};
  expect_problem(d_->call(basic), 401, "unauthenticated");
  expect_problem(d_->get("/metrics", ""), 401, "unauthenticated");
  EXPECT_EQ(d_->get("/v1/audit/checkpoint", admin_).status, 200);
}

// Two hostile reviews (2026-12-03): any token read /metrics, which shows
// which routes every role called (a breach opened, DSRs filed, a restricted
// subject's lookup audited twice). Only roles with admin or audit may.
TEST_F(HttpTest, MetricsAreForTheAdminAndAuditOperationsOnly) {
  for (const char* role : {"marketing", "sales", "service", "analyst"})
    expect_problem(d_->get("/metrics", vault_->token(role, std::string("metrics-") + role)), 403, "forbidden_role");
  EXPECT_EQ(d_->get("/metrics", vault_->token("auditor", "metrics-auditor")).status, 200);
  EXPECT_EQ(d_->get("/metrics", admin_).status, 200);
}

TEST_F(HttpTest, RevokedTokenIsRefusedByTheRunningServer) {
  const std::string sid = create({{"given_name", "Rita"}, {"email", "rita@example.com"}});
  const std::string tok = vault_->token("service", "temp-service");
  EXPECT_EQ(d_->get("/v1/subjects/" + sid, tok, "customer_service").status, 200);
  const auto r = run({kCli, "--data-dir", vault_->dir.string(), "token", "revoke", "temp-service"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  expect_problem(d_->get("/v1/subjects/" + sid, tok, "customer_service"), 401, "unauthenticated");
}

// ------------------------------------------------------------------ subjects

TEST_F(HttpTest, CreateGetPatchDeleteSubject) {
  const Resp c = d_->post("/v1/subjects", admin_,
                          {{"fields", {{"given_name", "Ada"}, {"family_name", "Lovelace"}, {"email", "ada@example.com"}}}});
  ASSERT_EQ(c.status, 201) << c;
  EXPECT_EQ(c.header("Content-Type"), "application/json");
  const std::string id = c.json["id"];
  EXPECT_EQ(id.size(), 32u);
  EXPECT_EQ(c.header("Location"), "/v1/subjects/" + id);
  EXPECT_EQ(c.header("Cache-Control"), "no-store");

  Resp g = d_->get("/v1/subjects/" + id, admin_, "customer_service");
  ASSERT_EQ(g.status, 200) << g;
  EXPECT_EQ(g.json["id"], id);
  EXPECT_EQ(g.json["fields"]["email"], "ada@example.com");
  EXPECT_EQ(g.json["fields"]["given_name"], "Ada");

  // A purpose is required for reads.
  expect_problem(d_->get("/v1/subjects/" + id, admin_), 403, "purpose_not_allowed");

  const Resp p = d_->post("/v1/subjects/" + id, admin_, {{"fields", {{"email", "ada.l@example.com"}, {"family_name", nullptr}}}},
                          "", "PATCH");
  ASSERT_EQ(p.status, 200) << p;
  EXPECT_EQ(p.json["id"], id);
  g = d_->get("/v1/subjects/" + id, admin_, "customer_service");
  EXPECT_EQ(g.json["fields"]["email"], "ada.l@example.com");
  EXPECT_FALSE(g.json["fields"].contains("family_name"));

  // Erasure is its own operation: records.erase, a purpose that justifies
  // it and a reason; every refusal is audited and erases nothing.
  const std::string svc = vault_->token("service", "svc-erase");
  expect_problem(d_->call({"DELETE", "/v1/subjects/" + id + "?reason=asked", svc, "customer_service", std::nullopt, {}}),
                 403, "forbidden_role");
  expect_problem(d_->call({"DELETE", "/v1/subjects/" + id + "?reason=asked", admin_, "", std::nullopt, {}}), 403,
                 "purpose_not_allowed");
  expect_problem(
      d_->call({"DELETE", "/v1/subjects/" + id + "?reason=asked", admin_, "customer_service", std::nullopt, {}}), 403,
      "purpose_not_allowed");
  expect_problem(d_->call({"DELETE", "/v1/subjects/" + id, admin_, "administration", std::nullopt, {}}), 400,
                 "invalid_argument");
  expect_problem(d_->call({"DELETE", "/v1/subjects/" + id + "?reason=a%0Ab", admin_, "administration", std::nullopt, {}}),
                 400, "invalid_argument");
  expect_problem(d_->call({"DELETE", "/v1/subjects/" + id + "?reason=x&bogus=1", admin_, "administration", std::nullopt, {}}),
                 400, "invalid_argument");
  ASSERT_EQ(d_->get("/v1/subjects/" + id, admin_, "customer_service").status, 200);
  const Resp denials = d_->get("/v1/audit/entries?subject=" + id + "&operation=subject.erase", admin_, "audit");
  ASSERT_EQ(denials.status, 200) << denials;
  EXPECT_EQ(denials.json["entries"].size(), 5u) << denials;  // the unknown parameter never reaches the service

  const Resp del =
      d_->call({"DELETE", "/v1/subjects/" + id + "?reason=ticket%20CS-42", admin_, "administration", std::nullopt, {}});
  ASSERT_EQ(del.status, 200) << del;
  EXPECT_EQ(del.json["status"], "erased");
  const Resp erased = d_->get("/v1/audit/entries?subject=" + id + "&operation=subject.erase", admin_, "audit");
  ASSERT_EQ(erased.json["entries"].size(), 6u) << erased;
  EXPECT_EQ(erased.json["entries"][5]["outcome"], "allowed");
  EXPECT_NE(erased.json["entries"][5]["detail"].get<std::string>().find("ticket CS-42"), std::string::npos) << erased;
  expect_problem(d_->get("/v1/subjects/" + id, admin_, "customer_service"), 404, "not_found");
  expect_problem(d_->get("/v1/subjects/not-a-subject-id", admin_, "customer_service"), 400, "invalid_argument");
}

TEST_F(HttpTest, LookupByEmailPhoneExternalId) {
  const std::string id = create({{"given_name", "Grace"}, {"email", "grace+crm@example.com"},
                                 {"phone", "+1 650 253 0000"}, {"external_id", "crm-42"}});
  create({{"given_name", "Other"}, {"email", "other@example.com"}});
  // '+' and '@' percent-encoded, as a browser or curl --data-urlencode would.
  Resp r = d_->get("/v1/subjects?email=grace%2Bcrm%40example.com", admin_, "customer_service");
  ASSERT_EQ(r.status, 200) << r;
  ASSERT_EQ(r.json["subjects"].size(), 1u) << r;
  EXPECT_EQ(r.json["subjects"][0]["id"], id);
  // Normalised like the write: case-insensitive e-mail.
  r = d_->get("/v1/subjects?email=GRACE%2Bcrm@Example.com", admin_, "customer_service");
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_EQ(r.json["subjects"].size(), 1u) << r;
  r = d_->get("/v1/subjects?external_id=crm-42", admin_, "customer_service");
  ASSERT_EQ(r.json["subjects"].size(), 1u) << r;
  r = d_->get("/v1/subjects?phone=%2B16502530000", admin_, "customer_service");
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_EQ(r.json["subjects"].size(), 1u) << r;
  r = d_->get("/v1/subjects?email=nobody@example.com", admin_, "customer_service");
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_TRUE(r.json["subjects"].empty());

  expect_problem(d_->get("/v1/subjects", admin_, "customer_service"), 400, "invalid_argument");
  expect_problem(d_->get("/v1/subjects?email=a@example.com&phone=1", admin_, "customer_service"), 400,
                 "invalid_argument");
  expect_problem(d_->get("/v1/subjects?name=Grace", admin_, "customer_service"), 400, "invalid_argument");
  expect_problem(d_->get("/v1/subjects?email=a@example.com&email=b@example.com", admin_, "customer_service"), 400,
                 "invalid_argument");
  expect_problem(d_->get("/v1/subjects?email=%zz", admin_, "customer_service"), 400, "invalid_argument");
}

TEST_F(HttpTest, BatchCreateAndBatchGet) {
  Json subjects = Json::array();
  for (int i = 0; i < 5; ++i)
    subjects.push_back({{"fields", {{"given_name", "B" + std::to_string(i)}, {"email", "b" + std::to_string(i) + "@example.com"}}}});
  subjects.push_back({{"fields", {{"no_such_field", "x"}}}});
  const Resp c = d_->post("/v1/subjects:batchCreate", admin_, {{"subjects", subjects}});
  ASSERT_EQ(c.status, 200) << c;
  EXPECT_EQ(c.json["created"], 5);
  EXPECT_EQ(c.json["failed"], 1);
  EXPECT_EQ(c.json["results"][5]["status"], 422);
  Json ids = Json::array();
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(c.json["results"][i]["status"], 201);
    ids.push_back(c.json["results"][i]["id"]);
  }
  ids.push_back("00000000000000000000000000000000");
  ids.push_back("zz");
  const Resp g = d_->post("/v1/subjects:batchGet", admin_, {{"ids", ids}}, "customer_service");
  ASSERT_EQ(g.status, 200) << g;
  ASSERT_EQ(g.json["results"].size(), 7u);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(g.json["results"][i]["status"], 200);
    EXPECT_EQ(g.json["results"][i]["subject"]["fields"]["given_name"], "B" + std::to_string(i));
  }
  EXPECT_EQ(g.json["results"][5]["status"], 404);
  EXPECT_EQ(g.json["results"][6]["status"], 400);
  // The ':' may arrive percent-encoded.
  EXPECT_EQ(d_->post("/v1/subjects%3AbatchGet", admin_, {{"ids", Json::array()}}, "customer_service").status, 200);
}

TEST_F(HttpTest, TouchpointsAndOrdersAreCreated) {
  const std::string id = create({{"given_name", "Tom"}});
  Resp t = d_->post("/v1/subjects/" + id + "/touchpoints", admin_,
                    {{"channel", "email"}, {"type", "newsletter_open"}, {"notes", "clicked the spring offer"}});
  ASSERT_EQ(t.status, 201) << t;
  EXPECT_EQ(t.json["subject_id"], id);
  EXPECT_EQ(t.json["channel"], "email");
  Resp o = d_->post("/v1/subjects/" + id + "/orders", admin_, {{"amount_minor", 1999}, {"currency", "EUR"}});
  ASSERT_EQ(o.status, 201) << o;
  EXPECT_EQ(o.json["amount_minor"], 1999);
  expect_problem(d_->post("/v1/subjects/" + id + "/orders", admin_, {{"amount_minor", "a lot"}, {"currency", "EUR"}}),
                 422, "invalid_field");
  expect_problem(d_->post("/v1/subjects/" + id + "/touchpoints", admin_, {{"channel", "pigeon"}, {"type", "x"}}), 422,
                 "invalid_field");
}

TEST_F(HttpTest, ConsentRoutes) {
  const std::string id = create({{"given_name", "Cora"}, {"email", "cora@example.com"}});
  const std::string mkt = vault_->token("marketing", "mkt");
  // No consent yet: a marketing read is refused.
  expect_problem(d_->get("/v1/subjects/" + id, mkt, "email_marketing"), 403, "consent_missing");
  Resp c = d_->post("/v1/subjects/" + id + "/consents", admin_,
                    {{"purpose", "email_marketing"}, {"channel", "email"}, {"event", "granted"}, {"source", "web_form"}});
  ASSERT_EQ(c.status, 201) << c;
  EXPECT_EQ(d_->get("/v1/subjects/" + id, mkt, "email_marketing").status, 200);
  Resp h = d_->get("/v1/subjects/" + id + "/consents", admin_);
  ASSERT_EQ(h.status, 200) << h;
  EXPECT_EQ(h.json["history"].size(), 1u);
  // Double opt-in: pending until confirmed.
  c = d_->post("/v1/subjects/" + id + "/consents", admin_,
               {{"purpose", "sms_marketing"}, {"channel", "sms"}, {"event", "granted"}, {"double_opt_in", true}});
  ASSERT_EQ(c.status, 201) << c;
  const std::string tok = c.json["confirmation"]["token"];
  const Resp f = d_->post("/v1/consents:confirm", admin_, {{"token", tok}});
  EXPECT_EQ(f.status, 200) << f;
}

TEST_F(HttpTest, MaskedAndUnmaskedViews) {
  const std::string id =
      create({{"given_name", "Jane"}, {"email", "jane@example.com"}, {"phone", "+1 650 253 0000"}, {"birth_date", "1990-04-01"}});
  const std::string svc = vault_->token("service", "svc");
  const Resp s = d_->get("/v1/subjects/" + id, svc, "customer_service");
  ASSERT_EQ(s.status, 200) << s;
  EXPECT_EQ(s.json["fields"]["email"], "j***@example.com");
  EXPECT_EQ(s.json["fields"]["given_name"], "Jane");
  EXPECT_EQ(s.json["fields"]["phone"].get<std::string>().substr(0, 8), "***-***-");
  EXPECT_FALSE(s.json["fields"].contains("birth_date"));  // descriptive: none for `service`
  ASSERT_TRUE(s.json.contains("masked_fields"));
  EXPECT_NE(std::find(s.json["masked_fields"].begin(), s.json["masked_fields"].end(), "email"),
            s.json["masked_fields"].end());
  const Resp a = d_->get("/v1/subjects/" + id, admin_, "customer_service");
  EXPECT_EQ(a.json["fields"]["email"], "jane@example.com");
  EXPECT_EQ(a.json["fields"]["birth_date"], "1990-04-01");
  // A role that sees a field only masked may not look subjects up by it: a
  // hit would confirm the value the mask hides. Hit and miss look the same.
  const Resp hit = d_->get("/v1/subjects?email=jane@example.com", svc, "customer_service");
  expect_problem(hit, 403, "forbidden_role");
  EXPECT_NE(hit.json["detail"].get<std::string>().find("email"), std::string::npos) << hit;
  const Resp miss = d_->get("/v1/subjects?email=nobody@example.com", svc, "customer_service");
  expect_problem(miss, 403, "forbidden_role");
  EXPECT_EQ(hit.json["detail"], miss.json["detail"]);
  expect_problem(d_->get("/v1/subjects?phone=%2B16502530000", svc, "customer_service"), 403, "forbidden_role");
  // A field it sees in plain still works.
  const Resp l = d_->get("/v1/subjects?email=jane@example.com", admin_, "customer_service");
  ASSERT_EQ(l.json["subjects"].size(), 1u) << l;
}

// ------------------------------------------------------------------ authorisation matrix

TEST_F(HttpTest, AuthorisationMatrixFromShippedRoles) {
  const YAML::Node roles = YAML::LoadFile((vault_->dir / "policies" / "roles.yaml").string())["roles"];
  const YAML::Node purposes = YAML::LoadFile((vault_->dir / "policies" / "purposes.yaml").string())["purposes"];
  ASSERT_TRUE(roles.IsMap());
  std::vector<std::string> all_purposes;
  std::set<std::string> marketing;
  for (const auto& p : purposes) {
    all_purposes.push_back(p.first.as<std::string>());
    if (p.second["marketing"] && p.second["marketing"].as<bool>()) marketing.insert(p.first.as<std::string>());
  }

  const std::string sid = create({{"given_name", "Matrix"}, {"email", "matrix@example.com"}});
  struct Probe {
    std::string name;
    std::string op;
    std::function<Resp(const std::string& token, const std::string& purpose)> call;
  };
  std::vector<Probe> probes = {
      {"create", "records.write",
       [&](auto t, auto p) { return d_->post("/v1/subjects", t, {{"fields", {{"given_name", "M"}}}}, p); }},
      {"batchCreate", "records.write",
       [&](auto t, auto p) {
         return d_->post("/v1/subjects:batchCreate", t, {{"subjects", {{{"fields", {{"given_name", "M"}}}}}}}, p);
       }},
      {"get", "records.read", [&](auto t, auto p) { return d_->get("/v1/subjects/" + sid, t, p); }},
      {"find", "records.read", [&](auto t, auto p) { return d_->get("/v1/subjects?email=matrix@example.com", t, p); }},
      {"batchGet", "records.read",
       [&](auto t, auto p) { return d_->post("/v1/subjects:batchGet", t, {{"ids", {sid}}}, p); }},
      {"patch", "records.write",
       [&](auto t, auto p) { return d_->post("/v1/subjects/" + sid, t, {{"fields", {{"given_name", "x"}}}}, p, "PATCH"); }},
      {"touchpoint", "records.write",
       [&](auto t, auto p) {
         return d_->post("/v1/subjects/" + sid + "/touchpoints", t, {{"channel", "phone"}, {"type", "call"}}, p);
       }},
      {"order", "records.write",
       [&](auto t, auto p) {
         return d_->post("/v1/subjects/" + sid + "/orders", t, {{"amount_minor", 100}, {"currency", "EUR"}}, p);
       }},
      {"erase", "records.erase",
       [&](auto t, auto p) {
         const std::string victim = create({{"given_name", "Victim"}});
         return d_->call({"DELETE", "/v1/subjects/" + victim + "?reason=matrix", t, p, std::nullopt, {}});
       }},
      {"consents", "consent", [&](auto t, auto p) { return d_->get("/v1/subjects/" + sid + "/consents", t, p); }},
      {"auditEntries", "audit", [&](auto t, auto p) { return d_->get("/v1/audit/entries?limit=1", t, p); }},
      {"checkpoint", "audit", [&](auto t, auto p) { return d_->get("/v1/audit/checkpoint", t, p); }},
      {"inclusion", "audit", [&](auto t, auto p) { return d_->get("/v1/audit/proof/inclusion?index=0", t, p); }},
      {"consistency", "audit",
       [&](auto t, auto p) { return d_->get("/v1/audit/proof/consistency?first=1&second=2", t, p); }},
      {"export", "audit", [&](auto t, auto p) { return d_->get("/v1/audit/export", t, p); }},
  };

  int checked = 0;
  for (const auto& role_node : roles) {
    const std::string role = role_node.first.as<std::string>();
    std::set<std::string> ops, allowed;
    for (const auto& o : role_node.second["operations"]) ops.insert(o.as<std::string>());
    for (const auto& p : role_node.second["purposes"]) allowed.insert(p.as<std::string>());
    // An allowed purpose (non-marketing first), and one the role may not declare.
    std::string good, bad;
    for (const auto& p : role_node.second["purposes"])
      if (good.empty() && !marketing.count(p.as<std::string>())) good = p.as<std::string>();
    if (good.empty() && !allowed.empty()) good = *allowed.begin();
    for (const auto& p : all_purposes)
      if (bad.empty() && !allowed.count(p)) bad = p;
    if (bad.empty()) bad = "no_such_purpose";
    if (marketing.count(good)) {
      const std::string channel = purposes[good]["channels"][0].as<std::string>();
      ASSERT_EQ(d_->post("/v1/subjects/" + sid + "/consents", admin_,
                         {{"purpose", good}, {"channel", channel}, {"event", "granted"}})
                    .status,
                201);
    }
    const std::string token = vault_->token(role, "matrix-" + role);
    for (const auto& probe : probes) {
      SCOPED_TRACE("role " + role + ", probe " + probe.name + ", purpose " + good + " / " + bad);
      // A lookup by email needs the email seen in plain (contact category).
      const YAML::Node vis = role_node.second["visibility"];
      const bool sees_email = vis && vis["contact"] && vis["contact"].as<std::string>() == "plain";
      if (!ops.count(probe.op)) {
        expect_problem(probe.call(token, good), 403, "forbidden_role");
      } else if (probe.name == "find" && !sees_email) {
        expect_problem(probe.call(token, bad), 403, "purpose_not_allowed");
        expect_problem(probe.call(token, good), 403, "forbidden_role");
      } else {
        expect_problem(probe.call(token, bad), 403, "purpose_not_allowed");
        const Resp ok = probe.call(token, good);
        EXPECT_GE(ok.status, 200) << ok;
        EXPECT_LT(ok.status, 300) << ok;
      }
      ++checked;
    }
  }
  EXPECT_EQ(checked, static_cast<int>(roles.size() * probes.size()));

  // Denials are audited.
  const Resp denials = d_->get("/v1/audit/entries?limit=1000", admin_, "audit");
  ASSERT_EQ(denials.status, 200);
  std::set<std::string> reasons;
  for (const auto& e : denials.json["entries"])
    if (e.value("outcome", "") == "denied") reasons.insert(e.value("reason", ""));
  EXPECT_TRUE(reasons.count("forbidden_role"));
  EXPECT_TRUE(reasons.count("purpose_not_allowed"));
}

// ------------------------------------------------------------------ policy reload

TEST_F(HttpTest, SighupReloadsPolicyAndKeepsOldOneIfBroken) {
  const std::string id = create({{"given_name", "Paul"}, {"email", "paul@example.com"}});
  const std::string svc = vault_->token("service", "svc-reload");
  ASSERT_EQ(d_->get("/v1/subjects/" + id, svc, "customer_service").status, 200);
  const fs::path roles_file = vault_->dir / "policies" / "roles.yaml";
  const std::string original = read_file(roles_file);

  // Counts the daemon's log lines {"msg": "policy_reload", "ok": ok}.
  auto reloads = [&](bool ok) {
    std::istringstream lines(d_->err());
    std::string line;
    int n = 0;
    while (std::getline(lines, line)) {
      const Json j = Json::parse(line, nullptr, false);
      if (j.is_object() && j.value("msg", "") == "policy_reload" && j.value("ok", !ok) == ok) ++n;
    }
    return n;
  };
  auto wait_for = [&](bool ok, int at_least) {
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < deadline) {
      if (reloads(ok) >= at_least) return true;
      std::this_thread::sleep_for(20ms);
    }
    return false;
  };

  // Broken: the old policy stays.
  write_file(roles_file, "roles: [this is: not valid\n");
  d_->signal(SIGHUP);
  ASSERT_TRUE(wait_for(false, 1)) << d_->err();
  EXPECT_EQ(d_->get("/v1/subjects/" + id, svc, "customer_service").status, 200);
  EXPECT_TRUE(d_->alive());

  // Valid: `service` may now only declare billing.
  std::string changed = original;
  const std::string from = "service:\n    operations: [records.read, records.write, consent]\n";
  const auto at = changed.find(from);
  ASSERT_NE(at, std::string::npos);
  const auto purposes_at = changed.find("purposes: [customer_service]", at);
  ASSERT_NE(purposes_at, std::string::npos);
  changed.replace(purposes_at, std::string("purposes: [customer_service]").size(), "purposes: [billing]");
  write_file(roles_file, changed);
  d_->signal(SIGHUP);
  ASSERT_TRUE(wait_for(true, 1)) << d_->err();
  expect_problem(d_->get("/v1/subjects/" + id, svc, "customer_service"), 403, "purpose_not_allowed");
  EXPECT_EQ(d_->get("/v1/subjects/" + id, svc, "billing").status, 200);
}

// `custos policy reload`: the command an operator runs once for every node
// (docs/postgresql.md); here the one running custosd follows it, and the
// command reports what the node did.
TEST_F(HttpTest, PolicyReloadCommandReachesTheRunningNodeAndReportsIt) {
  const std::string id = create({{"given_name", "Rita"}});
  const std::string svc = vault_->token("service", "svc-cluster-reload");
  ASSERT_EQ(d_->get("/v1/subjects/" + id, svc, "customer_service").status, 200);
  const fs::path roles_file = vault_->dir / "policies" / "roles.yaml";
  std::string changed = read_file(roles_file);
  const auto at = changed.find("service:\n    operations: [records.read, records.write, consent]\n");
  ASSERT_NE(at, std::string::npos);
  const auto purposes_at = changed.find("purposes: [customer_service]", at);
  ASSERT_NE(purposes_at, std::string::npos);
  changed.replace(purposes_at, std::string("purposes: [customer_service]").size(), "purposes: [billing]");
  write_file(roles_file, changed);

  // The node says it is there within a second of starting.
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  for (;;) {
    const auto st = run({kCli, "--data-dir", vault_->dir.string(), "cluster", "status"});
    ASSERT_EQ(st.exit_code, 0) << st.err;
    const Json nodes = Json::parse(st.out)["nodes"];
    if (nodes.size() == 1 && nodes[0]["live"].get<bool>()) break;
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << st.out;
    std::this_thread::sleep_for(50ms);
  }
  const auto reload = [&] {
    return run({kCli, "--data-dir", vault_->dir.string(), "policy", "reload", "--wait", "20"});
  };
  const auto ok = reload();
  ASSERT_EQ(ok.exit_code, 0) << ok.out << ok.err;
  const Json report = Json::parse(ok.out);
  ASSERT_EQ(report["nodes"].size(), 1u) << report;
  EXPECT_EQ(report["nodes"][0]["policy_generation"], report["generation"]) << report;
  EXPECT_TRUE(report["nodes"][0]["policy_ok"].get<bool>()) << report;
  EXPECT_TRUE(report["waiting"].empty() && report["refused"].empty()) << report;
  // The node runs the new policy as soon as the command returns.
  expect_problem(d_->get("/v1/subjects/" + id, svc, "customer_service"), 403, "purpose_not_allowed");
  EXPECT_EQ(d_->get("/v1/subjects/" + id, svc, "billing").status, 200);

  // Files that do not load are refused by the command itself (it reads them
  // to open the vault), before any node is asked; the node keeps its policy.
  // (A node that refuses what the command accepted: Cluster.* in core_tests.)
  write_file(roles_file, "roles: [this is: not valid\n");
  const auto refused = reload();
  EXPECT_NE(refused.exit_code, 0) << refused.out << refused.err;
  EXPECT_NE(refused.err.find("roles.yaml"), std::string::npos) << refused.err;
  EXPECT_EQ(d_->get("/v1/subjects/" + id, svc, "billing").status, 200);
  EXPECT_TRUE(d_->alive());
}

// ------------------------------------------------------------------ bad input

TEST_F(HttpTest, BadInputGivesProblemsAndTheServerSurvives) {
  const std::string id = create({{"given_name", "Bad"}});

  // 413: over the 1 MiB default, with Content-Length.
  const std::string huge = R"({"fields": {"notes": ")" + std::string(1024 * 1024 + 10, 'x') + "\"}}";
  Req big{"POST", "/v1/subjects", admin_, "", huge, {}};
  const Resp r413 = d_->call(big);
  expect_problem(r413, 413, "payload_too_large");

  // Just under the limit is read and judged on content (notes max 16 KiB -> 422).
  const std::string under = R"({"fields": {"notes": ")" + std::string(1000 * 1000, 'y') + "\"}}";
  expect_problem(d_->call({"POST", "/v1/subjects", admin_, "", under, {}}), 422, "invalid_field");

  // Malformed JSON, empty body, wrong top-level property, unknown field, deep nesting.
  expect_problem(d_->call({"POST", "/v1/subjects", admin_, "", std::string(R"({"fields": {)"), {}}), 400,
                 "invalid_argument");
  expect_problem(d_->call({"POST", "/v1/subjects", admin_, "", std::string(), {}}), 400, "invalid_argument");
  expect_problem(d_->post("/v1/subjects", admin_, {{"fieldz", {{"given_name", "x"}}}}), 400, "invalid_argument");
  const Resp unknown = d_->post("/v1/subjects", admin_, {{"fields", {{"shoe_size", "44"}}}});
  expect_problem(unknown, 422, "invalid_field");
  EXPECT_NE(unknown.json.value("detail", "").find("shoe_size"), std::string::npos) << unknown;
  const Resp bad_email = d_->post("/v1/subjects", admin_, {{"fields", {{"email", "not-an-email-address"}}}});
  expect_problem(bad_email, 422, "invalid_field");
  EXPECT_EQ(bad_email.body.find("not-an-email-address"), std::string::npos) << "the value must not be echoed";
  const std::string deep = std::string(200, '[') + std::string(200, ']');
  expect_problem(d_->call({"POST", "/v1/subjects", admin_, "", deep, {}}), 400, "invalid_argument");

  // Routing.
  expect_problem(d_->get("/v1/nothing", admin_), 404, "not_found");
  expect_problem(d_->get("/v2/subjects/" + id, admin_), 404, "not_found");
  expect_problem(d_->get("/v1/subjects/" + id + "/extra/segments", admin_), 404, "not_found");
  const Resp put = d_->call({"PUT", "/v1/subjects/" + id, admin_, "", std::string("{}"), {}});
  expect_problem(put, 405, "method_not_allowed");
  EXPECT_NE(put.header("Allow").find("GET"), std::string::npos);
  EXPECT_NE(put.header("Allow").find("PATCH"), std::string::npos);
  EXPECT_NE(put.header("Allow").find("DELETE"), std::string::npos);
  const Resp del = d_->call({"DELETE", "/v1/subjects", admin_, "", std::nullopt, {}});
  expect_problem(del, 405, "method_not_allowed");
  EXPECT_NE(del.header("Allow").find("POST"), std::string::npos);
  // TRACE and OPTIONS reach the router too (cpprestsdk's own TRACE would echo the token).
  const Resp trace = d_->call({"TRACE", "/v1/subjects/" + id, admin_, "", std::nullopt, {}});
  expect_problem(trace, 405, "method_not_allowed");
  EXPECT_EQ(trace.body.find(admin_), std::string::npos);
  expect_problem(d_->call({"OPTIONS", "/v1/subjects", admin_, "", std::nullopt, {}}), 405, "method_not_allowed");
  expect_problem(d_->get("/v1/audit/checkpoint?unexpected=1", admin_), 400, "invalid_argument");
  expect_problem(d_->get("/v1/audit/proof/inclusion?index=abc", admin_), 400, "invalid_argument");

  EXPECT_TRUE(d_->alive());
  EXPECT_EQ(d_->get("/healthz", "").status, 200);
  EXPECT_EQ(d_->get("/v1/subjects/" + id, admin_, "customer_service").status, 200);
}

// A chunked body (no Content-Length) over the limit, on a raw socket.
TEST_F(HttpTest, ChunkedBodyOverTheLimitIs413) {
  const int fd = connect_loopback(d_->port());
  ASSERT_GE(fd, 0);
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  std::string head = "POST /v1/subjects HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + admin_ +
                     "\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
  ASSERT_EQ(::send(fd, head.data(), head.size(), MSG_NOSIGNAL), static_cast<ssize_t>(head.size()));
  const std::string chunk_data(64 * 1024, 'z');
  char size_line[32];
  std::snprintf(size_line, sizeof size_line, "%zx\r\n", chunk_data.size());
  const std::string chunk = size_line + chunk_data + "\r\n";
  for (int i = 0; i < 20; ++i)  // 1.25 MiB
    ASSERT_EQ(::send(fd, chunk.data(), chunk.size(), MSG_NOSIGNAL), static_cast<ssize_t>(chunk.size()));
  const std::string end = "0\r\n\r\n";
  ::send(fd, end.data(), end.size(), MSG_NOSIGNAL);
  std::string response;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    response.append(buf, static_cast<std::size_t>(n));
    if (response.find("\r\n\r\n") != std::string::npos && response.find("payload_too_large") != std::string::npos)
      break;
  }
  ::close(fd);
  EXPECT_EQ(response.rfind("HTTP/1.1 413", 0), 0u) << response.substr(0, 200);
  EXPECT_NE(response.find("payload_too_large"), std::string::npos);
  EXPECT_TRUE(d_->alive());
}

// Clients that send headers and then trickle (or never send) their body hold
// no worker thread: the pool (40 threads) keeps serving, and shutdown does
// not wait for them.
TEST_F(HttpTest, StalledBodiesDoNotStarveWorkersOrBlockShutdown) {
  const std::string id = create({{"given_name", "Stan"}});
  std::vector<int> fds;
  for (int i = 0; i < 60; ++i) {
    const int fd = connect_loopback(d_->port());
    ASSERT_GE(fd, 0);
    const std::string partial = "POST /v1/subjects HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + admin_ +
                                "\r\nContent-Length: 1000\r\n\r\n{\"fields\":";
    ASSERT_GT(::send(fd, partial.data(), partial.size(), MSG_NOSIGNAL), 0);
    fds.push_back(fd);
  }
  for (int i = 0; i < 5; ++i) EXPECT_EQ(d_->get("/v1/subjects/" + id, admin_, "customer_service").status, 200);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(d_->stop(), 0) << d_->err();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 8s);
  for (int fd : fds) ::close(fd);
  d_.reset();
}

TEST_F(HttpTest, RequestIdIsEchoedSanitisedOrGenerated) {
  // Kept only if it is at most 64 characters from [A-Za-z0-9._-]; anything
  // else is replaced (never trimmed into something the client did not send)
  // by a generated id: 32 lowercase hex digits.
  const std::regex generated_id("[0-9a-f]{32}");
  Req r{"GET", "/healthz", "", "", std::nullopt, {{"X-Request-Id", "crm-req.42_a-b"}}};
  EXPECT_EQ(d_->call(r).header("X-Request-Id"), "crm-req.42_a-b");
  r.headers = {{"X-Request-Id", std::string(64, 'q')}};
  EXPECT_EQ(d_->call(r).header("X-Request-Id"), std::string(64, 'q'));
  for (const std::string& bad : {std::string("crm-req.42:a_b"), std::string("a b<script>\"c\""),
                                 std::string(65, 'q'), std::string(100, 'q'), std::string("caf\xc3\xa9")}) {
    r.headers = {{"X-Request-Id", bad}};
    const std::string echoed = d_->call(r).header("X-Request-Id");
    EXPECT_TRUE(std::regex_match(echoed, generated_id)) << bad << " -> " << echoed;
  }
  r.headers = {};
  const std::string generated = d_->call(r).header("X-Request-Id");
  EXPECT_TRUE(std::regex_match(generated, generated_id)) << generated;
  // The id reaches the audit log.
  const std::string id = create({{"given_name", "Ida"}});
  Req g{"GET", "/v1/subjects/" + id, admin_, "customer_service", std::nullopt, {{"X-Request-Id", "trace-me-123"}}};
  ASSERT_EQ(d_->call(g).status, 200);
  const Resp entries = d_->get("/v1/audit/entries?subject=" + id, admin_, "audit");
  ASSERT_EQ(entries.status, 200) << entries;
  EXPECT_NE(entries.body.find("trace-me-123"), std::string::npos) << entries.body.substr(0, 500);
}

TEST_F(HttpTest, MetricsAndAuditEndpoints) {
  const std::string id = create({{"given_name", "Mia"}, {"email", "mia@example.com"}});
  ASSERT_EQ(d_->get("/v1/subjects/" + id, admin_, "customer_service").status, 200);
  const Resp m = d_->get("/metrics", admin_);
  ASSERT_EQ(m.status, 200) << m;
  EXPECT_NE(m.header("Content-Type").find("text/plain"), std::string::npos);
  EXPECT_NE(m.body.find("custos_http_requests_total{route=\"/v1/subjects\",method=\"POST\",status=\"201\"} 1"),
            std::string::npos)
      << m.body;
  EXPECT_NE(m.body.find("custos_http_requests_total{route=\"/v1/subjects/{id}\",method=\"GET\",status=\"200\"} 1"),
            std::string::npos);
  EXPECT_NE(m.body.find("custos_http_request_duration_seconds_bucket{route=\"/v1/subjects\",le=\"+Inf\"} 1"),
            std::string::npos);
  EXPECT_NE(m.body.find("# TYPE custos_http_request_duration_seconds histogram"), std::string::npos);
  EXPECT_TRUE(std::regex_search(m.body, std::regex("\ncustos_decryptions_total [1-9][0-9]*\n"))) << m.body;
  EXPECT_TRUE(std::regex_search(m.body, std::regex("\ncustos_audit_entries_total [1-9][0-9]*\n")));
  EXPECT_TRUE(std::regex_search(m.body, std::regex("\ncustos_audit_checkpoint_size [0-9]+\n")));
  EXPECT_TRUE(std::regex_search(m.body, std::regex("\ncustos_audit_journal_pending [0-9]+\n")));
  EXPECT_NE(m.body.find("\ncustos_audit_fold_failing 0\n"), std::string::npos);

  const Resp cp = d_->get("/v1/audit/checkpoint", admin_);
  ASSERT_EQ(cp.status, 200) << cp;
  const std::uint64_t size = cp.json["size"];
  ASSERT_GE(size, 2u);
  const Resp inc = d_->get("/v1/audit/proof/inclusion?index=1&size=" + std::to_string(size), admin_);
  ASSERT_EQ(inc.status, 200) << inc;
  EXPECT_EQ(inc.json["tree_size"], size);
  const Resp con = d_->get("/v1/audit/proof/consistency?first=1&second=" + std::to_string(size), admin_);
  ASSERT_EQ(con.status, 200) << con;
  const Resp exp = d_->get("/v1/audit/export", admin_);
  ASSERT_EQ(exp.status, 200);
  EXPECT_EQ(exp.header("Content-Type"), "application/octet-stream");
  EXPECT_FALSE(exp.body.empty());
  // The checkpoint timer signs new entries within about a second.
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  bool signed_more = false;
  while (!signed_more && std::chrono::steady_clock::now() < deadline) {
    const Resp mm = d_->get("/metrics", admin_);
    std::smatch sm;
    if (std::regex_search(mm.body, sm, std::regex("\ncustos_audit_checkpoint_size ([0-9]+)\n")))
      signed_more = std::stoull(sm[1]) > size;
    if (!signed_more) std::this_thread::sleep_for(100ms);
  }
  EXPECT_TRUE(signed_more);
}

// custosd journals the entries of reads (in its local journal, or on
// PostgreSQL in the database's audit_pending table); killed with SIGKILL
// right after answering, it loses none of them: the next custosd (or any
// node) folds them, and the log still verifies offline.
TEST_F(HttpTest, KilledServerLosesNoAuditedRead) {
  const std::string id = create({{"given_name", "Kim"}, {"email", "kim@example.com"}});
  ASSERT_EQ(d_->stop(), 0);
  // A fold interval longer than the test: the reads' entries are only in the journal.
  d_ = start_daemon(vault_->dir, {"--audit-fold-interval-ms", "600000"});
  ASSERT_TRUE(d_->alive()) << d_->err();
  // Sign what start-up wrote now, so the reads below are all the journal holds.
  ASSERT_EQ(d_->get("/v1/audit/checkpoint", admin_).status, 200);
  for (int i = 0; i < 20; ++i) ASSERT_EQ(d_->get("/v1/subjects/" + id, admin_, "customer_service").status, 200);
  const Resp m = d_->get("/metrics", admin_);
  EXPECT_NE(m.body.find("\ncustos_audit_journal_pending 20\n"), std::string::npos) << m.body;
  EXPECT_EQ(d_->stop(SIGKILL), 128 + SIGKILL);
  d_ = start_daemon(vault_->dir);
  ASSERT_TRUE(d_->alive()) << d_->err();
  const Resp entries = d_->get("/v1/audit/entries?subject=" + id + "&operation=subject.read", admin_);
  ASSERT_EQ(entries.status, 200) << entries;
  EXPECT_EQ(entries.json["entries"].size(), 20u) << entries;
  const auto out = vault_->dir / "killed.export";
  ASSERT_EQ(run({kCli, "--data-dir", vault_->dir.string(), "audit", "export", "--out", out.string()}).exit_code, 0);
  const auto verified = run({kCli, "--data-dir", vault_->dir.string(), "audit", "verify", out.string()});
  EXPECT_EQ(verified.exit_code, 0) << verified.err;
}

// An auditor's CLI query while custosd runs must see the reads custosd has
// journaled and not yet folded, whatever custosd's fold interval: the CLI asks
// the running server to fold and waits for it, it does not wait out the
// interval (nor give up and show a log without them).
TEST_F(HttpTest, ACliAuditQueryWhileTheServerRunsSeesItsJournaledReads) {
  const std::string id = create({{"given_name", "Lee"}, {"email", "lee@example.com"}});
  ASSERT_EQ(d_->stop(), 0);
  d_ = start_daemon(vault_->dir, {"--audit-fold-interval-ms", "600000"});
  ASSERT_TRUE(d_->alive()) << d_->err();
  ASSERT_EQ(d_->get("/v1/audit/checkpoint", admin_).status, 200);  // folds what start-up wrote
  for (int i = 0; i < 7; ++i) ASSERT_EQ(d_->get("/v1/subjects/" + id, admin_, "customer_service").status, 200);
  ASSERT_NE(d_->get("/metrics", admin_).body.find("\ncustos_audit_journal_pending 7\n"), std::string::npos);
  const auto r = run({kCli, "--data-dir", vault_->dir.string(), "audit", "entries", "--subject", id, "--operation",
                      "subject.read", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["entries"].size(), 7u) << r.out;
  // The server folded them for the CLI; nothing waits in its journal.
  EXPECT_NE(d_->get("/metrics", admin_).body.find("\ncustos_audit_journal_pending 0\n"), std::string::npos);
}

// Campaign fetches hold a thread each while their client reads, so at most
// --max-streams stream at once (503), and each principal at most
// --principal-max-streams (429). With two slots, twelve at once each
// complete or are told to retry (Retry-After), nothing hangs, and every
// slot is given back.
TEST_F(HttpTest, ConcurrentCampaignFetchesCompleteOrAreToldToRetry) {
  ASSERT_EQ(d_->stop(), 0);
  d_ = start_daemon(vault_->dir, {"--max-streams", "2"});
  ASSERT_TRUE(d_->alive()) << d_->err();
  for (int i = 0; i < 6; ++i) {
    const std::string id = create({{"given_name", "P"}, {"email", "p" + std::to_string(i) + "@example.com"}});
    ASSERT_EQ(d_->post("/v1/subjects/" + id + "/consents", admin_,
                       {{"purpose", "email_marketing"}, {"channel", "email"}, {"event", "granted"}, {"source", "import"}})
                  .status,
              201);
  }
  const std::string mkt = vault_->token("marketing", "mkt");
  std::atomic<int> complete{0}, busy{0}, other{0};
  std::vector<std::thread> clients;
  for (int i = 0; i < 12; ++i)
    clients.emplace_back([&] {
      const Resp r = d_->post("/v1/campaigns:fetch", mkt, {{"channel", "email"}, {"fields", {"email"}}}, "email_marketing");
      if (r.status == 200 && r.body.find("\"done\":true") != std::string::npos) ++complete;
      else if ((r.status == 503 || r.status == 429) && r.header("Retry-After") == "1") ++busy;
      else ++other;
    });
  for (auto& t : clients) t.join();
  EXPECT_EQ(other.load(), 0);
  EXPECT_GE(complete.load(), 1);
  EXPECT_EQ(complete.load() + busy.load(), 12);
  EXPECT_EQ(d_->get("/healthz", "").status, 200);
  for (int i = 0; i < 4; ++i)  // more than the cap, one after another: no slot was kept
    EXPECT_EQ(d_->post("/v1/campaigns:fetch", mkt, {{"channel", "email"}, {"fields", {"email"}}}, "email_marketing").status,
              200);
}

TEST_F(HttpTest, AccessLogIsJsonAndHoldsNoPersonalDataOrTokens) {
  const std::string id = create({{"given_name", "Secretname"}, {"email", "secret.person@example.com"}});
  d_->get("/v1/subjects?email=secret.person@example.com", admin_, "customer_service");
  d_->get("/v1/subjects/" + id, admin_, "customer_service");
  d_->post("/v1/subjects", admin_, {{"fields", {{"email", "not valid secret.person"}}}});
  d_->get("/v1/subjects?email=secret.person@example.com&bogus=Secretname", admin_, "customer_service");
  d_->get("/v1/audit/checkpoint", "cst_wrongtokenvalue");
  ASSERT_EQ(d_->stop(), 0);
  const std::string log = d_->err() + d_->out();
  for (const std::string& needle : {std::string("secret.person"), std::string("Secretname"), admin_,
                                    std::string("wrongtokenvalue"), std::string("example.com")})
    EXPECT_EQ(log.find(needle), std::string::npos) << needle << " leaked into the log";
  std::istringstream lines(d_->err());
  std::string line;
  int requests = 0;
  while (std::getline(lines, line)) {
    const Json j = Json::parse(line, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << line;
    ASSERT_TRUE(j.contains("ts") && j.contains("level") && j.contains("msg")) << line;
    if (j["msg"] == "request") {
      ++requests;
      EXPECT_TRUE(j.contains("request_id") && j.contains("route") && j.contains("status") &&
                  j.contains("latency_ms") && j.contains("method"))
          << line;
    }
  }
  EXPECT_GE(requests, 6);
  EXPECT_NE(d_->err().find("\"route\":\"/v1/subjects/{id}\""), std::string::npos);
  d_.reset();
}

TEST_F(HttpTest, ConcurrentClients) {
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      web::http::client::http_client client(web::uri(d_->url()));
      for (int i = 0; i < 15; ++i) {
        const std::string email = "c" + std::to_string(t) + "-" + std::to_string(i) + "@example.com";
        Req c{"POST", "/v1/subjects", admin_, "", Json{{"fields", {{"email", email}}}}.dump(), {}};
        const Resp r = send(client, c);
        if (r.status != 201) {
          ++failures;
          continue;
        }
        const Resp g = send(client, {"GET", "/v1/subjects?email=" + email, admin_, "customer_service", std::nullopt, {}});
        if (g.status != 200 || g.json["subjects"].size() != 1) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
}


// ------------------------------------------------------------------ marketing, DSR, breaches

TEST_F(HttpTest, CampaignFetchStreamsOnlyConsentedSubjectsAsNdjson) {
  std::vector<std::string> ids;
  for (int i = 0; i < 7; ++i)
    ids.push_back(create({{"given_name", "C" + std::to_string(i)}, {"email", "c" + std::to_string(i) + "@example.com"},
                          {"phone", "+4915112345" + std::to_string(100 + i)}}));
  for (int i = 0; i < 7; i += 2) {
    const Resp c = d_->post("/v1/subjects/" + ids[i] + "/consents", admin_,
                            {{"purpose", "email_marketing"}, {"channel", "email"}, {"event", "granted"}, {"source", "import"}});
    ASSERT_EQ(c.status, 201) << c;
  }
  // Subject 2 objects to direct marketing: never returned.
  ASSERT_EQ(d_->post("/v1/subjects/" + ids[2] + "/consents", admin_,
                     {{"purpose", "email_marketing"}, {"channel", "email"}, {"event", "withdrawn"}})
                .status,
            201);
  const std::string mkt = vault_->token("marketing", "mkt");
  const Resp r = d_->post("/v1/campaigns:fetch", mkt,
                          {{"purpose", "email_marketing"}, {"channel", "email"}, {"fields", {"email", "phone"}}},
                          "email_marketing");
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_EQ(r.header("Content-Type"), "application/x-ndjson");
  std::istringstream lines(r.body);
  std::string line;
  std::set<std::string> got;
  Json summary;
  while (std::getline(lines, line)) {
    const Json j = Json::parse(line);
    if (j.contains("done")) {
      summary = j;
      continue;
    }
    got.insert(j["id"].get<std::string>());
    EXPECT_TRUE(j["fields"].contains("email"));
    // Consent to e-mail is not consent to be phoned: the number is withheld.
    EXPECT_FALSE(j["fields"].contains("phone"));
    EXPECT_FALSE(j["fields"].contains("given_name"));  // only the fields asked for
  }
  EXPECT_EQ(got, (std::set<std::string>{ids[0], ids[4], ids[6]}));
  EXPECT_EQ(summary["done"], true);
  EXPECT_EQ(summary["count"], 3);
  EXPECT_EQ(summary["fields_withheld"], Json::array({"phone"})) << summary;
  // Each subject served is findable in the audit log by subject id.
  const std::string auditor = vault_->token("auditor", "aud");
  const Resp a = d_->get("/v1/audit/entries?subject=" + ids[4], auditor, "audit");
  ASSERT_EQ(a.status, 200) << a;
  bool found = false;
  for (const auto& e : a.json["entries"]) found |= e.value("operation", "") == "campaign.fetch";
  EXPECT_TRUE(found) << a;
  // Validation happens before the stream starts.
  expect_problem(d_->post("/v1/campaigns:fetch", mkt, {{"channel", "email"}, {"fields", {"email"}}}, "sales"), 403,
                 "purpose_not_allowed");
  expect_problem(d_->post("/v1/campaigns:fetch", mkt,
                          {{"channel", "email"}, {"segment", "nope"}, {"fields", {"email"}}}, "email_marketing"),
                 422, "invalid_field");
  // Analytics: no personal data; the analyst may read it.
  const std::string analyst = vault_->token("analyst", "ana");
  const Resp rfm = d_->get("/v1/analytics/rfm", analyst, "analytics");
  ASSERT_EQ(rfm.status, 200) << rfm;
  EXPECT_EQ(rfm.body.find("@example.com"), std::string::npos);
}

TEST_F(HttpTest, DsrLifecycleOverHttp) {
  const std::string id = create({{"given_name", "Dora"}, {"email", "dora@example.com"}});
  const std::string officer = vault_->token("compliance_officer", "dpo");
  Resp r = d_->post("/v1/dsr", officer,
                    {{"type", "access"}, {"regime", "gdpr"}, {"identifier", {{"email", "dora@example.com"}}},
                     {"received_at", "2026-01-31T10:00:00Z"}});
  ASSERT_EQ(r.status, 201) << r;
  const std::string dsr = r.json["id"];
  EXPECT_EQ(r.json["subject_id"], id);
  // One month from 31 Jan is 28 Feb 2026, a Saturday: Reg. 1182/71 Art. 3(4) ends it on Monday 2 March.
  EXPECT_EQ(r.json["due_at"].get<std::string>().substr(0, 10), "2026-03-02");
  EXPECT_EQ(r.header("Location"), "/v1/dsr/" + dsr);
  expect_problem(d_->post("/v1/dsr/" + dsr + ":transition", officer, {{"to", "completed"}}), 409, "conflict");
  for (const char* to : {"identity_verified", "in_progress"}) {
    r = d_->post("/v1/dsr/" + dsr + ":transition", officer, {{"to", to}, {"note", "ok"}});
    ASSERT_EQ(r.status, 200) << r;
  }
  r = d_->get("/v1/dsr/" + dsr + "/export", officer, "dsr_fulfilment");
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_EQ(r.json["subject"]["fields"]["email"], "dora@example.com");
  EXPECT_EQ(r.header("Transfer-Encoding"), "chunked") << "the export is streamed";
  EXPECT_NE(r.header("Content-Disposition").find("custos-dsr-export.json"), std::string::npos);
  // One table as CSV; refusals before the first byte are problem+json.
  r = d_->get("/v1/dsr/" + dsr + "/export?format=csv&table=fields", officer, "dsr_fulfilment");
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_EQ(r.header("Content-Type").rfind("text/csv", 0), 0u) << r.header("Content-Type");
  EXPECT_NE(r.body.find(id + ",email,dora@example.com\r\n"), std::string::npos) << r.body;
  expect_problem(d_->get("/v1/dsr/" + dsr + "/export?format=csv&table=secrets", officer, "dsr_fulfilment"), 400,
                 "invalid_argument");
  expect_problem(d_->get("/v1/dsr/" + dsr + "/export?colour=red", officer, "dsr_fulfilment"), 400, "invalid_argument");
  // Only dsr_fulfilment opens the package (finding 7).
  expect_problem(d_->get("/v1/dsr/" + dsr + "/export", officer, "legal_claims"), 403, "purpose_not_allowed");
  r = d_->get("/v1/dsr/" + dsr, officer);
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_EQ(r.json["status"], "in_progress");
  r = d_->get("/v1/dsr?overdue=true", officer);
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_GE(r.json["count"].get<int>(), 1);
  expect_problem(d_->get("/v1/dsr?overdue=maybe", officer), 400, "invalid_argument");
  expect_problem(d_->get("/v1/dsr/does-not-exist", officer), 404, "not_found");
  expect_problem(d_->post("/v1/dsr", officer, {{"type", "access"}, {"regime", "gdpr"}, {"identifier", {{"email", "x@y.z"}}},
                                               {"received_at", "31/01/2026"}}),
                 422, "invalid_field");
  // An unknown subject is recorded: "no data held".
  r = d_->post("/v1/dsr", officer, {{"type", "access"}, {"regime", "ccpa"}, {"identifier", {{"email", "ghost@example.com"}}}});
  ASSERT_EQ(r.status, 201) << r;
  // The marketing role may not touch requests.
  expect_problem(d_->get("/v1/dsr", vault_->token("marketing", "m2")), 403, "forbidden_role");
}

// Every request type, from intake to completion, against the real daemon.
TEST_F(HttpTest, DsrEveryTypeEndToEnd) {
  const std::string officer = vault_->token("compliance_officer", "dpo");
  const std::string mkt = vault_->token("marketing", "mkt");
  auto subject = [&](const std::string& tag) {
    const std::string id = create({{"given_name", "Gina"}, {"family_name", "Canary" + tag},
                                   {"email", tag + "@example.com"}});
    for (const char* purpose : {"email_marketing", "partner_sharing"}) {
      const Resp c = d_->post("/v1/subjects/" + id + "/consents", admin_,
                              {{"purpose", purpose}, {"channel", "email"}, {"event", "granted"}, {"source", "import"}});
      EXPECT_EQ(c.status, 201) << c;
    }
    return id;
  };
  auto complete = [&](const std::string& type, const std::string& email, Json extra = Json::object()) {
    Json body = {{"type", type}, {"regime", type == "opt_out_sale_share" ? "ccpa" : "gdpr"},
                 {"identifier", {{"email", email}}}};
    body.update(extra);
    Resp r = d_->post("/v1/dsr", officer, body);
    EXPECT_EQ(r.status, 201) << r;
    const std::string id = r.json.value("id", "");
    for (const char* to : {"identity_verified", "in_progress", "completed"}) {
      r = d_->post("/v1/dsr/" + id + ":transition", officer, {{"to", to}});
      EXPECT_EQ(r.status, 200) << type << " -> " << to << ": " << r;
    }
    EXPECT_EQ(r.json.value("status", ""), "completed") << r;
    return std::make_pair(id, r.json);
  };
  auto consent_state = [&](const std::string& id, const std::string& purpose) {
    const Resp h = d_->get("/v1/subjects/" + id + "/consents", admin_);
    for (const auto& c : h.json["current"])
      if (c.value("purpose", "") == purpose) return c.value("state", "");
    return std::string("absent");
  };

  // access + portability: the package, and every inclusion proof verifies with custos-audit.
  const std::string a = subject("access");
  ASSERT_EQ(d_->get("/v1/subjects/" + a, vault_->token("service", "crm-service"), "customer_service").status, 200);
  for (const char* type : {"access", "portability"}) {
    const auto [id, done] = complete(type, "access@example.com");
    const Resp ex = d_->get("/v1/dsr/" + id + "/export", officer, "dsr_fulfilment");
    ASSERT_EQ(ex.status, 200) << ex;
    EXPECT_EQ(ex.json["subject"]["fields"]["email"], "access@example.com");
    const Json& log = ex.json["access_log"];
    ASSERT_FALSE(log["entries"].empty());
    const fs::path key = vault_->tmp.path() / "audit.pub";
    write_file(key, log["verifier_key"].get<std::string>() + "\n");
    int n = 0;
    for (const auto& e : log["entries"]) {
      const fs::path bundle = vault_->tmp.path() / ("bundle-" + std::to_string(n++) + ".json");
      write_file(bundle, e.dump());
      const auto r = run({CUSTOS_AUDIT_CLI_PATH, "verify-inclusion", bundle.string(), "--pubkey", key.string()});
      EXPECT_EQ(r.exit_code, 0) << r.err;
    }
  }
  // rectification: the field changes; the timeline names the field, never the value.
  const std::string r = subject("rectify");
  const auto [rid, rdone] = complete("rectification", "rectify@example.com",
                                     {{"changes", {{"fields", {{"family_name", "Corrected"}}}}}});
  EXPECT_EQ(d_->get("/v1/subjects/" + r, admin_, "customer_service").json["fields"]["family_name"], "Corrected");
  EXPECT_EQ(d_->get("/v1/dsr/" + rid, officer).body.find("Corrected"), std::string::npos);
  // erasure: crypto-shredded, gone from reads and lookups; report lists what was erased.
  const std::string e = subject("erase");
  const auto [eid, edone] = complete("erasure", "erase@example.com");
  EXPECT_FALSE(edone["report"]["erased"]["fields"].empty()) << edone;
  expect_problem(d_->get("/v1/subjects/" + e, admin_, "customer_service"), 404, "not_found");
  // restriction: no marketing read any more.
  const std::string rs = subject("restrict");
  ASSERT_EQ(d_->get("/v1/subjects/" + rs, mkt, "email_marketing").status, 200);
  complete("restriction", "restrict@example.com");
  EXPECT_EQ(d_->get("/v1/subjects/" + rs, mkt, "email_marketing").status, 403);
  // ... nor any other read but for a purpose allowed when restricted, nor a write.
  expect_problem(d_->get("/v1/subjects/" + rs, admin_, "customer_service"), 403, "subject_restricted");
  expect_problem(d_->post("/v1/subjects/" + rs, admin_, {{"fields", {{"family_name", "X"}}}}, "", "PATCH"), 403,
                 "subject_restricted");
  EXPECT_EQ(d_->get("/v1/subjects/" + rs, officer, "dsr_fulfilment").status, 200);
  // objection: every marketing purpose withdrawn.
  const std::string o = subject("object");
  complete("objection", "object@example.com");
  EXPECT_NE(consent_state(o, "email_marketing"), "granted");
  EXPECT_NE(consent_state(o, "partner_sharing"), "granted");
  // opt-out of sale/share: only sale_or_share purposes withdrawn.
  const std::string s = subject("optout");
  complete("opt_out_sale_share", "optout@example.com");
  EXPECT_NE(consent_state(s, "partner_sharing"), "granted");
  EXPECT_EQ(consent_state(s, "email_marketing"), "granted");
  // Bad input: denial without reason, extension past the limit.
  Resp q = d_->post("/v1/dsr", officer, {{"type", "access"}, {"regime", "gdpr"}, {"identifier", {{"email", "x@example.com"}}}});
  ASSERT_EQ(q.status, 201) << q;
  const std::string qid = q.json["id"];
  expect_problem(d_->post("/v1/dsr/" + qid + ":transition", officer, {{"to", "denied"}}), 422, "invalid_field");
  ASSERT_EQ(d_->post("/v1/dsr/" + qid + ":transition", officer, {{"to", "extended"}, {"reason", "complex"}}).status, 200);
  expect_problem(d_->post("/v1/dsr/" + qid + ":transition", officer, {{"to", "extended"}, {"reason", "again"}}), 409,
                 "conflict");
}

TEST_F(HttpTest, BreachRoutesAndAffectedSubjects) {
  const std::string a = create({{"given_name", "Eve"}, {"email", "eve@example.com"}});
  const std::string sales = vault_->token("sales", "crm-sales");
  ASSERT_EQ(d_->get("/v1/subjects/" + a, sales, "sales").status, 200);
  const std::string officer = vault_->token("compliance_officer", "dpo");
  Resp r = d_->post("/v1/breaches", officer,
                    {{"description", "sales token leaked"}, {"categories", {"contact"}}, {"severity", "high"}});
  ASSERT_EQ(r.status, 201) << r;
  const std::string id = r.json["id"];
  ASSERT_FALSE(r.json["deadlines"].empty());
  r = d_->post("/v1/breaches/" + id + ":computeAffected", officer,
               {{"principals", {"crm-sales"}}, {"from", "2020-01-01T00:00:00Z"}, {"to", "2099-01-01T00:00:00Z"}});
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_EQ(r.json["count"], 1);
  EXPECT_TRUE(r.json.contains("checkpoint"));
  r = d_->get("/v1/breaches/" + id + "/affected", officer, "breach_notification");
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_EQ(r.json["subjects"][0]["fields"]["email"], "eve@example.com");
  expect_problem(d_->get("/v1/breaches/" + id + "/affected", officer, "dsr_fulfilment"), 403, "purpose_not_allowed");
  r = d_->post("/v1/breaches/" + id + "/events", officer, {{"type", "contained"}, {"note", "token revoked"}});
  ASSERT_EQ(r.status, 201) << r;
  expect_problem(d_->post("/v1/breaches/" + id + "/events", officer, {{"type", "closed"}}), 409, "conflict");
  r = d_->get("/v1/breaches?at_risk=true&margin_hours=96", officer);
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_EQ(r.json["count"], 1);
  r = d_->get("/v1/breaches/" + id, officer);
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_EQ(r.json["status"], "contained");
  expect_problem(d_->post("/v1/breaches", officer, {{"description", "x"}, {"categories", {"contact"}},
                                                   {"occurred_from", "2026-01-02T00:00:00Z"},
                                                   {"occurred_to", "2026-01-01T00:00:00Z"}}),
                 422, "invalid_field");
  // Retention: a dry run reports, changes nothing; only admin may run it.
  r = d_->post("/v1/retention:run", admin_, {{"dry_run", true}});
  ASSERT_EQ(r.status, 200) << r;
  expect_problem(d_->post("/v1/retention:run", officer, {{"dry_run", true}}), 403, "forbidden_role");
  expect_problem(d_->post("/v1/retention:run", officer, {{"dry_run", "yes"}}), 403, "forbidden_role");  // role first
  expect_problem(d_->post("/v1/retention:run", admin_, {{"dry_run", "yes"}}), 422, "invalid_field");
  expect_problem(d_->post("/v1/retention:run", admin_, {{"dry_run", true}, {"purge", true}}), 400, "invalid_argument");
  expect_problem(d_->post("/v1/subjects/" + a + ":legalHold", officer, {{"hold", "yes"}}), 422, "invalid_field");
  expect_problem(d_->post("/v1/subjects/" + a + ":legalHold", officer, Json::object()), 422, "invalid_field");
  r = d_->post("/v1/subjects/" + a + ":legalHold", officer, {{"hold", true}});
  EXPECT_EQ(r.status, 200) << r;
}

// ------------------------------------------------------------------ process

TEST(HttpProcess, PrintsListeningLineAndStopsCleanlyOnSigtermAndSigint) {
  Vault v;
  for (int sig : {SIGTERM, SIGINT}) {
    auto dp = start_daemon(v.dir);
    Daemon& d = *dp;
    ASSERT_TRUE(d.alive()) << d.err();
    const std::string out = d.out_first_line();
    EXPECT_EQ(out.rfind("custosd listening on " + d.url(), 0), 0u) << out;
    EXPECT_NE(out.find("admin.token"), std::string::npos);
    EXPECT_EQ(d.get("/v1/audit/checkpoint", v.admin).status, 200);
    EXPECT_EQ(d.stop(sig), 0) << d.err();
    EXPECT_NE(d.err().find("\"msg\":\"stopped\""), std::string::npos) << d.err();
  }
}

// Decrypted values and keys must never reach a core dump.
TEST(HttpProcess, RunsWithoutCoreDumps) {
  Vault v;
  auto dp = start_daemon(v.dir);
  ASSERT_TRUE(dp->alive()) << dp->err();
  const std::string limits = read_file("/proc/" + std::to_string(dp->pid()) + "/limits");
  EXPECT_TRUE(std::regex_search(limits, std::regex("Max core file size +0 +0 "))) << limits;
  EXPECT_EQ(dp->stop(), 0) << dp->err();
}

TEST(HttpProcess, RunsRetentionOnSchedule) {
  Vault v;
  auto dp = start_daemon(v.dir, {"--retention-interval", "1"});
  ASSERT_TRUE(dp->alive()) << dp->err();
  // Poll the log (bounded) for the scheduled run's report.
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (dp->err().find("\"msg\":\"retention_run\"") == std::string::npos && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(50ms);
  EXPECT_NE(dp->err().find("\"msg\":\"retention_run\""), std::string::npos) << dp->err();
  EXPECT_EQ(dp->stop(), 0) << dp->err();
}

TEST(HttpProcess, RefusesPlainHttpOnNonLoopbackAndBadArguments) {
  Vault v;
  auto r = run({kCustosd, "--data-dir", v.dir.string(), "--listen", "0.0.0.0:" + std::to_string(free_port())});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("non-loopback"), std::string::npos) << r.err;
  r = run({kCustosd, "--data-dir", v.dir.string(), "--listen", "nonsense"});
  EXPECT_EQ(r.exit_code, 2);
  // IPv6 literals are accepted (Beast binds them); only a bad one is usage.
  r = run({kCustosd, "--data-dir", v.dir.string(), "--listen", "[::1:" + std::to_string(free_port())});
  EXPECT_EQ(r.exit_code, 2);
  r = run({kCustosd, "--data-dir", v.dir.string(), "--listen", "127.0.0.1:1", "--tls-cert", "x"});
  EXPECT_EQ(r.exit_code, 2);
  TempDir empty;
  r = run({kCustosd, "--data-dir", (empty.path() / "none").string(), "--listen",
           "127.0.0.1:" + std::to_string(free_port())});
  EXPECT_EQ(r.exit_code, 1);
}

// The tuning flags: out of range is usage (exit 2, nothing served); in range
// the daemon serves. --policies serves from another directory, and one
// without the policy files is refused at start, naming what is missing.
TEST(HttpProcess, TuningAndPolicyFlagsAreCheckedAndHonoured) {
  Vault v;
  const std::string listen = "127.0.0.1:" + std::to_string(free_port());
  for (const auto& [flag, value] : std::vector<std::pair<std::string, std::string>>{
           {"--io-threads", "0"}, {"--io-threads", "65"}, {"--outbox-batch", "0"},
           {"--outbox-batch", "1025"}, {"--outbox-horizon-s", "0"}}) {
    const auto r = run({kCustosd, "--data-dir", v.dir.string(), "--listen", listen, flag, value});
    EXPECT_EQ(r.exit_code, 2) << flag << " " << value << ": " << r.err;
  }
  TempDir empty;
  const auto refused = run({kCustosd, "--data-dir", v.dir.string(), "--listen", listen, "--policies",
                            empty.path().string()});
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.err.find(empty.path().string()), std::string::npos) << refused.err;

  // The flag lets plain HTTP past the non-loopback refusal. 192.0.2.1
  // (TEST-NET-1) is no address of this host, so the bind itself then fails:
  // exit 1 naming the address, not the usage error (and nothing listens
  // beyond loopback).
  const auto allowed = run({kCustosd, "--data-dir", v.dir.string(), "--listen", "192.0.2.1:" + std::to_string(free_port()),
                            "--allow-plain-http-non-loopback"});
  EXPECT_EQ(allowed.exit_code, 1) << allowed.err;
  EXPECT_EQ(allowed.err.find("non-loopback"), std::string::npos) << allowed.err;
  EXPECT_NE(allowed.err.find("cannot listen on 192.0.2.1"), std::string::npos) << allowed.err;

  TempDir copy;
  fs::copy(v.dir / "policies", copy.path() / "policies", fs::copy_options::recursive);
  auto dp = start_daemon(v.dir, {"--io-threads", "1", "--outbox-batch", "1", "--outbox-horizon-s", "60", "--policies",
                                 (copy.path() / "policies").string()});
  ASSERT_TRUE(dp->alive()) << dp->err();
  EXPECT_EQ(dp->get("/v1/audit/checkpoint", v.admin).status, 200);
  EXPECT_EQ(dp->stop(), 0) << dp->err();
}

TEST(HttpProcess, ServesHttpsWithTls12OrLater) {
  Vault v;
  TempDir certs;
  const fs::path key = certs.path() / "key.pem", cert = certs.path() / "cert.pem";
  const auto gen = run({"/usr/bin/openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1", "-days", "1", "-keyout", key.string(), "-out",
                        cert.string()});
  ASSERT_EQ(gen.exit_code, 0) << gen.err;
  auto dp = start_daemon(v.dir, {"--tls-cert", cert.string(), "--tls-key", key.string()}, true, cert);
  Daemon& d = *dp;
  ASSERT_TRUE(d.alive()) << d.err();
  EXPECT_EQ(d.url().rfind("https://", 0), 0u);
  EXPECT_EQ(d.out_first_line().rfind("custosd listening on https://", 0), 0u) << d.out();
  const Resp cp = d.get("/v1/audit/checkpoint", v.admin);
  EXPECT_EQ(cp.status, 200) << cp;
  EXPECT_FALSE(cp.header("Strict-Transport-Security").empty());

  // Plain HTTP to the TLS port gets no HTTP answer, and the server lives on.
  web::http::client::http_client_config cfg;
  cfg.set_timeout(std::chrono::seconds(5));
  web::http::client::http_client plain(web::uri("http://127.0.0.1:" + std::to_string(d.port())), cfg);
  EXPECT_EQ(send(plain, {"GET", "/healthz", "", "", std::nullopt, {}}).status, 0);

  // TLS 1.1 is refused by the server.
  const auto s_client = run({"/usr/bin/openssl", "s_client", "-connect", "127.0.0.1:" + std::to_string(d.port()),
                             "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"});
  EXPECT_NE(s_client.exit_code, 0);
  const auto tls12 = run({"/usr/bin/openssl", "s_client", "-connect", "127.0.0.1:" + std::to_string(d.port()),
                          "-tls1_2", "-CAfile", cert.string(), "-verify_return_error"},
                         "Q\n");
  EXPECT_EQ(tls12.exit_code, 0) << tls12.err;
  EXPECT_NE(tls12.out.find("TLSv1.2"), std::string::npos) << tls12.out.substr(0, 2000);

  EXPECT_TRUE(d.alive());
  EXPECT_EQ(d.get("/healthz", "").status, 200);
  EXPECT_EQ(d.stop(), 0) << d.err();

  // A key that does not match the certificate fails at start-up.
  const fs::path other_key = certs.path() / "other.pem";
  ASSERT_EQ(run({"/usr/bin/openssl", "genpkey", "-algorithm", "RSA", "-out", other_key.string()}).exit_code, 0);
  const auto bad = run({kCustosd, "--data-dir", v.dir.string(), "--listen", "127.0.0.1:" + std::to_string(free_port()),
                        "--tls-cert", cert.string(), "--tls-key", other_key.string()});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("does not match"), std::string::npos) << bad.err;
}

// ------------------------------------------------------------------ OpenAPI

TEST(HttpOpenApi, DocumentsExactlyTheServedRoutes) {
  const YAML::Node doc = YAML::LoadFile(std::string(CUSTOS_SOURCE_DIR) + "/docs/openapi.yaml");
  ASSERT_EQ(doc["openapi"].as<std::string>().rfind("3.1", 0), 0u);
  std::set<std::pair<std::string, std::string>> documented, served;
  static const std::set<std::string> kMethods = {"get", "put", "post", "delete", "patch", "head", "options", "trace"};
  for (const auto& path : doc["paths"]) {
    for (const auto& op : path.second) {
      const std::string key = op.first.as<std::string>();
      if (!kMethods.count(key)) continue;
      std::string upper = key;
      for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      documented.insert({upper, path.first.as<std::string>()});
      // Every operation documents its success and its auth failure.
      bool has_2xx = false;
      for (const auto& resp : op.second["responses"]) has_2xx |= resp.first.as<std::string>()[0] == '2';
      EXPECT_TRUE(has_2xx) << upper << " " << path.first.as<std::string>();
      const bool is_public = op.second["security"] && op.second["security"].size() == 0;
      if (!is_public) {
        EXPECT_TRUE(op.second["responses"]["401"]) << upper << " " << path.first.as<std::string>();
      }
    }
  }
  for (const auto& r : custos::http::route_table()) served.insert({r.method, r.path});
  EXPECT_EQ(documented, served);
  for (const auto& d : documented)
    if (!served.count(d)) ADD_FAILURE() << "documented but not served: " << d.first << " " << d.second;
  for (const auto& s : served)
    if (!documented.count(s)) ADD_FAILURE() << "served but not documented: " << s.first << " " << s.second;
}

TEST(HttpListen, ParsesAddresses) {
  using custos::http::parse_listen;
  auto a = parse_listen("127.0.0.1:8443");
  EXPECT_EQ(a.host, "127.0.0.1");
  EXPECT_EQ(a.port, 8443);
  EXPECT_TRUE(a.loopback);
  EXPECT_TRUE(parse_listen("127.1.2.3:1").loopback);
  EXPECT_TRUE(parse_listen("localhost:80").loopback);
  EXPECT_TRUE(parse_listen("[::1]:80").loopback);
  EXPECT_FALSE(parse_listen("0.0.0.0:80").loopback);
  EXPECT_FALSE(parse_listen("10.0.0.1:80").loopback);
  EXPECT_FALSE(parse_listen("[::]:80").loopback);
  EXPECT_FALSE(parse_listen("example.com:80").loopback);
  EXPECT_THROW(parse_listen("127.0.0.1"), std::invalid_argument);
  EXPECT_THROW(parse_listen("127.0.0.1:0"), std::invalid_argument);
  EXPECT_THROW(parse_listen("127.0.0.1:99999"), std::invalid_argument);
  EXPECT_THROW(parse_listen("::1:80"), std::invalid_argument);
  EXPECT_THROW(parse_listen("bad host:80"), std::invalid_argument);
}


// ------------------------------------------------------------------ contract
// The contract run (ctest contract_prism) fails a test on what Prism
// reports; these show that it can.

TEST(HttpContract, ResponseViolationsAndAcceptedBadRequestsAreReportedRefusedOnesAreNot) {
  const std::string header =
      R"([{"location":["request","body"],"severity":"Error","message":"must have required property 'fields'"},)"
      R"({"location":["response","body","status"],"severity":"Error","message":"must be equal to constant"}])";
  // The server refused the bad request: only the response violation counts.
  const auto refused = contract_violations(header, 400);
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_NE(refused[0].find("response.body.status"), std::string::npos) << refused[0];
  // The server accepted it: both count.
  const auto accepted = contract_violations(header, 201);
  ASSERT_EQ(accepted.size(), 2u);
  EXPECT_NE(accepted[0].find("accepted a request the document forbids"), std::string::npos) << accepted[0];
  EXPECT_TRUE(contract_violations("", 200).empty());
  EXPECT_EQ(contract_violations("not json", 200).size(), 1u);
}

// End to end through Prism: a document that describes /healthz otherwise
// than custosd answers makes every /healthz exchange a test failure.
TEST(HttpContract, ABodyTheDocumentDoesNotDescribeFailsTheTestThatGotIt) {
  const char* prism = std::getenv("CUSTOS_TEST_PRISM");
  const char* doc = std::getenv("CUSTOS_TEST_OPENAPI");
  if (prism == nullptr || doc == nullptr) GTEST_SKIP() << "only in the contract run (ctest contract_prism)";
  const std::string real_doc = doc;
  std::string text = read_file(real_doc);
  const std::string ok = "status: {type: string, const: ok}";
  const auto at = text.find(ok);
  ASSERT_NE(at, std::string::npos) << "the /healthz schema changed; update this test";
  text.replace(at, ok.size(), "status: {type: string, const: up}");
  TempDir tmp;
  const auto altered = tmp.path() / "openapi.yaml";
  write_file(altered, text);
  Vault v;
  // Failures inside are captured, not reported: the checks come after.
  ::testing::TestPartResultArray failures;
  bool proxied = false;
  int status = 0;
  {
    ::testing::ScopedFakeTestPartResultReporter capture(
        ::testing::ScopedFakeTestPartResultReporter::INTERCEPT_ONLY_CURRENT_THREAD, &failures);
    ::setenv("CUSTOS_TEST_OPENAPI", altered.c_str(), 1);
    auto d = start_daemon(v.dir);
    ::setenv("CUSTOS_TEST_OPENAPI", real_doc.c_str(), 1);
    proxied = d->proxied();
    status = d->get("/healthz", "").status;
  }
  ASSERT_TRUE(proxied);
  EXPECT_EQ(status, 200);
  bool reported = false;
  for (int i = 0; i < failures.size(); ++i) {
    const std::string message = failures.GetTestPartResult(i).message();
    reported = reported || (message.find("contract violation on GET /healthz") != std::string::npos &&
                            message.find("response") != std::string::npos);
  }
  EXPECT_TRUE(reported) << failures.size() << " failures captured, none the /healthz violation";
}

}  // namespace
