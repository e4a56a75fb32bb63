// custos/store/sqlcipher_store.h — the embedded, encrypted default store.
//
// One SQLCipher file (4 KiB cipher pages, WAL, secure_delete, temp data in
// memory) keyed with a random 256-bit raw key, so opening it costs no KDF
// and plain sqlite3 cannot read it. Connections are pooled, one per
// concurrent transaction; writers take BEGIN IMMEDIATE and wait (bounded)
// for another process's writer.
#pragma once

#include <filesystem>
#include <memory>

#include "custos/crypto/secret_key.h"
#include "custos/store/store.h"

namespace custos::store {

struct SqlcipherOptions {
  int cipher_page_size = 4096;
  int busy_timeout_ms = 10000;
  int cache_kib = 16384;  // page cache per connection (decrypted pages)
  // NORMAL: a commit survives a process crash; FULL: also a power loss.
  bool synchronous_full = false;
  // A bulk load (Store::begin_bulk_load) runs on one connection of its own,
  // closed when the load ends. A chunk of 1,000 imported customers dirties a
  // page in each random-keyed index per customer, so consecutive chunks
  // rewrite mostly the same pages: a cache that holds them saves reading and
  // decrypting them again, and a longer log lets a checkpoint copy each page
  // once for many chunks instead of once per chunk. At most this much cache
  // is used (pages are allocated as needed) ...
  int bulk_cache_kib = 131072;
  // ... and the load's commits checkpoint the WAL once it holds this many
  // pages (4 KiB each; the default for other connections is 1,000).
  int bulk_checkpoint_pages = 32768;
};

// Opens (creating if needed) the database and applies pending migrations.
// Throws Error(storage) naming the file if it is corrupted or the key is wrong.
std::unique_ptr<Store> open_sqlcipher(const std::filesystem::path& file, const crypto::SecretKey& db_key,
                                      const SqlcipherOptions& options = {});

// Copies a consistent snapshot of the live database `source` into `dest`
// (created 0600; must not exist) with SQLite's online backup API, while other
// connections and processes keep reading and writing: one read transaction
// on `source` is held for the whole copy, so the copy is the database as of
// its start (WAL: writers are never blocked). Pages are decrypted and
// re-encrypted under the same key, so `dest` is as encrypted as `source` and
// opens with the same wrapped key. `dest` is left as one file (no WAL).
// Throws Error(storage).
void backup_sqlcipher(const std::filesystem::path& source, const crypto::SecretKey& db_key,
                      const std::filesystem::path& dest, const SqlcipherOptions& options = {});

}  // namespace custos::store
