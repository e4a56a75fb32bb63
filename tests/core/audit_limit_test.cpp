// Issue 14: the log refuses to append an entry its verifier would refuse.
// One constant, auditfmt::kMaxEntryBytes, bounds both the vault's append
// paths (direct, group commit, journal) and the export reader; an entry of
// exactly the limit passes both, one byte more passes neither.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "custos/audit/audit_log.h"
#include "custos/audit/journal.h"
#include "custos/crypto/signer.h"
#include "custos/error.h"
#include "custos/store/sqlcipher_store.h"
#include "custos_audit/entry.h"
#include "custos_audit/merkle.h"
#include "custos_audit/verify.h"
#include "test_support.h"

namespace custos {
namespace {

using service::Json;
using testing::TempDir;
using testing::TestVault;

constexpr std::size_t kLimit = auditfmt::kMaxEntryBytes;

// A log of its own on a real SQLCipher store, as custosd and the CLI use it.
struct Log {
  TempDir dir;
  std::unique_ptr<store::Store> store = testing::open_migrated_store(dir.path() / "db", crypto::SecretKey::random());
  crypto::Signer signer{crypto::SecretKey::random()};
  std::unique_ptr<audit::AuditLog> log = std::make_unique<audit::AuditLog>(*store, signer, audit::Options{});
  const audit::Actor actor{"crm-service", "service", "tok", "customer_service", "req-1"};

  // An event whose entry encodes to exactly `bytes` (the detail pads it).
  audit::Event event_of(std::size_t bytes) {
    const std::uint64_t seq = log->append_now(actor, {"subject.read", std::string(32, 'a'), {}, {}, true, "", ""});
    const std::size_t base = log->entry_bytes(seq).size();
    EXPECT_GE(bytes, base);
    return {"subject.read", std::string(32, 'a'), {}, {}, true, "", std::string(bytes - base, 'd')};
  }

