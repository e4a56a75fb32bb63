#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

#include "custos/error.h"
#include "custos/service/schema.h"
#include "custos/store/postgres_store.h"
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

// The SQLCipher load keeps one connection: a second transaction while the
// first is open is a caller's bug, refused rather than run on the same
// connection. A load's commits survive reopening like any write's.
TEST(SqlcipherStore, ABulkLoadRunsOneTransactionAtATimeAndItsCommitsAreDurable) {
  TempDir dir;
  const auto key = crypto::SecretKey::random();
  {
    auto s = custos::testing::open_migrated_store(dir.path() / "db", key);
    auto bulk = s->begin_bulk_load();
    auto tx = bulk->begin();
    try {
      bulk->begin();
      FAIL() << "a second transaction began";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::internal);
    }
    for (int i = 0; i < 2000; ++i) tx->exec("INSERT INTO meta (key, value) VALUES (?, 'v')", {std::to_string(i)});
    tx->commit();
  }
  auto s = custos::testing::open_migrated_store(dir.path() / "db", key);
  auto tx = s->begin(TxMode::read);
  EXPECT_EQ(tx->scalar("SELECT count(*) FROM meta WHERE value = 'v'").value_or(0), 2000);
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


// ---------------------------------------------------------------------------
// The store contract, on every backend. PostgreSQL cases run when the
// harness gives a cluster (CUSTOS_TEST_PG_URL or CUSTOS_TEST_STORE;
// scripts/test.sh starts one) and are skipped otherwise; each case gets a
// fresh schema, so its database starts empty.

class StoreConformance : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "postgresql") {
      const std::string base = custos::testing::postgres_test_url();
      if (base.empty()) GTEST_SKIP() << "no PostgreSQL cluster given (CUSTOS_TEST_PG_URL)";
      url_ = custos::testing::fresh_postgres_schema(base);
    }
  }
  // A handle on the one database; each call is another "node" for PostgreSQL
  // (its own pool), another connection set for SQLCipher.
  std::unique_ptr<Store> open() {
    auto s = GetParam() == "postgresql" ? open_postgres(url_) : open_sqlcipher(dir_.path() / "db", key_);
    service::migrate_schema(*s);  // the modules' tables, as the service creates them
    return s;
  }
  bool postgres() const { return GetParam() == "postgresql"; }

  custos::testing::TempDir dir_;
  crypto::SecretKey key_ = crypto::SecretKey::random();
  std::string url_;
};

std::string what_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

TEST_P(StoreConformance, RoundTripsIntegersTextBlobsAndNulls) {
  auto s = open();
  const std::vector<std::uint8_t> bytes = {0, 1, 2, 0xff, 0, 0x7f};
  const std::vector<std::uint8_t> empty;
  {
    auto tx = s->begin(TxMode::write);
    tx->exec("INSERT INTO orders (id, subject_id, amount_minor, currency, at) VALUES (?, ?, ?, ?, ?)",
             {bytes, empty, std::int64_t{-9007199254740993}, "EUR ' ? \"x\"", 1});
    tx->exec("INSERT INTO subjects (id, status, created_at, updated_at, kek_version, fields) VALUES (?, ?, 0, 0, ?, ?)",
             {empty, "active", nullptr, nullptr});
    tx->commit();
  }
  auto tx = s->begin(TxMode::read);
  int rows = 0;
  tx->exec("SELECT id, subject_id, amount_minor, currency, at FROM orders WHERE currency = ?", {"EUR ' ? \"x\""},
           [&](const Row& r) {
             ++rows;
             EXPECT_EQ(r.blob_copy(0), bytes);
             EXPECT_FALSE(r.is_null(1));
             EXPECT_TRUE(r.blob(1).empty());
             EXPECT_EQ(r.integer(2), -9007199254740993);
             EXPECT_EQ(r.text(3), "EUR ' ? \"x\"");
             EXPECT_EQ(r.integer(4), 1);
           });
  EXPECT_EQ(rows, 1);
  tx->exec("SELECT kek_version, fields, status FROM subjects", {}, [&](const Row& r) {
    ++rows;
    EXPECT_TRUE(r.is_null(0));
    EXPECT_TRUE(r.is_null(1));
    EXPECT_EQ(r.text(2), "active");
  });
  EXPECT_EQ(rows, 2);
  // Aggregates come back as integers whatever type the backend computes them in.
  EXPECT_EQ(tx->scalar("SELECT sum(amount_minor) FROM orders").value_or(0), -9007199254740993);
  EXPECT_EQ(tx->scalar("SELECT count(*) FROM orders").value_or(0), 1);
}

