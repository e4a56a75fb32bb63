#include "custos/store/key_table.h"

#include <sodium.h>

#include "custos/error.h"
#include "custos/util/files.h"

namespace custos::store {
namespace fs = std::filesystem;

std::uint32_t KeyTable::kek_version(Transaction& tx) {
  std::uint32_t version = 0;
  tx.exec("SELECT value FROM meta WHERE key = 'kek_version'", {},
          [&](const Row& r) { version = static_cast<std::uint32_t>(std::stoul(std::string(r.text(0)))); });
  if (version == 0) throw Error(ErrorCode::key_error, "the store records no master key version (run `custos init`)");
  return version;
}

const crypto::SecretKey& KeyTable::named_key(const std::string& slot) {
  std::lock_guard lock(mu_);
  if (auto it = cache_.find(slot); it != cache_.end()) return *it->second;
  std::vector<std::uint8_t> wrapped;
  {
    auto tx = store_.begin(TxMode::read);
    tx->exec("SELECT wrapped FROM wrapped_keys WHERE slot = ?", {slot},
             [&](const Row& r) { wrapped = r.blob_copy(0); });
  }
  if (wrapped.empty()) {
    auto tx = store_.begin(TxMode::write);
    // Another process may have created it since our read.
    tx->exec("SELECT wrapped FROM wrapped_keys WHERE slot = ?", {slot},
             [&](const Row& r) { wrapped = r.blob_copy(0); });
    if (wrapped.empty()) {
      const std::uint32_t v = kek_version(*tx);
      crypto::SecretKey key = crypto::SecretKey::random();
      wrapped = keyring_.wrap(v, slot, key);
      tx->exec("INSERT INTO wrapped_keys (slot, kek_version, wrapped) VALUES (?, ?, ?)", {slot, v, wrapped});
      tx->commit();
      return *cache_.emplace(slot, std::make_unique<crypto::SecretKey>(std::move(key))).first->second;
    }
  }
  return *cache_.emplace(slot, std::make_unique<crypto::SecretKey>(keyring_.unwrap(slot, wrapped))).first->second;
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

void set_kek_version(Transaction& tx, std::uint32_t v) {
  if (tx.exec("UPDATE meta SET value = ? WHERE key = 'kek_version'", {std::to_string(v)}) == 0)
    tx.exec("INSERT INTO meta (key, value) VALUES ('kek_version', ?)", {std::to_string(v)});
}

}  // namespace

RotationReport rotate_keys(Store& store, crypto::Keyring& keyring, const fs::path& key_dir,
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
    set_kek_version(*tx, nv);
    tx->commit();
  }
  // Subject DEKs, in batches so concurrent writers wait at most one batch.
  for (;;) {
    auto tx = store.begin(TxMode::write);
    std::vector<std::pair<std::vector<std::uint8_t>, std::vector<std::uint8_t>>> rows;
    tx->exec("SELECT id, wrapped_dek FROM subjects WHERE wrapped_dek IS NOT NULL AND kek_version <> ? LIMIT ?",
             {nv, kRotationBatch}, [&](const Row& r) { rows.emplace_back(r.blob_copy(0), r.blob_copy(1)); });
    for (const auto& [id, wrapped] : rows) {
      const std::string slot = dek_slot(id);
      const crypto::SecretKey dek = keyring.unwrap(slot, wrapped);
      tx->exec("UPDATE subjects SET kek_version = ?, wrapped_dek = ? WHERE id = ?",
               {nv, keyring.wrap(nv, slot, dek), id});
    }
    report.data_keys += static_cast<std::int64_t>(rows.size());
    if (rows.empty()) {
      // Named keys, then the audit entry, in the final transaction.
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
      break;
    }
    tx->commit();
  }
  // Only a SQLCipher vault has a database key file (PostgreSQL: none).
  if (fs::exists(db_key_path(key_dir))) {
    const crypto::SecretKey db_key = read_db_key(keyring, key_dir);
    write_db_key(keyring, nv, key_dir, db_key);
  }
  return report;
}

std::vector<std::uint32_t> retire_old_keks(Store& store, crypto::Keyring& keyring, const fs::path& key_dir) {
  std::uint32_t current = 0;
  {
    auto tx = store.begin(TxMode::read);
    KeyTable probe(store, keyring);
    current = probe.kek_version(*tx);
    const auto stale = tx->scalar(
        "SELECT count(*) FROM subjects WHERE wrapped_dek IS NOT NULL AND kek_version <> ?", {current});
    const auto stale_named = tx->scalar("SELECT count(*) FROM wrapped_keys WHERE kek_version <> ?", {current});
    if (stale.value_or(0) + stale_named.value_or(0) > 0)
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

}  // namespace custos::store
