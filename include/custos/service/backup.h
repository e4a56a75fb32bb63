// custos/service/backup.h — online backup, restore and backup verification.
//
// A backup is one file:
//   "custos-backup 1\n"
//   one line of JSON, the manifest (at most 1 MiB)
//   the members' bytes, back to back, in manifest order
// Members: custos.db (a consistent snapshot through SQLite's backup API, as
// encrypted as the live file), keys/db.key.wrapped and any keys/*.argon2.json
// (wrapped or public: no raw key), audit.pub and policies/**. The manifest
// records each member's size and BLAKE2b-256 digest, the audit tree size and
// root and the subject count of the snapshot, and which master-key versions
// it needs.
//
// Raw master-key files (keys/master-<v>.key) are never in a backup: a backup
// is only as secret as its key, so keep the key apart (or use a passphrase).
// Restoring or opening a backup therefore needs --master-key-dir (a
// directory holding master-<v>.key), or the passphrase.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "custos/crypto/passphrase.h"

namespace custos::service {

struct BackupOptions {
  std::filesystem::path data_dir;                  // the live vault (custosd may be serving it)
  std::optional<crypto::Passphrase> passphrase;
  std::filesystem::path out;                       // written 0600 through util::AtomicFile
};

// Takes the backup; appends a `vault.backup` audit entry to the live vault
// once it is complete. Returns a summary (file, bytes, audit size and root,
// subjects, seconds). Throws Error(storage|key_error|conflict).
nlohmann::json backup_vault(const BackupOptions& options);

struct RestoreOptions {
  std::filesystem::path archive;
  std::filesystem::path data_dir;        // restore: must not exist or be empty
  std::filesystem::path master_key_dir;  // holds master-<v>.key (key-file vaults)
  std::optional<crypto::Passphrase> passphrase;
};

// Restores into options.data_dir (created 0700, every file 0600 but
// audit.pub), then opens it and checks the audit root and subject count
// against the manifest. On any failure the new directory is removed: nothing
// half-restored is left. Throws Error(integrity) if a digest, the root or the
// count differs; Error(invalid_argument) if key material is missing.
nlohmann::json restore_vault(const RestoreOptions& options);

// Checks every member's digest without writing anything. If the key material
// is at hand (master_key_dir or passphrase), also restores into a private
// scratch directory, opens it and checks the root and count, then removes it.
// Returns a summary with "opened": true|false. Throws Error(integrity).
nlohmann::json verify_backup(const RestoreOptions& options);

// The audit tree size, its root (hex) at `at_size` (default: the current
// size) and the number of subjects, read straight from a vault's store.
struct VaultFacts {
  std::uint64_t audit_size = 0;
  std::string audit_root;
  std::int64_t subjects = 0;
};
VaultFacts vault_facts(const std::filesystem::path& data_dir, const std::optional<crypto::Passphrase>& passphrase,
                       std::optional<std::uint64_t> at_size = std::nullopt);

}  // namespace custos::service
