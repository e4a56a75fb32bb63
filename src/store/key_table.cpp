#include "custos/store/key_table.h"

#include <sodium.h>

#include "custos/error.h"
#include "custos/util/files.h"

namespace custos::store {
namespace fs = std::filesystem;

std::optional<std::string> meta_value(Transaction& tx, std::string_view key) {
  std::optional<std::string> value;
  tx.exec("SELECT value FROM meta WHERE key = ?", {key}, [&](const Row& r) { value = std::string(r.text(0)); });
  return value;
}

void set_meta_value(Transaction& tx, std::string_view key, std::string_view value) {
  if (tx.exec("UPDATE meta SET value = ? WHERE key = ?", {value, key}) == 0)
    tx.exec("INSERT INTO meta (key, value) VALUES (?, ?)", {key, value});
}

std::uint32_t KeyTable::kek_version(Transaction& tx) {
  std::uint32_t version = 0;
  if (const auto v = meta_value(tx, "kek_version")) version = static_cast<std::uint32_t>(std::stoul(*v));
  if (version == 0) throw Error(ErrorCode::key_error, "the store records no master key version (run `custos init`)");
  return version;
}

// Lock order: the store's writer lock, then mu_. Callers inside a write
// transaction take mu_ for their cache hits, so mu_ is never held while a
// transaction begins: a thread holding it and waiting for the writer lock
// would deadlock with the writer waiting for it (found by TSan).
const crypto::SecretKey& KeyTable::named_key(const std::string& slot) {
  {
    util::MutexLock lock(mu_);
    if (auto it = cache_.find(slot); it != cache_.end()) return *it->second;
  }
  crypto::SecretKey key = load_or_create(slot);
  util::MutexLock lock(mu_);
  // Another thread may have cached the slot meanwhile (the same key: a
  // slot is created once, under the writer lock); the first entry stays,
  // since callers hold references to it.
  return *cache_.emplace(slot, std::make_unique<crypto::SecretKey>(std::move(key))).first->second;
}

crypto::SecretKey KeyTable::load_or_create(const std::string& slot) {
  std::vector<std::uint8_t> wrapped;
  {
    auto tx = store_.begin(TxMode::read);
    tx->exec("SELECT wrapped FROM wrapped_keys WHERE slot = ?", {slot},
             [&](const Row& r) { wrapped = r.blob_copy(0); });
  }
  if (wrapped.empty()) {
    auto tx = store_.begin(TxMode::write);
    // Another thread or process may have created it since our read.
    tx->exec("SELECT wrapped FROM wrapped_keys WHERE slot = ?", {slot},
             [&](const Row& r) { wrapped = r.blob_copy(0); });
    if (wrapped.empty()) {
      const std::uint32_t v = kek_version(*tx);
      crypto::SecretKey key = crypto::SecretKey::random();
      wrapped = keyring_.wrap(v, slot, key);
      tx->exec("INSERT INTO wrapped_keys (slot, kek_version, wrapped) VALUES (?, ?, ?)", {slot, v, wrapped});
      tx->commit();
      return key;
    }
  }
  return keyring_.unwrap(slot, wrapped);
}

std::string dek_slot(std::span<const std::uint8_t> subject_id) {
  std::string hex(subject_id.size() * 2 + 1, '\0');
  sodium_bin2hex(hex.data(), hex.size(), subject_id.data(), subject_id.size());
  hex.pop_back();
  return "dek:" + hex;
}

fs::path db_key_path(const fs::path& key_dir) { return key_dir / "db.key.wrapped"; }

crypto::SecretKey read_db_key(crypto::Keyring& keyring, const fs::path& key_dir) {
  const fs::path path = db_key_path(key_dir);
  util::require_owner_only(path);
  const auto wrapped = util::read_file(path);
  try {
    return keyring.unwrap("db", wrapped);
  } catch (const Error& e) {
    if (e.code() == ErrorCode::key_error) throw;
    throw Error(ErrorCode::key_error, "database key file " + path.string() +
                                          " cannot be unwrapped with the master key (corrupted, or another key)");
  }
}

void write_db_key(crypto::Keyring& keyring, std::uint32_t kek_version, const fs::path& key_dir,
                  const crypto::SecretKey& db_key) {
  util::write_file_atomic(db_key_path(key_dir), keyring.wrap(kek_version, "db", db_key), 0600);
}

namespace {

constexpr int kRotationBatch = 5000;

}  // namespace

crypto::SecretKey KeyTable::replace_named_key(const std::string& slot) {
  crypto::SecretKey key = crypto::SecretKey::random();
  auto tx = store_.begin(TxMode::write);
  const std::uint32_t v = kek_version(*tx);
  const auto wrapped = keyring_.wrap(v, slot, key);
  tx->exec("DELETE FROM wrapped_keys WHERE slot = ?", {slot});
  tx->exec("INSERT INTO wrapped_keys (slot, kek_version, wrapped) VALUES (?, ?, ?)", {slot, v, wrapped});
  tx->commit();
  util::MutexLock lock(mu_);  // after the transaction: see named_key's lock order
  cache_.erase(slot);
  return key;
}

std::optional<crypto::SecretKey> KeyTable::find_named_key(const std::string& slot) {
  std::vector<std::uint8_t> wrapped;
  {
    auto tx = store_.begin(TxMode::read);
    tx->exec("SELECT wrapped FROM wrapped_keys WHERE slot = ?", {slot},
             [&](const Row& r) { wrapped = r.blob_copy(0); });
  }
  if (wrapped.empty()) return std::nullopt;
  return keyring_.unwrap(slot, wrapped);
}

void KeyTable::set_kek_version(Transaction& tx, std::uint32_t v) { set_meta_value(tx, "kek_version", std::to_string(v)); }

RotationReport rotate_keys(Store& store, crypto::Keyring& keyring, const fs::path& key_dir,
                           const std::vector<WrappedKeySet>& held,
                           const std::function<void(Transaction&, const RotationReport&)>& on_done) {
  RotationReport report;
  {
    auto tx = store.begin(TxMode::read);
    KeyTable probe(store, keyring);
    report.old_version = probe.kek_version(*tx);
  }
  report.new_version = keyring.create_next_version();
  const std::uint32_t nv = report.new_version;
  {
    // From this commit on, every new wrap (in any process) uses the new version.
    auto tx = store.begin(TxMode::write);
    KeyTable::set_kek_version(*tx, nv);
    tx->commit();
  }
  // The modules' keys (subject DEKs), in batches so concurrent writers wait at most one batch.
  for (const WrappedKeySet& set : held) {
    for (;;) {
      auto tx = store.begin(TxMode::write);
      const std::int64_t n = set.rewrap(*tx, keyring, nv, kRotationBatch);
      if (n == 0) break;
      tx->commit();
      report.data_keys += n;
    }
  }
  {
    // Named keys, then the audit entry, in the final transaction.
    auto tx = store.begin(TxMode::write);
    std::vector<std::pair<std::string, std::vector<std::uint8_t>>> named;
    tx->exec("SELECT slot, wrapped FROM wrapped_keys WHERE kek_version <> ?", {nv},
             [&](const Row& r) { named.emplace_back(std::string(r.text(0)), r.blob_copy(1)); });
    for (const auto& [slot, wrapped] : named) {
      const crypto::SecretKey key = keyring.unwrap(slot, wrapped);
      tx->exec("UPDATE wrapped_keys SET kek_version = ?, wrapped = ? WHERE slot = ?",
               {nv, keyring.wrap(nv, slot, key), slot});
    }
    report.named_keys = static_cast<std::int64_t>(named.size());
    if (on_done) on_done(*tx, report);
    tx->commit();
  }
  // Only a SQLCipher vault has a database key file (PostgreSQL: none).
  if (fs::exists(db_key_path(key_dir))) {
    const crypto::SecretKey db_key = read_db_key(keyring, key_dir);
    write_db_key(keyring, nv, key_dir, db_key);
  }
  return report;
}

std::vector<std::uint32_t> retire_old_keks(Store& store, crypto::Keyring& keyring, const fs::path& key_dir,
                                           const std::vector<WrappedKeySet>& held) {
  std::uint32_t current = 0;
  {
    auto tx = store.begin(TxMode::read);
    KeyTable probe(store, keyring);
    current = probe.kek_version(*tx);
    std::int64_t stale = tx->scalar("SELECT count(*) FROM wrapped_keys WHERE kek_version <> ?", {current}).value_or(0);
    for (const WrappedKeySet& set : held) stale += set.count_stale(*tx, current);
    if (stale > 0)
      throw Error(ErrorCode::conflict, "keys are still wrapped by an older master key; run `custos key rotate` first");
  }
  if (fs::exists(db_key_path(key_dir)) &&
      crypto::peek_header(util::read_file(db_key_path(key_dir))).key_version != current)
    throw Error(ErrorCode::conflict, "the database key is still wrapped by an older master key");
  std::vector<std::uint32_t> retired;
  for (std::uint32_t v = 1; v < current; ++v) {
    keyring.retire(v);
    retired.push_back(v);
  }
  return retired;
}

std::map<std::uint32_t, std::int64_t> named_keys_per_version(Transaction& tx) {
  std::map<std::uint32_t, std::int64_t> per_version;
  tx.exec("SELECT kek_version, count(*) FROM wrapped_keys GROUP BY kek_version", {},
          [&](const Row& r) { per_version[static_cast<std::uint32_t>(r.integer(0))] = r.integer(1); });
  return per_version;
}

}  // namespace custos::store