  // Both verifiers: the library and the auditor's binary.
  void expect_export_verifies() {
    const auto file = dir.path() / "audit.export";
    const auto key = dir.path() / "audit.pub";
    {
      std::ofstream out(file, std::ios::binary);
      log->export_to(out);
      std::ofstream(key) << log->verifier_key() << "\n";
    }
    std::ifstream in(file, std::ios::binary);
    const auto result = auditfmt::verify_export(in, log->verifier_key());
    EXPECT_TRUE(result.ok) << result.error;
    const auto r = testing::run({CUSTOS_AUDIT_CLI_PATH, "verify", file.string(), "--pubkey", key.string()});
    EXPECT_EQ(r.exit_code, 0) << r.err;
  }
};

TEST(AuditLimit, AnEntryOfExactlyTheLimitIsAppendedAndOneByteMoreIsRefused) {
  Log l;
  const audit::Event exact = l.event_of(kLimit);
  const audit::Event over = l.event_of(kLimit + 1);
  const std::uint64_t seq = l.log->append_now(l.actor, exact);
  EXPECT_EQ(l.log->entry_bytes(seq).size(), kLimit);
  const std::uint64_t size = l.log->size();
  EXPECT_EQ(testing::code_of([&] { l.log->append_now(l.actor, over); }), ErrorCode::invalid_argument);
  {  // inside a caller's transaction: the caller's writes are not committed either
    auto tx = l.store->begin(store::TxMode::write);
    EXPECT_EQ(testing::code_of([&] { l.log->append(*tx, l.actor, over); }), ErrorCode::invalid_argument);
  }
  EXPECT_EQ(l.log->size(), size) << "something was appended";
  l.log->append_now(l.actor, {"subject.read", std::string(32, 'b'), {}, {}, true, "", ""});  // still appends
  l.expect_export_verifies();
}

// Reads without a journal group-commit with other readers: an oversized
// entry fails its own caller only, before it joins a transaction.
TEST(AuditLimit, GroupCommitRefusesAnOversizedReadEntryAlone) {
  Log l;
  const audit::Event over = l.event_of(kLimit + 1);
  const std::uint64_t size = l.log->size();
  EXPECT_EQ(testing::code_of([&] { l.log->append_durable(l.actor, {over}); }), ErrorCode::invalid_argument);
  EXPECT_EQ(l.log->size(), size);
  l.log->append_durable(l.actor, {l.event_of(kLimit)});
  EXPECT_EQ(l.log->size(), size + 2);
  l.expect_export_verifies();
}

// custosd's reads go through the journal: an oversized record would stall
// every later fold, so neither the log nor the journal itself takes it.
TEST(AuditLimit, TheJournalRefusesAnOversizedEntryAndKeepsFolding) {
  Log l;
  const audit::Event exact = l.event_of(kLimit);
  const audit::Event over = l.event_of(kLimit + 1);
  const crypto::SecretKey key = crypto::SecretKey::random();
  ASSERT_TRUE(l.log->enable_journal(l.dir.path() / "journal", key));
  const std::uint64_t size = l.log->size();
  EXPECT_EQ(testing::code_of([&] { l.log->append_durable(l.actor, {exact, over}); }), ErrorCode::invalid_argument);
  EXPECT_EQ(l.log->journal_status().pending, 0u) << "part of a refused read was journaled";
  l.log->append_durable(l.actor, {exact});
  l.log->flush();
  EXPECT_TRUE(l.log->journal_status().fold_error.empty()) << l.log->journal_status().fold_error;
  EXPECT_EQ(l.log->size(), size + 1);
  l.expect_export_verifies();
}

TEST(AuditLimit, TheJournalItselfRefusesARecordOverTheLimit) {
  TempDir dir;
  auto journal = audit::Journal::open(dir.path() / "journal", crypto::SecretKey::random(), {});
  ASSERT_TRUE(journal);
  journal->start(1);
  // An entry with its subject openings: each part within the log's limit.
  const std::vector<std::vector<std::uint8_t>> over{std::vector<std::uint8_t>(audit::kMaxJournalRecordBytes + 1, 1)};
  EXPECT_EQ(testing::code_of([&] { journal->append(over); }), ErrorCode::invalid_argument);
  const std::vector<std::vector<std::uint8_t>> exact{std::vector<std::uint8_t>(audit::kMaxJournalRecordBytes, 1)};
  EXPECT_EQ(journal->append(exact), std::optional<std::uint64_t>(1));  // the refused one took no counter
}

// The limit leaves room for what the vault legitimately writes. The largest
// entry is a batch create of 1,000 subjects (campaign pages name 500): with
// the longest principal name (64), request id (64) and every field, it must
// stay far below the limit.
TEST(AuditLimit, TheLargestLegitimateEntryFitsWithMargin) {
  TestVault v;
  Json subjects = Json::array();
  for (int i = 0; i < 1000; ++i)
    subjects.push_back({{"fields",
                         {{"given_name", "G"}, {"family_name", "F"}, {"email", "u" + std::to_string(i) + "@example.com"},
                          {"postal_address", "1 Road"}, {"birth_date", "1990-01-01"},
                          {"external_id", "x" + std::to_string(i)}, {"gender", "female"}, {"occupation", "o"},
                          {"preferences", "p"}, {"notes", "n"}, {"income_band", "low"}}}});
  auto caller = v.admin();
  caller.principal.name = std::string(64, 'p');
  caller.request_id = std::string(64, 'r');
  ASSERT_EQ(v.service->batch_create(caller, {{"subjects", subjects}})["created"], 1000);
  const Json page = v.service->audit_entries(v.caller("auditor", "audit"),
                                             {{"operation", "subject.create"}, {"limit", "1000"}});
  ASSERT_FALSE(page["entries"].empty());
  const std::uint64_t seq = page["entries"].back()["seq"];
  ASSERT_EQ(page["entries"].back()["subject_ids"].size(), 1000u);
  const Json proof = v.service->audit_inclusion_proof(v.caller("auditor", "audit"), std::to_string(seq), "");
  const auto bytes = auditfmt::base64_decode(proof["entry"].get<std::string>());
  ASSERT_TRUE(bytes);
  RecordProperty("largest_legitimate_entry_bytes", static_cast<int>(bytes->size()));
  EXPECT_LT(bytes->size() * 3 / 2, kLimit) << bytes->size() << " bytes leaves less than a third of the limit";
}

}  // namespace
}  // namespace custos
