// custos/store/key_table.h — the keys that live in the store, wrapped by the KEK.
//
// Named keys (slot "index:<field>", "audit:signing") sit in `wrapped_keys`;
// modules keep their own wrapped keys in their own tables (records: each
// subject's DEK in its row, slot "dek:<subject hex>") and hand rotation a
// WrappedKeySet to re-wrap them. The KEK
// version every new wrap must use is recorded in `meta.kek_version`, read
// inside the writer's transaction, so a rotation by another process is seen
// by the very next write.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "custos/crypto/keyring.h"
#include "custos/store/store.h"
#include "custos/util/mutex.h"

namespace custos::store {

class KeyTable {
 public:
  KeyTable(Store& store, crypto::Keyring& keyring) : store_(store), keyring_(keyring) {}

  // The KEK version new wraps must use (meta.kek_version).
  std::uint32_t kek_version(Transaction& tx);
  // Records `v` as the version new wraps must use (`custos init`, rotation).
  static void set_kek_version(Transaction& tx, std::uint32_t v);

  // A named long-lived key, unwrapped once and cached; created (random) in
  // its own write transaction on first use. A cache hit may be taken inside
  // a write transaction; a miss must not (it begins transactions of its own).
  const crypto::SecretKey& named_key(const std::string& slot);
  // Replaces the named key `slot` by a fresh random one (wrapped under the
  // current KEK, committed) and returns it: for secrets shown once and then
  // shared with another party, such as a webhook signing secret.
  crypto::SecretKey replace_named_key(const std::string& slot);
  // The named key `slot`, unwrapped, if it exists (never created, never cached).
  std::optional<crypto::SecretKey> find_named_key(const std::string& slot);

  crypto::Keyring& keyring() { return keyring_; }

 private:
  // The key of `slot` from the store, created if absent (no lock held).
  crypto::SecretKey load_or_create(const std::string& slot);

  Store& store_;
  crypto::Keyring& keyring_;
  util::Mutex mu_;
  std::map<std::string, std::unique_ptr<crypto::SecretKey>> cache_ CUSTOS_GUARDED_BY(mu_);
};

std::string dek_slot(std::span<const std::uint8_t> subject_id);

// Store-wide settings in `meta` (the store's table), for modules that keep a
// setting there instead of in a table of their own (the audit journal's
// fold watermark). nullopt if unset.
std::optional<std::string> meta_value(Transaction& tx, std::string_view key);
void set_meta_value(Transaction& tx, std::string_view key, std::string_view value);

// The SQLCipher key file, <data-dir>/keys/db.key.wrapped.
std::filesystem::path db_key_path(const std::filesystem::path& key_dir);
crypto::SecretKey read_db_key(crypto::Keyring& keyring, const std::filesystem::path& key_dir);
void write_db_key(crypto::Keyring& keyring, std::uint32_t kek_version, const std::filesystem::path& key_dir,
                  const crypto::SecretKey& db_key);

struct RotationReport {
  std::uint32_t old_version = 0;
  std::uint32_t new_version = 0;
  std::int64_t data_keys = 0;   // subject DEKs re-wrapped
  std::int64_t named_keys = 0;  // index and signing keys re-wrapped
};

// Keys a module keeps wrapped by the KEK in its own tables (records: one DEK
// per subject), re-wrapped by rotation through the owner's own SQL.
struct WrappedKeySet {
  std::string name;  // e.g. "subject data keys"
  // Re-wraps, inside `tx`, up to `limit` keys not wrapped by KEK `version`;
  // returns how many it re-wrapped (0: none are left).
  std::function<std::int64_t(Transaction& tx, crypto::Keyring& keyring, std::uint32_t version, int limit)> rewrap;
  // How many keys are wrapped by a KEK version other than `version`.
  std::function<std::int64_t(Transaction& tx, std::uint32_t version)> count_stale;
  // How many keys each KEK version wraps (the admin screen's key versions).
  std::function<std::map<std::uint32_t, std::int64_t>(Transaction& tx)> count_per_version;
};

// How many named keys (index, signing, outbox secrets) each KEK version wraps.
std::map<std::uint32_t, std::int64_t> named_keys_per_version(Transaction& tx);

// Creates KEK version n+1 and re-wraps every key to it in bounded batches,
// never touching ciphertexts, indexes or the database encryption. Safe while
// other processes read and write: the first batch switches meta.kek_version,
// so concurrent writers wrap new keys with the new version from then on.
// `held` are the modules' own key sets (report.data_keys counts them).
// `on_done` runs inside the last transaction (to append the audit entry).
RotationReport rotate_keys(Store& store, crypto::Keyring& keyring, const std::filesystem::path& key_dir,
                           const std::vector<WrappedKeySet>& held,
                           const std::function<void(Transaction&, const RotationReport&)>& on_done);

// Deletes KEK versions older than the current one once nothing refers to them.
// Returns the versions retired. Throws Error(conflict) if one is still in use.
std::vector<std::uint32_t> retire_old_keks(Store& store, crypto::Keyring& keyring,
                                           const std::filesystem::path& key_dir, const std::vector<WrappedKeySet>& held);

}  // namespace custos::store
