// custos/breach/storage.h — the tables the breach book owns (breaches,
// breach_events, breach_affected) and their migrations.
#pragma once

#include "custos/store/migrations.h"

namespace custos::breach {

store::ModuleMigrations migrations();

}  // namespace custos::breach
