// custos/service/schema.h — the vault's schema: every module's migrations,
// registered in dependency order (store/migrations.h).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "custos/store/migrations.h"
#include "custos/store/store.h"

namespace custos::service {

// keys (store), audit, access, records, consent, dsr, breach: lower modules
// first, so a module's migration may rely on what lower modules created.
const std::vector<store::ModuleMigrations>& schema();

// The privacy page's links (service_privacy.cpp).
store::ModuleMigrations privacy_migrations();

// Brings `store` to schema() (store::migrate). Also refuses a database that
// records a module this binary does not know (written by a newer release):
// Error(storage) naming the module and its version.
void migrate_schema(store::Store& store);

// What migrate_schema changed in an existing vault: every module's version
// before and after, and the global version a database from a release before
// per-module versions was adopted from (0: none).
struct SchemaChange {
  int legacy_global = 0;
  std::map<std::string, int> before, after;
  // True when an existing vault's schema moved (not when an empty database
  // was created: that is `init`, audited as such).
  bool upgraded() const { return (legacy_global > 0 || !before.empty()) && before != after; }
  // "from global 6; audit 0->6 records 2->4 ..." (non-personal, for the audit detail).
  std::string describe() const;
};

// migrate_schema, reporting what it changed. Two processes opening the same
// old database at once may both report the change (each saw the old
// versions first); the steps themselves run once.
SchemaChange migrate_schema_noting_changes(store::Store& store);

}  // namespace custos::service
