// The audit log in blocks (audit_log.h, kBlockEntries): queries at block
// edges agree with a scan of every entry, the open block survives a restart
// and a kill -9 mid-block, proofs cross blocks, and a log stored before
// blocks (schema 9) is converted by migration 10; a completed block is one
// row of entries, and only the open block has a row per entry.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <limits>
#include <map>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "custos/audit/audit_log.h"
#include "custos/audit/blocks.h"
#include "custos/crypto/signer.h"
#include "custos/error.h"
#include "custos/store/sqlcipher_store.h"
#include "custos_audit/merkle.h"
#include "custos_audit/verify.h"
#include "test_support.h"

namespace custos {
namespace {

constexpr std::uint64_t kBlock = audit::kBlockEntries;
const std::string kA(32, 'a'), kB(32, 'b');

// A clock the test sets: entry times are chosen, not sampled.
struct Clock {
  std::int64_t now = 1700000000LL * 1000000;
  std::function<std::int64_t()> fn() {
    return [this] { return now; };
  }
};

// The i-th test entry: principals, purposes and operations with different
// periods, so postings differ block by block; the first and last entry of
// each block have operations of their own.
audit::Actor actor_of(std::uint64_t i) {
  return {"p" + std::to_string(i % 3), "role", "t", i % 5 == 0 ? "audit" : "care", "r"};
}
audit::Event event_of(std::uint64_t i) {
  const std::string op = i % kBlock == 0 ? "edge.first" : i % kBlock == kBlock - 1 ? "edge.last" : "subject.read";
  return {op, i % 2 ? kA : kB, {"email"}, {}, true, "", ""};
}
// Times mostly rise, but every 50th entry is 100 ms in the past (a clock
// step), so a block's time range is not its first and last entry's.
std::int64_t time_of(std::uint64_t i) { return 1700000000LL * 1000000 + static_cast<std::int64_t>(i) * 1000 - (i % 50 == 49 ? 100000 : 0); }

struct Fixture {
  testing::TempDir dir;
  crypto::SecretKey key = crypto::SecretKey::random();
  crypto::Signer signer{crypto::SecretKey::random()};
  Clock clock;
  std::unique_ptr<store::Store> store = testing::open_migrated_store(dir.path() / "db", key);
  std::unique_ptr<audit::AuditLog> log = make_log();

