// custos/service/policy_upgrade.h — `custos policy upgrade`: a data
// directory from the previous release keeps its policies/regulations.yaml
// (format 1: a `holidays` list, no calendars.yaml), which this release
// refuses to load. The upgrade converts it (dsr::upgrade_regulations) and
// records a `policy.upgrade` entry in the vault's audit log.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "custos/crypto/passphrase.h"

namespace custos::service {

struct PolicyUpgradeOptions {
  std::filesystem::path data_dir;
  std::string store_url;                           // empty: what the data dir remembers, else SQLCipher
  std::optional<crypto::Passphrase> passphrase;
  std::filesystem::path policy_dir;                // empty: <data-dir>/policies
  std::filesystem::path shipped_dir;               // this release's policies (the new rules)
};

// Opens the vault's audit log first (no vault, no key: nothing is changed),
// upgrades the policy files, then appends `policy.upgrade` (operation, the
// versions and what was added; no personal data). If that entry cannot be
// written the old files are put back and the error passes on (fail closed).
// A current file changes nothing and is not audited. Returns
// {"file", "from_version", "to_version", "changed", "backup",
// "calendars_added", "eu_calendar", "notes": [...], "audited"}.
// Throws Error(invalid_argument) for a file in neither format, Error(not_found)
// without a vault.
nlohmann::json upgrade_policies(const PolicyUpgradeOptions& options);

}  // namespace custos::service
