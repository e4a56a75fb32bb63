#include <gtest/gtest.h>

#include <fstream>
#include <thread>

#include "custos/error.h"
#include "custos/store/sqlcipher_store.h"
#include "test_support.h"

namespace custos::store {
namespace {

using custos::testing::TempDir;

TEST(SqlcipherStore, MigratesAndRoundTrips) {
  TempDir dir;
  const auto key = crypto::SecretKey::random();
  {
    auto s = custos::testing::open_migrated_store(dir.path() / "db", key);
    auto tx = s->begin(TxMode::write);
    tx->exec("INSERT INTO meta (key, value) VALUES (?, ?)", {"k", "v"});
    tx->commit();
  }
  auto s = custos::testing::open_migrated_store(dir.path() / "db", key);
  auto tx = s->begin(TxMode::read);
  std::string v;
  tx->exec("SELECT value FROM meta WHERE key = ?", {"k"}, [&](const Row& r) { v = std::string(r.text(0)); });
  EXPECT_EQ(v, "v");
}

TEST(SqlcipherStore, UncommittedTransactionRollsBack) {
  TempDir dir;
  auto s = custos::testing::open_migrated_store(dir.path() / "db", crypto::SecretKey::random());
  {
    auto tx = s->begin(TxMode::write);
    tx->exec("INSERT INTO meta (key, value) VALUES ('a', 'b')");
  }
  auto tx = s->begin(TxMode::read);
  EXPECT_EQ(tx->scalar("SELECT count(*) FROM meta WHERE key = 'a'").value_or(-1), 0);
}

TEST(SqlcipherStore, WrongKeyAndCorruptFileAreClearErrors) {
  TempDir dir;
  { custos::testing::open_migrated_store(dir.path() / "db", crypto::SecretKey::random()); }
  try {
    custos::testing::open_migrated_store(dir.path() / "db", crypto::SecretKey::random());
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::storage);
    EXPECT_NE(std::string(e.what()).find("corrupted or was encrypted with another key"), std::string::npos);
  }
  const auto key = crypto::SecretKey::random();
  { custos::testing::open_migrated_store(dir.path() / "db2", key); }
  {
    std::fstream f(dir.path() / "db2", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    const std::string junk(2000, 'X');
    f.write(junk.data(), static_cast<std::streamsize>(junk.size()));
  }
  EXPECT_THROW(custos::testing::open_migrated_store(dir.path() / "db2", key), Error);
}

TEST(SqlcipherStore, PlainSqliteCannotReadTheFile) {
  TempDir dir;
  {
    auto s = custos::testing::open_migrated_store(dir.path() / "db", crypto::SecretKey::random());
    auto tx = s->begin(TxMode::write);
    tx->exec("INSERT INTO meta (key, value) VALUES ('visible', 'canary-plain-sqlite')");
    tx->commit();
    s->checkpoint();
  }
  // The sqlite3 shell from Debian reads plain SQLite files only.
  const auto r = custos::testing::run({"/usr/bin/sqlite3", (dir.path() / "db").string(), "SELECT * FROM meta;"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("not a database"), std::string::npos) << r.err;
  EXPECT_TRUE(custos::testing::files_containing(dir.path(), "canary-plain-sqlite").empty());
}

TEST(SqlcipherStore, ConcurrentWritersFromThreadsSerialise) {
  TempDir dir;
  auto s = custos::testing::open_migrated_store(dir.path() / "db", crypto::SecretKey::random());
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        auto tx = s->begin(TxMode::write);
        tx->exec("INSERT INTO meta (key, value) VALUES (?, 'x')", {std::to_string(t) + ":" + std::to_string(i)});
        tx->commit();
      }
    });
  for (auto& th : threads) th.join();
  auto tx = s->begin(TxMode::read);
  EXPECT_EQ(tx->scalar("SELECT count(*) FROM meta").value_or(0), 200);
}

}  // namespace
}  // namespace custos::store
