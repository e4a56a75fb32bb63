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

const std::vector<store::ModuleMigrations>& schema() {
  static const std::vector<store::ModuleMigrations> all = {
      store::keys_migrations(), audit::migrations(),   access::migrations(), records::migrations(),
      consent::migrations(),    dsr::migrations(),     breach::migrations(),   outbox::migrations(),
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

}  // namespace custos::service