TEST_P(StoreConformance, UncommittedTransactionRollsBack) {
  auto s = open();
  {
    auto tx = s->begin(TxMode::write);
    tx->exec("INSERT INTO meta (key, value) VALUES ('a', 'b')");
  }
  auto tx = s->begin(TxMode::read);
  EXPECT_EQ(tx->scalar("SELECT count(*) FROM meta WHERE key = 'a'").value_or(-1), 0);
}

// The read-modify-write the concurrency cases race: an update lost between
// two writers shows as a counter short of the number of increments.
void start_counter(Store& s) {
  auto tx = s.begin(TxMode::write);
  tx->exec("INSERT INTO meta (key, value) VALUES ('counter', '0')");
  tx->commit();
}
void increment_counter(Transaction& tx) {
  std::int64_t v = 0;
  tx.exec("SELECT value FROM meta WHERE key = 'counter'", {}, [&](const Row& r) { v = r.integer(0); });
  tx.exec("UPDATE meta SET value = ? WHERE key = 'counter'", {std::to_string(v + 1)});
}
std::string counter_value(Store& s) {
  auto tx = s.begin(TxMode::read);
  std::string v;
  tx->exec("SELECT value FROM meta WHERE key = 'counter'", {}, [&](const Row& r) { v = std::string(r.text(0)); });
  return v;
}

