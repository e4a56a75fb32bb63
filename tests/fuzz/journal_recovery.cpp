// Fuzz target: audit journal recovery (src/audit/journal.cpp) and the fold
// of what it recovers into the audit log (AuditLog::recover_journal), as a
// vault opening after a crash does.
//
// Input: byte 0 bit 0 picks the mode.
//   raw (1): the rest, padded to two pages, is written as a journal segment
//     file; Journal::open + recover and Journal::newest_counter read it.
//   sealed (0): byte 1 % 4 = m mutations (u16 offset, u8 xor mask each),
//     then payloads (u16 length, bytes). The payloads are appended through
//     a real Journal (sealed under the target's key), the segment files are
//     mutated, and the journal is reopened and recovered, then folded into
//     a real SQLCipher audit log (one per process, on tmpfs).
// Invariants: only custos::Error is thrown, never of code internal; every
// recovered record is exactly a payload appended under that counter (the
// seal lets nothing altered through); without mutations every payload is
// recovered, nothing is set aside, and newest_counter names the last one.
#include <fstream>

#include "custos/audit/audit_log.h"
#include "custos/audit/journal.h"
#include "custos/crypto/secret_key.h"
#include "custos/crypto/signer.h"
#include "custos/error.h"
#include "custos/service/schema.h"
#include "custos/store/sqlcipher_store.h"
#include "fuzz_support.h"

namespace fs = std::filesystem;
using namespace custos;

namespace {

crypto::SecretKey fixed_key(std::uint8_t fill) {
  std::array<std::uint8_t, crypto::SecretKey::kSize> bytes{};
  bytes.fill(fill);
  return crypto::SecretKey::from_bytes(bytes);
}

struct Fixture {
  crypto::SecretKey journal_key = fixed_key(0x42);
  crypto::SecretKey db_key = fixed_key(0x17);
  crypto::Signer signer{fixed_key(0x99)};
  std::unique_ptr<store::Store> store;
  std::unique_ptr<audit::AuditLog> log;
  std::uint64_t next_counter = 1;
  Fixture() {
    store = store::open_sqlcipher(fuzz::scratch_dir() / "audit.db", db_key);
    service::migrate_schema(*store);
    log = std::make_unique<audit::AuditLog>(*store, signer, audit::Options{});
  }
};

audit::JournalOptions small_segments() {
  audit::JournalOptions o;
  o.segment_bytes = std::size_t{16} << 10;  // 4 pages: each input maps, faults and unmaps them
  o.max_segments = 2;
  return o;
}

std::vector<fs::path> segment_files(const fs::path& dir) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".aj") out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

void fuzz_raw(Fixture& fx, const fs::path& dir, std::string_view bytes) {
  std::string file(bytes);
  if (file.size() < 8192) file.resize(8192, '\0');
  {
    std::ofstream out(dir / "segment-000001.aj", std::ios::binary);
    out.write(file.data(), static_cast<std::streamsize>(file.size()));
  }
  try {
    (void)audit::Journal::newest_counter(dir, fx.journal_key);
    auto journal = audit::Journal::open(dir, fx.journal_key, small_segments());
    FUZZ_CHECK(journal != nullptr, "journal lock held by nobody yet refused");
    const auto rec = journal->recover(0);
    // Nothing can open under the key but what was sealed with it.
    FUZZ_CHECK(rec.records.empty(), "a record not sealed under the key was recovered");
  } catch (const Error& e) {
    FUZZ_CHECK(e.code() != ErrorCode::internal, e.what());
  }
}

void fuzz_sealed(Fixture& fx, const fs::path& dir, fuzz::InputReader& in) {
  struct Mutation {
    std::size_t offset;
    std::uint8_t mask;
  };
  std::vector<Mutation> mutations(in.byte() % 4);
  for (auto& m : mutations) {
    m.offset = in.u16();
    m.mask = in.byte();
  }
  std::vector<std::vector<std::uint8_t>> payloads;
  while (in.remaining() >= 2 && payloads.size() < 64) {
    const std::string_view p = in.take(in.u16());
    payloads.emplace_back(p.begin(), p.end());
  }
  if (payloads.empty()) return;
  const std::uint64_t first = fx.next_counter;
  fx.next_counter += payloads.size() + 1;  // a gap between inputs: recovery reports it
  try {
    auto journal = audit::Journal::open(dir, fx.journal_key, small_segments());
    FUZZ_CHECK(journal != nullptr, "journal lock held by nobody yet refused");
    journal->start(first);
    const auto at = journal->append(payloads);
    FUZZ_CHECK(at && *at == first, "append to an empty journal did not start at its counter");
  } catch (const Error& e) {
    FUZZ_CHECK(e.code() == ErrorCode::audit_unavailable, e.what());  // entries too large for one segment
    return;
  }
  bool mutated = false;
  for (const auto& path : segment_files(dir)) {
    if (mutations.empty()) break;
    std::fstream f(path, std::ios::binary | std::ios::in | std::ios::out);
    const auto size = static_cast<std::size_t>(fs::file_size(path));
    for (const auto& m : mutations) {
      if (m.mask == 0) continue;
      const std::size_t off = m.offset % size;
      f.seekg(static_cast<std::streamoff>(off));
      char c = 0;
      f.get(c);
      f.seekp(static_cast<std::streamoff>(off));
      f.put(static_cast<char>(c ^ static_cast<char>(m.mask)));
      mutated = true;
    }
  }
  try {
    {
      auto journal = audit::Journal::open(dir, fx.journal_key, small_segments());
      FUZZ_CHECK(journal != nullptr, "journal lock held by nobody yet refused");
      const auto newest = audit::Journal::newest_counter(dir, fx.journal_key);
      const auto rec = journal->recover(0);
      std::uint64_t previous = 0;
      for (const auto& r : rec.records) {
        FUZZ_CHECK(r.counter >= first && r.counter < first + payloads.size(), "a record under a counter never written");
        FUZZ_CHECK(r.counter > previous, "records out of order or repeated");
        previous = r.counter;
        FUZZ_CHECK(r.payload == payloads[r.counter - first], "a recovered record differs from what was appended");
      }
      if (!mutated) {
        FUZZ_CHECK(rec.records.size() == payloads.size(), "an intact journal lost records");
        FUZZ_CHECK(rec.damaged.empty(), "an intact segment was set aside");
        FUZZ_CHECK(newest && *newest == first + payloads.size() - 1, "newest_counter misses the last record");
      }
    }
    // What a vault does on open: fold the leftovers into the tree.
    fx.log->recover_journal(dir, fx.journal_key);
  } catch (const Error& e) {
    FUZZ_CHECK(e.code() != ErrorCode::internal, e.what());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static Fixture fx;
  const fs::path dir = fuzz::scratch_dir() / "journal";
  fs::remove_all(dir);
  fs::create_directories(dir);
  fuzz::InputReader in(data, size);
  if (in.byte() & 1)
    fuzz_raw(fx, dir, in.rest());
  else
    fuzz_sealed(fx, dir, in);
  return 0;
}
