#include "migrations.h"

namespace custos::store {

const std::vector<Migration>& migrations() {
  static const std::vector<Migration> all = {
      {1,
       {
           "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
           // Keys wrapped by a KEK version: blind-index keys, the audit signing seed.
           "CREATE TABLE wrapped_keys (slot TEXT PRIMARY KEY, kek_version INTEGER NOT NULL, wrapped BLOB NOT NULL)",
           // One row per data subject. `fields` holds each personal field sealed
           // separately under the subject's DEK (see records/field_blob.h).
           "CREATE TABLE subjects (id BLOB PRIMARY KEY, status TEXT NOT NULL, created_at INTEGER NOT NULL,"
           " updated_at INTEGER NOT NULL, kek_version INTEGER, dek_version INTEGER, wrapped_dek BLOB,"
           " fields BLOB, legal_hold INTEGER NOT NULL DEFAULT 0, restricted INTEGER NOT NULL DEFAULT 0)",
           "CREATE INDEX subjects_by_kek ON subjects (kek_version)",
           "CREATE TABLE blind_index (field TEXT NOT NULL, digest BLOB NOT NULL, subject_id BLOB NOT NULL,"
           " PRIMARY KEY (field, digest, subject_id))",
           "CREATE INDEX blind_index_by_subject ON blind_index (subject_id)",
           "CREATE TABLE touchpoints (id BLOB PRIMARY KEY, subject_id BLOB NOT NULL, channel TEXT NOT NULL,"
           " type TEXT NOT NULL, at INTEGER NOT NULL, notes BLOB)",
           "CREATE INDEX touchpoints_by_subject ON touchpoints (subject_id, at)",
           "CREATE TABLE orders (id BLOB PRIMARY KEY, subject_id BLOB NOT NULL, amount_minor INTEGER NOT NULL,"
           " currency TEXT NOT NULL, at INTEGER NOT NULL)",
           "CREATE INDEX orders_by_subject ON orders (subject_id, at)",
           // The audit log: canonical entries (leaves), stored perfect-subtree
           // hashes (level >= 1), and every signed checkpoint.
           "CREATE TABLE audit_entries (seq INTEGER PRIMARY KEY, at INTEGER NOT NULL, principal TEXT NOT NULL,"
           " purpose TEXT NOT NULL, operation TEXT NOT NULL, subject_id TEXT NOT NULL, outcome TEXT NOT NULL,"
           " entry BLOB NOT NULL, leaf BLOB NOT NULL)",
           "CREATE INDEX audit_by_subject ON audit_entries (subject_id, seq)",
           "CREATE INDEX audit_by_principal ON audit_entries (principal, seq)",
           "CREATE INDEX audit_by_purpose ON audit_entries (purpose, seq)",
           "CREATE INDEX audit_by_operation ON audit_entries (operation, seq)",
           "CREATE INDEX audit_by_time ON audit_entries (at)",
           "CREATE TABLE audit_nodes (level INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL,"
           " PRIMARY KEY (level, idx))",
           "CREATE TABLE audit_checkpoints (size INTEGER PRIMARY KEY, root BLOB NOT NULL, note TEXT NOT NULL,"
           " at INTEGER NOT NULL)",
           // API tokens: only a keyed hash is stored.
           "CREATE TABLE tokens (name TEXT PRIMARY KEY, token_id TEXT NOT NULL UNIQUE, role TEXT NOT NULL,"
           " hash BLOB NOT NULL UNIQUE, created_at INTEGER NOT NULL, revoked_at INTEGER)",
       }},
      {2,
       {
           // The consent ledger: append-only events, and the derived current
           // state per subject x purpose x channel (materialised).
           "CREATE TABLE consent_events (id INTEGER PRIMARY KEY, subject_id BLOB NOT NULL, purpose TEXT NOT NULL,"
           " channel TEXT NOT NULL, event TEXT NOT NULL, status TEXT NOT NULL, at INTEGER NOT NULL,"
           " recorded_at INTEGER NOT NULL, source TEXT NOT NULL, lawful_basis TEXT NOT NULL,"
           " notice_version TEXT NOT NULL, expires_at INTEGER, principal TEXT NOT NULL, proof TEXT NOT NULL,"
           " confirm_hash BLOB, confirm_expires INTEGER, confirmed_by INTEGER)",
           "CREATE INDEX consent_events_by_subject ON consent_events (subject_id, id)",
           "CREATE UNIQUE INDEX consent_events_by_confirm ON consent_events (confirm_hash)",
           "CREATE TABLE consent_state (subject_id BLOB NOT NULL, purpose TEXT NOT NULL, channel TEXT NOT NULL,"
           " state TEXT NOT NULL, since INTEGER NOT NULL, expires_at INTEGER, event_id INTEGER NOT NULL,"
           " PRIMARY KEY (subject_id, purpose, channel))",
           "CREATE INDEX consent_state_by_purpose ON consent_state (purpose, channel, state, subject_id)",
           "ALTER TABLE subjects ADD COLUMN objected INTEGER NOT NULL DEFAULT 0",
           // RFM scores and segments, materialised for campaign filters.
           "CREATE TABLE rfm_scores (subject_id BLOB PRIMARY KEY, r INTEGER NOT NULL, f INTEGER NOT NULL,"
           " m INTEGER NOT NULL, segment TEXT NOT NULL, clv_minor INTEGER NOT NULL, computed_at INTEGER NOT NULL)",
           "CREATE INDEX rfm_by_segment ON rfm_scores (segment, subject_id)",
           // Subjects named by multi-subject audit entries (campaign pages).
           "CREATE TABLE audit_subject_refs (subject_id TEXT NOT NULL, seq INTEGER NOT NULL,"
           " PRIMARY KEY (subject_id, seq))",
       }},
      {3,
       {
           // Data-subject requests and their timelines.
           "CREATE TABLE dsr_requests (id TEXT PRIMARY KEY, type TEXT NOT NULL, regime TEXT NOT NULL,"
           " status TEXT NOT NULL, subject_id BLOB, identified_by TEXT NOT NULL, channel TEXT NOT NULL,"
           " received_at INTEGER NOT NULL, due_at INTEGER NOT NULL, confirm_by INTEGER, extensions INTEGER NOT NULL,"
           " duplicate_of TEXT, denial_reason TEXT, changes TEXT, report TEXT, created_by TEXT NOT NULL,"
           " updated_at INTEGER NOT NULL)",
           "CREATE INDEX dsr_by_status_due ON dsr_requests (status, due_at)",
           "CREATE INDEX dsr_by_due ON dsr_requests (due_at)",
           "CREATE INDEX dsr_by_subject ON dsr_requests (subject_id, type, status)",
           "CREATE TABLE dsr_events (request_id TEXT NOT NULL, seq INTEGER NOT NULL, at INTEGER NOT NULL,"
           " actor TEXT NOT NULL, from_status TEXT NOT NULL, to_status TEXT NOT NULL, note TEXT NOT NULL,"
           " PRIMARY KEY (request_id, seq))",
       }},
      {4,
       {
           // Personal-data breaches, their timelines and affected subjects.
           "CREATE TABLE breaches (id TEXT PRIMARY KEY, status TEXT NOT NULL, discovered_at INTEGER NOT NULL,"
           " occurred_from INTEGER, occurred_to INTEGER, description TEXT NOT NULL, categories TEXT NOT NULL,"
           " regimes TEXT NOT NULL, severity TEXT NOT NULL, high_risk INTEGER NOT NULL, affected_count INTEGER,"
           " residents TEXT, computation TEXT, created_by TEXT NOT NULL, updated_at INTEGER NOT NULL)",
           "CREATE INDEX breaches_by_status ON breaches (status, discovered_at)",
           "CREATE TABLE breach_events (breach_id TEXT NOT NULL, seq INTEGER NOT NULL, at INTEGER NOT NULL,"
           " recorded_at INTEGER NOT NULL, actor TEXT NOT NULL, type TEXT NOT NULL, note TEXT NOT NULL,"
           " PRIMARY KEY (breach_id, seq))",
           "CREATE TABLE breach_affected (breach_id TEXT NOT NULL, subject_id BLOB NOT NULL, fields TEXT NOT NULL,"
           " PRIMARY KEY (breach_id, subject_id))",
       }},
      {5,
       {
           // RFM reads (subject, time, amount) of every order: a covering
           // index turns 1 M random row lookups into one index scan. It
           // supersedes orders_by_subject (same leading columns).
           "CREATE INDEX orders_by_subject_at_amount ON orders (subject_id, at, amount_minor)",
           "DROP INDEX orders_by_subject",
       }},
      {6,
       {
           // Subject refs of multi-subject audit entries (campaign pages):
           // WITHOUT ROWID keeps them in one B-tree instead of a rowid table
           // plus its primary-key index, halving the index writes a campaign
           // page commits before its plaintext is handed out.
           "CREATE TABLE audit_subject_refs_v6 (subject_id TEXT NOT NULL, seq INTEGER NOT NULL,"
           " PRIMARY KEY (subject_id, seq)) WITHOUT ROWID",
           "INSERT INTO audit_subject_refs_v6 (subject_id, seq) SELECT subject_id, seq FROM audit_subject_refs",
           "DROP TABLE audit_subject_refs",
           "ALTER TABLE audit_subject_refs_v6 RENAME TO audit_subject_refs",
       }},
      {7,
       {
           // One subject index for every audit entry (its subject_id and each
           // of its subject_ids), in buckets of consecutive entries: the audit
           // fold inserts only into the newest bucket, a few MiB that stay in
           // the page cache, where (subject_id, seq) scattered every insert
           // over the whole index (fold cost tripled by 1 M entries). A
           // subject query seeks once per bucket from the one its paging
           // cursor falls in (audit_subject_buckets: where each starts).
           // Existing rows are bucketed by seq / 65536; new buckets are cut
           // by row count (AuditLog).
           "CREATE TABLE audit_subject_index (bucket INTEGER NOT NULL, subject_id TEXT NOT NULL,"
           " seq INTEGER NOT NULL, PRIMARY KEY (bucket, subject_id, seq)) WITHOUT ROWID",
           "CREATE TABLE audit_subject_buckets (bucket INTEGER PRIMARY KEY, first_seq INTEGER NOT NULL)",
           "INSERT OR IGNORE INTO audit_subject_index (bucket, subject_id, seq)"
           " SELECT seq / 65536, subject_id, seq FROM audit_entries WHERE subject_id <> ''",
           "INSERT OR IGNORE INTO audit_subject_index (bucket, subject_id, seq)"
           " SELECT seq / 65536, subject_id, seq FROM audit_subject_refs",
           "INSERT INTO audit_subject_buckets (bucket, first_seq)"
           " SELECT bucket, min(seq) FROM audit_subject_index GROUP BY bucket",
           "DROP INDEX audit_by_subject",
           "DROP TABLE audit_subject_refs",
       }},
      {8,
       {
           // Every subject a data-subject request's identifier matched (an
           // identifier can match duplicates): fulfilment covers them all.
           "CREATE TABLE dsr_subjects (request_id TEXT NOT NULL, subject_id BLOB NOT NULL,"
           " PRIMARY KEY (request_id, subject_id))",
           "CREATE INDEX dsr_subjects_by_subject ON dsr_subjects (subject_id)",
           "INSERT INTO dsr_subjects (request_id, subject_id)"
           " SELECT id, subject_id FROM dsr_requests WHERE subject_id IS NOT NULL",
       }},
      {9,
       {
           // The openings of audit entries that commit to their subjects
           // (entry version 2, audit/FORMAT.md §1.5): each subject's id and
           // salt, in the entry's order, as one blob. The entry's bytes hold
           // only the count and a Merkle root, so a subject's access package
           // can prove its membership without naming the others; the ids live
           // here (and in audit_subject_index) for queries, breach scans and
           // the auditor's export.
           "CREATE TABLE audit_subject_openings (seq INTEGER PRIMARY KEY, openings BLOB NOT NULL)",
       }},
      {10,
       {
           // The outbox module (include/custos/outbox/outbox.h): events for
           // downstream systems, inserted in the transaction of the change
           // they report; `payload` is the sealed body, cleared on delivery.
           // next_attempt_at is also a pending event's lease end once claimed.
           "CREATE TABLE outbox_events (id TEXT PRIMARY KEY, system TEXT NOT NULL, type TEXT NOT NULL,"
           " request_id TEXT NOT NULL, subject_id TEXT NOT NULL, status TEXT NOT NULL, created_at INTEGER NOT NULL,"
           " next_attempt_at INTEGER NOT NULL, delivered_at INTEGER, attempts INTEGER NOT NULL,"
           " last_status INTEGER, last_error TEXT, confirmation_required INTEGER NOT NULL, payload BLOB)",
           "CREATE INDEX outbox_events_due ON outbox_events (status, next_attempt_at)",
           "CREATE INDEX outbox_events_by_request ON outbox_events (request_id)",
           // Each system's confirmation that it acted on a request.
           "CREATE TABLE outbox_confirmations (request_id TEXT NOT NULL, system TEXT NOT NULL, at INTEGER NOT NULL,"
           " principal TEXT NOT NULL, outcome TEXT NOT NULL, note TEXT, PRIMARY KEY (request_id, system))",
       }},
  };
  return all;
}

}  // namespace custos::store
