// Bulk integration (issue 18): NDJSON import (idempotent, resumable after
// kill -9, each line on its own, PII-free errors, one audit entry per
// chunk), the NDJSON export, batch routes and the integrator CLI verbs —
// through the real `custos` binary where an integrator would use it, and
// the service façade to look at what landed.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "custos/service/service.h"
#include "test_support.h"

namespace custos {
namespace {

using nlohmann::json;
using testing::run;
using testing::RunResult;
using testing::TempDir;

// Customer i of a generated file: identity, one consent with its evidence,
// one order, one touchpoint with (personal) notes.
std::string customer_line(int i) {
  const std::string n = std::to_string(i);
  json line = {{"fields",
                {{"external_id", "EXT-" + n},
                 {"email", "import.user" + n + "@example.com"},
                 {"given_name", "Given" + n},
                 {"family_name", "Family" + n}}},
               {"consents",
                {{{"purpose", "email_marketing"},
                  {"channel", "email"},
                  {"event", "granted"},
                  {"source", "import"},
                  {"at", "2026-01-01T00:00:00Z"},
                  {"evidence", {{"form", "signup-v3"}, {"ip_hash", "sha256:ab"}}}}}},
               {"orders", {{{"amount_minor", 1000 + i}, {"currency", "EUR"}, {"at", "2026-02-01T00:00:00Z"}}}},
               {"touchpoints",
                {{{"channel", "email"}, {"type", "newsletter_open"}, {"at", "2026-03-01T00:00:00Z"},
                  {"notes", "private note " + n}}}}};
  return line.dump();
}

void write_customers(const std::filesystem::path& file, int first, int count) {
  std::ofstream out(file, std::ios::binary);
  for (int i = first; i < first + count; ++i) out << customer_line(i) << "\n";
}

std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class Import : public ::testing::Test {
 protected:
  TempDir tmp;
  std::filesystem::path data() const { return tmp.path() / "data"; }
  RunResult custos(std::vector<std::string> args, const std::string& in = "") {
    args.insert(args.begin(), {CUSTOS_CLI_PATH, "--data-dir", data().string()});
    return run(args, in);
  }
  void SetUp() override {
    const auto r = custos({"init", "--fast-kdf"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  std::unique_ptr<service::Service> open() {
    service::OpenOptions o;
    o.data_dir = data();
    return service::Service::open(o);
  }
  static service::Caller admin(service::Service& svc, const std::string& purpose = "administration") {
    return {svc.local_operator(), purpose, "test"};
  }
  // Every exported line, parsed.
  static std::vector<json> exported(service::Service& svc) {
    std::vector<json> lines;
    svc.export_subjects(admin(svc), {}, [&](const std::string& line) {
      lines.push_back(json::parse(line));
      return true;
    });
    return lines;
  }
  // Imports `text` through the façade as the local operator, handing it
  // over `piece` bytes at a time (as a network would).
  static json import_text(service::Service& svc, const std::string& text, service::ImportOptions options = {},
                          const service::Caller* caller = nullptr, std::size_t piece = 1000) {
    std::size_t at = 0;
    return svc.import_ndjson(caller ? *caller : admin(svc), options, [&](char* buf, std::size_t cap) {
      const std::size_t n = std::min({cap, piece, text.size() - at});
      std::memcpy(buf, text.data() + at, n);
      at += n;
      return n;
    });
  }
};

// The issue's proof: 10,000 customers with consents, orders and
// touchpoints; the import is killed (SIGKILL) once half is committed, then
// run again: every customer is there exactly once, with exactly its records.
TEST_F(Import, KilledHalfwayAndResumedLeavesNoDuplicateAndNoMissingLine) {
  const auto file = tmp.path() / "customers.ndjson";
  constexpr int kCustomers = 10000;
  write_customers(file, 0, kCustomers);

  int err_pipe[2];
  ASSERT_EQ(::pipe(err_pipe), 0);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const int devnull = ::open("/dev/null", O_WRONLY);
    ::dup2(devnull, 1);
    ::dup2(err_pipe[1], 2);
    ::close(err_pipe[0]);
    ::close(err_pipe[1]);
    const std::string d = data().string(), f = file.string();
    ::execl(CUSTOS_CLI_PATH, CUSTOS_CLI_PATH, "--data-dir", d.c_str(), "import", f.c_str(), "--chunk", "250",
            "--progress", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(err_pipe[1]);
  // Read its progress (one line per committed chunk) until half is in, bounded.
  std::string seen;
  std::uint64_t committed = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(240);
  while (committed < kCustomers / 2 && std::chrono::steady_clock::now() < deadline) {
    pollfd p{err_pipe[0], POLLIN, 0};
    if (::poll(&p, 1, 1000) <= 0) continue;
    char buf[4096];
    const ssize_t n = ::read(err_pipe[0], buf, sizeof buf);
    if (n <= 0) break;
    seen.append(buf, static_cast<std::size_t>(n));
    const auto last_line = seen.rfind("progress lines=");
    const std::size_t digits = last_line == std::string::npos ? seen.size() : last_line + 15;
    if (digits < seen.size() && std::isdigit(static_cast<unsigned char>(seen[digits])))
      committed = std::stoull(seen.substr(digits));
  }
  ASSERT_GE(committed, static_cast<std::uint64_t>(kCustomers / 2)) << seen;
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ::close(err_pipe[0]);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the import finished before it could be killed; status " << status;

  const auto resumed = custos({"import", file.string(), "--chunk", "250", "--json"});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  const json report = json::parse(resumed.out);
  EXPECT_GE(report["resumed_after"].get<std::uint64_t>(), committed);
  EXPECT_LT(report["resumed_after"].get<std::uint64_t>(), static_cast<std::uint64_t>(kCustomers));
  EXPECT_EQ(report["succeeded"], kCustomers);
  EXPECT_EQ(report["created"], kCustomers);
  EXPECT_EQ(report["failed"], 0);

  auto svc = open();
  const auto lines = exported(*svc);
  ASSERT_EQ(lines.size(), static_cast<std::size_t>(kCustomers));
  std::set<std::string> external_ids;
  for (const auto& l : lines) {
    external_ids.insert(l["fields"]["external_id"].get<std::string>());
    ASSERT_EQ(l["orders"].size(), 1u) << l.dump();
    ASSERT_EQ(l["touchpoints"].size(), 1u) << l.dump();
    ASSERT_EQ(l["consents"].size(), 1u) << l.dump();
    EXPECT_EQ(l["consents"][0]["event"], "granted");
  }
  EXPECT_EQ(external_ids.size(), static_cast<std::size_t>(kCustomers));
  // The consent history holds each grant once (spot check around the kill).
  for (std::size_t k = 0; k < lines.size(); k += lines.size() / 16) {
    const json c = svc->get_consents(admin(*svc), lines[k]["id"].get<std::string>());
    EXPECT_EQ(c["history"].size(), 1u);
    EXPECT_EQ(c["history"][0]["source"], "import");
    EXPECT_EQ(c["history"][0]["proof"]["form"], "signup-v3");
  }
  // Running it again changes nothing: every line is past the checkpoint.
  const auto again = custos({"import", file.string(), "--json"});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(json::parse(again.out)["resumed_after"], kCustomers);
  EXPECT_EQ(exported(*svc).size(), static_cast<std::size_t>(kCustomers));
}

TEST_F(Import, ReimportUnderANewIdIsIdempotentByExternalId) {
  auto svc = open();
  std::string text;
  for (int i = 0; i < 50; ++i) text += customer_line(i) + "\n";
  service::ImportOptions first;
  first.import_id = "first";
  const json a = import_text(*svc, text, first);
  EXPECT_EQ(a["created"], 50);
  service::ImportOptions second;
  second.import_id = "second";
  second.on_conflict = "reject";  // the external id decides, whatever on_conflict says
  const json b = import_text(*svc, text, second);
  EXPECT_EQ(b["created"], 0);
  EXPECT_EQ(b["updated"], 50);
  EXPECT_EQ(b["failed"], 0);
  const auto lines = exported(*svc);
  ASSERT_EQ(lines.size(), 50u);
  for (const auto& l : lines) {
    EXPECT_EQ(l["orders"].size(), 1u);
    EXPECT_EQ(l["touchpoints"].size(), 1u);
    EXPECT_EQ(svc->get_consents(admin(*svc), l["id"].get<std::string>())["history"].size(), 1u);
  }
}

// A chunk holds at most 1,000 lines and at most 8 MiB of them: twenty lines
// of ~1 MB (padded with JSON whitespace) commit in chunks of 9, 9 and 2, not
// all at once, so a file of large lines never holds 1,000 of them in memory.
TEST_F(Import, AChunkEndsAtItsByteBoundBeforeItsLineCount) {
  auto svc = open();
  std::string text;
  for (int i = 0; i < 20; ++i) text += customer_line(i) + std::string(1'000'000, ' ') + "\n";
  std::vector<std::uint64_t> committed;
  service::ImportObserver observer;
  observer.on_chunk = [&](const service::ImportProgress& p) { committed.push_back(p.succeeded); };
  std::size_t at = 0;
  const json r = svc->import_ndjson(admin(*svc), {}, [&](char* buf, std::size_t cap) {
    const std::size_t n = std::min(cap, text.size() - at);
    std::memcpy(buf, text.data() + at, n);
    at += n;
    return n;
  }, observer);
  EXPECT_EQ(r["created"], 20) << r.dump();
  const std::size_t per_chunk = service::kImportChunkBytes / 1'000'000 + 1;  // 9
  EXPECT_EQ(committed, (std::vector<std::uint64_t>{per_chunk, 2 * per_chunk, 20}));
}

TEST_F(Import, AnEmailConflictFollowsOnConflict) {
  auto svc = open();
  ASSERT_EQ(import_text(*svc, R"({"fields": {"email": "taken@example.com", "given_name": "First"}})" "\n")["created"], 1);
  const std::string same_email = R"({"fields": {"email": "taken@example.com", "family_name": "Second"}})" "\n";
  service::ImportOptions o;
  o.import_id = "reject";
  json r = import_text(*svc, same_email, o);
  EXPECT_EQ(r["failed"], 1);
  EXPECT_EQ(r["errors"][0]["code"], "duplicate_subject");
  EXPECT_EQ(r["errors"][0]["line"], 1);
  EXPECT_EQ(r["errors"][0]["detail"].get<std::string>().find("taken@"), std::string::npos);
  o.import_id = "merge";
  o.on_conflict = "merge";
  r = import_text(*svc, same_email, o);
  EXPECT_EQ(r["updated"], 1);
  EXPECT_EQ(exported(*svc).size(), 1u);
  o.import_id = "create";
  o.on_conflict = "create";
  r = import_text(*svc, same_email, o);
  EXPECT_EQ(r["created"], 1);
  EXPECT_EQ(exported(*svc).size(), 2u);
  // A line's own on_conflict wins over the import's.
  o.import_id = "per-line";
  o.on_conflict = "create";
  r = import_text(*svc, R"({"fields": {"email": "taken@example.com"}, "on_conflict": "reject"})" "\n", o);
  EXPECT_EQ(r["errors"][0]["code"], "duplicate_subject");
}

// Bad lines fail alone with their line number; no personal value reaches
// the error file, the report or stderr.
TEST_F(Import, MalformedAndOverlongLinesFailAloneAndNameNoPersonalValue) {
  const auto file = tmp.path() / "mixed.ndjson";
  {
    std::ofstream out(file, std::ios::binary);
    out << customer_line(1) << "\n";                                              // 1 ok
    out << R"({"fields": {"email": "broken-secret@example.com")" << "\n";          // 2 malformed JSON
    out << R"({"fields": {"email": "not-an-email-secret"}})" << "\n";             // 3 invalid field
    out << "{\"fields\": {\"given_name\": \"" << std::string(1100000, 'x') << "secret-long\"}}\n";  // 4 over 1 MiB
    out << "\n";                                                                   // 5 blank: skipped
    out << R"({"fields": {"given_name": "Ok"}, "consents": [{"purpose": "no_such", "channel": "email", "event": "granted", "at": "2026-01-01T00:00:00Z"}]})" << "\n";  // 6
    out << R"({"fields": {"given_name": "Ok"}, "orders": [{"amount_minor": -5, "currency": "EUR", "at": "2026-01-01T00:00:00Z"}]})" << "\n";  // 7
    out << R"({"fields": {"given_name": "Ok"}, "touchpoints": [{"channel": "web", "type": "visit"}]})" << "\n";  // 8 no time
    out << customer_line(2);                                                       // 9 ok, no final newline
  }
  const auto r = custos({"import", file.string(), "--json"});
  EXPECT_EQ(r.exit_code, 1) << r.err;  // some lines failed
  const json report = json::parse(r.out);
  EXPECT_EQ(report["succeeded"], 2);
  EXPECT_EQ(report["failed"], 6);
  const std::string errors = slurp(file.string() + ".errors");
  std::vector<json> lines;
  std::istringstream in(errors);
  for (std::string l; std::getline(in, l);) lines.push_back(json::parse(l));
  ASSERT_EQ(lines.size(), 6u) << errors;
  EXPECT_EQ(lines[0]["line"], 2);
  EXPECT_EQ(lines[0]["code"], "invalid_argument");
  EXPECT_EQ(lines[1]["line"], 3);
  EXPECT_EQ(lines[1]["code"], "invalid_field");
  EXPECT_EQ(lines[2]["line"], 4);
  EXPECT_EQ(lines[2]["code"], "payload_too_large");
  EXPECT_EQ(lines[3]["line"], 6);
  EXPECT_NE(lines[3]["detail"].get<std::string>().find("consents[0]"), std::string::npos);
  EXPECT_EQ(lines[4]["line"], 7);
  EXPECT_NE(lines[4]["detail"].get<std::string>().find("amount_minor"), std::string::npos);
  EXPECT_EQ(lines[5]["line"], 8);
  EXPECT_NE(lines[5]["detail"].get<std::string>().find("'at'"), std::string::npos);
  for (const char* secret : {"secret", "@example.com", "xxxxxxxx"}) {
    EXPECT_EQ(errors.find(secret), std::string::npos) << secret;
    EXPECT_EQ(r.out.find(secret), std::string::npos) << secret;
    EXPECT_EQ(r.err.find(secret), std::string::npos) << secret;
  }
  struct stat st {};
  ASSERT_EQ(::stat((file.string() + ".errors").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(Import, AFileOverTheLimitIsRefusedBeforeAnythingIsWritten) {
  const auto file = tmp.path() / "big.ndjson";
  write_customers(file, 0, 100);
  const auto r = custos({"import", file.string(), "--max-bytes", "1000"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("payload_too_large"), std::string::npos);
  auto svc = open();
  EXPECT_TRUE(exported(*svc).empty());
  // Through the façade, a stream that grows past the limit stops there;
  // whole chunks before it stay, and the same id resumes.
  std::string text;
  for (int i = 0; i < 30; ++i) text += customer_line(i) + "\n";
  service::ImportOptions o;
  o.import_id = "limited";
  o.chunk_lines = 10;
  o.max_bytes = text.size() / 2;
  EXPECT_EQ(testing::code_of([&] { import_text(*svc, text, o); }), ErrorCode::payload_too_large);
  // Whole lines read before the limit are committed (the last chunk short).
  const auto partial = exported(*svc).size();
  EXPECT_GT(partial, 10u);
  EXPECT_LT(partial, 30u);
  o.max_bytes = std::uint64_t{1} << 30;
  const json done = import_text(*svc, text, o);
  EXPECT_EQ(done["resumed_after"], partial);
  EXPECT_EQ(exported(*svc).size(), 30u);
}

// One entry per committed chunk, committing to (not naming) its subjects:
// each subject finds it by id, as with a batch create.
TEST_F(Import, EachCommittedChunkHasOneAuditEntryFindableByEverySubject) {
  auto svc = open();
  std::string text;
  for (int i = 0; i < 25; ++i) text += customer_line(i) + "\n";
  service::ImportOptions o;
  o.import_id = "audited";
  o.chunk_lines = 10;
  import_text(*svc, text, o);
  const json entries = svc->audit_entries(admin(*svc, "audit"), {{"operation", "subject.import"}});
  ASSERT_EQ(entries["entries"].size(), 3u) << entries.dump();
  const auto lines = exported(*svc);
  ASSERT_EQ(lines.size(), 25u);
  for (const auto& l : {lines.front(), lines.back()}) {
    const json mine = svc->audit_entries(admin(*svc, "audit"),
                                         {{"subject", l["id"].get<std::string>()}, {"operation", "subject.import"}});
    EXPECT_EQ(mine["entries"].size(), 1u);
  }
  for (const auto& e : entries["entries"]) {
    EXPECT_EQ(e["version"], 2) << e.dump();
    EXPECT_EQ(e.dump().find("@example.com"), std::string::npos);
  }
  // Another principal may not resume (or read the errors of) this import.
  const json tok = svc->create_token(admin(*svc), "integrator", "admin");
  const service::Caller other{svc->authenticate(tok["token"].get<std::string>()), "", "test"};
  EXPECT_EQ(testing::code_of([&] { import_text(*svc, text, o, &other); }), ErrorCode::forbidden_role);
}

// A line that fails after part of it was written (its subject, here, before
// its consent is refused) is undone alone, wherever it sits in its chunk:
// the lines before and after it keep everything they carried.
TEST_F(Import, ALineFailingHalfWrittenIsUndoneAloneInItsChunk) {
  auto svc = open();
  const auto line = [](const std::string& email, const std::string& purpose) {
    return json{{"fields", {{"email", email}, {"given_name", "Lin"}}},
                {"consents", {{{"purpose", purpose}, {"channel", "email"}, {"event", "granted"}, {"source", "import"},
                               {"at", "2026-01-01T00:00:00Z"}, {"evidence", {{"form", "signup-v3"}}}}}},
                {"orders", {{{"amount_minor", 1200}, {"currency", "EUR"}, {"at", "2026-02-01T00:00:00Z"}}}}}
               .dump() +
           "\n";
  };
  const std::string text = line("one@example.com", "email_marketing") + line("two@example.com", "no_such_purpose") +
                           line("three@example.com", "email_marketing") + line("four@example.com", "no_such_purpose") +
                           line("five@example.com", "email_marketing");
  for (const std::size_t chunk : {std::size_t{500}, std::size_t{2}}) {
    testing::TestVault vault;
    service::ImportOptions o;
    o.chunk_lines = chunk;
    const json r = import_text(*vault.service, text, o);
    EXPECT_EQ(r["created"], 3) << "chunk " << chunk;
    EXPECT_EQ(r["failed"], 2);
    ASSERT_EQ(r["errors"].size(), 2u);
    EXPECT_EQ(r["errors"][0]["line"], 2);
    EXPECT_EQ(r["errors"][1]["line"], 4);
    std::set<std::string> emails;
    for (const json& s : exported(*vault.service)) {
      emails.insert(s["fields"]["email"].get<std::string>());
      EXPECT_EQ(s["consents"].size(), 1u) << s.dump();
      EXPECT_EQ(s["orders"].size(), 1u) << s.dump();
    }
    EXPECT_EQ(emails, (std::set<std::string>{"one@example.com", "three@example.com", "five@example.com"}));
  }
}

TEST_F(Import, AnExportImportsIntoAnotherVaultAsItIs) {
  const auto file = tmp.path() / "some.ndjson";
  write_customers(file, 0, 40);
  ASSERT_EQ(custos({"import", file.string()}).exit_code, 0);
  auto svc = open();
  std::string dump;
  svc->export_subjects(admin(*svc), {}, [&](const std::string& line) {
    dump += line;
    return true;
  });
  testing::TestVault other;
  const json r = import_text(*other.service, dump);
  EXPECT_EQ(r["created"], 40);
  EXPECT_EQ(r["failed"], 0);
  EXPECT_EQ(exported(*other.service).size(), 40u);
  // Marketing purposes are a campaign fetch, not an export.
  EXPECT_EQ(testing::code_of([&] {
              svc->export_subjects(admin(*svc, "email_marketing"), {}, [](const std::string&) { return true; });
            }),
            ErrorCode::purpose_not_allowed);
}

TEST_F(Import, BatchRoutesAnswerPerItemAndRefuseMoreThanAThousand) {
  auto svc = open();
  const std::string id = svc->create_subject(admin(*svc), {{"fields", {{"email", "batch@example.com"}}}})["id"];
  const json orders = svc->batch_add_orders(
      admin(*svc), {{"orders",
                     {{{"subject_id", id}, {"amount_minor", 500}, {"currency", "EUR"}},
                      {{"subject_id", id}, {"amount_minor", 5}, {"currency", "euro"}},
                      {{"subject_id", std::string(32, '0')}, {"amount_minor", 5}, {"currency", "EUR"}}}}});
  EXPECT_EQ(orders["succeeded"], 1);
  EXPECT_EQ(orders["results"][0]["status"], 201);
  EXPECT_EQ(orders["results"][1]["status"], 422);
  EXPECT_EQ(orders["results"][2]["status"], 404);
  const json tps = svc->batch_add_touchpoints(
      admin(*svc), {{"touchpoints", {{{"subject_id", id}, {"channel", "email"}, {"type", "open"}},
                                     {{"subject_id", id}, {"channel", "pigeon"}, {"type", "open"}}}}});
  EXPECT_EQ(tps["succeeded"], 1);
  EXPECT_EQ(tps["results"][1]["error"]["code"], "invalid_field");
  const json consents = svc->batch_record_consents(
      admin(*svc), {{"consents",
                     {{{"subject_id", id}, {"purpose", "email_marketing"}, {"channel", "email"}, {"event", "granted"}},
                      {{"subject_id", id}, {"purpose", "email_marketing"}, {"channel", "sms"}, {"event", "granted"}}}}});
  EXPECT_EQ(consents["succeeded"], 1);
  EXPECT_EQ(consents["results"][1]["status"], 422);
  json many = {{"orders", json::array()}};
  for (int i = 0; i < 1001; ++i) many["orders"].push_back({{"subject_id", id}, {"amount_minor", 1}, {"currency", "EUR"}});
  EXPECT_EQ(testing::code_of([&] { svc->batch_add_orders(admin(*svc), many); }), ErrorCode::payload_too_large);
  // The role is checked before any item: an analyst writes nothing.
  const json tok = svc->create_token(admin(*svc), "analyst", "analyst");
  const service::Caller analyst{svc->authenticate(tok["token"].get<std::string>()), "", "test"};
  EXPECT_EQ(testing::code_of([&] {
              svc->batch_add_orders(analyst, {{"orders", {{{"subject_id", id}, {"amount_minor", 1}, {"currency", "EUR"}}}}});
            }),
            ErrorCode::forbidden_role);
}

// The integrator verbs of the CLI. Not a terminal here, so JSON comes out
// without --json (a script never parses a table).
TEST_F(Import, CliVerbsForConsentsOrdersTouchpointsAuditAndTokens) {
  const auto put = custos({"subject", "put"}, R"({"fields": {"email": "verbs@example.com"}})");
  ASSERT_EQ(put.exit_code, 0) << put.err;
  const std::string id = json::parse(put.out)["id"];

  auto r = custos({"consent", "record", id, "--purpose", "email_marketing", "--channel", "email", "--event", "granted",
                   "--source", "web_form", "--evidence", R"({"form": "footer"})"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["events"][0]["status"], "confirmed");
  r = custos({"consent", "record", id, "--purpose", "sms_marketing", "--channel", "sms", "--event", "granted",
              "--double-opt-in"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string token = json::parse(r.out)["confirmation"]["token"];
  r = custos({"consent", "confirm", token});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["event"]["event"], "granted");
  r = custos({"consent", "list", id});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["current"].size(), 2u);
  EXPECT_EQ(custos({"consent", "record", id, "--purpose", "email_marketing", "--channel", "pigeon", "--event",
                    "granted"}).exit_code, 2);
  EXPECT_EQ(custos({"consent", "list", std::string(32, '0')}).exit_code, 3);
  EXPECT_EQ(custos({"consent", "record", id, "--event", "granted", "--evidence", "not json"}).exit_code, 2);

  r = custos({"order", "add", id, "--amount-minor", "1999", "--currency", "EUR", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["amount_minor"], 1999);
  EXPECT_EQ(custos({"order", "add", id, "--amount-minor", "1", "--currency", "eur"}).exit_code, 2);
  EXPECT_EQ(custos({"order", "add", id, "--currency", "EUR"}).exit_code, 2);  // usage
  r = custos({"touchpoint", "add", id, "--channel", "phone", "--type", "support_call", "--notes", "called about X"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["channel"], "phone");
  EXPECT_EQ(r.out.find("called about"), std::string::npos);

  r = custos({"audit", "entries", "--subject", id});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json entries = json::parse(r.out)["entries"];
  EXPECT_GE(entries.size(), 5u);
  for (const auto& e : entries) EXPECT_EQ(e.dump().find("verbs@"), std::string::npos);
  r = custos({"audit", "entries", "--operation", "order.create", "--from", "2000-01-01T00:00:00Z", "--to",
              "2100-01-01T00:00:00Z"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["entries"].size(), 1u);
  EXPECT_EQ(custos({"audit", "entries", "--from", "yesterday"}).exit_code, 2);

  ASSERT_EQ(custos({"token", "create", "--role", "marketing", "--name", "crm"}).exit_code, 0);
  r = custos({"token", "list"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json tokens = json::parse(r.out)["tokens"];
  ASSERT_EQ(tokens.size(), 2u);
  EXPECT_EQ(r.out.find("cst_"), std::string::npos);  // never a secret
  // A role without admin may not list tokens.
  const auto svc_tok = custos({"token", "create", "--role", "service", "--name", "svc"});
  std::string svc_token = svc_tok.out;
  svc_token.pop_back();
  EXPECT_EQ(custos({"--token", svc_token, "token", "list"}).exit_code, 4);
}

}  // namespace
}  // namespace custos
