// custos/dsr/storage.h — the tables the DSR desk owns (dsr_requests,
// dsr_events, dsr_subjects) and their migrations.
#pragma once

#include "custos/store/migrations.h"

namespace custos::dsr {

store::ModuleMigrations migrations();

}  // namespace custos::dsr
