#include <gtest/gtest.h>

#include "custos_audit/verify.h"
#include <nlohmann/json.hpp>

#include "export_fixture.h"

namespace custos::auditfmt {
namespace {

VerifyResult verify(const std::string& bytes, const std::string& vkey) {
  std::istringstream in(bytes);
  return verify_export(in, vkey);
}

// Where the records start: after the magic line and the header line.
std::size_t records_start(const std::string& s) { return s.find('\n', kExportMagic.size()) + 1; }

struct Tamper : ::testing::Test {
  testing::Fixture fx;
  void SetUp() override { fx.build(100, 10); }
  void expect_failure(const testing::Fixture& f, const std::string& prefix) {
    const auto r = verify(f.write(), fx.vkey);
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.error.substr(0, prefix.size()), prefix) << r.error;
  }
};

TEST_F(Tamper, CleanExportVerifies) {
  const auto r = verify(fx.write(), fx.vkey);
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.entries, 100u);
  EXPECT_EQ(r.checkpoints, 10u);
  EXPECT_EQ(r.summary.substr(0, 34), "ok: entries=100 checkpoints=10 siz");
}

TEST_F(Tamper, ChangedByteInAnyEntryIsPinpointed) {
  for (std::size_t victim : {0u, 1u, 37u, 98u, 99u}) {
    for (std::size_t byte : {std::size_t{3}, std::size_t{20}, fx.entries[victim].size() - 40}) {
      testing::Fixture f = fx;
      f.entries[victim][byte] ^= 0x01;
      const auto r = verify(f.write(), fx.vkey);
      ASSERT_FALSE(r.ok);
      const std::string want = "entry " + std::to_string(victim) + ":";
      EXPECT_EQ(r.error.substr(0, want.size()), want) << "byte " << byte << ": " << r.error;
    }
  }
}

TEST_F(Tamper, DeletedEntry) {
  testing::Fixture f = fx;
  f.entries.erase(f.entries.begin() + 42);
  expect_failure(f, "entry 42:");
}

TEST_F(Tamper, SwappedEntries) {
  testing::Fixture f = fx;
  std::swap(f.entries[10], f.entries[11]);
  expect_failure(f, "entry 10:");
}

TEST_F(Tamper, InsertedEntry) {
  testing::Fixture f = fx;
  f.entries.insert(f.entries.begin() + 50, f.entries[20]);
  expect_failure(f, "entry 50:");
}

TEST_F(Tamper, TruncatedExport) {
  const std::string whole = fx.write();
  for (std::size_t cut : {whole.size() - 1, whole.size() - 5, whole.size() - 200, records_start(whole) + 3}) {
    const auto r = verify(whole.substr(0, cut), fx.vkey);
    EXPECT_FALSE(r.ok) << cut;
  }
  // Dropping trailing entries with a consistent end marker is caught by the checkpoints.
  testing::Fixture f = fx;
  f.entries.resize(95);
  const auto r = verify(f.write(), fx.vkey);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error.substr(0, 9), "entry 95:") << r.error;
}

// The verifier reads whole records in 1 MiB batches and hashes one batch on a
// helper thread while it checks the other (export.h, on_hashed_entry): an
// export of ~3.4 MB spans four batches, and what is altered or cut in a later
// one, or across a batch's edge, is still caught and pinpointed.
TEST(TamperAcrossBatches, AlteredOrCutRecordsInLaterBatches) {
  testing::Fixture fx;
  fx.build(12000, 1000);
  const std::string whole = fx.write();
  ASSERT_GT(whole.size(), std::size_t{3} << 20);
  const auto clean = verify(whole, fx.vkey);
  ASSERT_TRUE(clean.ok) << clean.error;
  EXPECT_EQ(clean.entries, 12000u);
  // Entries near each batch's edge (~3,680 entries a batch) and the last.
  for (std::size_t victim : {3679u, 3680u, 3681u, 7359u, 7360u, 11040u, 11999u}) {
    testing::Fixture f = fx;
    f.entries[victim][20] ^= 0x01;
    const auto r = verify(f.write(), fx.vkey);
    ASSERT_FALSE(r.ok) << victim;
    const std::string want = "entry " + std::to_string(victim) + ":";
    EXPECT_EQ(r.error.substr(0, want.size()), want) << r.error;
  }
  // Cut anywhere around the first batch's edge: a truncation, never "ok".
  const std::size_t edge = std::size_t{1} << 20;
  for (std::size_t cut = edge - 300; cut < edge + 300; cut += 7) {
    const auto r = verify(whole.substr(0, cut), fx.vkey);
    ASSERT_FALSE(r.ok) << cut;
    EXPECT_NE(r.error.find("truncated"), std::string::npos) << cut << ": " << r.error;
  }
  // A record of unknown type in the third batch is reported there.
  std::string odd = whole;
  const std::size_t at = odd.find(std::string(reinterpret_cast<const char*>(fx.entries[9000].data()), fx.entries[9000].size()));
  ASSERT_NE(at, std::string::npos);
  odd[at - 5] = 'Q';
  const auto r = verify(odd, fx.vkey);
  ASSERT_FALSE(r.ok);
  EXPECT_EQ(r.error, "entry 9000: unknown record type");
}

TEST_F(Tamper, ReplacedCheckpointSignature) {
  testing::Fixture f = fx;
  testing::Fixture other;
  Frontier fr;
  for (std::size_t i = 0; i < 30; ++i) fr.append(leaf_hash(f.entries[i]));
  f.checkpoints[2] = sign_checkpoint("test.log/audit", 30, fr.root(), "test.log", other.secret);
  expect_failure(f, "checkpoint 2:");
  testing::Fixture g = fx;
  const auto at = g.checkpoints[4].rfind(' ') + 5;
  g.checkpoints[4][at] = g.checkpoints[4][at] == 'A' ? 'B' : 'A';
  expect_failure(g, "checkpoint 4:");
}

TEST_F(Tamper, WrongKeyAndGarbage) {
  testing::Fixture other;
  EXPECT_FALSE(verify(fx.write(), other.vkey).ok);
  EXPECT_FALSE(verify("not an export", fx.vkey).ok);
  EXPECT_FALSE(verify(fx.write(), "bad key").ok);
}

TEST(InclusionBundle, VerifiesAndRejects) {
  testing::Fixture fx;
  fx.build(20, 20);
  std::vector<std::vector<Hash>> levels(1);
  Frontier f;
  for (const auto& e : fx.entries) {
    f.append(leaf_hash(e));
    levels[0].push_back(leaf_hash(e));
    for (const auto& [level, idx, h] : f.completed()) {
      if (levels.size() <= level) levels.resize(level + 1);
      levels[level].push_back(h);
    }
  }
  const SubtreeHashFn sub = [&](unsigned l, std::uint64_t i) { return levels[l][i]; };
  nlohmann::json proof = nlohmann::json::array();
  for (const auto& h : inclusion_proof(7, 20, sub)) proof.push_back(to_hex(h));
  nlohmann::json bundle = {{"entry", base64_encode(fx.entries[7])}, {"index", 7}, {"tree_size", 20},
                           {"proof", proof}, {"checkpoint", fx.checkpoints.back()}};
  EXPECT_TRUE(verify_inclusion_bundle(bundle.dump(), fx.vkey).ok);
  bundle["entry"] = base64_encode(fx.entries[8]);
  EXPECT_FALSE(verify_inclusion_bundle(bundle.dump(), fx.vkey).ok);
  EXPECT_FALSE(verify_inclusion_bundle("{}", fx.vkey).ok);
}

}  // namespace
}  // namespace custos::auditfmt
