#include <gtest/gtest.h>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <thread>

#include "custos/crypto/keyring.h"
#include "custos/error.h"
#include "custos/records/records.h"
#include "custos/store/key_table.h"
#include "custos/store/sqlcipher_store.h"
#include "test_support.h"

namespace custos {
namespace {

using service::Json;
using testing::TestVault;

// Opens the vault's store directly, as an attacker with the keys (or a test) would.
std::unique_ptr<store::Store> raw_store(const std::filesystem::path& data_dir, crypto::Keyring& ring) {
  return testing::open_vault_store(data_dir, ring);
}

TEST(Keys, RotationRewrapsWithoutReencrypting) {
  TestVault v;
  const std::string old_id = v.service->create_subject(v.admin(), {{"fields", {{"email", "old@example.com"}}}})["id"];
  auto ring = crypto::Keyring::open(v.data_dir() / "keys", std::nullopt);
  std::vector<std::uint8_t> fields_before;
  {
    auto s = raw_store(v.data_dir(), *ring);
    auto tx = s->begin(store::TxMode::read);
    tx->exec("SELECT fields FROM subjects", {}, [&](const store::Row& r) { fields_before = r.blob_copy(0); });
  }
  const Json r = v.service->rotate_keys(v.admin());
  EXPECT_EQ(r["old_version"], 1);
  EXPECT_EQ(r["new_version"], 2);
  EXPECT_EQ(r["data_keys_rewrapped"], 1);
  EXPECT_GE(r["named_keys_rewrapped"].get<int>(), 1);
  const std::string new_id = v.service->create_subject(v.admin(), {{"fields", {{"email", "new@example.com"}}}})["id"];
  {
    auto s = raw_store(v.data_dir(), *ring);
    auto tx = s->begin(store::TxMode::read);
    std::vector<std::uint8_t> fields_after;
    tx->exec("SELECT fields FROM subjects WHERE id = (SELECT id FROM subjects ORDER BY created_at LIMIT 1)", {},
             [&](const store::Row& r2) { fields_after = r2.blob_copy(0); });
    EXPECT_EQ(fields_before, fields_after) << "ciphertexts must not change on rotation";
    EXPECT_EQ(tx->scalar("SELECT count(*) FROM subjects WHERE kek_version <> 2").value_or(-1), 0);
    EXPECT_EQ(tx->scalar("SELECT count(*) FROM wrapped_keys WHERE kek_version <> 2").value_or(-1), 0);
  }
  // A process opened after the rotation reads old and new subjects.
  service::OpenOptions o;
  o.data_dir = v.data_dir();
  auto fresh = service::Service::open(o);
  EXPECT_EQ(fresh->get_subject(v.admin("customer_service"), old_id)["fields"]["email"], "old@example.com");
  EXPECT_EQ(fresh->get_subject(v.admin("customer_service"), new_id)["fields"]["email"], "new@example.com");
  // Old versions can be retired once nothing refers to them; reads still work.
  EXPECT_EQ(fresh->retire_keys(v.admin())["retired_versions"].size(), 1u);
  EXPECT_FALSE(std::filesystem::exists(v.data_dir() / "keys" / "master-1.key"));
  auto after_retire = service::Service::open(o);
  EXPECT_EQ(after_retire->get_subject(v.admin("customer_service"), old_id)["fields"]["email"], "old@example.com");
}

TEST(Keys, RotationInterleavedWithWritesFromAnotherThread) {
  TestVault v;
  for (int i = 0; i < 200; ++i)
    v.service->create_subject(v.admin(), {{"fields", {{"email", "pre" + std::to_string(i) + "@example.com"}}}});
  service::OpenOptions o;
  o.data_dir = v.data_dir();
  auto writer_service = service::Service::open(o);  // a second "process" on the same files
  std::atomic<bool> stop{false};
  std::vector<std::string> written;
  std::thread writer([&] {
    for (int i = 0; i < 300 && !stop; ++i)
      written.push_back(writer_service->create_subject(
          v.admin(), {{"fields", {{"email", "during" + std::to_string(i) + "@example.com"}}}})["id"]);
  });
  v.service->rotate_keys(v.admin());
  v.service->rotate_keys(v.admin());
  stop = true;
  writer.join();
  auto reader = service::Service::open(o);
  for (const auto& id : written)
    EXPECT_NO_THROW(reader->get_subject(v.admin("customer_service"), id)) << id;
  EXPECT_NO_THROW(reader->retire_keys(v.admin()));
  auto after = service::Service::open(o);
  for (const auto& id : written) EXPECT_NO_THROW(after->get_subject(v.admin("customer_service"), id));
}

// The deadlock TSan found (lock-order inversion): a thread whose first use
// of a named key held the key cache's lock while it waited for the store's
// writer lock, and a writer that, inside its transaction, asked the cache
// for a key it already held, waiting for that lock. Run in a child process
// with an alarm, so a deadlock fails the test instead of hanging it.
TEST(Keys, AFirstUseOfANamedKeyNeverBlocksAWriterThatUsesAnother) {
  TestVault v;
  auto ring = crypto::Keyring::open(v.data_dir() / "keys", std::nullopt);
  EXPECT_EXIT(
      {
        ::alarm(20);
        auto s = raw_store(v.data_dir(), *ring);
        store::KeyTable keys(*s, *ring);
        keys.named_key("test:cached");
        for (int round = 0; round < 20; ++round) {
          auto tx = s->begin(store::TxMode::write);  // the writer lock, held
          std::atomic<bool> started{false};
          std::thread first_use([&] {
            started = true;
            keys.named_key("test:new-" + std::to_string(round));  // waits for the writer lock
          });
          while (!started) std::this_thread::yield();
          // Cache hits inside the transaction while the other thread waits.
          const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(50);
          while (std::chrono::steady_clock::now() < until) keys.named_key("test:cached");
          tx->commit();
          tx.reset();  // the writer lock goes with the transaction
          first_use.join();
        }
        std::exit(0);
      },
      ::testing::ExitedWithCode(0), "");
}

TEST(Keys, TamperedCiphertextIsAnIntegrityError) {
  TestVault v;
  const std::string id = v.service->create_subject(v.admin(), {{"fields", {{"email", "t@example.com"}}}})["id"];
  auto ring = crypto::Keyring::open(v.data_dir() / "keys", std::nullopt);
  {
    auto s = raw_store(v.data_dir(), *ring);
    auto tx = s->begin(store::TxMode::write);
    std::vector<std::uint8_t> blob;
    tx->exec("SELECT fields FROM subjects", {}, [&](const store::Row& r) { blob = r.blob_copy(0); });
    blob[blob.size() - 3] ^= 0x40;
    tx->exec("UPDATE subjects SET fields = ?", {blob});
    tx->commit();
  }
  try {
    v.service->get_subject(v.admin("customer_service"), id);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::integrity);
    EXPECT_NE(std::string(e.what()).find("field 'email'"), std::string::npos);
  }
}

TEST(Keys, CiphertextSwappedBetweenSubjectsFailsToOpen) {
  TestVault v;
  const std::string a = v.service->create_subject(v.admin(), {{"fields", {{"email", "a@example.com"}}}})["id"];
  const std::string b = v.service->create_subject(v.admin(), {{"fields", {{"email", "b@example.com"}}}})["id"];
  auto ring = crypto::Keyring::open(v.data_dir() / "keys", std::nullopt);
  {
    auto s = raw_store(v.data_dir(), *ring);
    auto tx = s->begin(store::TxMode::write);
    // Give b both a's wrapped key and a's fields: the slot binding rejects it.
    const records::SubjectId ia = records::parse_subject_id(a), ib = records::parse_subject_id(b);
    tx->exec("UPDATE subjects SET fields = (SELECT fields FROM subjects WHERE id = ?),"
             " wrapped_dek = (SELECT wrapped_dek FROM subjects WHERE id = ?) WHERE id = ?",
             {ia, ia, ib});
    tx->commit();
  }
  try {
    v.service->get_subject(v.admin("customer_service"), b);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::integrity);
  }
}

TEST(Keys, PassphraseVault) {
  TestVault v(std::string("a long passphrase"));
  const std::string id = v.service->create_subject(v.admin(), {{"fields", {{"email", "p@example.com"}}}})["id"];
  service::OpenOptions o;
  o.data_dir = v.data_dir();
  o.passphrase = "a long passphrase";
  EXPECT_EQ(service::Service::open(o)->get_subject(v.admin("customer_service"), id)["fields"]["email"],
            "p@example.com");
  o.passphrase = "wrong";
  try {
    service::Service::open(o);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::key_error);
  }
}

}  // namespace
}  // namespace custos
