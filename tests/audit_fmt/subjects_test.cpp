// Entries that commit to their subjects (FORMAT.md §1.5): the test vectors,
// memberships, and the openings an auditor's export carries.
#include <gtest/gtest.h>

#include <sstream>

#include "custos_audit/subjects.h"
#include "custos_audit/verify.h"
#include "export_fixture.h"

namespace custos::auditfmt {
namespace {

std::string hex(std::span<const std::uint8_t> b) {
  std::string out;
  for (auto c : b) {
    static constexpr char k[] = "0123456789abcdef";
    out += k[c >> 4];
    out += k[c & 0xf];
  }
  return out;
}

SubjectSalt salt_of(int i) {
  SubjectSalt s;
  for (int k = 0; k < 16; ++k) s[static_cast<std::size_t>(k)] = static_cast<std::uint8_t>(16 * i + k);
  return s;
}

// The entry of FORMAT.md §6.3.
Entry vector_entry() {
  Entry e;
  e.time = "2024-05-01T12:00:00.000123Z";
  e.principal = "alice";
  e.role = "marketing";
  e.token_id = "tok_1";
  e.purpose = "email_marketing";
  e.operation = "campaign.fetch";
  e.fields = {"email"};
  e.outcome = "allowed";
  e.request_id = "req-0";
  e.node_id = "node-1";
  e.detail = "purpose=email_marketing channel=email subjects=3";
  e.subject_ids = {"00112233445566778899aabbccddeeff", "ffeeddccbbaa99887766554433221100",
                   "0123456789abcdef0123456789abcdef"};
  e.subject_salts = {salt_of(0), salt_of(1), salt_of(2)};
  recompute_commitment(e);
  return e;
}

TEST(SubjectCommitment, TestVectorsOfFormatMd) {
  const Entry e = vector_entry();
  EXPECT_EQ(to_hex(subject_leaf(salt_of(0), e.subject_ids[0])),
            "8a4b2733fe5fdb2d239262f93c714b227356c9d951061a7e2ae7aefce11cb74d");
  EXPECT_EQ(to_hex(subject_leaf(salt_of(2), e.subject_ids[2])),
            "192a1e5fe629ff0d87963683db53fcb2f65a442c08176513fc7e49085bb4dfa8");
  EXPECT_EQ(to_hex(e.subject_root), "c7bbbfc3d822198f92779a1dac3ea753be8003fb735073d77e813ad699393625");
  const auto bytes = encode(e);
  EXPECT_EQ(bytes.size(), 283u);
  EXPECT_EQ(bytes[0], 0x02);
  EXPECT_EQ(to_hex(leaf_hash(bytes)), "48aa3250d75f4afee4b178927f70c7e67e992c62e4648dff081ef991f2c2d0d7");
  EXPECT_EQ(hex(encode_openings(e)).substr(0, 48), "00000003000102030405060708090a0b0c0d0e0f00000020");
  EXPECT_EQ(encode_openings(e).size(), 160u);
  const Membership m = membership_of(e, 2);
  ASSERT_EQ(m.path.size(), 1u);
  EXPECT_EQ(to_hex(m.path[0]), "b3544ca98a6a72c3a87cf4e826fa243f94df6932017282d16be4b4bed330dec4");
  // The bytes name none of the subjects; they decode to the commitment.
  const std::string text(bytes.begin(), bytes.end());
  for (const auto& id : e.subject_ids) EXPECT_EQ(text.find(id), std::string::npos);
  const Entry back = decode(bytes);
  EXPECT_EQ(back.version, kEntryVersionCommitted);
  EXPECT_EQ(back.subject_count, 3u);
  EXPECT_EQ(back.subject_root, e.subject_root);
  EXPECT_TRUE(back.subject_ids.empty());
  EXPECT_EQ(encode(back), bytes);
}

TEST(SubjectCommitment, EveryMembershipOfEveryTreeSizeVerifiesAndNoAlterationDoes) {
  for (std::size_t n : {1u, 2u, 3u, 5u, 8u, 13u, 500u}) {
    Entry e;
    for (std::size_t i = 0; i < n; ++i) e.subject_ids.push_back(std::string(31, 'a') + std::to_string(i % 10));
    commit_subjects(e);
    for (std::size_t i = 0; i < n; i += (n > 20 ? 37 : 1)) {
      Membership m = membership_of(e, i);
      ASSERT_TRUE(verify_membership(m, e.subject_count, e.subject_root)) << n << " " << i;
      Membership other = m;
      other.salt[3] ^= 1;
      EXPECT_FALSE(verify_membership(other, e.subject_count, e.subject_root));
      other = m;
      other.subject_id[0] = 'b';
      EXPECT_FALSE(verify_membership(other, e.subject_count, e.subject_root));
      other = m;
      other.index ^= 1;
      if (other.index < n) {
        EXPECT_FALSE(verify_membership(other, e.subject_count, e.subject_root)) << n << " " << i;
      }
      EXPECT_FALSE(verify_membership(m, e.subject_count + 1, e.subject_root));
      if (!m.path.empty()) {
        other = m;
        other.path.pop_back();
        EXPECT_FALSE(verify_membership(other, e.subject_count, e.subject_root));
      }
    }
  }
}

TEST(SubjectCommitment, SaltsAreFreshForEachEntry) {
  Entry a, b;
  a.subject_ids = b.subject_ids = {std::string(32, 'a')};
  commit_subjects(a);
  commit_subjects(b);
  EXPECT_NE(a.subject_salts[0], b.subject_salts[0]);
  EXPECT_NE(a.subject_root, b.subject_root);  // the same subject: nothing links the two entries
}

TEST(SubjectCommitment, MalformedOpeningsAndCommitmentsAreRefused) {
  std::vector<std::string> ids;
  std::vector<SubjectSalt> salts;
  const char* why = nullptr;
  EXPECT_FALSE(decode_openings(std::vector<std::uint8_t>{0xff, 0xff, 0xff, 0xff}, ids, salts, &why));
  EXPECT_FALSE(decode_openings(std::vector<std::uint8_t>{0, 0, 0, 0}, ids, salts, &why));
  auto bytes = encode(vector_entry());
  bytes[bytes.size() - 32 - 32 - 1] = 0;  // count 3 -> 0
  bytes[bytes.size() - 32 - 32 - 2] = 0;
  bytes[bytes.size() - 32 - 32 - 3] = 0;
  bytes[bytes.size() - 32 - 32 - 4] = 0;
  EXPECT_THROW(decode(bytes), std::runtime_error);
}

// The auditor's export: each committed entry followed by its openings.
struct Openings : ::testing::Test {
  testing::Fixture fx;
  std::vector<std::vector<std::uint8_t>> openings;  // per entry, empty if none
  void build(std::size_t n) {
    Frontier f;
    Hash prev{};
    for (std::size_t i = 0; i < n; ++i) {
      Entry e = fx.make_entry(i, prev);
      if (i % 3 == 1) {
        e.subject_id.clear();
        for (int k = 0; k < 7; ++k) e.subject_ids.push_back(std::string(31, 'c') + std::to_string(k));
        commit_subjects(e);
        openings.push_back(encode_openings(e));
      } else {
        openings.emplace_back();
      }
      fx.entries.push_back(encode(e));
      prev = leaf_hash(fx.entries.back());
      f.append(prev);
    }
    fx.checkpoints.push_back(sign_checkpoint("test.log/audit", f.size(), f.root(), "test.log", fx.secret));
  }
  std::string write() const {
    std::ostringstream out;
    ExportHeader h{"test.log/audit", "test.log", fingerprint(fx.pub), 0, fx.entries.size(), fx.checkpoints.size(), ""};
    ExportWriter w(out, h);
    for (const auto& c : fx.checkpoints) w.add_checkpoint(c);
    for (std::size_t i = 0; i < fx.entries.size(); ++i) {
      w.add_entry(fx.entries[i]);
      if (!openings[i].empty()) w.add_openings(openings[i]);
    }
    w.finish();
    return out.str();
  }
  VerifyResult verify() const {
    std::istringstream in(write());
    return verify_export(in, fx.vkey);
  }
};

TEST_F(Openings, AnExportWithOpeningsVerifies) {
  build(20);
  const auto r = verify();
  EXPECT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.entries, 20u);
}

TEST_F(Openings, AnAlteredOpeningIsPinpointed) {
  build(20);
  openings[4][10] ^= 1;  // a salt byte of entry 4
  auto r = verify();
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "entry 4: altered (its subject openings do not match its subject commitment)");
  openings[4][10] ^= 1;
  openings[7].back() ^= 1;  // an id byte of entry 7
  r = verify();
  EXPECT_EQ(r.error, "entry 7: altered (its subject openings do not match its subject commitment)");
}

TEST_F(Openings, OpeningsWhereNoneBelongAreRefused) {
  build(20);
  openings[3] = openings[4];  // entry 3 lists its subjects: no openings belong to it
  const auto r = verify();
  EXPECT_EQ(r.error, "entry 3: subject openings where no entry commits to its subjects");
}

}  // namespace
}  // namespace custos::auditfmt
