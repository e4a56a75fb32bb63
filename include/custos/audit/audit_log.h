// custos/audit/audit_log.h — the tamper-evident audit log inside the store.
//
// Each entry is a leaf of an RFC 6962 Merkle tree (custos_audit/merkle.h);
// the log stores the leaves and the perfect-subtree hashes from a block of
// 64 entries up (custos/audit/blocks.h), so an append writes O(1) rows and a
// proof reads O(log n) hashes and at most one block of leaves. Tree heads
// are signed as C2SP checkpoints with the vault's own Ed25519 key.
//
// Contract: `append` writes into the caller's write transaction, so an
// operation and its entry commit together or not at all. Any failure to
// write the log surfaces as Error(audit_unavailable); callers must not
// release plaintext before the transaction holding the entry committed.
// Entries never hold personal values, only names, ids and codes.
//
// Reads use `append_durable`. With a journal enabled (custosd), their
// entries are sealed into the journal (journal.h) and folded into the tree
// by a background thread within about a second; every query, checkpoint and
// export first folds what is pending, so callers see every entry of every
// read that returned (`size` counts pending entries without folding).
// Without one, each read group-commits a store transaction.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <ostream>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "custos/audit/journal.h"
#include "custos/crypto/signer.h"
#include "custos/store/store.h"
#include "custos/util/mutex.h"
#include "custos_audit/entry.h"
#include "custos_audit/merkle.h"

namespace custos::audit {

using auditfmt::Hash;

// Who acts and why; carried from the transport through every layer.
struct Actor {
  std::string principal;  // token name, or "local:<user>" for the CLI
  std::string role;
  std::string token_id;
  std::string purpose;
  std::string request_id;
};

// What happened.
struct Event {
  std::string operation;   // e.g. "subject.read", "subject.erase", "key.rotate"
  std::string subject_id;  // hex, or empty
  std::vector<std::string> fields;
  std::vector<std::string> masked_fields;
  bool allowed = true;
  std::string reason;  // denial code when !allowed
  std::string detail;  // small, non-personal
  // Further subjects one entry covers (a campaign page, a batch create): each
  // is indexed so the entry is found by any of their ids. The entry commits
  // to them (version 2, FORMAT.md §1.5) and does not name them; the vault
  // keeps their ids and salts beside it.
  std::vector<std::string> subject_ids;
};

struct Options {
  std::string origin = "custos.local/audit";
  std::string key_name = "custos.local";
  std::string node_id = "node-1";
  std::uint64_t checkpoint_every_entries = 1000;
  std::int64_t checkpoint_every_ms = 1000;
  std::function<std::int64_t()> now_us;  // injectable clock; default: system clock
  // Rows per bucket of the subject index of entries before audit migration 8
  // (the newest bucket takes every insert; ~60 bytes a row).
  std::uint64_t subject_bucket_rows = 65536;
  // Completed blocks per run of the subject index from migration 8 on
  // (src/audit/subject_runs.h): a run is written when its last block
  // completes; a subject query seeks once per run and reads every block row
  // of the open run (~1.5 KB each).
  std::uint64_t subject_run_blocks = 1024;
};

struct Checkpoint {
  std::uint64_t size = 0;
  Hash root{};
  std::string note;  // the signed note text
  std::int64_t at_us = 0;
};

struct Query {
  std::string subject_id, principal, purpose, operation;
  std::optional<std::int64_t> from_us, to_us;  // [from, to)
  std::optional<std::uint64_t> after_seq;      // paging cursor
  std::size_t limit = 100;
};

class AuditLog {
 public:
  AuditLog(store::Store& store, const crypto::Signer& signer, Options options);

  // Appends within `tx` (a write transaction); returns the entry's sequence number.
  std::uint64_t append(store::Transaction& tx, const Actor& actor, const Event& event);
  // Appends in a transaction of its own (denials, audit-only events).
  std::uint64_t append_now(const Actor& actor, const Event& event);
  // For reads: returns only once the caller's entries are recorded durably
  // (in the journal, or committed with concurrent callers' in one
  // transaction); throws Error(audit_unavailable) if they could not be
  // (fail closed).
  void append_durable(const Actor& actor, const std::vector<Event>& events);

