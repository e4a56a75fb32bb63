// custos/store/migrations.h — the schema, contributed module by module.
//
// Every module owns its tables: it defines them, migrates them and is the
// only one whose SQL names them (tests/core/layering_test.cpp checks this).
// A module contributes its steps as ModuleMigrations, versioned 1, 2, ...
// on its own; the service hands every module's steps to migrate() in
// dependency order (store::keys_migrations() first). The store keeps only
// the runner and its bookkeeping table, schema_versions (module, version).
//
// Releases before per-module versions kept one global version (SQLCipher:
// PRAGMA user_version, 1..9). A step says which global version applied it
// (`legacy_global`), so such a database is adopted in place: every module
// starts at the newest step its global version had applied, nothing is
// rewritten and no data moves.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "custos/store/store.h"

namespace custos::store {

struct Migration {
  int version = 0;  // 1, 2, ... within the module
  // The pre-module global schema version that applied this step (0: none,
  // the step is newer than the global versions).
  int legacy_global = 0;
  // Portable SQL (store.h). Run in one write transaction with the version bump.
  std::vector<std::string_view> statements;
};

struct ModuleMigrations {
  std::string_view module;
  std::vector<Migration> steps;  // versions 1..n, ascending
  int latest() const { return steps.empty() ? 0 : steps.back().version; }
};

// The last global schema version before per-module versions.
inline constexpr int kLastLegacyGlobalVersion = 9;

// Brings each module of `modules` to its latest version, in the order given;
// each step commits on its own with its version, so a crash leaves a module
// at one version or the next. Safe against concurrent openers (steps re-check
// the version inside the write transaction).
// Throws Error(storage), before changing anything of that module, if the
// database holds a module version (or a legacy global version) newer than
// this binary's: the message names both versions.
void migrate(Store& store, const std::vector<ModuleMigrations>& modules);

// Module -> version, as recorded (empty before the first migrate()).
std::map<std::string, int> schema_versions(Transaction& tx);

// The store's own module "keys": `meta` (the KEK version and other
// store-wide settings) and `wrapped_keys` (named keys wrapped by the KEK).
ModuleMigrations keys_migrations();

}  // namespace custos::store
