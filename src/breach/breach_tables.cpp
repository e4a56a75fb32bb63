// The breach book's tables (custos/breach/storage.h).
#include "custos/breach/storage.h"

namespace custos::breach {

store::ModuleMigrations migrations() {
  // `legacy_global`: the global schema version (1..9) that applied each step.
  return {"breach",
          {
              {1,
               4,
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
                   "CREATE TABLE breach_affected (breach_id TEXT NOT NULL, subject_id BLOB NOT NULL,"
                   " fields TEXT NOT NULL, PRIMARY KEY (breach_id, subject_id))",
               }},
          }};
}

}  // namespace custos::breach
