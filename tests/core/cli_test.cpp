// Drives the built `custos` binary the way an operator's script would.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "test_support.h"

namespace custos {
namespace {

using nlohmann::json;
using testing::run;
using testing::RunResult;
using testing::TempDir;

class Cli : public ::testing::Test {
 protected:
  TempDir tmp;
  std::string data() const { return (tmp.path() / "data").string(); }
  RunResult custos(std::vector<std::string> args, const std::string& in = "") {
    args.insert(args.begin(), {CUSTOS_CLI_PATH, "--data-dir", data()});
    return run(args, in);
  }
  void init() {
    const auto r = custos({"init", "--fast-kdf"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
};

TEST_F(Cli, InitPutGetFindErase) {
  const auto r = custos({"init", "--fast-kdf"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("cst_"), std::string::npos);
  struct stat st {};
  ASSERT_EQ(0, ::stat((tmp.path() / "data" / "keys" / "master-1.key").c_str(), &st));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(custos({"init"}).exit_code, 1);  // already initialised

  const auto put = custos({"subject", "put"}, R"({"fields": {"email": "cli@example.com", "given_name": "Cli"}})");
  ASSERT_EQ(put.exit_code, 0) << put.err;
  const std::string id = json::parse(put.out)["id"];
  const auto get = custos({"subject", "get", id, "--purpose", "customer_service"});
  ASSERT_EQ(get.exit_code, 0) << get.err;
  EXPECT_EQ(json::parse(get.out)["fields"]["email"], "cli@example.com");
  const auto find = custos({"subject", "find", "--email", "CLI@example.com", "--purpose", "customer_service"});
  ASSERT_EQ(find.exit_code, 0) << find.err;
  EXPECT_EQ(json::parse(find.out)["subjects"][0]["id"], id);
  // Erasure outside a request needs a purpose that justifies it and a reason.
  EXPECT_EQ(custos({"subject", "erase", id}).exit_code, 2);
  EXPECT_EQ(custos({"subject", "erase", id, "--purpose", "administration"}).exit_code, 2);
  EXPECT_EQ(custos({"subject", "erase", id, "--purpose", "customer_service", "--reason", "cli test"}).exit_code, 4);
  EXPECT_EQ(custos({"subject", "erase", id, "--purpose", "administration", "--reason", ""}).exit_code, 2);
  ASSERT_EQ(custos({"subject", "get", id, "--purpose", "customer_service"}).exit_code, 0);
  const auto erased = custos({"subject", "erase", id, "--purpose", "administration", "--reason", "cli test"});
  EXPECT_EQ(erased.exit_code, 0) << erased.err;
  EXPECT_EQ(custos({"subject", "get", id, "--purpose", "customer_service"}).exit_code, 3);
  EXPECT_EQ(custos({"subject", "find", "--email", "cli@example.com", "--purpose", "customer_service"}).exit_code, 3);
}

TEST_F(Cli, ExitCodesForBadInput) {
  init();
  // usage
  EXPECT_EQ(custos({"subject", "get"}).exit_code, 2);
  EXPECT_EQ(custos({"frobnicate"}).exit_code, 2);
  // malformed JSON, unknown field, invalid email: one line, names the field, never the value
  auto r = custos({"subject", "put"}, "{not json");
  EXPECT_EQ(r.exit_code, 2);
  r = custos({"subject", "put"}, R"({"fields": {"shoe_size": "44"}})");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("shoe_size"), std::string::npos);
  r = custos({"subject", "put"}, R"({"fields": {"email": "secret-not-an-email"}})");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("email"), std::string::npos);
  EXPECT_EQ(r.err.find("secret-not-an-email"), std::string::npos);
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1);
  // denied: a purpose the role may not declare
  const auto tok = custos({"token", "create", "--role", "service", "--name", "svc"});
  ASSERT_EQ(tok.exit_code, 0) << tok.err;
  std::string token = tok.out;
  token.pop_back();
  const std::string id = json::parse(custos({"subject", "put"}, R"({"fields": {"given_name": "X"}})").out)["id"];
  EXPECT_EQ(custos({"--token", token, "subject", "get", id, "--purpose", "email_marketing"}).exit_code, 4);
  EXPECT_EQ(custos({"--token", token, "subject", "get", id, "--purpose", "customer_service"}).exit_code, 0);
  EXPECT_EQ(custos({"token", "revoke", "svc"}).exit_code, 0);
  EXPECT_EQ(custos({"--token", token, "subject", "get", id, "--purpose", "customer_service"}).exit_code, 4);
  // not found
  EXPECT_EQ(custos({"subject", "get", std::string(32, 'a'), "--purpose", "customer_service"}).exit_code, 3);
}

TEST_F(Cli, KeyFileProblemsAreClearErrors) {
  init();
  const auto key = tmp.path() / "data" / "keys" / "master-1.key";
  ::chmod(key.c_str(), 0644);
  auto r = custos({"subject", "get", std::string(32, 'a'), "--purpose", "customer_service"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("master-1.key"), std::string::npos);
  ::chmod(key.c_str(), 0600);
  std::filesystem::resize_file(key, 10);
  r = custos({"subject", "get", std::string(32, 'a'), "--purpose", "customer_service"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("truncated"), std::string::npos);
  std::filesystem::remove(key);
  r = custos({"subject", "get", std::string(32, 'a'), "--purpose", "customer_service"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("master"), std::string::npos);
}

TEST_F(Cli, CorruptedDatabaseIsAClearError) {
  init();
  {
    std::fstream f(tmp.path() / "data" / "custos.db", std::ios::in | std::ios::out | std::ios::binary);
    const std::string junk(4096, 'Z');
    f.write(junk.data(), static_cast<std::streamsize>(junk.size()));
  }
  std::filesystem::remove(tmp.path() / "data" / "custos.db-wal");
  const auto r = custos({"subject", "get", std::string(32, 'a'), "--purpose", "customer_service"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("custos.db"), std::string::npos) << r.err;
}

TEST_F(Cli, PassphraseInitAndWrongPassphrase) {
  const auto pass = tmp.path() / "pass";
  std::ofstream(pass) << "correct horse battery staple\n";
  auto r = custos({"--passphrase-file", pass.string(), "init", "--fast-kdf"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(std::filesystem::exists(tmp.path() / "data" / "keys" / "master-1.argon2.json"));
  r = custos({"--passphrase-file", pass.string(), "subject", "put"}, R"({"fields": {"given_name": "P"}})");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  const auto wrong = tmp.path() / "wrong";
  std::ofstream(wrong) << "nope\n";
  r = custos({"--passphrase-file", wrong.string(), "subject", "put"}, R"({"fields": {"given_name": "P"}})");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("wrong passphrase"), std::string::npos);
  r = custos({"subject", "put"}, R"({"fields": {"given_name": "P"}})");
  EXPECT_EQ(r.exit_code, 1);
}

TEST_F(Cli, AuditExportVerifyAndTamper) {
  init();
  for (int i = 0; i < 5; ++i) custos({"subject", "put"}, R"({"fields": {"given_name": "A"}})");
  EXPECT_EQ(custos({"key", "rotate"}).exit_code, 0);
  const std::string file = (tmp.path() / "audit.export").string();
  auto r = custos({"audit", "export", "--out", file});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = custos({"audit", "verify", file});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  const auto pub = custos({"audit", "pubkey"});
  ASSERT_EQ(pub.exit_code, 0);
  const auto pubfile = tmp.path() / "pub";
  std::ofstream(pubfile) << pub.out;
  r = run({CUSTOS_AUDIT_CLI_PATH, "verify", file, "--pubkey", pubfile.string()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("entries="), std::string::npos);
  // A file that is not a verifier key is a usage error, not an integrity failure.
  const auto badkey = tmp.path() / "badkey";
  std::ofstream(badkey) << "not a key\n";
  EXPECT_EQ(run({CUSTOS_AUDIT_CLI_PATH, "verify", file, "--pubkey", badkey.string()}).exit_code, 2);
  // Flip one byte near the end of the entries: both verifiers exit 5.
  {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(0, std::ios::end);
    const auto size = static_cast<std::streamoff>(f.tellg());
    f.seekg(size / 2);
    char c;
    f.read(&c, 1);
    c ^= 0x20;
    f.seekp(size / 2);
    f.write(&c, 1);
  }
  EXPECT_EQ(custos({"audit", "verify", file}).exit_code, 5);
  EXPECT_EQ(run({CUSTOS_AUDIT_CLI_PATH, "verify", file, "--pubkey", pubfile.string()}).exit_code, 5);
}

TEST_F(Cli, DsrBreachRetentionAndHoldFromTheCommandLine) {
  init();
  const auto put = custos({"subject", "put"}, R"({"fields": {"email": "dsr@example.com", "given_name": "D"}})");
  ASSERT_EQ(put.exit_code, 0) << put.err;
  const std::string subject = json::parse(put.out)["id"];
  auto r = custos({"dsr", "create", "--type", "access", "--regime", "gdpr", "--email", "dsr@example.com",
                   "--received-at", "2026-01-31T09:00:00Z"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json req = json::parse(r.out);
  EXPECT_EQ(req["subject_id"], subject);
  // GDPR Art. 12(3) + Reg. 1182/71 Art. 3(2)(c): 28 Feb 2026, a Saturday, so
  // Art. 3(4) ends the period on Monday 2 March (end of the Berlin day, 22:59:59Z).
  EXPECT_EQ(req["due_at"].get<std::string>().substr(0, 10), "2026-03-02");
  const std::string id = req["id"];
  EXPECT_EQ(custos({"dsr", "transition", id, "--to", "completed"}).exit_code, 1);  // conflict
  EXPECT_EQ(custos({"dsr", "transition", id, "--to", "identity_verified"}).exit_code, 0);
  r = custos({"dsr", "export", id, "--out", (tmp.path() / "export.json").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::ifstream in(tmp.path() / "export.json");
  EXPECT_EQ(json::parse(in)["subject"]["fields"]["email"], "dsr@example.com");
  r = custos({"dsr", "list", "--overdue"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["count"], 1);
  EXPECT_EQ(custos({"dsr", "get", "nope"}).exit_code, 3);

  r = custos({"breach", "create"}, R"({"description": "lost laptop", "categories": ["contact"]})");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string breach = json::parse(r.out)["id"];
  EXPECT_EQ(custos({"breach", "event", breach, "--type", "contained"}).exit_code, 0);
  r = custos({"breach", "compute-affected", breach, "--category", "contact"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["count"], 1);
  r = custos({"breach", "list", "--at-risk", "--margin-hours", "96"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["count"], 1);
  r = custos({"breach", "get", breach});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json incident = json::parse(r.out);
  EXPECT_EQ(incident["id"], breach);
  EXPECT_EQ(incident["status"], "contained");
  EXPECT_FALSE(incident["deadlines"].empty());
  EXPECT_EQ(custos({"breach", "get", "nope"}).exit_code, 3);

  // Identity-free analytics: counts and distributions, never a value.
  r = custos({"analytics", "rfm"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json rfm = json::parse(r.out);
  EXPECT_TRUE(rfm["distribution"].contains("recency"));
  EXPECT_TRUE(rfm["segments"].is_object());
  EXPECT_EQ(r.out.find("@example.com"), std::string::npos);

  EXPECT_EQ(custos({"subject", "hold", subject}).exit_code, 0);
  r = custos({"retention", "run", "--dry-run"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(json::parse(r.out).is_object());
}

// Identity resolution from the CLI: a re-import is refused naming the first
// subject (exit 1, no value on stderr), then duplicates are listed and merged.
TEST_F(Cli, SubjectDuplicatesAndMerge) {
  init();
  const auto first = custos({"subject", "put"}, R"({"fields": {"email": "ada@example.com"}})");
  ASSERT_EQ(first.exit_code, 0) << first.err;
  const std::string a = json::parse(first.out)["id"];
  const auto again = custos({"subject", "put"}, R"({"fields": {"email": "ADA@example.com"}})");
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_NE(again.err.find(a), std::string::npos) << again.err;
  EXPECT_EQ(again.err.find("example.com"), std::string::npos) << again.err;
  EXPECT_EQ(custos({"subject", "put", "--on-conflict", "upsert"}, R"({"fields": {"email": "ADA@example.com"}})").exit_code,
            2);
  const auto dup = custos({"subject", "put", "--on-conflict", "create"},
                          R"({"fields": {"email": "ADA@example.com", "given_name": "Ada"}})");
  ASSERT_EQ(dup.exit_code, 0) << dup.err;
  const std::string b = json::parse(dup.out)["id"];
  const auto list = custos({"subject", "duplicates", "--purpose", "administration"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  const json clusters = json::parse(list.out)["clusters"];
  ASSERT_EQ(clusters.size(), 1u) << list.out;
  EXPECT_EQ(clusters[0]["matched_on"], "email");
  EXPECT_EQ(custos({"subject", "duplicates", "--purpose", "customer_service"}).exit_code, 4);
  EXPECT_EQ(custos({"subject", "merge", a, "--from", b, "--purpose", "administration"}).exit_code, 2);
  const auto merged = custos({"subject", "merge", a, "--from", b, "--purpose", "administration", "--reason", "DQ-1"});
  ASSERT_EQ(merged.exit_code, 0) << merged.err;
  EXPECT_EQ(json::parse(merged.out)["fields_added"], json({"given_name"}));
  EXPECT_EQ(custos({"subject", "get", b, "--purpose", "customer_service"}).exit_code, 3);
  EXPECT_EQ(json::parse(custos({"subject", "get", a, "--purpose", "customer_service"}).out)["fields"]["given_name"], "Ada");
}

}  // namespace
}  // namespace custos
