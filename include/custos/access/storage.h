// custos/access/storage.h — the table the token store owns (tokens): its
// migrations, and the lookups other modules need, inside their transaction.
#pragma once

#include <string>

#include "custos/store/migrations.h"
#include "custos/store/store.h"

namespace custos::access {

store::ModuleMigrations migrations();

// Whether a token (revoked or not) was ever issued under `name` / with the public id `token_id`.
bool token_name_known(store::Transaction& tx, const std::string& name);
bool token_id_known(store::Transaction& tx, const std::string& token_id);

}  // namespace custos::access
