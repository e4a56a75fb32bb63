#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstring>
#include <fstream>
#include <set>

#include "custos/crypto/aead.h"
#include "custos/crypto/blind_index.h"
#include "custos/crypto/keyring.h"
#include "custos/error.h"
#include "test_support.h"

namespace custos::crypto {
namespace {

using custos::testing::TempDir;

std::vector<std::uint8_t> id_bytes(std::uint8_t fill) { return std::vector<std::uint8_t>(16, fill); }

TEST(Aead, FieldRoundTrip) {
  const SecretKey dek = SecretKey::random();
  const auto ad = field_ad(id_bytes(1), "email", 1);
  const Bytes sealed = seal(dek, {kSealFormat, 1, 1}, ad, as_bytes("alice@example.com"));
  EXPECT_EQ(sealed.size(), kSealOverhead + 17);
  const Bytes opened = open(dek, ad, sealed, "field 'email'");
  EXPECT_EQ(std::string(opened.begin(), opened.end()), "alice@example.com");
  const SealHeader h = peek_header(sealed);
  EXPECT_EQ(h.key_version, 1u);
  EXPECT_EQ(h.schema_version, 1u);
}

// Batched randomness (ingest): values sealed with nonces and keys taken from
// one RandomBatch open like any other, each with its own nonce; a wrapped
// key from raw batch bytes unwraps to those bytes; a used-up batch refuses.
TEST(Aead, SealsFromOneRandomBatchOpenWithDistinctNonces) {
  RandomBatch random(SecretKey::kSize + 3 * kSealNonceSize + 1);
  const auto dek = random.take<SecretKey::kSize>();
  const SecretKey dek_key = SecretKey::from_bytes(dek);
  std::set<std::string> nonces;
  for (const char* value : {"a@b.example", "Alice"}) {
    const auto ad = field_ad(id_bytes(1), "email", 1);
    const Bytes sealed = seal_with_nonce(dek, {kSealFormat, 1, 1}, random.take<kSealNonceSize>(), ad, as_bytes(value));
    const Bytes opened = open(dek_key, ad, sealed, "field");
    EXPECT_EQ(std::string(opened.begin(), opened.end()), value);
    nonces.insert(std::string(sealed.begin() + 9, sealed.begin() + 33));
  }
  EXPECT_EQ(nonces.size(), 2u);
  const SecretKey kek = SecretKey::random();
  const Bytes wrapped = wrap_key_with_nonce(kek, 3, "dek:01", dek, random.take<kSealNonceSize>());
  const SecretKey back = unwrap_key(kek, "dek:01", wrapped);
  EXPECT_EQ(std::memcmp(back.data(), dek.data(), SecretKey::kSize), 0);
  EXPECT_EQ(peek_header(wrapped).key_version, 3u);
  EXPECT_THROW(unwrap_key(kek, "dek:02", wrapped), Error);
  EXPECT_THROW(random.take<kSealNonceSize>(), Error);  // 1 byte left
}

TEST(Aead, CiphertextMovedToAnotherSubjectOrFieldFails) {
  const SecretKey dek = SecretKey::random();
  const Bytes sealed = seal(dek, {kSealFormat, 1, 1}, field_ad(id_bytes(1), "email", 1), as_bytes("a@b.example"));
  try {
    open(dek, field_ad(id_bytes(2), "email", 1), sealed, "field 'email'");
    FAIL() << "moved to another subject must not open";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::integrity);
    EXPECT_NE(std::string(e.what()).find("field 'email'"), std::string::npos);
    EXPECT_EQ(std::string(e.what()).find("a@b.example"), std::string::npos);
  }
  EXPECT_THROW(open(dek, field_ad(id_bytes(1), "phone", 1), sealed, "x"), Error);
  EXPECT_THROW(open(dek, field_ad(id_bytes(1), "email", 2), sealed, "x"), Error);
  EXPECT_THROW(open(SecretKey::random(), field_ad(id_bytes(1), "email", 1), sealed, "x"), Error);
}

TEST(Aead, EveryTamperedByteIsDetected) {
  const SecretKey dek = SecretKey::random();
  const auto ad = field_ad(id_bytes(7), "given_name", 1);
  const Bytes sealed = seal(dek, {kSealFormat, 1, 1}, ad, as_bytes("Zoe"));
  for (std::size_t i = 0; i < sealed.size(); ++i) {
    Bytes bad = sealed;
    bad[i] ^= 0x01;
    EXPECT_THROW(open(dek, ad, bad, "x"), Error) << "byte " << i;
  }
  EXPECT_THROW(open(dek, ad, Bytes(sealed.begin(), sealed.begin() + 20), "x"), Error);
}

TEST(Aead, WrappedKeyIsBoundToItsSlot) {
  const SecretKey kek = SecretKey::random();
  const SecretKey dek = SecretKey::random();
  const Bytes wrapped = wrap_key(kek, 3, "dek:aa", dek);
  EXPECT_EQ(peek_header(wrapped).key_version, 3u);
  const SecretKey back = unwrap_key(kek, "dek:aa", wrapped);
  EXPECT_EQ(0, std::memcmp(back.data(), dek.data(), 32));
  EXPECT_THROW(unwrap_key(kek, "dek:bb", wrapped), Error);
}

TEST(BlindIndex, KeyedAndDeterministic) {
  const SecretKey k1 = SecretKey::random();
  const SecretKey k2 = SecretKey::random();
  EXPECT_EQ(blind_index(k1, "a@b.example"), blind_index(k1, "a@b.example"));
  EXPECT_NE(blind_index(k1, "a@b.example"), blind_index(k1, "c@b.example"));
  EXPECT_NE(blind_index(k1, "a@b.example"), blind_index(k2, "a@b.example"));
}

TEST(Keyring, CreatesOwnerOnlyKeyAndRefusesLooseModes) {
  TempDir dir;
  Keyring::create(dir.path() / "keys", std::nullopt);
  const auto file = dir.path() / "keys" / "master-1.key";
  struct stat st {};
  ASSERT_EQ(0, ::stat(file.c_str(), &st));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(std::filesystem::file_size(file), 32u);
  auto ring = Keyring::open(dir.path() / "keys", std::nullopt);
  EXPECT_NO_THROW(ring->kek(1));
  ::chmod(file.c_str(), 0644);
  auto ring2 = Keyring::open(dir.path() / "keys", std::nullopt);
  try {
    ring2->kek(1);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::key_error);
    EXPECT_NE(std::string(e.what()).find("master-1.key"), std::string::npos);
  }
  EXPECT_THROW(Keyring::create(dir.path() / "keys", std::nullopt), Error);
}

