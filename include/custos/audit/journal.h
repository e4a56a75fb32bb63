// custos/audit/journal.h — the write-ahead journal for the entries of reads.
//
// A read must record its audit entry before any plaintext leaves, but a store
// transaction per read costs ~200 µs (a dozen encrypted WAL pages: the entry,
// its five index rows, the Merkle nodes). The journal makes the record cheap:
// the entry's canonical bytes (without its tree position, which the fold
// assigns) are sealed and copied into a preallocated, memory-mapped segment
// file. When `append` returns, the record is in the kernel's page cache: it
// survives a crash of the process exactly as a SQLCipher commit with
// synchronous=NORMAL does. AuditLog folds records into the Merkle tables in
// the background and on demand, and on open folds whatever a crashed process
// left beyond the store's watermark.
//
// Contract: one process writes a journal directory at a time (flock on
// <dir>/LOCK); `open` returns nullptr when another process holds it.
// Every record is sealed (AES-256-GCM with AES-NI, else ChaCha20-Poly1305)
// under a key derived from the journal key and the segment's random file id,
// with its counter as nonce: a record cannot be read, altered or moved
// without the vault's keys; the header (algorithm, file id, first counter)
// is bound to every record. Not thread-safe; AuditLog serialises calls.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "custos/crypto/secret_key.h"
#include "custos/util/mutex.h"
#include "custos_audit/entry.h"

namespace custos::audit {

// The largest record: an entry and its subject openings, each within the
// log's limit, behind a 5-byte wrapper (AuditLog). Larger is refused.
inline constexpr std::size_t kMaxJournalRecordBytes = 2 * auditfmt::kMaxEntryBytes + 5;

struct JournalOptions {
  std::size_t segment_bytes = std::size_t{16} << 20;  // ~50,000 entries each
  std::size_t max_segments = 8;                       // bound on unfolded records (at least 2)
  // How long journaled entries may wait before the background fold (queries,
  // checkpoints and exports fold at once whatever the wait).
  std::int64_t fold_interval_ms = 1000;
  // On a shared database (the pending table, AuditLog::enable_pending_table)
  // the bound that segments give a local journal: while the background fold
  // fails, reads fail closed once this process has this many entries waiting
  // in the table (the default is about what 8 segments hold).
  std::uint64_t max_pending_while_fold_fails = 400000;
};

// What an operator watches (custosd's /metrics and /healthz).
struct JournalStatus {
  bool active = false;
  std::uint64_t pending = 0;  // journaled entries not yet in the tree
  std::string fold_error;     // the last fold's failure; empty when healthy
};

struct JournalRecord {
  std::uint64_t counter = 0;
  std::vector<std::uint8_t> payload;
};

class Journal {
 public:
  struct Segment;  // one mapped segment file (journal.cpp)

  // Opens `dir` (created 0700) and takes its lock; nullptr if another process
  // holds it. Throws Error(audit_unavailable) if the directory is unusable.
  static std::unique_ptr<Journal> open(const std::filesystem::path& dir, const crypto::SecretKey& key,
                                       JournalOptions options);
  ~Journal();
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  // Every readable record an earlier process left with counter > `after`,
  // in counter order. A zero length ends a segment; a record that does not
  // open (altered, or torn by a power cut) ends it too, and the segment is
  // renamed *.damaged and named in `damaged`. Gaps in the counters are the
  // caller's to detect.
  struct Recovery {
    std::vector<JournalRecord> records;
    std::vector<std::string> damaged;
  };
  Recovery recover(std::uint64_t after);
  // For another process while the owner runs: the counter of the newest
  // complete record in `dir`, read without the lock (nullopt if none).
  static std::optional<std::uint64_t> newest_counter(const std::filesystem::path& dir, const crypto::SecretKey& key);
  // For another process (an auditor's CLI) that must see what the owner has
  // journaled: asks the owner to fold now rather than at its interval, by a
  // file in `dir` that the owner's folder looks for (take_fold_request).
  // Throws Error(audit_unavailable) if the file cannot be created.
  static void request_fold(const std::filesystem::path& dir);
  // For the owner: whether a fold was requested since the last call; the
  // request is taken (its file removed). One unlink, no lock needed.
  bool take_fold_request() const;

  // Starts appending with counter `next`; the old segments become spares,
  // and if there are none one is created now (not by the first read).
  void start(std::uint64_t next);

  // Seals and appends the payloads, all in one segment, consecutively.
  // Returns the first one's counter, or nullopt when every segment holds
  // records not yet folded (the caller waits for the fold). Throws
  // Error(audit_unavailable) when a segment cannot be created.
  std::optional<std::uint64_t> append(std::span<const std::vector<std::uint8_t>> payloads);

  // Reading back, in two steps so the caller's lock covers only the first:
  // `view` (under the lock that serialises `append`) notes where records
  // are; `read` (without it) opens the records [first, last] of a view.
  // Bytes once written do not change until `release_through` frees their
  // segment, which only the reader itself calls.
  struct View {
    struct Part {
      const Segment* segment;
      std::uint64_t first, last;
    };
    std::vector<Part> parts;
  };
  View view() const;
  static std::vector<JournalRecord> read(const View& view, std::uint64_t first, std::uint64_t last);

  // Records up to `counter` are in the store; their segments may be reused.
  void release_through(std::uint64_t counter);

  // Creates a spare segment ahead of need, so reads rarely create files.
  // Called with `caller_mu` (the caller's mutex serialising every call
  // here) held; releases it while the file is created, reserved and
  // faulted in, and holds it again on return, also when it throws.
  void prepare_spare(util::Mutex& caller_mu) CUSTOS_REQUIRES(caller_mu);
  // Half the segments hold records not yet folded: time to fold, whatever the interval.
  bool half_full() const { return 2 * (sealed_.size() + 1) > options_.max_segments; }
  // No spare is ready, one may still be created, and the current segment is
  // half used: time for prepare_spare().
  bool wants_spare() const;


 private:
  Journal(std::filesystem::path dir, int lock_fd, const crypto::SecretKey& key, JournalOptions options);
  Segment& activate_spare();
  std::unique_ptr<Segment> make_spare(std::uint64_t file_number) const;
  void add_spare(std::unique_ptr<Segment> segment);

  std::filesystem::path dir_;
  int lock_fd_ = -1;
  crypto::SecretKey key_;
  JournalOptions options_;
  std::vector<std::unique_ptr<Segment>> segments_;  // all mapped segment files
  Segment* current_ = nullptr;
  std::vector<Segment*> sealed_;  // full segments with unfolded records, oldest first
  std::vector<Segment*> spares_;
  std::uint64_t next_counter_ = 1;
  std::uint64_t next_file_number_ = 0;
};

}  // namespace custos::audit