TEST_P(StoreConformance, ConcurrentReadModifyWritesFromTwoNodesLoseNoUpdate) {
  auto node_a = open();
  auto node_b = open();
  start_counter(*node_a);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      Store& s = t % 2 ? *node_a : *node_b;
      for (int i = 0; i < 25; ++i) {
        auto tx = s.begin(TxMode::write);
        increment_counter(*tx);
        tx->commit();
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(counter_value(*node_b), "100");
}

TEST_P(StoreConformance, AReadTransactionSeesOneSnapshot) {
  auto s = open();
  auto reader = s->begin(TxMode::read);
  EXPECT_EQ(reader->scalar("SELECT count(*) FROM meta").value_or(-1), 0);
  {
    auto tx = s->begin(TxMode::write);
    tx->exec("INSERT INTO meta (key, value) VALUES ('later', 'x')");
    tx->commit();
  }
  EXPECT_EQ(reader->scalar("SELECT count(*) FROM meta").value_or(-1), 0);
  auto fresh = s->begin(TxMode::read);
  EXPECT_EQ(fresh->scalar("SELECT count(*) FROM meta").value_or(-1), 1);
}

std::int64_t meta_rows(Store& s) {
  auto tx = s.begin(TxMode::read);
  const auto n = tx->scalar("SELECT count(*) FROM meta").value_or(-1);
  tx->commit();
  return n;
}
void add_meta(Store& s, const std::string& key) {
  auto tx = s.begin(TxMode::write);
  tx->exec("INSERT INTO meta (key, value) VALUES (?, 'x')", {key});
  tx->commit();
}

// One request's reads share one transaction: a commit by someone else
// between them is seen by none of them, and by the next request.
TEST_P(StoreConformance, ReadsInAReadSnapshotShareOneState) {
  auto s = open();
  auto other_node = open();
  {
    ReadSnapshot snapshot(*s);
    EXPECT_EQ(meta_rows(*s), 0);
    add_meta(*other_node, "from-another-node");
    std::thread([&] { add_meta(*s, "from-another-thread"); }).join();
    EXPECT_EQ(meta_rows(*s), 0) << "the second read of the snapshot saw a later commit";
    // Another thread, or another store, is not in the snapshot.
    std::int64_t elsewhere = -1;
    std::thread([&] { elsewhere = meta_rows(*s); }).join();
    EXPECT_EQ(elsewhere, 2);
    EXPECT_EQ(meta_rows(*other_node), 2);
    {
      ReadSnapshot inner(*s);  // nested: still the outer one's state
      EXPECT_EQ(meta_rows(*s), 0);
    }
    EXPECT_EQ(meta_rows(*s), 0);
  }
  EXPECT_EQ(meta_rows(*s), 2);
}

// The thread's own write ends the sharing: what it reads next includes the
// write (and everyone's before it).
TEST_P(StoreConformance, AWriteOnTheSnapshotsThreadEndsTheSharing) {
  auto s = open();
  auto other_node = open();
  ReadSnapshot snapshot(*s);
  EXPECT_EQ(meta_rows(*s), 0);
  add_meta(*other_node, "theirs");
  add_meta(*s, "mine");
  EXPECT_EQ(meta_rows(*s), 2);
  {
    auto durable = s->begin_durable();
    durable->exec("INSERT INTO meta (key, value) VALUES ('durable', 'x')");
    durable->commit();
  }
  EXPECT_EQ(meta_rows(*s), 3);
  // A share begun before the write keeps its own state until it ends.
  auto before = s->begin(TxMode::read);
  EXPECT_EQ(before->scalar("SELECT count(*) FROM meta").value_or(-1), 3);
  add_meta(*s, "later");
  EXPECT_EQ(before->scalar("SELECT count(*) FROM meta").value_or(-1), 3);
  EXPECT_EQ(meta_rows(*s), 4);
}

// A failed statement leaves the backend transaction unusable on
// PostgreSQL: the next read of the snapshot gets a fresh one, not an error.
TEST_P(StoreConformance, AFailedStatementInASnapshotDoesNotFailTheReadsAfterIt) {
  auto s = open();
  ReadSnapshot snapshot(*s);
  EXPECT_EQ(meta_rows(*s), 0);
  {
    auto tx = s->begin(TxMode::read);
    EXPECT_THROW(tx->exec("SELECT no_such_column FROM meta"), Error);
  }
  EXPECT_EQ(meta_rows(*s), 0);
  auto tx = s->begin(TxMode::read);
  tx->commit();
  try {
    tx->exec("SELECT count(*) FROM meta");
    FAIL() << "a statement on a committed share ran";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::internal);
  }
}

// TxMode::insert_only (a read's audit entry on a shared database): its rows
// commit like a write's. On PostgreSQL it must not queue behind the
// writers' lock: a long write on another node (or a fold) would otherwise
// hold up every read, whose entry must commit before it answers.
TEST_P(StoreConformance, InsertOnlyTransactionsCommitAndOnPostgresqlDoNotWaitForTheWriter) {
  auto s = open();
  {
    auto tx = s->begin(TxMode::insert_only);
    EXPECT_EQ(tx->mode(), TxMode::insert_only);
    tx->exec_deferred("INSERT INTO meta (key, value) VALUES (?, ?)", {"insert-only-1", "one"});
    tx->commit();
  }
  {
    auto tx = s->begin(TxMode::read);
    EXPECT_EQ(tx->scalar("SELECT count(*) FROM meta WHERE key = 'insert-only-1'").value_or(0), 1);
  }
  if (GetParam() != "postgresql") return;  // SQLCipher: one writer at a time, insert_only included
  auto writer_node = open();
  auto writer = writer_node->begin(TxMode::write);
  writer->exec("INSERT INTO meta (key, value) VALUES (?, ?)", {"held-by-writer", "w"});
  auto inserted = std::async(std::launch::async, [&] {
    auto tx = s->begin(TxMode::insert_only);
    tx->exec("INSERT INTO meta (key, value) VALUES (?, ?)", {"insert-only-2", "two"});
    tx->commit();
  });
  const bool finished = inserted.wait_for(std::chrono::seconds(10)) == std::future_status::ready;
  writer->commit();  // lets a waiting insert finish either way
  inserted.get();
  EXPECT_TRUE(finished) << "an insert_only transaction waited for the writers' lock";
}

