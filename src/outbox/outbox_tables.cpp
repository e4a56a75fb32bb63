// The outbox's tables (custos/outbox/storage.h).
#include "custos/outbox/storage.h"

namespace custos::outbox {

store::ModuleMigrations migrations() {
  // Newer than the global schema versions (legacy_global 0).
  return {"outbox",
          {
              {1,
               0,
               {
                   // Events for downstream systems (include/custos/outbox/outbox.h),
                   // inserted in the transaction of the change they report;
                   // `payload` is the sealed body, cleared on delivery.
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
          }};
}

}  // namespace custos::outbox
