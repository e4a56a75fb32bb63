#include "custos/service/schema.h"

#include "custos/access/storage.h"
#include "custos/audit/storage.h"
#include "custos/breach/storage.h"
#include "custos/consent/storage.h"
#include "custos/dsr/storage.h"
#include "custos/error.h"
#include "custos/outbox/storage.h"
#include "custos/records/storage.h"

namespace custos::service {

namespace {

// The service's own tables: bulk imports' progress (service_import.cpp),
// so an import resumes after its last committed chunk.
store::ModuleMigrations import_migrations() {
  return {"import",
          {
              {1,
               0,
               {
                   "CREATE TABLE import_runs (import_id TEXT PRIMARY KEY, principal TEXT NOT NULL,"
                   " committed_line INTEGER NOT NULL, succeeded INTEGER NOT NULL, failed INTEGER NOT NULL,"
                   " created INTEGER NOT NULL, updated INTEGER NOT NULL, started_at INTEGER NOT NULL,"
                   " updated_at INTEGER NOT NULL)",
                   // One row per failed line (its latest error), never a personal value.
                   "CREATE TABLE import_errors (import_id TEXT NOT NULL, line INTEGER NOT NULL, code TEXT NOT NULL,"
                   " detail TEXT NOT NULL, PRIMARY KEY (import_id, line))",
               }},
          }};
}

// Several custosd nodes on one store (service_cluster.cpp): policy reloads
// every node follows, the nodes' reports, schedules one node runs, and
// leases one node holds.
store::ModuleMigrations cluster_migrations() {
  return {"cluster",
          {
              {1,
               0,
               {
                   "CREATE TABLE policy_reloads (generation INTEGER PRIMARY KEY, requested_at INTEGER NOT NULL,"
                   " requested_by TEXT NOT NULL)",
                   "CREATE TABLE cluster_nodes (node_id TEXT PRIMARY KEY, seen_at INTEGER NOT NULL,"
                   " policy_generation INTEGER NOT NULL, policy_applied_at INTEGER NOT NULL,"
                   " policy_ok INTEGER NOT NULL, policy_detail TEXT NOT NULL)",
                   "CREATE TABLE schedules (name TEXT PRIMARY KEY, next_run_at INTEGER NOT NULL,"
                   " claimed_by TEXT NOT NULL)",
               }},
              {2,
               0,
               {
                   // Work one node does at a time (signing audit checkpoints):
                   // held until expires_at, renewed by its holder, taken over
                   // by another node once the term ends (Service::hold_lease).
                   "CREATE TABLE leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, since INTEGER NOT NULL,"
                   " expires_at INTEGER NOT NULL)",
               }},
          }};
}

}  // namespace

const std::vector<store::ModuleMigrations>& schema() {
  static const std::vector<store::ModuleMigrations> all = {
      store::keys_migrations(), audit::migrations(),   access::migrations(), records::migrations(),
      consent::migrations(),    dsr::migrations(),     breach::migrations(),   outbox::migrations(),
      import_migrations(),      privacy_migrations(),  cluster_migrations(),
  };
  return all;
}

void migrate_schema(store::Store& store) {
  store::migrate(store, schema());
  auto tx = store.begin(store::TxMode::read);
  for (const auto& [module, version] : store::schema_versions(*tx)) {
    bool known = false;
    for (const auto& m : schema()) known = known || m.module == module;
    if (!known)
      throw Error(ErrorCode::storage, "the database's schema has module '" + module + "' at version " +
                                          std::to_string(version) +
                                          ", which this binary does not know (version 0); upgrade Custos to open it");
  }
}

SchemaChange migrate_schema_noting_changes(store::Store& store) {
  SchemaChange change;
  {
    auto tx = store.begin(store::TxMode::read);
    try {
      change.before = store::schema_versions(*tx);
    } catch (const Error&) {
      // No bookkeeping table yet: an empty database or a pre-module release's.
    }
    if (change.before.empty()) change.legacy_global = store.legacy_schema_version(*tx);
  }
  migrate_schema(store);
  auto tx = store.begin(store::TxMode::read);
  change.after = store::schema_versions(*tx);
  return change;
}

std::string SchemaChange::describe() const {
  std::string out = legacy_global > 0 ? "from global " + std::to_string(legacy_global) + ";" : "";
  for (const auto& [module, version] : after) {
    const auto it = before.find(module);
    const int was = it == before.end() ? 0 : it->second;
    if (was == version) continue;
    out += (out.empty() ? "" : " ") + module + " " + std::to_string(was) + "->" + std::to_string(version);
  }
  return out;
}

}  // namespace custos::service
