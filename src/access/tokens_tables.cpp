// The token store's table (custos/access/storage.h).
#include "custos/access/storage.h"

namespace custos::access {

store::ModuleMigrations migrations() {
  // `legacy_global`: the global schema version (1..9) that applied each step.
  return {"access",
          {
              {1,
               1,
               {
                   // API tokens: only a keyed hash is stored.
                   "CREATE TABLE tokens (name TEXT PRIMARY KEY, token_id TEXT NOT NULL UNIQUE, role TEXT NOT NULL,"
                   " hash BLOB NOT NULL UNIQUE, created_at INTEGER NOT NULL, revoked_at INTEGER)",
               }},
          }};
}

bool token_name_known(store::Transaction& tx, const std::string& name) {
  return tx.scalar("SELECT count(*) FROM tokens WHERE name = ?", {name}).value_or(0) > 0;
}

bool token_id_known(store::Transaction& tx, const std::string& token_id) {
  return tx.scalar("SELECT count(*) FROM tokens WHERE token_id = ?", {token_id}).value_or(0) > 0;
}

}  // namespace custos::access
