// custos/audit/access_package.h — one subject's own access log, provable
// offline (audit/FORMAT.md §5), for the DSR access export.
//
// Every entry the subject index holds for the subject becomes an inclusion
// bundle against one checkpoint signed when the package is built; an entry
// that commits to its subjects (version 2) carries the subject's membership
// opening (salt, index, count, path), so the package proves the subject is
// among the entry's subjects and names no other. An entry written before
// version 2 that lists other subjects in clear is carried as its leaf hash
// only ("withheld"): its inclusion is proven, its bytes (naming the others)
// are not given. Nothing in a package names another subject.
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <string_view>

#include "custos/audit/audit_log.h"

namespace custos::audit {

// Signs (if the log grew) and returns the checkpoint a package is proven against.
Checkpoint access_package_checkpoint(AuditLog& log);

// Calls `bundle` with each bundle of `subject_id`'s access log proven against
// `checkpoint`, in sequence order (entries after it are left out), one at a
// time, so a caller can stream them.
void for_each_access_bundle(AuditLog& log, std::string_view subject_id, const Checkpoint& checkpoint,
                            const std::function<void(nlohmann::json bundle)>& bundle);

// The whole access log object of a DSR access export:
//   {"verifier_key", "checkpoint", "tree_size", "subject_id", "entries": [bundles]}
// which `custos-audit verify-package` verifies as it stands.
nlohmann::json subject_access_log(AuditLog& log, std::string_view subject_id);

}  // namespace custos::audit