// exec_deferred: what the audit's writes use (on PostgreSQL they travel in
// one pipeline with the COMMIT). Deferred or not, a transaction is the same
// transaction: its own later reads see the rows, a failure fails it whole,
// a rollback leaves nothing.
TEST_P(StoreConformance, DeferredStatementsAreSeenByTheTransactionsNextReadAndCommitted) {
  auto s = open();
  const std::vector<std::uint8_t> blob = {0, 1, 0xff};
  {
    auto tx = s->begin(TxMode::write);
    tx->exec_deferred("INSERT INTO meta (key, value) VALUES (?, ?)", {"deferred-1", "one"});
    tx->exec_deferred("INSERT INTO orders (id, subject_id, amount_minor, currency, at) VALUES (?, ?, ?, ?, ?)",
                      {blob, blob, std::int64_t{-5}, "EUR", 7});
    tx->exec_deferred(
        "INSERT INTO subjects (id, status, created_at, updated_at, kek_version, fields) VALUES (?, ?, 0, 0, ?, ?)",
        {blob, "active", nullptr, nullptr});
    EXPECT_EQ(tx->scalar("SELECT count(*) FROM meta WHERE key = ?", {"deferred-1"}).value_or(0), 1);
    tx->exec_deferred("INSERT INTO meta (key, value) VALUES (?, ?)", {"deferred-2", "two"});
    tx->commit();
  }
  auto tx = s->begin(TxMode::read);
  EXPECT_EQ(tx->scalar("SELECT count(*) FROM meta WHERE key IN ('deferred-1', 'deferred-2')").value_or(0), 2);
  int rows = 0;
  tx->exec("SELECT id, amount_minor, at FROM orders", {}, [&](const Row& r) {
    ++rows;
    EXPECT_EQ(r.blob_copy(0), blob);
    EXPECT_EQ(r.integer(1), -5);
    EXPECT_EQ(r.integer(2), 7);
  });
  tx->exec("SELECT kek_version, fields FROM subjects", {}, [&](const Row& r) {
    ++rows;
    EXPECT_TRUE(r.is_null(0));
    EXPECT_TRUE(r.is_null(1));
  });
  EXPECT_EQ(rows, 2);
}

TEST_P(StoreConformance, AFailingDeferredStatementFailsTheCommitAndNothingIsStored) {
  auto s = open();
  {
    auto tx = s->begin(TxMode::write);
    tx->exec("INSERT INTO meta (key, value) VALUES ('deferred-dup', 'v')");
    tx->commit();
  }
  {
    auto tx = s->begin(TxMode::write);
    tx->exec_deferred("INSERT INTO meta (key, value) VALUES ('deferred-before', 'v')");
    try {
      tx->exec_deferred("INSERT INTO meta (key, value) VALUES ('deferred-dup', 'w')");
      tx->exec_deferred("INSERT INTO meta (key, value) VALUES ('deferred-after', 'v')");
      tx->commit();
      FAIL() << "a transaction with a failed statement committed";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::conflict) << e.what();
    }
  }
  {
    auto tx = s->begin(TxMode::write);
    // Surfaced by the next statement at the latest.
    EXPECT_THROW(
        {
          tx->exec_deferred("INSERT INTO meta (key, value) VALUES ('deferred-dup', 'w')");
          tx->exec("SELECT count(*) FROM meta");
        },
        Error);
  }
  {
    auto tx = s->begin(TxMode::write);
    tx->exec_deferred("INSERT INTO meta (key, value) VALUES ('deferred-rolled-back', 'v')");
  }  // destroyed uncommitted
  auto tx = s->begin(TxMode::read);
  EXPECT_EQ(tx->scalar("SELECT count(*) FROM meta WHERE key LIKE 'deferred-%'").value_or(0), 1);
  // The store is still usable: a later writer commits.
  auto w = s->begin(TxMode::write);
  w->exec_deferred("INSERT INTO meta (key, value) VALUES ('deferred-later', 'v')");
  w->commit();
  auto r = s->begin(TxMode::read);
  EXPECT_EQ(r->scalar("SELECT count(*) FROM meta WHERE key = 'deferred-later'").value_or(0), 1);
}