TEST(Keyring, TruncatedAndMissingKeyFilesAreClearErrors) {
  TempDir dir;
  Keyring::create(dir.path() / "keys", std::nullopt);
  const auto file = dir.path() / "keys" / "master-1.key";
  std::filesystem::resize_file(file, 17);
  auto ring = Keyring::open(dir.path() / "keys", std::nullopt);
  try {
    ring->kek(1);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("17 bytes"), std::string::npos);
  }
  std::filesystem::remove(file);
  EXPECT_THROW(Keyring::open(dir.path() / "keys", std::nullopt), Error);
}

TEST(Keyring, PassphraseDerivationAndWrongPassphrase) {
  TempDir dir;
  Keyring::create(dir.path() / "keys", std::string("correct horse"), Argon2Params::interactive());
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "keys" / "master-1.key"));
  auto ring = Keyring::open(dir.path() / "keys", std::string("correct horse"));
  const SecretKey dek = SecretKey::random();
  const Bytes wrapped = ring->wrap(1, "slot", dek);
  auto again = Keyring::open(dir.path() / "keys", std::string("correct horse"));
  EXPECT_NO_THROW(again->unwrap("slot", wrapped));
  auto wrong = Keyring::open(dir.path() / "keys", std::string("wrong"));
  try {
    wrong->unwrap("slot", wrapped);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::key_error);
    EXPECT_NE(std::string(e.what()).find("wrong passphrase"), std::string::npos);
  }
  auto none = Keyring::open(dir.path() / "keys", std::nullopt);
  EXPECT_THROW(none->kek(1), Error);
}

}  // namespace
}  // namespace custos::crypto
