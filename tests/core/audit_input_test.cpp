// Issue 14: nothing a client sends reaches the audit log unbounded or
// unvalidated. Each test is an attack through the Service façade (what every
// transport calls) against a real vault, checked in the entries it leaves
// and with the auditor's own verifier (the custos-audit binary).
#include <gtest/gtest.h>
#include <sodium.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>

#include "custos/error.h"
#include "test_support.h"

namespace custos {
namespace {

using service::Json;
using testing::TestVault;

// The marker FORMAT.md §1.4 defines, computed here independently of the vault:
// invalid_<what>:len=<bytes>:sha256=<first 8 bytes of SHA-256, hex>.
std::string marker(const std::string& what, const std::string& value) {
  unsigned char digest[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(digest, reinterpret_cast<const unsigned char*>(value.data()), value.size());
  char hex[17];
  sodium_bin2hex(hex, sizeof hex, digest, 8);
  return "invalid_" + what + ":len=" + std::to_string(value.size()) + ":sha256=" + hex;
}

Json entries(TestVault& v, std::map<std::string, std::string> filter) {
  filter["limit"] = "1000";
  return v.service->audit_entries(v.caller("auditor", "audit"), filter)["entries"];
}

// Exports the log to a file and runs the real `custos-audit verify` on it;
// returns the export's size in bytes.
std::uintmax_t export_and_verify_with_cli(TestVault& v) {
  const auto file = v.dir.path() / "audit.export";
  const auto key = v.dir.path() / "audit.pub";
  {
    std::ofstream out(file, std::ios::binary);
    v.service->audit_export(v.caller("auditor", "audit"), out);
    std::ofstream(key) << v.service->audit_verifier_key() << "\n";
  }
  const auto r = testing::run({CUSTOS_AUDIT_CLI_PATH, "verify", file.string(), "--pubkey", key.string()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return std::filesystem::file_size(file);
}

// Today's attack: a huge Custos-Purpose from a role that may not declare it.
// The denial stands and is audited, but with the purpose's marker, not the
// megabyte, so every later export still verifies.
void unknown_purpose_is_audited_as_a_marker(std::size_t size) {
  TestVault v;
  const std::string id = v.service->create_subject(v.admin(), {{"fields", {{"email", "p@example.com"}}}})["id"];
  std::string purpose(size, 'x');
  purpose[size / 2] = '\n';  // a newline in the middle, too
  std::string message;
  try {
    v.service->get_subject(v.caller("service", purpose), id);
    ADD_FAILURE() << "the read was not denied";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::purpose_not_allowed);
    message = e.what();
  }
  EXPECT_LT(message.size(), 200u) << "the message echoes the purpose";
  EXPECT_EQ(message.find('\n'), std::string::npos);

  Json denied;
  for (const auto& e : entries(v, {{"subject", id}}))
    if (e["outcome"] == "denied") denied = e;
  ASSERT_FALSE(denied.is_null()) << "the denial was not audited";
  EXPECT_EQ(denied["reason"], "purpose_not_allowed");
  const std::string recorded = denied["purpose"];
  EXPECT_EQ(recorded, marker("purpose", purpose));
  EXPECT_TRUE(std::regex_match(recorded, std::regex("invalid_purpose:len=" + std::to_string(size) +
                                                    ":sha256=[0-9a-f]{16}")))
      << recorded.substr(0, 80);
  EXPECT_LT(export_and_verify_with_cli(v), 64u << 10) << "an entry of the export is large";
}

TEST(AuditInput, AnUnknown4KiBPurposeIsAuditedAsAMarkerAndTheExportVerifies) {
  unknown_purpose_is_audited_as_a_marker(4096);
}

TEST(AuditInput, AnUnknown1MiBPurposeIsAuditedAsAMarkerAndTheExportVerifies) {
  unknown_purpose_is_audited_as_a_marker(std::size_t{1} << 20);
}

// A purpose from purposes.yaml is recorded as it is, denied or not: the
// auditor needs to see which known purpose was tried.
TEST(AuditInput, AKnownPurposeIsRecordedVerbatimEvenWhenDenied) {
  TestVault v;
  const std::string id = v.service->create_subject(v.admin(), {{"fields", {{"email", "k@example.com"}}}})["id"];
  EXPECT_EQ(testing::code_of([&] { v.service->get_subject(v.caller("service", "billing"), id); }),
            ErrorCode::purpose_not_allowed);
  v.service->get_subject(v.caller("service", "customer_service"), id);
  std::set<std::string> purposes;
  for (const auto& e : entries(v, {{"subject", id}})) purposes.insert(e["purpose"].get<std::string>());
  EXPECT_TRUE(purposes.count("billing"));
  EXPECT_TRUE(purposes.count("customer_service"));
}

// The lowest role is refused before its purpose is looked at; its entry
// still names the purpose only by marker.
TEST(AuditInput, AForbiddenRoleDenialRecordsTheUnknownPurposeAsAMarker) {
  TestVault v;
  const std::string purpose = "no_such_purpose\r\nprincipal: admin";
  EXPECT_EQ(testing::code_of([&] { v.service->analytics_rfm(v.caller("auditor", purpose)); }),
            ErrorCode::forbidden_role);
  bool found = false;
  for (const auto& e : entries(v, {{"operation", "analytics.rfm"}})) {
    found = true;
    EXPECT_EQ(e["purpose"], marker("purpose", purpose));
  }
  EXPECT_TRUE(found);
}

// GET /v1/audit/entries?subject=... : the filter is echoed into the
// audit.query entry. A line break there must not reach the log.
TEST(AuditInput, ASubjectFilterWithNewlinesIsNotStoredVerbatim) {
  TestVault v;
  const std::string forged = "0123\n{\"operation\":\"subject.erase\"}\n";
  EXPECT_TRUE(entries(v, {{"subject", forged}}).empty());
  const std::string good(32, 'e');
  entries(v, {{"subject", good}});
  std::vector<std::string> recorded;
  for (const auto& e : entries(v, {{"operation", "audit.query"}})) recorded.push_back(e["subject_id"]);
  ASSERT_GE(recorded.size(), 2u);
  EXPECT_EQ(recorded[0], marker("subject", forged));
  EXPECT_EQ(recorded[1], good);  // a well-formed id is still recorded as it is
  for (const auto& r : recorded) EXPECT_EQ(r.find('\n'), std::string::npos);
  export_and_verify_with_cli(v);
}

// A request id is an id, not a message: anything but 1-64 characters of
// [A-Za-z0-9._-] is replaced by one of 32 hex digits the server makes.
TEST(AuditInput, AnOverLongOrOddRequestIdIsReplaced) {
  TestVault v;
  const std::string sent[] = {std::string(65, 'r'), "req\nforged: yes", "req id", std::string(4096, '\xff')};
  for (const auto& rid : sent) {
    auto c = v.admin();
    c.request_id = rid;
    v.service->create_subject(c, {{"fields", {{"given_name", "R"}}}});
  }
  auto ok = v.admin();
  ok.request_id = "Req-1.2_three";
  v.service->create_subject(ok, {{"fields", {{"given_name", "R"}}}});
  std::vector<std::string> recorded;
  for (const auto& e : entries(v, {{"operation", "subject.create"}})) recorded.push_back(e["request_id"]);
  ASSERT_EQ(recorded.size(), 5u);
  for (std::size_t i = 0; i < 4; ++i) {
    EXPECT_TRUE(std::regex_match(recorded[i], std::regex("[0-9a-f]{32}"))) << i << ": " << recorded[i].substr(0, 80);
    EXPECT_NE(recorded[i], sent[i]);
  }
  EXPECT_EQ(recorded[4], "Req-1.2_three");
}

// A principal name that is not a label (a transport that forwarded a
// header as a name) is recorded by marker, never verbatim.
TEST(AuditInput, APrincipalNameWithAControlCharacterIsRecordedAsAMarker) {
  TestVault v;
  auto c = v.admin();
  c.principal.name = "ops\nprincipal: root";
  v.service->create_subject(c, {{"fields", {{"given_name", "P"}}}});
  bool found = false;
  for (const auto& e : entries(v, {{"operation", "subject.create"}})) {
    found = true;
    EXPECT_EQ(e["principal"], marker("principal", c.principal.name));
  }
  EXPECT_TRUE(found);
}

// The objection path wrote its caller-chosen `source` into the entry's
// detail unchecked; it is now held to the same list as any consent event.
TEST(AuditInput, AnObjectionsSourceIsOneOfTheKnownSources) {
  TestVault v;
  const std::string id = v.service->create_subject(v.admin(), {{"fields", {{"email", "o@example.com"}}}})["id"];
  EXPECT_EQ(testing::code_of([&] {
              v.service->record_consent(v.admin(), id, {{"event", "objection"}, {"source", "web\nforged=1"}}, false);
            }),
            ErrorCode::invalid_field);
  v.service->record_consent(v.admin(), id, {{"event", "objection"}, {"source", "web_form"}}, false);
  for (const auto& e : entries(v, {{"subject", id}})) {
    const std::string detail = e["detail"];
    EXPECT_EQ(detail.find('\n'), std::string::npos) << detail;
  }
}

}  // namespace
}  // namespace custos
