// Issue 18 over HTTP against the real custosd: POST /v1/import streamed
// (chunked, past --max-body-bytes), its limits, GET /v1/subjects:export,
// the batch routes and GET /v1/tokens.
#include <cstdio>
#include <sstream>

#include "http_support.h"

namespace custos::httptest {
namespace {

std::string customer_line(int i) {
  const std::string n = std::to_string(i);
  Json line = {{"fields", {{"external_id", "H-" + n}, {"email", "http.user" + n + "@example.com"}, {"given_name", "G" + n}}},
               {"consents", {{{"purpose", "email_marketing"}, {"channel", "email"}, {"event", "granted"},
                              {"at", "2026-01-01T00:00:00Z"}, {"evidence", {{"form", "web"}}}}}},
               {"orders", {{{"amount_minor", 100 + i}, {"currency", "EUR"}, {"at", "2026-02-01T00:00:00Z"}}}},
               {"touchpoints", {{{"channel", "web"}, {"type", "visit"}, {"at", "2026-03-01T00:00:00Z"}}}}};
  return line.dump();
}

// An HTTP/1.1 chunked coding of `body` in pieces of `piece` bytes.
std::string chunked(const std::string& body, std::size_t piece) {
  std::string out;
  char size[32];
  for (std::size_t at = 0; at < body.size(); at += piece) {
    const std::size_t n = std::min(piece, body.size() - at);
    std::snprintf(size, sizeof size, "%zx\r\n", n);
    out += size + body.substr(at, n) + "\r\n";
  }
  return out + "0\r\n\r\n";
}

class ImportHttp : public ::testing::Test {
 protected:
  Vault vault;
};

// The body is larger than --max-body-bytes: only a route that reads it as
// it arrives can take it. A bad line and an over-long line fail alone.
TEST_F(ImportHttp, AChunkedImportLargerThanTheBodyLimitStreamsThroughLineByLine) {
  auto d = start_daemon(vault.dir, {"--max-body-bytes", "65536"});
  ASSERT_TRUE(d);
  std::string body;
  for (int i = 0; i < 600; ++i) body += customer_line(i) + "\n";
  body += "{\"fields\": {\"email\": \"broken-secret@example.com\"\n";  // line 601: malformed
  body += "{\"fields\": {\"given_name\": \"" + std::string((1 << 20) + 10, 'y') + "\"}}\n";  // 602: > 1 MiB
  body += customer_line(600) + "\n";  // 603
  ASSERT_GT(body.size(), 65536u * 4);
  Fd fd = connect_raw(d->port());
  ASSERT_TRUE(fd.ok());
  const std::string head = raw_request("POST", "/v1/import?import_id=http-1&chunk=100",
                                       {"Authorization: Bearer " + vault.admin, "Content-Type: application/x-ndjson",
                                        "Transfer-Encoding: chunked"});
  ASSERT_EQ(send_raw(fd.get(), head + chunked(body, 32 * 1024), std::chrono::seconds(60)), SendResult::sent);
  const Resp r = read_response(fd.get(), std::chrono::steady_clock::now() + std::chrono::seconds(120));
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_EQ(r.json["import_id"], "http-1");
  EXPECT_EQ(r.json["created"], 601);
  EXPECT_EQ(r.json["failed"], 2);
  ASSERT_EQ(r.json["errors"].size(), 2u);
  EXPECT_EQ(r.json["errors"][0]["line"], 601);
  EXPECT_EQ(r.json["errors"][1]["line"], 602);
  EXPECT_EQ(r.json["errors"][1]["code"], "payload_too_large");
  EXPECT_EQ(r.body.find("secret"), std::string::npos);
  EXPECT_EQ(r.body.find("yyyy"), std::string::npos);

  // The same import again (Content-Length this time) resumes past everything.
  const Resp again = d->call({"POST", "/v1/import?import_id=http-1", vault.admin, "", body, {}});
  ASSERT_EQ(again.status, 200) << again;
  EXPECT_EQ(again.json["resumed_after"], 603);
  EXPECT_EQ(again.json["created"], 601);

  // The inverse: every subject as an import line.
  const Resp ex = d->get("/v1/subjects:export", vault.admin, "administration");
  ASSERT_EQ(ex.status, 200) << ex;
  EXPECT_EQ(ex.header("Content-Type"), "application/x-ndjson");
  std::size_t lines = 0;
  std::istringstream in(ex.body);
  for (std::string l; std::getline(in, l);) {
    const Json j = Json::parse(l);
    ASSERT_TRUE(j.contains("fields")) << l;
    EXPECT_EQ(j["orders"].size(), 1u);
    ++lines;
  }
  EXPECT_EQ(lines, 601u);
  EXPECT_EQ(d->get("/v1/subjects:export?limit=5", vault.admin, "administration").body.size() > 0, true);
  expect_problem(d->get("/v1/subjects:export", vault.admin, "email_marketing"), 403, "purpose_not_allowed");
  expect_problem(d->get("/v1/subjects:export", vault.admin), 403, "purpose_not_allowed");
}

TEST_F(ImportHttp, AnImportOverTheConfiguredSizeIsRefusedBeforeItsBodyIsRead) {
  auto d = start_daemon(vault.dir, {"--max-import-bytes", "100000"});
  ASSERT_TRUE(d);
  Fd fd = connect_raw(d->port());
  ASSERT_TRUE(fd.ok());
  // Only the head is sent: the refusal comes from Content-Length alone.
  const std::string head = raw_request("POST", "/v1/import",
                                       {"Authorization: Bearer " + vault.admin, "Content-Length: 200000"});
  ASSERT_EQ(send_raw(fd.get(), head, std::chrono::seconds(5)), SendResult::sent);
  const Resp r = read_response(fd.get(), std::chrono::steady_clock::now() + std::chrono::seconds(10));
  expect_problem(r, 413, "payload_too_large");
  // Chunked past the limit: 413 when reached; whole chunks before it stay.
  std::string body;
  for (int i = 0; body.size() < 150000; ++i) body += customer_line(i) + "\n";
  Fd fd2 = connect_raw(d->port());
  const std::string head2 = raw_request("POST", "/v1/import?import_id=over&chunk=10",
                                        {"Authorization: Bearer " + vault.admin, "Transfer-Encoding: chunked"});
  send_raw(fd2.get(), head2 + chunked(body, 16 * 1024), std::chrono::seconds(30));
  const Resp r2 = read_response(fd2.get(), std::chrono::steady_clock::now() + std::chrono::seconds(30));
  expect_problem(r2, 413, "payload_too_large");
  // Unauthenticated: refused before the body.
  expect_problem(d->call({"POST", "/v1/import", "", "", customer_line(1), {}}), 401, "unauthenticated");
  // A role without records.write.
  const std::string analyst = vault.token("analyst", "analyst");
  expect_problem(d->call({"POST", "/v1/import", analyst, "", customer_line(1), {}}), 403, "forbidden_role");
  expect_problem(d->call({"POST", "/v1/import?import_id=bad%20id", vault.admin, "", customer_line(1), {}}), 400,
                 "invalid_argument");
  // The server is still up and serving.
  EXPECT_EQ(d->get("/healthz", "").status, 200);
}

TEST_F(ImportHttp, BatchRoutesAndTokenList) {
  auto d = start_daemon(vault.dir);
  ASSERT_TRUE(d);
  const Resp s = d->post("/v1/subjects", vault.admin, {{"fields", {{"email", "batch.http@example.com"}}}});
  ASSERT_EQ(s.status, 201) << s;
  const std::string id = s.json["id"];
  Resp r = d->post("/v1/orders:batchCreate", vault.admin,
                   {{"orders", {{{"subject_id", id}, {"amount_minor", 10}, {"currency", "EUR"}},
                                {{"subject_id", id}, {"amount_minor", 10}, {"currency", "E"}}}}});
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_EQ(r.json["succeeded"], 1);
  EXPECT_EQ(r.json["results"][1]["status"], 422);
  r = d->post("/v1/touchpoints:batchCreate", vault.admin,
              {{"touchpoints", {{{"subject_id", id}, {"channel", "web"}, {"type", "visit"}}}}});
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_EQ(r.json["results"][0]["status"], 201);
  r = d->post("/v1/consents:batchRecord", vault.admin,
              {{"consents", {{{"subject_id", id}, {"purpose", "email_marketing"}, {"channel", "email"},
                              {"event", "granted"}}}}});
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_EQ(r.json["results"][0]["status"], 201);
  Json many = {{"orders", Json::array()}};
  for (int i = 0; i < 1001; ++i) many["orders"].push_back({{"subject_id", id}, {"amount_minor", 1}, {"currency", "EUR"}});
  expect_problem(d->post("/v1/orders:batchCreate", vault.admin, many), 413, "payload_too_large");
  r = d->get("/v1/tokens", vault.admin);
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_EQ(r.json["tokens"][0]["name"], "admin");
  EXPECT_EQ(r.body.find("cst_"), std::string::npos);
  expect_problem(d->get("/v1/tokens", vault.token("service", "svc")), 403, "forbidden_role");
}

}  // namespace
}  // namespace custos::httptest
