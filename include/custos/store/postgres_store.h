// custos/store/postgres_store.h — the scale-out store: PostgreSQL through libpq.
//
// Several custosd nodes share one database. It only ever holds what the
// modules hand a Store (ciphertext, blind indexes, wrapped keys and
// non-personal columns); the master key never leaves the nodes.
//
// Guarantees, the same as the SQLCipher backend's (store.h):
// - Writers are serialised across every node: a write transaction runs at
//   READ COMMITTED and first takes a transaction-scoped advisory lock
//   (pg_advisory_xact_lock) on a key fixed per database and schema. Every
//   statement after the lock sees every earlier writer's commit, so a
//   read-modify-write (max(seq)+1, a consent state, a key version) can never
//   lose an update, and no caller needs a retry loop. SERIALIZABLE would
//   give the same safety with more concurrency, but every caller would then
//   have to replay whole transactions (audit entries included) on
//   serialization failures; the vault's writes are short, so one writer at a
//   time costs little and keeps the contract the modules were written for.
// - A read transaction is REPEATABLE READ, READ ONLY: one snapshot.
// - Migrations run once, under a session advisory lock, each step in its own
//   transaction with the bump of custos_schema.version. A database whose
//   schema is newer than this binary is refused, naming both versions.
//
// The portable SQL of store.h is translated per statement (see
// translate_sql_for_postgres) and prepared once per connection. Parameters
// go as text (integers, text) or binary (blobs); results come back binary.
//
// Errors: Error(store_unavailable) when the server cannot be reached or the
// connection breaks (HTTP 503; the transaction is rolled back by the server,
// nothing is half-written, and the pool reconnects on the next call);
// Error(conflict) for a constraint violation; Error(storage) otherwise. No
// message ever contains a parameter value (only SQLSTATEs, constraint and
// object names, and libpq's connection diagnostics).
//
// TLS: whatever the URL asks for (sslmode=verify-full, sslrootcert=...) is
// passed to libpq unchanged.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "custos/store/store.h"

namespace custos::store {

struct PostgresOptions {
  int max_idle_connections = 32;  // pooled connections kept open
  int connect_timeout_s = 10;     // unless the URL sets connect_timeout
};

// True for postgresql://… and postgres://… URLs.
bool is_postgres_url(std::string_view url);

// Connects, applies pending migrations (once, under an advisory lock) and
// returns the store. Throws Error(store_unavailable) if the server cannot be
// reached, Error(storage) if the schema is newer than this binary.
std::unique_ptr<Store> open_postgres(const std::string& url, const PostgresOptions& options = {});

// The PostgreSQL text of one portable statement: `?` -> `$n` (not inside
// quotes), `INSERT OR IGNORE INTO` -> `INSERT INTO … ON CONFLICT DO NOTHING`,
// scalar max/min of several arguments -> greatest/least, and in DDL
// BLOB -> BYTEA, INTEGER -> BIGINT, TEXT -> TEXT COLLATE "C" (byte order,
// as SQLite compares), `WITHOUT ROWID` dropped.
std::string translate_sql_for_postgres(std::string_view sql);

// Runs one statement outside any transaction on a fresh connection (tooling
// and tests: CREATE SCHEMA, DROP SCHEMA). Throws like open_postgres.
void postgres_exec_admin(const std::string& url, const std::string& sql);

}  // namespace custos::store
