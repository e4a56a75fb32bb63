#include <gtest/gtest.h>

#include "export_fixture.h"

namespace custos::auditfmt {
namespace {

TEST(Entry, RoundTripAndMalformations) {
  testing::Fixture fx;
  Entry e = fx.make_entry(42, leaf_hash({}));
  e.subject_ids = {"aa", "bb"};
  e.detail = "count=2";
  const auto bytes = encode(e);
  const Entry back = decode(bytes);
  EXPECT_EQ(back.seq, 42u);
  EXPECT_EQ(back.fields, e.fields);
  EXPECT_EQ(back.subject_ids, e.subject_ids);
  EXPECT_EQ(back.prev, e.prev);
  EXPECT_EQ(encode(back), bytes);
  // Every truncation and trailing garbage is rejected with a reason.
  for (std::size_t n = 0; n < bytes.size(); ++n)
    EXPECT_THROW(decode(std::span(bytes.data(), n)), std::runtime_error) << n;
  auto longer = bytes;
  longer.push_back(0);
  EXPECT_THROW(decode(longer), std::runtime_error);
  auto bad_version = bytes;
  bad_version[0] = 9;
  EXPECT_THROW(decode(bad_version), std::runtime_error);
  EXPECT_NE(to_json(back).find("\"seq\":42"), std::string::npos);
}

TEST(Checkpoint, SignVerifyAndTamper) {
  testing::Fixture fx;
  const Hash root = leaf_hash({});
  const std::string note = sign_checkpoint("test.log/audit", 7, root, "test.log", fx.secret);
  EXPECT_EQ(note.substr(0, note.find("\n\n") + 1), "test.log/audit\n7\n" + base64_encode(root) + "\n");
  const Checkpoint cp = parse_and_verify_checkpoint_vkey(note, fx.vkey);
  EXPECT_EQ(cp.size, 7u);
  EXPECT_EQ(cp.root, root);
  std::string bad_size = note;
  bad_size[bad_size.find("\n7\n") + 1] = '8';
  EXPECT_THROW(parse_and_verify_checkpoint_vkey(bad_size, fx.vkey), std::runtime_error);
  testing::Fixture other;
  EXPECT_THROW(parse_and_verify_checkpoint_vkey(note, other.vkey), std::runtime_error);
  EXPECT_THROW(parse_vkey("garbage"), std::runtime_error);
  EXPECT_EQ(parse_vkey(fx.vkey).key, fx.pub);
}

}  // namespace
}  // namespace custos::auditfmt