  // Records reads through the journal in `dir`, after folding whatever a
  // crashed process left there. Returns false (reads then commit directly)
  // if another process holds the journal. Throws Error(audit_unavailable)
  // if it cannot be opened or the leftovers cannot be folded.
  bool enable_journal(const std::filesystem::path& dir, const crypto::SecretKey& key, JournalOptions options = {});
  // Folds a crashed process's leftover journal in `dir`, unless a live
  // process holds it; then `flush` waits (bounded) for that process to fold
  // what it had journaled. For processes that do not journal themselves.
  void recover_journal(const std::filesystem::path& dir, const crypto::SecretKey& key);
  // On a database several nodes share (PostgreSQL), where a node's disk may
  // never come back: reads' entries commit to the store's pending table
  // (audit_pending), concurrent readers' in one small transaction that takes
  // no writers' lock, and a background thread folds the table — every
  // node's entries, and those a dead node left — into the tree every
  // `fold_interval`. `flush` (so every query, checkpoint and export) folds
  // the table in any process, whether or not it enabled this. While that
  // thread's folds fail, appends throw Error(audit_unavailable) once
  // `max_waiting` of this process's entries wait in the table: the log is
  // not left to grow without a tree, and the operation fails closed.
  void enable_pending_table(std::chrono::milliseconds fold_interval, std::uint64_t max_waiting);
  // Folds every journaled entry into the tree now; in a process beside a
  // journaling one (the CLI beside custosd), asks that process to fold and
  // waits (up to 30 s, then Error(audit_unavailable)) until every read it
  // had answered is in the tree.
  void flush();
  JournalStatus journal_status();
  // Reads are journaled: in this node's journal, or in the pending table.
  bool journal_active() const {
    return journal_on_.load(std::memory_order_acquire) || pending_on_.load(std::memory_order_acquire);
  }
  ~AuditLog();

  // Folds the journal (flush), then signs the head if it is larger than the
  // last checkpoint; returns the latest.
  Checkpoint checkpoint_now();
  // For a timer: signs the folded head if it holds unsigned entries and
  // checkpoint_every_ms passed. It does not fold: journaled entries are
  // signed at the first tick after the folder's interval folds them.
  void checkpoint_if_due();
  std::optional<Checkpoint> latest_checkpoint();
  std::optional<Checkpoint> checkpoint_at(std::uint64_t size);
  std::vector<Checkpoint> checkpoints(std::uint64_t from_size, std::size_t limit);

  // Entries recorded: in the tree, or journaled and about to be folded.
  std::uint64_t size();
  Hash root_at(std::uint64_t size);
  std::vector<Hash> inclusion_proof(std::uint64_t index, std::uint64_t size);
  std::vector<Hash> consistency_proof(std::uint64_t first, std::uint64_t second);

  // Canonical bytes of one entry.
  std::vector<std::uint8_t> entry_bytes(std::uint64_t seq);
  // One entry, decoded; for an entry that commits to its subjects (version
  // 2), subject_ids and subject_salts are filled from the vault's openings.
  std::optional<auditfmt::Entry> entry(std::uint64_t seq);
  // Entries matching `q`, filled as entry() fills them: for readers entitled
  // to the whole log (auditors). A subject's own view is access_package.h.
  std::vector<auditfmt::Entry> query(const Query& q);
  // Calls `fn` for each entry with first <= seq <= last in sequence order,
  // filled as entry() fills them, with its time index; inside the caller's
  // transaction (breach computations scan large ranges in one).
  void scan(store::Transaction& tx, std::uint64_t first, std::uint64_t last,
            const std::function<void(std::int64_t at_us, const auditfmt::Entry&)>& fn);

  // Writes the whole log (entries, every checkpoint) as an export file.
  // Signs a final checkpoint first so every entry is covered.
  void export_to(std::ostream& out);

  const std::string& verifier_key() const { return vkey_; }
  const Options& options() const { return options_; }
  std::int64_t now_us() const;

