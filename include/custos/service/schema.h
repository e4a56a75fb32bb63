// custos/service/schema.h — the vault's schema: every module's migrations,
// registered in dependency order (store/migrations.h).
#pragma once

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

}  // namespace custos::service
