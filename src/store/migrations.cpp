#include "custos/store/migrations.h"

#include <algorithm>
#include <set>

#include "custos/error.h"

namespace custos::store {
namespace {

// The runner's bookkeeping, the one table the store itself owns.
constexpr std::string_view kCreateVersions =
    "CREATE TABLE IF NOT EXISTS schema_versions (module TEXT PRIMARY KEY, version INTEGER NOT NULL)";
// A database adopted from a global version keeps that version here, so a
// module first registered later (or by another binary) starts where the
// global version left it, not at 0.
constexpr std::string_view kLegacyRow = "(legacy global)";

void check_steps(const ModuleMigrations& m) {
  if (m.module.empty() || m.module == kLegacyRow) throw Error(ErrorCode::internal, "migrations without a module name");
  int expected = 1;
  for (const Migration& step : m.steps) {
    if (step.version != expected++)
      throw Error(ErrorCode::internal, "migrations of module '" + std::string(m.module) + "' are not numbered 1..n");
  }
}

std::optional<int> recorded_version(Transaction& tx, std::string_view module) {
  std::optional<int> v;
  tx.exec("SELECT version FROM schema_versions WHERE module = ?", {module},
          [&](const Row& r) { v = static_cast<int>(r.integer(0)); });
  return v;
}

void record_version(Transaction& tx, std::string_view module, int version) {
  if (tx.exec("UPDATE schema_versions SET version = ? WHERE module = ?", {version, module}) == 0)
    tx.exec("INSERT INTO schema_versions (module, version) VALUES (?, ?)", {module, version});
}

// The version a module has in a database adopted from global version `legacy`:
// its newest step that global version had applied.
int adopted_version(const ModuleMigrations& m, int legacy) {
  int v = 0;
  for (const Migration& step : m.steps)
    if (step.legacy_global > 0 && step.legacy_global <= legacy) v = std::max(v, step.version);
  return v;
}

// The module's version inside `tx`: recorded, else adopted from the legacy row.
int current_version(Transaction& tx, const ModuleMigrations& m) {
  if (const auto v = recorded_version(tx, m.module)) return *v;
  return adopted_version(m, recorded_version(tx, kLegacyRow).value_or(0));
}

[[noreturn]] void refuse_newer(const std::string& what, int found, int supported) {
  throw Error(ErrorCode::storage, "the database's schema " + what + " is version " + std::to_string(found) +
                                      ", newer than this binary supports (version " + std::to_string(supported) +
                                      "); upgrade Custos to open it");
}

}  // namespace

void migrate(Store& store, const std::vector<ModuleMigrations>& modules) {
  std::set<std::string_view> names;
  for (const auto& m : modules) {
    check_steps(m);
    if (!names.insert(m.module).second)
      throw Error(ErrorCode::internal, "module '" + std::string(m.module) + "' registered twice");
  }
  std::vector<int> start(modules.size(), 0);
  {
    // One short write transaction when everything is current (every open).
    auto tx = store.begin(TxMode::write);
    tx->exec(kCreateVersions);
    if (tx->scalar("SELECT count(*) FROM schema_versions").value_or(0) == 0) {
      const int legacy = store.legacy_schema_version(*tx);
      if (legacy > kLastLegacyGlobalVersion) refuse_newer("(global)", legacy, kLastLegacyGlobalVersion);
      if (legacy > 0) record_version(*tx, kLegacyRow, legacy);
    }
    // Refuse before any step runs: nothing is upgraded around a newer module.
    for (std::size_t i = 0; i < modules.size(); ++i) {
      const auto& m = modules[i];
      start[i] = current_version(*tx, m);
      if (start[i] > m.latest()) refuse_newer("of module '" + std::string(m.module) + "'", start[i], m.latest());
      // Adopted (or new): record where it starts.
      if (!recorded_version(*tx, m.module)) record_version(*tx, m.module, start[i]);
    }
    tx->commit();
  }
  for (std::size_t i = 0; i < modules.size(); ++i) {
    const auto& m = modules[i];
    for (const Migration& step : m.steps) {
      if (step.version <= start[i]) continue;
      auto tx = store.begin(TxMode::write);
      // Re-read under the write lock: another process may have migrated.
      const int v = current_version(*tx, m);
      if (v > m.latest()) refuse_newer("of module '" + std::string(m.module) + "'", v, m.latest());
      if (v >= step.version) continue;
      for (std::string_view sql : step.statements) tx->exec(sql);
      record_version(*tx, m.module, step.version);
      tx->commit();
    }
  }
}

std::map<std::string, int> schema_versions(Transaction& tx) {
  std::map<std::string, int> out;
  tx.exec("SELECT module, version FROM schema_versions ORDER BY module", {},
          [&](const Row& r) { out[std::string(r.text(0))] = static_cast<int>(r.integer(1)); });
  out.erase(std::string(kLegacyRow));
  return out;
}

ModuleMigrations keys_migrations() {
  return {"keys",
          {
              {1,
               1,
               {
                   "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
                   // Keys wrapped by a KEK version: blind-index keys, the audit signing seed.
                   "CREATE TABLE wrapped_keys (slot TEXT PRIMARY KEY, kek_version INTEGER NOT NULL,"
                   " wrapped BLOB NOT NULL)",
               }},
          }};
}

}  // namespace custos::store
