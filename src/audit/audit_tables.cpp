// The audit log's tables (custos/audit/storage.h). The log itself is
// audit_log.cpp; the DDL lives here so schema changes and fold changes do
// not meet in one file.
#include "custos/audit/storage.h"

namespace custos::audit {

store::ModuleMigrations migrations() {
  // `legacy_global`: the global schema version (1..9) that applied each step.
  return {"audit",
          {
              {1,
               1,
               {
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
               }},
              {2,
               2,
               {
                   // Subjects named by multi-subject audit entries (campaign pages).
                   "CREATE TABLE audit_subject_refs (subject_id TEXT NOT NULL, seq INTEGER NOT NULL,"
                   " PRIMARY KEY (subject_id, seq))",
               }},
              {3,
               6,
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
              {4,
               7,
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
              {5,
               9,
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
              {6,
               0,
               {
                   // Issue 16, item 4, a cheaper fold: the audit log
                   // in blocks of 64 consecutive entries (audit::kBlockEntries; the
                   // 64 below is that constant): instead of four secondary indexes
                   // on every entry (principal, purpose, operation, time), each
                   // completed block gets one posting per distinct principal,
                   // purpose and operation (`mask`: bit i set if entry block*64+i
                   // has that value) and its time range; and audit_nodes keeps only
                   // subtrees of level >= 6 (a block and up): the lower ones are
                   // hashed again from the block's leaves for a proof. The open
                   // (last, incomplete) block has no postings and is filtered row
                   // by row. Idempotent (a rerun rebuilds both tables), in portable
                   // SQL: the mask is a sum of distinct powers of two, i.e. their OR.
                   "CREATE TABLE IF NOT EXISTS audit_blocks (block INTEGER PRIMARY KEY, min_at INTEGER NOT NULL,"
                   " max_at INTEGER NOT NULL)",
                   "CREATE TABLE IF NOT EXISTS audit_postings (kind INTEGER NOT NULL, value TEXT NOT NULL,"
                   " block INTEGER NOT NULL, mask INTEGER NOT NULL, PRIMARY KEY (kind, value, block))",
                   "DELETE FROM audit_blocks",
                   "DELETE FROM audit_postings",
                   "INSERT INTO audit_blocks (block, min_at, max_at) SELECT seq / 64, min(at), max(at) FROM audit_entries"
                   " WHERE seq < (SELECT (max(seq) + 1) / 64 * 64 FROM audit_entries) GROUP BY seq / 64",
                   "INSERT INTO audit_postings (kind, value, block, mask)"
                   " SELECT 0, principal, seq / 64, sum(CAST(1 AS BIGINT) << CAST(seq % 64 AS INTEGER)) FROM audit_entries"
                   " WHERE seq < (SELECT (max(seq) + 1) / 64 * 64 FROM audit_entries) GROUP BY principal, seq / 64",
                   "INSERT INTO audit_postings (kind, value, block, mask)"
                   " SELECT 1, purpose, seq / 64, sum(CAST(1 AS BIGINT) << CAST(seq % 64 AS INTEGER)) FROM audit_entries"
                   " WHERE seq < (SELECT (max(seq) + 1) / 64 * 64 FROM audit_entries) GROUP BY purpose, seq / 64",
                   "INSERT INTO audit_postings (kind, value, block, mask)"
                   " SELECT 2, operation, seq / 64, sum(CAST(1 AS BIGINT) << CAST(seq % 64 AS INTEGER)) FROM audit_entries"
                   " WHERE seq < (SELECT (max(seq) + 1) / 64 * 64 FROM audit_entries) GROUP BY operation, seq / 64",
                   "DELETE FROM audit_nodes WHERE level < 6",
                   "DROP INDEX IF EXISTS audit_by_principal",
                   "DROP INDEX IF EXISTS audit_by_purpose",
                   "DROP INDEX IF EXISTS audit_by_operation",
                   "DROP INDEX IF EXISTS audit_by_time",
               }},
              {7,
               0,
               {
                   // Issue 16, item 4, the entries themselves in blocks: each block
                   // completed from now on is stored as one row (its 64 entries,
                   // each as a 4-byte big-endian length and its canonical bytes;
                   // src/audit/entry_store.h), and its entries' rows in
                   // audit_entries go. audit_entries keeps the open block's
                   // entries, and those of the blocks completed before this
                   // migration, which stay where they are (nothing is moved, so the
                   // migration is instant on a log of any size).
                   "CREATE TABLE IF NOT EXISTS audit_entry_blocks (block INTEGER PRIMARY KEY, entries BLOB NOT NULL)",
               }},
              {8,
               0,
               {
                   // Issue 16, item 4, the subject index in sorted runs
                   // (src/audit/subject_runs.h): a row per (subject, entry)
                   // was a random B-tree insert per entry, half the fold's CPU.
                   // From the first block boundary at or after the log's
                   // current size, a completed block's subjects are one row
                   // (audit_block_subjects) until a run of blocks completes and
                   // is merged into sorted chunks (audit_subject_runs). The
                   // entries before it keep their audit_subject_index rows
                   // (nothing is moved: the migration is instant).
                   "CREATE TABLE audit_block_subjects (block INTEGER PRIMARY KEY, refs BLOB NOT NULL)",
                   "CREATE TABLE audit_subject_runs (first_block INTEGER NOT NULL, first_ref BLOB NOT NULL,"
                   " refs BLOB NOT NULL, PRIMARY KEY (first_block, first_ref))",
                   // One row: the first entry the runs index, and the first
                   // block of the open run (its blocks' rows must all be there).
                   "CREATE TABLE audit_subject_runs_start (first_seq INTEGER NOT NULL, open_run INTEGER NOT NULL)",
                   "INSERT INTO audit_subject_runs_start (first_seq, open_run)"
                   " SELECT (coalesce(max(n), 0) + 63) / 64 * 64, (coalesce(max(n), 0) + 63) / 64 FROM"
                   " (SELECT max(seq) + 1 AS n FROM audit_entries"
                   " UNION ALL SELECT (max(block) + 1) * 64 FROM audit_entry_blocks) AS sizes",
               }},
              {9,
               0,
               {
                   // Issue 16: on a database shared by several nodes, a read's
                   // entry commits here before its plaintext leaves (one
                   // small insert, no writers' lock, no tree), and a fold
                   // moves it into the tree: the database's counterpart of a
                   // node's local journal (AuditLog::enable_pending_table).
                   // `stream` is one process's random id, `counter` runs from
                   // 1 within it, `at` is the entry's time (folds take entries
                   // in time order); `payload` is the journal record: the
                   // entry's canonical bytes without its tree position, and
                   // the openings of an entry that commits to its subjects.
                   "CREATE TABLE audit_pending (stream TEXT NOT NULL, counter INTEGER NOT NULL, at INTEGER NOT NULL,"
                   " payload BLOB NOT NULL, PRIMARY KEY (stream, counter))",
                   "CREATE INDEX audit_pending_by_time ON audit_pending (at, stream, counter)",
               }},
          }};
}


}  // namespace custos::audit