TEST_P(StoreConformance, ManyDeferredStatementsInOneTransactionAllArrive) {
  auto s = open();
  const std::string big(4000, 'x');  // enough bytes that one unbounded pipeline would fill the socket
  {
    auto tx = s->begin(TxMode::write);
    for (int i = 0; i < 1000; ++i)
      tx->exec_deferred("INSERT INTO meta (key, value) VALUES (?, ?)", {"many-" + std::to_string(i), big});
    tx->commit();
  }
  auto tx = s->begin(TxMode::read);
  EXPECT_EQ(tx->scalar("SELECT count(*) FROM meta WHERE key LIKE 'many-%'").value_or(0), 1000);
}

TEST_P(StoreConformance, ADuplicateKeyIsAConflictThatNamesNoValue) {
  auto s = open();
  auto tx = s->begin(TxMode::write);
  tx->exec("INSERT INTO meta (key, value) VALUES (?, 'v')", {"canary-duplicate-key"});
  try {
    tx->exec("INSERT INTO meta (key, value) VALUES (?, 'w')", {"canary-duplicate-key"});
    FAIL() << "no conflict";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::conflict);
    EXPECT_EQ(std::string(e.what()).find("canary"), std::string::npos) << e.what();
  }
}

TEST_P(StoreConformance, InsertOrIgnoreSkipsDuplicates) {
  auto s = open();
  auto tx = s->begin(TxMode::write);
  EXPECT_EQ(tx->exec("INSERT OR IGNORE INTO audit_subject_buckets (bucket, first_seq) VALUES (?, ?)", {1, 10}), 1);
  EXPECT_EQ(tx->exec("INSERT OR IGNORE INTO audit_subject_buckets (bucket, first_seq) VALUES (?, ?)", {1, 20}), 0);
  EXPECT_EQ(tx->scalar("SELECT first_seq FROM audit_subject_buckets WHERE bucket = 1").value_or(0), 10);
}

TEST_P(StoreConformance, DialectFunctionsAndByteOrderAgree) {
  auto s = open();
  auto tx = s->begin(TxMode::write);
  const std::vector<std::uint8_t> lo = {0x01, 0xff}, hi = {0x80, 0x00};
  for (const auto& [field, digest] : {std::pair{"a", hi}, std::pair{"B", lo}})
    tx->exec("INSERT INTO blind_index (field, digest, subject_id) VALUES (?, ?, ?)", {field, digest, digest});
  std::vector<std::uint8_t> min_digest;
  tx->exec("SELECT min(digest) FROM blind_index", {}, [&](const Row& r) { min_digest = r.blob_copy(0); });
  EXPECT_EQ(min_digest, lo);
  // Text compares bytewise, as SQLite does: 'B' (0x42) before 'a' (0x61).
  std::vector<std::string> order;
  tx->exec("SELECT field FROM blind_index ORDER BY field", {}, [&](const Row& r) { order.emplace_back(r.text(0)); });
  EXPECT_EQ(order, (std::vector<std::string>{"B", "a"}));
  // Scalar max/min of several values.
  EXPECT_EQ(tx->scalar("SELECT max(?, ?, ?)", {3, 9, 4}).value_or(0), 9);
  EXPECT_EQ(tx->scalar("SELECT min(?, ?)", {3, 9}).value_or(0), 3);
  // A '?' inside a string literal is not a parameter.
  EXPECT_EQ(tx->scalar("SELECT count(*) FROM blind_index WHERE field <> '?' AND field = ?", {"a"}).value_or(0), 1);
}

