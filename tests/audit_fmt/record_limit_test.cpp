// The export reader's record limit is the vault's entry limit
// (kMaxEntryBytes, FORMAT.md §3): an entry of exactly the limit verifies,
// one byte more is refused before its length is trusted.
#include <gtest/gtest.h>

#include "custos_audit/verify.h"
#include "export_fixture.h"

namespace custos::auditfmt {
namespace {

// Three entries; the middle one's detail padded so it encodes to `middle` bytes.
std::string export_with_middle_entry_of(testing::Fixture& fx, std::size_t middle) {
  Frontier f;
  Hash prev{};
  for (std::uint64_t i = 0; i < 3; ++i) {
    Entry e = fx.make_entry(i, prev);
    if (i == 1) e.detail.assign(middle - encoded_size(e), 'd');
    fx.entries.push_back(encode(e));
    prev = leaf_hash(fx.entries.back());
    f.append(prev);
  }
  fx.checkpoints.push_back(sign_checkpoint("test.log/audit", f.size(), f.root(), "test.log", fx.secret));
  return fx.write();
}

VerifyResult verify(const std::string& bytes, const std::string& vkey) {
  std::istringstream in(bytes);
  return verify_export(in, vkey);
}

TEST(RecordLimit, AnEntryOfExactlyTheLimitVerifies) {
  testing::Fixture fx;
  const std::string file = export_with_middle_entry_of(fx, kMaxEntryBytes);
  ASSERT_EQ(fx.entries[1].size(), kMaxEntryBytes);
  const auto r = verify(file, fx.vkey);
  EXPECT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.entries, 3u);
}

TEST(RecordLimit, AnEntryOneByteOverTheLimitIsRefused) {
  testing::Fixture fx;
  const std::string file = export_with_middle_entry_of(fx, kMaxEntryBytes + 1);
  ASSERT_EQ(fx.entries[1].size(), kMaxEntryBytes + 1);
  const auto r = verify(file, fx.vkey);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "entry 1: record larger than " + std::to_string(kMaxEntryBytes) + " bytes");
}

// The reader applies the limit to the length field, before reading: a record
// claiming 64 MiB is refused without the allocation.
TEST(RecordLimit, AHugeLengthFieldIsRefusedBeforeReading) {
  std::string file(kExportMagic);
  file += R"({"checkpoint_count":0,"entry_count":1,"first_seq":0,"key_name":"k","origin":"o","public_key_fingerprint":"f"})";
  file += "\nE";
  file += std::string("\x04\x00\x00\x00", 4);  // 64 MiB, no payload
  std::istringstream in(file);
  std::string error;
  EXPECT_FALSE(read_export(in, {}, error));
  EXPECT_EQ(error, "record larger than " + std::to_string(kMaxEntryBytes) + " bytes");
}

// The sanitised forms are part of the format: fixed, so auditors can match them.
TEST(RecordLimit, InvalidValueMarkersHaveTheDocumentedForm) {
  // SHA-256("abc") = ba7816bf8f01cfea...
  EXPECT_EQ(invalid_value("purpose", "abc"), "invalid_purpose:len=3:sha256=ba7816bf8f01cfea");
  EXPECT_EQ(invalid_value("subject", ""), "invalid_subject:len=0:sha256=e3b0c44298fc1c14");
  EXPECT_TRUE(is_invalid_value("purpose", "invalid_purpose:len=3:sha256=ba7816bf8f01cfea"));
  EXPECT_FALSE(is_invalid_value("subject", "invalid_purpose:len=3:sha256=ba7816bf8f01cfea"));
  EXPECT_FALSE(is_invalid_value("subject", "invalid_subject:len=3:sha256=ba7816bf8f01cfea\n"));
  EXPECT_FALSE(is_invalid_value("subject", "invalid_subject:len=:sha256=ba7816bf8f01cfea"));
  EXPECT_TRUE(is_subject_id("00112233445566778899aabbccddeeff"));
  EXPECT_FALSE(is_subject_id("00112233445566778899AABBCCDDEEFF"));
  EXPECT_FALSE(is_subject_id("00112233445566778899aabbccddeef"));
  EXPECT_TRUE(is_request_id(std::string(64, 'a')));
  EXPECT_FALSE(is_request_id(std::string(65, 'a')));
  EXPECT_FALSE(is_request_id("a b"));
  EXPECT_TRUE(is_label("email_marketing"));
  EXPECT_FALSE(is_label("a\nb"));
  EXPECT_FALSE(is_label(std::string(kMaxLabelBytes + 1, 'a')));
}

}  // namespace
}  // namespace custos::auditfmt
