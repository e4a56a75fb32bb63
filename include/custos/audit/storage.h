// custos/audit/storage.h — the tables the audit log owns (audit_entries,
// audit_nodes, audit_checkpoints, audit_subject_*): their migrations, and
// the reads other modules need, inside their transaction.
#pragma once

#include <cstdint>
#include <optional>
#include <utility>

#include "custos/store/migrations.h"
#include "custos/store/store.h"

namespace custos::audit {

store::ModuleMigrations migrations();

}  // namespace custos::audit