TEST_P(StoreConformance, BulkInsertStoresWhatInsertsWould) {
  auto s = open();
  const std::array<std::string_view, 5> columns = {"id", "subject_id", "amount_minor", "currency", "at"};
  std::vector<std::vector<std::uint8_t>> ids;
  for (int i = 0; i < 3000; ++i) ids.push_back({static_cast<std::uint8_t>(i >> 8), static_cast<std::uint8_t>(i), 0});
  std::vector<Param> values;
  for (int i = 0; i < 3000; ++i) {
    values.emplace_back(ids[static_cast<std::size_t>(i)]);
    values.emplace_back(Blob());
    values.emplace_back(std::int64_t{i} * std::int64_t{1000000000});
    values.emplace_back(i % 2 ? "EUR" : "");
    values.emplace_back(nullptr);
  }
  {
    auto tx = s->begin(TxMode::write);
    // `at` is NOT NULL: the whole call fails, nothing is kept.
    EXPECT_THROW(tx->bulk_insert("orders", columns, values), Error);
  }
  for (int i = 0; i < 3000; ++i) values[static_cast<std::size_t>(i) * 5 + 4] = Param(std::int64_t{-i});
  {
    auto tx = s->begin(TxMode::write);
    tx->bulk_insert("orders", columns, values);
    tx->commit();
  }
  auto tx = s->begin(TxMode::read);
  EXPECT_EQ(tx->scalar("SELECT count(*) FROM orders").value_or(0), 3000);
  EXPECT_EQ(tx->scalar("SELECT sum(amount_minor) FROM orders WHERE currency = 'EUR'").value_or(0),
            std::int64_t{1500} * 1500 * 1000000000);
  EXPECT_EQ(tx->scalar("SELECT at FROM orders WHERE id = ?", {ids[2999]}).value_or(0), -2999);
  EXPECT_EQ(tx->scalar("SELECT count(*) FROM orders WHERE length(subject_id) = 0").value_or(0), 3000);
}

// A bulk load's transactions are write transactions: committed ones are
// seen by every other handle, an uncommitted one leaves nothing, and they
// serialise with the other writers of this process and of other nodes (an
// import runs while custosd serves).
TEST_P(StoreConformance, ABulkLoadsTransactionsAreWriteTransactions) {
  auto s = open();
  auto other = open();
  start_counter(*s);
  std::vector<std::thread> writers;
  for (int t = 0; t < 2; ++t)
    writers.emplace_back([&, t] {
      Store& node = t ? *other : *s;
      for (int i = 0; i < 25; ++i) {
        auto tx = node.begin(TxMode::write);
        increment_counter(*tx);
        tx->commit();
      }
    });
  {
    auto bulk = s->begin_bulk_load();
    for (int i = 0; i < 25; ++i) {
      auto tx = bulk->begin();
      increment_counter(*tx);
      tx->exec("INSERT INTO meta (key, value) VALUES (?, 'loaded')", {"bulk:" + std::to_string(i)});
      tx->commit();
    }
    {
      auto dropped = bulk->begin();
      dropped->exec("INSERT INTO meta (key, value) VALUES ('bulk:uncommitted', 'x')");
      increment_counter(*dropped);
    }
    auto tx = bulk->begin();  // the load goes on after a rollback
    tx->exec("INSERT INTO meta (key, value) VALUES ('bulk:last', 'loaded')");
    tx->commit();
  }
  for (auto& w : writers) w.join();
  EXPECT_EQ(counter_value(*other), "75");
  auto tx = other->begin(TxMode::read);
  EXPECT_EQ(tx->scalar("SELECT count(*) FROM meta WHERE value = 'loaded'").value_or(-1), 26);
  EXPECT_EQ(tx->scalar("SELECT count(*) FROM meta WHERE key = 'bulk:uncommitted'").value_or(-1), 0);
}

TEST_P(StoreConformance, ASchemaNewerThanTheBinaryIsRefusedNamingBothVersions) {
  {
    auto s = open();
    auto tx = s->begin(TxMode::write);
    tx->exec("UPDATE schema_versions SET version = 9999 WHERE module = 'audit'");
    tx->commit();
  }
  const std::string what = what_of([&] { open(); });
  EXPECT_NE(what.find("9999"), std::string::npos) << what;
  EXPECT_NE(what.find("newer than this binary"), std::string::npos) << what;
}

INSTANTIATE_TEST_SUITE_P(Backends, StoreConformance, ::testing::Values("sqlcipher", "postgresql"),
                         [](const auto& info) { return info.param; });

// ---------------------------------------------------------------------------
// PostgreSQL only: the server's failures.