  std::unique_ptr<audit::AuditLog> make_log() {
    audit::Options o;
    o.now_us = clock.fn();
    o.checkpoint_every_entries = 50;
    o.subject_run_blocks = 2;  // subject runs of two blocks: queries cross several
    return std::make_unique<audit::AuditLog>(*store, signer, o);
  }
  void append(std::uint64_t i) {
    clock.now = time_of(i);
    log->append_now(actor_of(i), event_of(i));
  }
  void reopen() {
    log.reset();
    store = testing::open_migrated_store(dir.path() / "db", key);
    log = make_log();
  }
};

// Every entry, decoded, with its time: what any query must agree with.
std::vector<auditfmt::Entry> every_entry(audit::AuditLog& log) {
  std::vector<auditfmt::Entry> out;
  for (std::uint64_t i = 0; i < log.size(); ++i) out.push_back(*log.entry(i));
  return out;
}

std::vector<std::uint64_t> paged(audit::AuditLog& log, audit::Query q, std::size_t page) {
  std::vector<std::uint64_t> got;
  q.limit = page;
  for (int guard = 0; guard < 1000; ++guard) {
    const auto entries = log.query(q);
    for (const auto& e : entries) got.push_back(e.seq);
    if (entries.size() < page) break;
    q.after_seq = entries.back().seq;
  }
  return got;
}

std::vector<std::uint64_t> brute(const std::vector<auditfmt::Entry>& all, const audit::Query& q) {
  std::vector<std::uint64_t> out;
  for (const auto& e : all) {
    const std::int64_t at = *audit::parse_time_us(e.time);
    if (!q.principal.empty() && e.principal != q.principal) continue;
    if (!q.purpose.empty() && e.purpose != q.purpose) continue;
    if (!q.operation.empty() && e.operation != q.operation) continue;
    if (!q.subject_id.empty() && e.subject_id != q.subject_id &&
        std::find(e.subject_ids.begin(), e.subject_ids.end(), q.subject_id) == e.subject_ids.end())
      continue;
    if (q.from_us && at < *q.from_us) continue;
    if (q.to_us && at >= *q.to_us) continue;
    out.push_back(e.seq);
  }
  return out;
}

std::vector<audit::Query> queries() {
  std::vector<audit::Query> out;
  const auto add = [&](auto&& set) {
    audit::Query q;
    set(q);
    out.push_back(q);
  };
  add([](audit::Query& q) { q.principal = "p1"; });
  add([](audit::Query& q) { q.purpose = "audit"; });
  add([](audit::Query& q) { q.operation = "edge.first"; });
  add([](audit::Query& q) { q.operation = "edge.last"; });
  add([](audit::Query& q) { q.operation = "never.recorded"; });
  add([](audit::Query& q) { q.principal = "p2", q.operation = "edge.last"; });
  add([](audit::Query& q) { q.from_us = time_of(60), q.to_us = time_of(130); });
  add([](audit::Query& q) { q.from_us = time_of(140); });
  add([](audit::Query& q) { q.to_us = time_of(70); });
  add([](audit::Query& q) { q.principal = "p0", q.from_us = time_of(45), q.to_us = time_of(200); });
  add([](audit::Query& q) { q.from_us = time_of(49), q.to_us = time_of(49) + 1; });  // one clock step
  add([](audit::Query& q) { q.from_us = time_of(49), q.to_us = time_of(0); });  // the clock steps 49 and 99
  add([](audit::Query&) {});
  add([](audit::Query& q) { q.subject_id = kA; });
  add([](audit::Query& q) { q.subject_id = kB, q.operation = "edge.first"; });
  add([](audit::Query& q) { q.subject_id = kB, q.from_us = time_of(60), q.to_us = time_of(130); });
  return out;
}

void expect_queries_agree(audit::AuditLog& log, const std::string& when) {
  const auto all = every_entry(log);
  for (const auto& q : queries())
    for (std::size_t page : {1u, 63u, 64u, 65u, 1000u})
      EXPECT_EQ(paged(log, q, page), brute(all, q))
          << when << ": subject=" << q.subject_id << " principal=" << q.principal << " purpose=" << q.purpose
          << " operation=" << q.operation
          << " from=" << q.from_us.value_or(-1) << " to=" << q.to_us.value_or(-1) << " page=" << page;
}

TEST(AuditBlocks, QueriesAgreeWithEveryEntryAcrossBlockEdgesAndARestart) {
  Fixture f;
  std::uint64_t i = 0;
  for (; i < 200; ++i) {
    if (i == 2 * kBlock - 1) {  // a rolled-back append on a block's last entry seals nothing
      auto tx = f.store->begin(store::TxMode::write);
      f.log->append(*tx, actor_of(999), {"rolled.back", kA, {}, {}, true, "", ""});
    }
    f.append(i);
  }
  EXPECT_EQ(f.log->size(), 200u);
  expect_queries_agree(*f.log, "200 entries");
  // Restarted with the fourth block partly filled: its first 8 entries are
  // read back when it is sealed.
  f.reopen();
  for (; i < 4 * kBlock + 5; ++i) f.append(i);
  expect_queries_agree(*f.log, "after a restart");
  audit::Query rolled;
  rolled.operation = "rolled.back";
  EXPECT_TRUE(f.log->query(rolled).empty());
  // The window's ends, as the breach computation asks for them.
  const auto all = every_entry(*f.log);
  for (const auto& [from, to] : std::vector<std::pair<std::int64_t, std::int64_t>>{
           {time_of(0), time_of(300)}, {time_of(60), time_of(130)}, {time_of(250), time_of(400)},
           {time_of(49), time_of(0)}, {0, 1}}) {
    audit::Query q;
    q.from_us = from, q.to_us = to;
    const auto want = brute(all, q);
    auto tx = f.store->begin(store::TxMode::read);
    const auto got = audit::seq_range_at(*tx, from, to);
    if (want.empty()) {
      EXPECT_FALSE(got.has_value()) << from;
    } else {
      ASSERT_TRUE(got.has_value()) << from;
      EXPECT_EQ(got->first, want.front()) << from;
      EXPECT_EQ(got->second, want.back()) << from;
    }
  }
}

auditfmt::Hash recomputed_root(audit::AuditLog& log, std::uint64_t n) {
  auditfmt::Frontier f;
  for (std::uint64_t i = 0; i < n; ++i) f.append(auditfmt::leaf_hash(log.entry_bytes(i)));
  return f.root();
}

void expect_proofs_verify(audit::AuditLog& log, const std::vector<std::uint64_t>& sizes) {
  for (const std::uint64_t n : sizes) {
    const auditfmt::Hash root = log.root_at(n);
    ASSERT_EQ(root, recomputed_root(log, n)) << n;
    for (std::uint64_t i = 0; i < n; ++i) {
      const auto leaf = auditfmt::leaf_hash(log.entry_bytes(i));
      EXPECT_TRUE(auditfmt::verify_inclusion(i, n, leaf, log.inclusion_proof(i, n), root)) << i << " in " << n;
    }
    for (const std::uint64_t m : sizes) {
      if (m > n) continue;
      EXPECT_TRUE(auditfmt::verify_consistency(m, n, log.root_at(m), root, log.consistency_proof(m, n)))
          << m << " -> " << n;
    }
  }
}

// The log's export verifies offline against its own key; how many entries it holds.
std::uint64_t expect_export_verifies(audit::AuditLog& log) {
  std::stringstream out;
  log.export_to(out);
  const auto verified = auditfmt::verify_export(out, log.verifier_key());
  EXPECT_TRUE(verified.ok) << verified.error;
  return verified.entries;
}

TEST(AuditBlocks, ProofsAcrossBlocksVerifyAndOnlyBlockLevelNodesAreStored) {
  Fixture f;
  for (std::uint64_t i = 0; i < 3 * kBlock + 8; ++i) f.append(i);
  expect_proofs_verify(*f.log, {1, 2, 3, 63, 64, 65, 127, 128, 129, 191, 192, 193, 200});
  auto tx = f.store->begin(store::TxMode::read);
  EXPECT_EQ(tx->scalar("SELECT count(*) FROM audit_nodes WHERE level < ?", {static_cast<int>(audit::kBlockLevel)}).value_or(-1), 0);
  // Levels 6 and 7 over three blocks: (6,0) (6,1) (6,2) (7,0).
  EXPECT_EQ(tx->scalar("SELECT count(*) FROM audit_nodes").value_or(-1), 4);
  EXPECT_EQ(tx->scalar("SELECT count(*) FROM audit_blocks").value_or(-1), 3);
}

// A process journaling reads is killed with the fourth block half folded
// and more entries only in the journal; the next process folds them,
// sealing the block from rows the dead process wrote.
TEST(AuditBlocks, AKillMidBlockLosesNothingAndTheBlockIsSealedAfterwards) {
  Fixture f;
  const auto journal_key = crypto::SecretKey::random();
  const auto journal_dir = f.dir.path() / "journal";
  f.log.reset();
  f.store.reset();
  const pid_t pid = ::fork();
  if (pid == 0) try {
    f.store = testing::open_migrated_store(f.dir.path() / "db", f.key);
    f.log = f.make_log();
    f.log->enable_journal(journal_dir, journal_key);
    for (std::uint64_t i = 0; i < 3 * kBlock + 10; ++i) {
      f.clock.now = time_of(i);
      f.log->append_durable(actor_of(i), {event_of(i)});
    }
    f.log->flush();  // three blocks sealed, the fourth open with 10 entries
    for (std::uint64_t i = 3 * kBlock + 10; i < 4 * kBlock + 20; ++i) {
      f.clock.now = time_of(i);
      f.log->append_durable(actor_of(i), {event_of(i)});
    }
    ::kill(::getpid(), SIGKILL);
  } catch (...) {
    ::_exit(3);  // never back into the test runner from the child
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  f.store = testing::open_migrated_store(f.dir.path() / "db", f.key);
  f.log = f.make_log();
  ASSERT_TRUE(f.log->enable_journal(journal_dir, journal_key));
  EXPECT_EQ(f.log->size(), 4 * kBlock + 20);
  EXPECT_EQ(f.store->begin(store::TxMode::read)->scalar("SELECT count(*) FROM audit_blocks").value_or(-1), 4);
  expect_queries_agree(*f.log, "after kill -9");
  expect_proofs_verify(*f.log, {3 * kBlock + 10, 4 * kBlock, 4 * kBlock + 20});
  expect_export_verifies(*f.log);
}

// Where entries are stored (src/audit/entry_store.h): a fold writes each
// block it completes as one row, including a block whose first entries were
// stored as rows by earlier transactions, and keeps rows only for the block
// it leaves open; a single append that completes a block moves the block's
// rows into one row. Everything reads the same from both: queries, proofs,
// entries one by one, the export.
TEST(AuditBlocks, CompletedBlocksAreOneRowEachAndOnlyTheOpenBlockHasEntryRows) {
  Fixture f;
  const auto rows = [&](const char* sql) { return f.store->begin(store::TxMode::read)->scalar(sql).value_or(-1); };
  std::uint64_t i = 0;
  for (; i < 10; ++i) f.append(i);  // the first block begun with a row per entry
  EXPECT_EQ(rows("SELECT count(*) FROM audit_entries"), 10);
  ASSERT_TRUE(f.log->enable_journal(f.dir.path() / "journal", crypto::SecretKey::random()));
  for (; i < 3 * kBlock + 7; ++i) {
    f.clock.now = time_of(i);
    f.log->append_durable(actor_of(i), {event_of(i)});
  }
  f.log->flush();  // one fold: completes blocks 0 (10 stored rows + 54), 1 and 2; block 3 stays open
  EXPECT_EQ(rows("SELECT count(*) FROM audit_entry_blocks"), 3);
  EXPECT_EQ(rows("SELECT count(*) FROM audit_entries"), 7);
  EXPECT_EQ(rows("SELECT min(seq) FROM audit_entries"), static_cast<std::int64_t>(3 * kBlock));
  EXPECT_EQ(f.log->size(), 3 * kBlock + 7);
  expect_queries_agree(*f.log, "folded");
  expect_proofs_verify(*f.log, {1, 10, kBlock, 2 * kBlock + 1, 3 * kBlock + 7});
  for (const std::uint64_t seq : {std::uint64_t{0}, std::uint64_t{9}, kBlock - 1, 3 * kBlock + 6}) {
    const auto bytes = f.log->entry_bytes(seq);
    EXPECT_EQ(auditfmt::decode(bytes).seq, seq);
  }
  EXPECT_THROW(f.log->entry_bytes(3 * kBlock + 7), Error);
  // Without the journal: single appends complete block 3 from its rows.
  f.reopen();
  for (; i < 4 * kBlock + 1; ++i) f.append(i);
  EXPECT_EQ(rows("SELECT count(*) FROM audit_entry_blocks"), 4);
  EXPECT_EQ(rows("SELECT count(*) FROM audit_entries"), 1);
  expect_queries_agree(*f.log, "completed by single appends");
  expect_proofs_verify(*f.log, {3 * kBlock + 7, 4 * kBlock, 4 * kBlock + 1});
  EXPECT_EQ(expect_export_verifies(*f.log), 4 * kBlock + 1);
}

// Block 0's row as stored.
std::vector<std::uint8_t> block_row(Fixture& f, std::uint64_t block) {
  std::vector<std::uint8_t> row;
  f.store->begin(store::TxMode::read)->exec("SELECT entries FROM audit_entry_blocks WHERE block = ?",
                                            {static_cast<std::int64_t>(block)},
                                            [&](const store::Row& r) { row = r.blob_copy(0); });
  return row;
}
void set_block_row(Fixture& f, std::uint64_t block, const std::vector<std::uint8_t>& row) {
  auto tx = f.store->begin(store::TxMode::write);
  tx->exec("UPDATE audit_entry_blocks SET entries = ? WHERE block = ?", {row, static_cast<std::int64_t>(block)});
  tx->commit();
}
// A row in the format before the compact one (src/audit/block_codec.h):
// each entry's length (4 bytes, big-endian), then its bytes.
std::vector<std::uint8_t> length_prefixed(const std::vector<std::vector<std::uint8_t>>& entries) {
  std::vector<std::uint8_t> row;
  for (const auto& e : entries) {
    const auto n = static_cast<std::uint32_t>(e.size());
    row.insert(row.end(), {static_cast<std::uint8_t>(n >> 24), static_cast<std::uint8_t>(n >> 16),
                           static_cast<std::uint8_t>(n >> 8), static_cast<std::uint8_t>(n)});
    row.insert(row.end(), e.begin(), e.end());
  }
  return row;
}

// A block row altered in the store (cut, lengthened, another block's
// header, an unknown format, a first entry that "repeats" the one before
// it; in the earlier length-prefixed format a length past its end, 1 or 65
// entries) is reported as damage (Error(integrity)) by every reader, never
// read past its end.
TEST(AuditBlocks, ADamagedBlockRowIsAnIntegrityErrorForEveryReader) {
  Fixture f;
  for (std::uint64_t i = 0; i < kBlock + 3; ++i) f.append(i);
  std::vector<std::vector<std::uint8_t>> entries;
  for (std::uint64_t i = 0; i < kBlock; ++i) entries.push_back(f.log->entry_bytes(i));
  const std::vector<std::uint8_t> good = block_row(f, 0);
  ASSERT_EQ(good.at(0), 0x01);  // the compact format
  ASSERT_EQ(good.at(1), 0x00);  // block 0
  std::vector<std::vector<std::uint8_t>> damaged;
  damaged.emplace_back(good.begin(), good.begin() + 10);  // cut inside the first entry
  damaged.emplace_back(good.begin(), good.end() - 1);     // the last entry one byte short
  damaged.push_back(good);
  damaged.back().push_back(0x00);  // a byte after the last entry
  damaged.push_back(good);
  damaged.back()[0] = 0x7f;  // an unknown format
  damaged.push_back(good);
  damaged.back()[1] = 0x01;  // block 1's row stored as block 0's
  damaged.push_back(good);
  {
    std::size_t at = 3;  // after the format, the block and the first entry's version: its time
    while (good.at(at) & 0x80) ++at;
    damaged.back().at(at + 1) = 0x00;  // its principal "as the previous entry's"
  }
  damaged.emplace_back(1, 0x01);  // a format byte and nothing else
  auto legacy = length_prefixed(entries);
  damaged.push_back(legacy);
  damaged.back()[0] = 0x00, damaged.back()[1] = 0x7f;  // a length far past the row's end
  damaged.emplace_back(legacy.begin(), legacy.begin() + 4 + static_cast<std::ptrdiff_t>(entries[0].size()));  // 1 entry
  damaged.push_back(legacy);
  damaged.back().insert(damaged.back().end(), legacy.begin(), legacy.begin() + 4 + static_cast<std::ptrdiff_t>(entries[0].size()));  // 65
  damaged.emplace_back();  // empty
  for (std::size_t k = 0; k < damaged.size(); ++k) {
    set_block_row(f, 0, damaged[k]);
    f.reopen();
    const auto code = [](auto&& fn) { return testing::code_of(fn); };
    EXPECT_EQ(code([&] { (void)f.log->entry_bytes(5); }), ErrorCode::integrity) << k;
    EXPECT_EQ(code([&] { (void)f.log->query(audit::Query{}); }), ErrorCode::integrity) << k;
    EXPECT_EQ(code([&] { (void)f.log->inclusion_proof(3, kBlock + 3); }), ErrorCode::integrity) << k;
    EXPECT_EQ(code([&] {
                std::stringstream out;
                f.log->export_to(out);
              }),
              ErrorCode::integrity)
        << k;
    EXPECT_FALSE(f.log->entry_bytes(kBlock + 1).empty()) << k;  // entries outside it still read
  }
  set_block_row(f, 0, good);
  f.reopen();
  EXPECT_EQ(expect_export_verifies(*f.log), kBlock + 3);
}

// A store written by the release before the compact rows: its block rows
// (length-prefixed) read as they always did, next to compact rows of the
// blocks completed since: queries, proofs, entries and the export agree.
TEST(AuditBlocks, BlockRowsOfTheEarlierFormatStillRead) {
  Fixture f;
  std::uint64_t i = 0;
  for (; i < 2 * kBlock + 5; ++i) f.append(i);
  for (const std::uint64_t block : {0u, 1u}) {
    std::vector<std::vector<std::uint8_t>> entries;
    for (std::uint64_t s = block * kBlock; s < (block + 1) * kBlock; ++s) entries.push_back(f.log->entry_bytes(s));
    set_block_row(f, block, length_prefixed(entries));
  }
  f.reopen();
  for (; i < 3 * kBlock + 9; ++i) f.append(i);
  EXPECT_EQ(block_row(f, 0).at(0), 0x00);
  EXPECT_EQ(block_row(f, 2).at(0), 0x01);
  expect_queries_agree(*f.log, "earlier and compact rows");
  expect_proofs_verify(*f.log, {kBlock, 2 * kBlock + 1, 3 * kBlock + 9});
  EXPECT_EQ(expect_export_verifies(*f.log), 3 * kBlock + 9);
}

// A compact row gives back each entry's exact bytes whatever they hold:
// times the compact form cannot carry (years past 9999, before 0, a clock
// stepping back), text that looks like hex and text that nearly does, empty
// fields, entries committing to further subjects (version 2) beside entries
// that do not, a field that changes back and forth. Each entry's bytes are
// read while it still has a row of its own, then again from its block's row.
TEST(AuditBlocks, ACompactRowGivesBackEveryEntryByteForByte) {
  Fixture f;
  const std::vector<std::int64_t> odd_times = {
      253402300800LL * 1000000,  // 10000-01-01: no four-digit year
      -62167219200LL * 1000000 - 1,  // the microsecond before 0000-01-01
      0, -1, 1, std::numeric_limits<std::int64_t>::max(), std::numeric_limits<std::int64_t>::min()};
  std::vector<std::vector<std::uint8_t>> expected;
  for (std::uint64_t i = 0; i < 3 * kBlock; ++i) {
    f.clock.now = i % 7 == 3 ? odd_times[i / 7 % odd_times.size()] : time_of(i) - static_cast<std::int64_t>(i % 5) * 777;
    audit::Actor actor{i % 4 == 0 ? "cafe" : i % 4 == 1 ? "CAFE" : "p", i % 3 ? "role" : "", "0a1b", i % 2 ? "care" : "",
                       i % 6 ? std::string(32, static_cast<char>('a' + i % 6)) : "req-" + std::to_string(i)};
    audit::Event event{i % 2 ? "subject.read" : "campaign.fetch", i % 9 ? std::string(32, 'f') : "", {}, {}, i % 11 != 0,
                       i % 11 ? "" : "forbidden_role", i % 5 ? "" : "returned=" + std::to_string(i)};
    if (i % 3 == 0) event.fields = {"email", "given_name"};
    if (i % 3 == 1) event.masked_fields = {"email"};
    if (i % 4 == 2) event.subject_ids = {std::string(32, 'b'), std::string(32, 'c')};
    f.log->append_now(actor, event);
    expected.push_back(f.log->entry_bytes(i));
  }
  f.reopen();
  EXPECT_EQ(f.store->begin(store::TxMode::read)->scalar("SELECT count(*) FROM audit_entry_blocks").value_or(-1), 3);
  for (std::uint64_t i = 0; i < expected.size(); ++i) EXPECT_EQ(f.log->entry_bytes(i), expected[i]) << i;
  EXPECT_EQ(expect_export_verifies(*f.log), 3 * kBlock);
  // What the compact row saves, for the record: far fewer bytes than the entries.
  std::size_t canonical = 0;
  for (std::uint64_t i = 0; i < kBlock; ++i) canonical += expected[i].size();
  EXPECT_LT(block_row(f, 0).size(), canonical);
}

// A block row is its entries only where they belong: rows of two blocks
// swapped in the store (each still well-formed, and their entries verify
// against their own leaves) are damage to every reader, not entries served
// under the wrong sequence numbers.
TEST(AuditBlocks, BlockRowsSwappedInTheStoreAreAnIntegrityError) {
  Fixture f;
  for (std::uint64_t i = 0; i < 2 * kBlock + 3; ++i) f.append(i);
  {
    auto tx = f.store->begin(store::TxMode::write);
    tx->exec("UPDATE audit_entry_blocks SET block = 2 WHERE block = 0");
    tx->exec("UPDATE audit_entry_blocks SET block = 0 WHERE block = 1");
    tx->exec("UPDATE audit_entry_blocks SET block = 1 WHERE block = 2");
    tx->commit();
  }
  f.reopen();
  EXPECT_EQ(testing::code_of([&] { (void)f.log->entry_bytes(5); }), ErrorCode::integrity);
  EXPECT_EQ(testing::code_of([&] { (void)f.log->entry_bytes(kBlock + 5); }), ErrorCode::integrity);
  EXPECT_EQ(testing::code_of([&] { (void)f.log->query(audit::Query{}); }), ErrorCode::integrity);
  audit::Query by_subject;
  by_subject.subject_id = kA;
  EXPECT_EQ(testing::code_of([&] { (void)f.log->query(by_subject); }), ErrorCode::integrity);
  EXPECT_EQ(testing::code_of([&] {
              std::stringstream out;
              f.log->export_to(out);
            }),
            ErrorCode::integrity);
  EXPECT_FALSE(f.log->entry_bytes(2 * kBlock + 1).empty());  // the open block's rows still read
}

// Two writers on one store (two nodes on PostgreSQL, or custosd and a
// `custos` command on one file) take turns: each catches its cached tree up
// with the other's entries before appending (leaf by leaf up to 4,096 of
// them, else from stored subtrees), and an append of its own that was
// rolled back is not mistaken for a stored one. One tree results: the
// export verifies, every proof verifies, queries agree, and checkpoints
// from both writers are heads of that one tree.
TEST(AuditBlocks, TwoWritersTakingTurnsKeepOneTree) {
  Fixture f;
  std::unique_ptr<audit::AuditLog> other = f.make_log();
  std::uint64_t i = 0;
  const auto run = [&](audit::AuditLog& log, std::uint64_t n) {
    for (const std::uint64_t end = i + n; i < end; ++i) {
      f.clock.now = time_of(i);
      log.append_now(actor_of(i), event_of(i));
    }
    // The head this writer signs is the stored tree's.
    const audit::Checkpoint cp = log.checkpoint_now();
    ASSERT_EQ(cp.size, i);
    EXPECT_EQ(cp.root, recomputed_root(log, i)) << "a head of " << i << " entries";
  };
  for (const std::uint64_t n : {1, 1, 2, 5, 70, 3, 1, 130, 64, 64}) {
    run(*f.log, n);
    run(*other, n + 1);
  }
  // An append of `other` rolled back, then the first writer moves on by one
  // entry (equal sizes, different last leaf) and by several (a longer tree
  // whose leaf at other's last position is not other's).
  for (const std::uint64_t ahead : {1, 7}) {
    {
      auto tx = f.store->begin(store::TxMode::write);
      f.clock.now = time_of(i);
      other->append(*tx, actor_of(i), {"rolled.back", kA, {}, {}, true, "", ""});
    }  // never committed: not the entry the first writer stores at this position
    run(*f.log, ahead);
    run(*other, 2);
  }
  expect_queries_agree(*other, "two writers");  // (paged() stops at 1,000 pages: before the long run)
  // More than the catch-up takes leaf by leaf: restored from subtrees.
  run(*f.log, 4200);
  run(*other, 3);
  run(*f.log, 1);
  ASSERT_EQ(f.log->size(), i);
  ASSERT_EQ(other->size(), i);
  EXPECT_EQ(f.log->root_at(i), other->root_at(i));
  expect_proofs_verify(*other, {1, 2, 64, 65, 700, i});
  expect_export_verifies(*other);
}

// A data dir of schema 9: every entry indexed by principal, purpose,
// operation and time, every subtree hash stored, no blocks. Migration 10
// builds the same postings and block times the fold writes, and drops what
// blocks replace; roots, proofs and queries are unchanged.
TEST(AuditBlocks, MigrationConvertsALogStoredBeforeBlocks) {
  Fixture f;
  for (std::uint64_t i = 0; i < 2 * kBlock + 22; ++i) f.append(i);
  using Posting = std::tuple<std::int64_t, std::string, std::int64_t, std::int64_t>;
  const auto postings = [&] {
    std::vector<Posting> out;
    f.store->begin(store::TxMode::read)
        ->exec("SELECT kind, value, block, mask FROM audit_postings ORDER BY kind, value, block", {},
               [&](const store::Row& r) {
                 out.emplace_back(r.integer(0), std::string(r.text(1)), r.integer(2), r.integer(3));
               });
    return out;
  };
  const auto blocks = [&] {
    std::vector<std::tuple<std::int64_t, std::int64_t, std::int64_t>> out;
    f.store->begin(store::TxMode::read)
        ->exec("SELECT block, min_at, max_at FROM audit_blocks ORDER BY block", {},
               [&](const store::Row& r) { out.emplace_back(r.integer(0), r.integer(1), r.integer(2)); });
    return out;
  };
  const auto folded_postings = postings();
  const auto folded_blocks = blocks();
  ASSERT_EQ(folded_blocks.size(), 2u);
  const std::uint64_t size = f.log->size();
  const auditfmt::Hash root = f.log->root_at(size);
  std::vector<std::vector<std::uint8_t>> stored;
  for (std::uint64_t i = 0; i < size; ++i) stored.push_back(f.log->entry_bytes(i));
  {  // Back to the schema 9 layout, with its rows: one per entry, no block rows.
    auto tx = f.store->begin(store::TxMode::write);
    tx->exec("DELETE FROM audit_entries");
    std::vector<auditfmt::Hash> level;
    for (const auto& bytes : stored) {
      const auditfmt::Entry e = auditfmt::decode(bytes);
      level.push_back(auditfmt::leaf_hash(bytes));
      tx->exec("INSERT INTO audit_entries (seq, at, principal, purpose, operation, subject_id, outcome, entry, leaf)"
               " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
               {static_cast<std::int64_t>(e.seq), *audit::parse_time_us(e.time), e.principal, e.purpose, e.operation,
                e.subject_id, e.outcome, bytes, level.back()});
    }
    tx->exec("DROP TABLE audit_entry_blocks");
    for (int l = 1; level.size() >= 2; ++l) {
      std::vector<auditfmt::Hash> up;
      for (std::size_t i = 0; i + 1 < level.size(); i += 2) up.push_back(auditfmt::node_hash(level[i], level[i + 1]));
      if (l < static_cast<int>(audit::kBlockLevel))
        for (std::size_t i = 0; i < up.size(); ++i)
          tx->exec("INSERT INTO audit_nodes (level, idx, hash) VALUES (?, ?, ?)",
                   {l, static_cast<std::int64_t>(i), up[i]});
      level = up;
    }
    tx->exec("CREATE INDEX audit_by_principal ON audit_entries (principal, seq)");
    tx->exec("CREATE INDEX audit_by_purpose ON audit_entries (purpose, seq)");
    tx->exec("CREATE INDEX audit_by_operation ON audit_entries (operation, seq)");
    tx->exec("CREATE INDEX audit_by_time ON audit_entries (at)");
    tx->exec("DROP TABLE audit_blocks");
    tx->exec("DROP TABLE audit_postings");
    // Its subject index: a row per (subject, entry), in one bucket; no runs.
    for (const char* runs : {"audit_block_subjects", "audit_subject_runs", "audit_subject_runs_start"})
      tx->exec(std::string("DROP TABLE ") + runs);
    tx->exec("DELETE FROM audit_subject_index");
    tx->exec("DELETE FROM audit_subject_buckets");
    tx->exec("INSERT INTO audit_subject_buckets (bucket, first_seq) VALUES (0, 0)");
    for (const auto& bytes : stored) {
      const auditfmt::Entry e = auditfmt::decode(bytes);
      if (auditfmt::is_subject_id(e.subject_id))
        tx->exec("INSERT INTO audit_subject_index (bucket, subject_id, seq) VALUES (0, ?, ?)",
                 {e.subject_id, static_cast<std::int64_t>(e.seq)});
    }
    // As the global runner of that release left it: user_version 9, no module versions.
    testing::regress_to_global_schema(*tx, 9);
    tx->commit();
  }
  f.reopen();
  EXPECT_EQ(postings(), folded_postings);
  EXPECT_EQ(blocks(), folded_blocks);
  {
    auto tx = f.store->begin(store::TxMode::read);
    EXPECT_EQ(tx->scalar("SELECT count(*) FROM audit_nodes WHERE level < 6").value_or(-1), 0);
    EXPECT_EQ(tx->scalar("SELECT count(*) FROM sqlite_master WHERE name LIKE 'audit_by_%'").value_or(-1), 0);
    // Nothing is moved: the converted blocks keep their entry rows.
    EXPECT_EQ(tx->scalar("SELECT count(*) FROM audit_entries").value_or(-1), static_cast<std::int64_t>(size));
    EXPECT_EQ(tx->scalar("SELECT count(*) FROM audit_entry_blocks").value_or(-1), 0);
    // Subject runs begin at the first block boundary after the log's end.
    EXPECT_EQ(tx->scalar("SELECT first_seq FROM audit_subject_runs_start").value_or(-1), static_cast<std::int64_t>(3 * kBlock));
  }
  EXPECT_EQ(f.log->size(), size);
  EXPECT_EQ(f.log->root_at(size), root);
  expect_queries_agree(*f.log, "migrated");
  // The open block, begun before the migration, is sealed after it.
  for (std::uint64_t i = size; i < 3 * kBlock + 3; ++i) f.append(i);
  expect_queries_agree(*f.log, "appended after the migration");
  // The block left open by the migration is one row now; the two converted
  // before it are still rows, the open one after it too.
  {
    auto tx = f.store->begin(store::TxMode::read);
    EXPECT_EQ(tx->scalar("SELECT count(*) FROM audit_entry_blocks").value_or(-1), 1);
    EXPECT_EQ(tx->scalar("SELECT count(*) FROM audit_entries").value_or(-1), static_cast<std::int64_t>(2 * kBlock + 3));
  }
  for (std::uint64_t seq : {std::uint64_t{0}, 2 * kBlock - 1, 2 * kBlock, 3 * kBlock - 1, 3 * kBlock + 2})
    EXPECT_EQ(auditfmt::decode(f.log->entry_bytes(seq)).seq, seq);
  expect_proofs_verify(*f.log, {size, 3 * kBlock, 3 * kBlock + 3});
  expect_export_verifies(*f.log);
  // Past the migration's block boundary, subjects go into runs: blocks 3
  // and 4 are one, block 5 waits for its run, block 6 is open. Queries read
  // the old index below the boundary and the runs above it.
  for (std::uint64_t i = 3 * kBlock + 3; i < 6 * kBlock + 3; ++i) f.append(i);
  {
    auto tx = f.store->begin(store::TxMode::read);
    EXPECT_EQ(tx->scalar("SELECT count(DISTINCT first_block) FROM audit_subject_runs").value_or(-1), 1);
    EXPECT_EQ(tx->scalar("SELECT block FROM audit_block_subjects").value_or(-1), 5);
    EXPECT_EQ(tx->scalar("SELECT max(seq) FROM audit_subject_index").value_or(-1), static_cast<std::int64_t>(3 * kBlock - 1));
  }
  expect_queries_agree(*f.log, "runs after the migration");
}

// The subject runs are read back by their length and order: a run altered
// in the store (cut inside a ref, two refs swapped) is reported as damage
// (Error(integrity)) by a subject query, never read past its end or searched
// as if sorted; and a block of the open run whose row went missing stops the
// append that would merge the run, which appends nothing.
TEST(AuditBlocks, ADamagedSubjectRunIsAnIntegrityError) {
  Fixture f;
  for (std::uint64_t i = 0; i < 3 * kBlock + 3; ++i) f.append(i);  // run of blocks 0-1, block 2 waiting, 3 open
  audit::Query by_subject;
  by_subject.subject_id = kA;
  audit::Query by_principal;
  by_principal.principal = "p1";
  const std::size_t found = f.log->query(by_subject).size();
  ASSERT_GT(found, 0u);
  std::vector<std::uint8_t> good;
  f.store->begin(store::TxMode::read)->exec("SELECT refs FROM audit_subject_runs WHERE first_block = 0", {},
                                            [&](const store::Row& r) { good = r.blob_copy(0); });
  ASSERT_EQ(good.size(), 2 * kBlock * 24);  // a ref per entry: one subject each
  std::vector<std::vector<std::uint8_t>> damaged;
  damaged.emplace_back(good.begin(), good.end() - 1);  // cut inside the last ref
  damaged.push_back(good);
  std::swap_ranges(damaged.back().begin(), damaged.back().begin() + 24, damaged.back().end() - 24);  // out of order
  const auto set_run = [&](const std::vector<std::uint8_t>& refs) {
    auto tx = f.store->begin(store::TxMode::write);
    tx->exec("UPDATE audit_subject_runs SET refs = ? WHERE first_block = 0", {refs});
    tx->commit();
  };
  for (std::size_t k = 0; k < damaged.size(); ++k) {
    set_run(damaged[k]);
    f.reopen();
    EXPECT_EQ(testing::code_of([&] { (void)f.log->query(by_subject); }), ErrorCode::integrity) << k;
    EXPECT_FALSE(f.log->query(by_principal).empty()) << k;  // other queries do not read the runs
  }
  set_run(good);
  EXPECT_EQ(f.log->query(by_subject).size(), found);
  {
    auto tx = f.store->begin(store::TxMode::write);
    tx->exec("DELETE FROM audit_block_subjects WHERE block = 2");
    tx->commit();
  }
  f.reopen();
  for (std::uint64_t i = 3 * kBlock + 3; i < 4 * kBlock - 1; ++i) f.append(i);
  EXPECT_THROW(f.append(4 * kBlock - 1), Error);  // completes block 3: the run of 2 and 3
  EXPECT_EQ(f.log->size(), 4 * kBlock - 1);
}

}  // namespace
}  // namespace custos