 private:
  // Signs the head as folded if it is larger than the last checkpoint; returns the latest.
  Checkpoint sign_folded();
  struct Head;
  void load_head(store::Transaction& tx) CUSTOS_REQUIRES(mu_);
  Checkpoint sign_head(store::Transaction& tx, std::uint64_t size, const Hash& root) CUSTOS_REQUIRES(mu_);
  std::function<Hash(unsigned, std::uint64_t)> subtree_fn(store::Transaction& tx);
  auditfmt::Entry draft(const Actor& actor, const Event& event, std::string time) const;
  // The entry's canonical bytes and, if it covers further subjects, their
  // openings (the entry commits to them, FORMAT.md §1.5). Throws
  // Error(invalid_argument) if either is over auditfmt::kMaxEntryBytes.
  struct Drafted {
    std::vector<std::uint8_t> bytes;
    std::vector<std::uint8_t> openings;  // empty: the entry covers no further subjects
  };
  Drafted encode_draft(const Actor& actor, const Event& event, std::string time) const;
  // Throws Error(invalid_argument) if an entry of `bytes` would exceed
  // auditfmt::kMaxEntryBytes, which the verifier refuses.
  static void require_fits(std::size_t bytes);
  // Entries of the open block appended in a transaction and not stored yet:
  // a fold stores each block it completes as one row (src/audit/entry_store.h).
  struct Unwritten;
  // mu_ held and the head loaded: places the encoded entry at the end of the
  // tree (its sequence number and previous-leaf hash are set here).
  // `openings` are those of an entry that commits to its subjects, else empty.
  // With `unwritten`, the entry is stored when its block completes or by
  // store_unwritten(), which the caller must call before committing;
  // without, it is stored now.
  std::uint64_t add_leaf(store::Transaction& tx, std::span<std::uint8_t> bytes, std::span<const std::uint8_t> openings,
                         Unwritten* unwritten = nullptr) CUSTOS_REQUIRES(mu_);
  static void store_unwritten(store::Transaction& tx, Unwritten& unwritten);
  struct SubjectBucket {
    std::int64_t number = -1;  // -1: none yet
    std::uint64_t rows = 0;
  };
  // Indexes the entry under its subject and each subject it names; returns
  // the bucket in use afterwards (the caller adopts it with the entry).
  // The first sequence number whose subjects are indexed in runs (read once).
  std::uint64_t subject_runs_from(store::Transaction& tx) CUSTOS_REQUIRES(mu_);
  SubjectBucket index_subjects(store::Transaction& tx, std::uint64_t seq, const auditfmt::EntryView& v,
                               const std::vector<std::string>& committed) CUSTOS_REQUIRES(mu_);
  void append_journaled(const Actor& actor, const std::vector<Event>& events);
  struct Waiter;  // a reader in the group commit's queue
  // A group's entries, all timed `at_us`, as the pending table's rows
  // `first`, `first` + 1, ... of this process's stream; one transaction.
  void insert_pending(const std::vector<Waiter*>& batch, std::uint64_t first, std::int64_t at_us);
  // Folds up to kMaxFoldBatch of the pending table's oldest entries and
  // deletes their rows, in one transaction; returns how many.
  std::size_t fold_pending_rows();
  // Folds the pending table: one batch, or (`everything`) until it is empty
  // (bounded: readers keep inserting).
  void fold_pending_table(bool everything);
  void pending_fold_loop();
  // Places a journal record (journal_payload's form) at the end of the tree.
  // The record is the caller's to spend: the entry's position is written
  // into its bytes. A record that is no entry throws Error(integrity)
  // naming it by `name()`.
  void place_record(store::Transaction& tx, std::span<std::uint8_t> record, Unwritten& unwritten,
                    const std::function<std::string()>& name) CUSTOS_REQUIRES(mu_);
  std::uint64_t fold_records(std::vector<JournalRecord> batch);
  // Folds what an earlier process left in `journal`; returns the last counter folded.
  std::uint64_t fold_leftovers(Journal& journal);
  void fold_pending(bool everything);
  void fold_loop();