class PostgresStore : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = custos::testing::postgres_test_url();
    if (base_.empty()) GTEST_SKIP() << "no PostgreSQL cluster given (CUSTOS_TEST_PG_URL)";
    url_ = custos::testing::fresh_postgres_schema(base_);
  }
  // A node's store, with the modules' tables (as the service opens it).
  std::unique_ptr<Store> open_migrated() {
    auto s = open_postgres(url_);
    service::migrate_schema(*s);
    return s;
  }
  std::string base_, url_;
};

TEST_F(PostgresStore, TranslatesThePortableDialect) {
  EXPECT_EQ(translate_sql_for_postgres("SELECT a FROM t WHERE b = ? AND c = '?' AND d = ?"),
            "SELECT a FROM t WHERE b = $1 AND c = '?' AND d = $2");
  EXPECT_EQ(translate_sql_for_postgres("INSERT OR IGNORE INTO t (a) VALUES (?)"),
            "INSERT INTO t (a) VALUES ($1) ON CONFLICT DO NOTHING");
  EXPECT_EQ(translate_sql_for_postgres("CREATE TABLE t (a INTEGER PRIMARY KEY, b BLOB, c TEXT) WITHOUT ROWID"),
            "CREATE TABLE t (a BIGINT PRIMARY KEY, b BYTEA, c TEXT COLLATE \"C\")");
  EXPECT_EQ(translate_sql_for_postgres("SELECT max(a, coalesce(b, 0)), max(c) FROM t"),
            "SELECT greatest(a, coalesce(b, 0)), max(c) FROM t");
}

TEST_F(PostgresStore, AnUnreachableServerIsStoreUnavailable) {
  const TempDir nowhere;
  const auto code = custos::testing::code_of(
      [&] { open_postgres("postgresql:///custos?host=" + nowhere.path().string() + "&port=1"); });
  EXPECT_EQ(code, ErrorCode::store_unavailable);
}

TEST_F(PostgresStore, AServerErrorNeverEchoesAParameterValue) {
  auto s = open_migrated();
  auto tx = s->begin(TxMode::write);
  const std::string what = what_of([&] {
    tx->exec("INSERT INTO orders (id, subject_id, amount_minor, currency, at) VALUES (?, ?, ?, 'EUR', 0)",
             {std::vector<std::uint8_t>{1}, std::vector<std::uint8_t>{1}, "canary-not-a-number"});
  });
  EXPECT_EQ(what.find("canary"), std::string::npos) << what;
  EXPECT_NE(what.find("SQLSTATE 22"), std::string::npos) << what;
}

TEST_F(PostgresStore, ALostConnectionIsStoreUnavailableHalfWritesNothingAndRecovers) {
  auto s = open_migrated();
  {
    auto tx = s->begin(TxMode::write);
    tx->exec("INSERT INTO meta (key, value) VALUES ('half', 'written')");
    const auto pid = tx->scalar("SELECT pg_backend_pid()").value_or(0);
    ASSERT_GT(pid, 0);
    postgres_exec_admin(base_, "SELECT pg_terminate_backend(" + std::to_string(pid) + ")");
    EXPECT_EQ(custos::testing::code_of([&] { tx->exec("SELECT count(*) FROM meta"); }),
              ErrorCode::store_unavailable);
  }
  // The pool drops the broken connection; the next transaction reconnects.
  auto tx = s->begin(TxMode::read);
  EXPECT_EQ(tx->scalar("SELECT count(*) FROM meta WHERE key = 'half'").value_or(-1), 0);
}

TEST_F(PostgresStore, MigrationsRunOnceWhenNodesStartTogether) {
  std::vector<std::thread> nodes;
  std::atomic<int> failures{0};
  for (int i = 0; i < 4; ++i)
    nodes.emplace_back([&] {
      try {
        open_migrated();
      } catch (...) {
        ++failures;
      }
    });
  for (auto& n : nodes) n.join();
  EXPECT_EQ(failures.load(), 0);
  auto s = open_migrated();
  auto tx = s->begin(TxMode::read);
  EXPECT_EQ(tx->scalar("SELECT count(*) FROM schema_versions WHERE module = 'audit'").value_or(0), 1);
}


