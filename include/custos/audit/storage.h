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

// The smallest and the largest sequence number of the folded entries timed in
// [from_us, to_us); nullopt if there is none. Every entry timed inside the
// window lies between them, whatever the clock did.
std::optional<std::pair<std::int64_t, std::int64_t>> seq_range_timed_in(store::Transaction& tx, std::int64_t from_us,
                                                                        std::int64_t to_us);

}  // namespace custos::audit