  store::Store& store_;
  const crypto::Signer& signer_;
  Options options_;
  std::string vkey_;
  util::Mutex mu_;
  // Group commit: callers queue; one leader commits everything queued.
  util::Mutex group_mu_;
  util::CondVar group_cv_;
  std::vector<Waiter*> queue_ CUSTOS_GUARDED_BY(group_mu_);
  bool leader_active_ CUSTOS_GUARDED_BY(group_mu_) = false;
  // Cached head of the tree, validated against the store on every append
  // (another process may have appended since).
  std::optional<auditfmt::Frontier> frontier_ CUSTOS_GUARDED_BY(mu_);
  Hash last_leaf_ CUSTOS_GUARDED_BY(mu_) = {};
  SubjectBucket subject_bucket_ CUSTOS_GUARDED_BY(mu_);  // the subject index's newest bucket (loaded with the head)
  std::optional<std::uint64_t> subject_runs_from_ CUSTOS_GUARDED_BY(mu_);  // audit_subject_runs_start, once read
  std::uint64_t last_checkpoint_size_ CUSTOS_GUARDED_BY(mu_) = 0;
  std::int64_t last_checkpoint_at_us_ CUSTOS_GUARDED_BY(mu_) = 0;

  // The journal (null until enabled). pend_mu_ guards every call into
  // journal_ but its reads, the counters and the folder's state; fold_mu_
  // serialises folds. Records (folded_through_, written_through_] wait.
  // Lock order: fold_mu_, then the store write lock, then mu_; pend_mu_ is
  // never held while taking another (Journal::prepare_spare drops it).
  std::unique_ptr<Journal> journal_;
  std::atomic<bool> journal_on_{false};  // set once journal_ and the folder are ready
  util::Mutex pend_mu_;
  util::CondVar pend_cv_;
  std::uint64_t written_through_ CUSTOS_GUARDED_BY(pend_mu_) = 0;
  std::uint64_t folded_through_ CUSTOS_GUARDED_BY(pend_mu_) = 0;
  std::string fold_error_ CUSTOS_GUARDED_BY(pend_mu_);  // last fold's failure, empty when healthy
  bool stop_folder_ CUSTOS_GUARDED_BY(pend_mu_) = false;
  // fold without waiting for the interval: the journal is half full or full
  bool fold_now_ CUSTOS_GUARDED_BY(pend_mu_) = false;
  bool spare_wanted_ CUSTOS_GUARDED_BY(pend_mu_) = false;  // the folder should prepare the next segment now
  bool spare_failed_ CUSTOS_GUARDED_BY(pend_mu_) = false;  // the last attempt failed: wait for the next fold
  std::chrono::milliseconds fold_interval_{1000};
  util::Mutex fold_mu_ CUSTOS_ACQUIRED_BEFORE(mu_, pend_mu_);
  std::thread folder_;
  // The pending table (enable_pending_table): this process's stream (random)
  // and the next counter and newest time in it (set by the group's leader,
  // so a stream's rows commit in counter order with non-decreasing times).
  std::atomic<bool> pending_on_{false};
  std::string pending_stream_;
  std::uint64_t pending_next_ CUSTOS_GUARDED_BY(group_mu_) = 1;
  // This process's rows inserted since its folder's last fold that did not
  // fail, and how many may wait while folds fail.
  std::uint64_t pending_waiting_ CUSTOS_GUARDED_BY(pend_mu_) = 0;
  std::uint64_t pending_max_waiting_ CUSTOS_GUARDED_BY(pend_mu_) = 0;
  std::int64_t pending_last_at_ CUSTOS_GUARDED_BY(group_mu_) = 0;
  // Another process's journal (set by recover_journal when it was held).
  std::filesystem::path foreign_journal_;
  std::unique_ptr<crypto::SecretKey> foreign_key_;
};

// What the log records of caller-supplied text (audit/FORMAT.md §1.4). The
// log applies both to every entry it appends, whatever the layers above
// checked; the service applies them too, where it builds an Actor.
//
// `value` if it is a label (auditfmt::is_label), else its invalid_<what> marker.
std::string recorded_label(std::string_view what, std::string_view value);
// `id` if it is empty or a valid request id (auditfmt::is_request_id), else
// a server-made id of 32 hex digits: a keyed hash of `id` under a random
// per-process key, so it reveals nothing of `id` and the entries of one
// request still share it.
std::string recorded_request_id(std::string_view id);
// `id` if it is empty or 32 lowercase hex digits, else its invalid_subject marker.
std::string recorded_subject(std::string_view id);

// RFC 3339 UTC with microseconds.
std::string format_time_us(std::int64_t unix_us);
std::optional<std::int64_t> parse_time_us(std::string_view rfc3339);

}  // namespace custos::audit
