// The DSR desk's tables (custos/dsr/storage.h).
#include "custos/dsr/storage.h"

namespace custos::dsr {

store::ModuleMigrations migrations() {
  // `legacy_global`: the global schema version (1..9) that applied each step.
  return {"dsr",
          {
              {1,
               3,
               {
                   // Data-subject requests and their timelines.
                   "CREATE TABLE dsr_requests (id TEXT PRIMARY KEY, type TEXT NOT NULL, regime TEXT NOT NULL,"
                   " status TEXT NOT NULL, subject_id BLOB, identified_by TEXT NOT NULL, channel TEXT NOT NULL,"
                   " received_at INTEGER NOT NULL, due_at INTEGER NOT NULL, confirm_by INTEGER,"
                   " extensions INTEGER NOT NULL, duplicate_of TEXT, denial_reason TEXT, changes TEXT, report TEXT,"
                   " created_by TEXT NOT NULL, updated_at INTEGER NOT NULL)",
                   "CREATE INDEX dsr_by_status_due ON dsr_requests (status, due_at)",
                   "CREATE INDEX dsr_by_due ON dsr_requests (due_at)",
                   "CREATE INDEX dsr_by_subject ON dsr_requests (subject_id, type, status)",
                   "CREATE TABLE dsr_events (request_id TEXT NOT NULL, seq INTEGER NOT NULL, at INTEGER NOT NULL,"
                   " actor TEXT NOT NULL, from_status TEXT NOT NULL, to_status TEXT NOT NULL, note TEXT NOT NULL,"
                   " PRIMARY KEY (request_id, seq))",
               }},
              {2,
               8,
               {
                   // Every subject a data-subject request's identifier matched (an
                   // identifier can match duplicates): fulfilment covers them all.
                   "CREATE TABLE dsr_subjects (request_id TEXT NOT NULL, subject_id BLOB NOT NULL,"
                   " PRIMARY KEY (request_id, subject_id))",
                   "CREATE INDEX dsr_subjects_by_subject ON dsr_subjects (subject_id)",
                   "INSERT INTO dsr_subjects (request_id, subject_id)"
                   " SELECT id, subject_id FROM dsr_requests WHERE subject_id IS NOT NULL",
               }},
              {3,
               0,
               {
                   // The requester's own words (the privacy page's note),
                   // sealed by the service under the request's subject's key:
                   // an erasure shreds them with the rest of the subject.
                   // (A table of its own, not a column: SQLite 3.15 cannot
                   // drop a column, and the legacy-layout tests rebuild old
                   // layouts by dropping what later steps made.)
                   "CREATE TABLE dsr_event_notes (request_id TEXT NOT NULL, seq INTEGER NOT NULL,"
                   " sealed TEXT NOT NULL, PRIMARY KEY (request_id, seq))",
               }},
          }};
}

}  // namespace custos::dsr