// ---------------------------------------------------------------------------
// A vault on PostgreSQL, driven through the real `custos` binary.

class PostgresVault : public PostgresStore {
 protected:
  custos::testing::RunResult custos(const std::filesystem::path& data_dir, std::vector<std::string> args) {
    args.insert(args.begin(), {CUSTOS_CLI_PATH, "--data-dir", data_dir.string()});
    return custos::testing::run(args);
  }
  TempDir dir_;
};

TEST_F(PostgresVault, InitCreatesTheSchemaAndTheDataDirRemembersTheStore) {
  const auto data = dir_.path() / "node1";
  const auto init = custos(data, {"--store", url_, "init", "--fast-kdf"});
  ASSERT_EQ(init.exit_code, 0) << init.err;
  EXPECT_FALSE(std::filesystem::exists(data / "custos.db"));
  EXPECT_TRUE(std::filesystem::exists(data / "keys"));
  // Later commands find the database without --store.
  const auto created = custos(data, {"token", "create", "--role", "admin", "--name", "second"});
  EXPECT_EQ(created.exit_code, 0) << created.err;
  auto s = open_postgres(url_);
  auto tx = s->begin(TxMode::read);
  EXPECT_EQ(tx->scalar("SELECT count(*) FROM tokens").value_or(0), 2);  // admin (init) and second
}

TEST_F(PostgresVault, ASecondInitOnTheSameDatabaseIsRefused) {
  ASSERT_EQ(custos(dir_.path() / "a", {"--store", url_, "init", "--fast-kdf"}).exit_code, 0);
  const auto again = custos(dir_.path() / "b", {"--store", url_, "init", "--fast-kdf"});
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_NE(again.err.find("already holds a vault"), std::string::npos) << again.err;
  EXPECT_FALSE(std::filesystem::exists(dir_.path() / "b" / "keys" / "master-1.key"));
}

TEST_F(PostgresVault, ANodeWithAnotherVaultsMasterKeyIsRefusedBeforeServing) {
  ASSERT_EQ(custos(dir_.path() / "a", {"--store", url_, "init", "--fast-kdf"}).exit_code, 0);
  // Node b has its own vault (own key) elsewhere, then is pointed at a's database.
  const std::string other = custos::testing::fresh_postgres_schema(base_);
  ASSERT_EQ(custos(dir_.path() / "b", {"--store", other, "init", "--fast-kdf"}).exit_code, 0);
  const auto wrong = custos(dir_.path() / "b", {"--store", url_, "token", "create", "--role", "admin", "--name", "x"});
  EXPECT_EQ(wrong.exit_code, 1);
  EXPECT_NE(wrong.err.find("does not match this database"), std::string::npos) << wrong.err;
  // A node with a copy of a's key file is accepted.
  std::filesystem::create_directories(dir_.path() / "c");
  std::filesystem::copy(dir_.path() / "a" / "keys", dir_.path() / "c" / "keys", std::filesystem::copy_options::recursive);
  std::filesystem::copy(dir_.path() / "a" / "policies", dir_.path() / "c" / "policies",
                        std::filesystem::copy_options::recursive);
  const auto right = custos(dir_.path() / "c", {"--store", url_, "token", "create", "--role", "admin", "--name", "y"});
  EXPECT_EQ(right.exit_code, 0) << right.err;
}

TEST_F(PostgresVault, AnUnreachableDatabaseAtStartIsAClearErrorAndExit1) {
  ASSERT_EQ(custos(dir_.path() / "a", {"--store", url_, "init", "--fast-kdf"}).exit_code, 0);
  const TempDir nowhere;
  const auto r = custos(dir_.path() / "a", {"--store", "postgresql:///custos?host=" + nowhere.path().string() +
                                                          "&port=1&password=canary-secret",
                                            "token", "create", "--role", "admin", "--name", "x"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("cannot connect to the PostgreSQL database"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("canary-secret"), std::string::npos) << r.err;
}
}  // namespace
}  // namespace custos::store
