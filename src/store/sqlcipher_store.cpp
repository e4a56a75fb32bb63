#include "custos/store/sqlcipher_store.h"

#define SQLITE_HAS_CODEC 1
#include <sqlcipher/sqlite3.h>
#include <sodium.h>

#include <mutex>
#include <string>
#include <unordered_map>

#include "custos/error.h"
#include "custos/util/files.h"
#include "custos/util/mutex.h"

namespace custos::store {
namespace fs = std::filesystem;
namespace {

[[noreturn]] void fail(sqlite3* db, const std::string& what) {
  throw Error(ErrorCode::storage, what + ": " + (db ? sqlite3_errmsg(db) : "out of memory"));
}

// SQLite keeps allocation statistics (sqlite3_memory_used and friends,
// which Custos never reads) under one process-wide mutex taken on every
// sqlite3_malloc and sqlite3_free: with a connection per worker thread,
// that mutex was contended on every page-cache refill (about 3 % of a
// lookup's CPU; docs/performance.md). sqlite3_config must run before
// SQLite initialises, so this runs once, before the first connection
// opens; if something initialised SQLite earlier it is refused
// (SQLITE_MISUSE), which only leaves the statistics on.
void disable_sqlite_memory_statistics() {
  static const int rc = sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
  (void)rc;
}

class Connection {
 public:
  Connection(const fs::path& file, const crypto::SecretKey& key, const SqlcipherOptions& options) : file_(file) {
    disable_sqlite_memory_statistics();
    if (sqlite3_open_v2(file.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        nullptr) != SQLITE_OK) {
      const std::string msg = "cannot open database " + file.string();
      sqlite3_close(db_);
      db_ = nullptr;
      throw Error(ErrorCode::storage, msg);
    }
    // A raw key ("x'..'") skips SQLCipher's PBKDF2: the key is already random.
    char pragma[] = "PRAGMA key = \"x'0000000000000000000000000000000000000000000000000000000000000000'\"";
    sodium_bin2hex(pragma + 16, 65, key.data(), crypto::SecretKey::kSize);
    pragma[16 + 64] = '\'';
    const int rc = sqlite3_exec(db_, pragma, nullptr, nullptr, nullptr);
    sodium_memzero(pragma, sizeof pragma);
    if (rc != SQLITE_OK) fail(db_, "cannot key database " + file.string());
    exec_plain("PRAGMA cipher_page_size = " + std::to_string(options.cipher_page_size));
    // Before the first read: a connection opened while another one commits
    // or checkpoints must wait for it, not fail.
    sqlite3_busy_timeout(db_, options.busy_timeout_ms);
    // The first real read decrypts page 1: a wrong key or a damaged file fails here.
    if (const int check = sqlite3_exec(db_, "SELECT count(*) FROM sqlite_master", nullptr, nullptr, nullptr);
        check != SQLITE_OK) {
      const std::string cause = check == SQLITE_NOTADB
                                    ? " cannot be read: it is corrupted or was encrypted with another key"
                                    : std::string(" cannot be read: ") + sqlite3_errmsg(db_);
      sqlite3_close(db_);
      db_ = nullptr;
      throw Error(ErrorCode::storage, "database " + file.string() + cause);
    }
    exec_plain("PRAGMA journal_mode = WAL");
    exec_plain(options.synchronous_full ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL");
    exec_plain("PRAGMA secure_delete = ON");
    exec_plain("PRAGMA temp_store = MEMORY");
    exec_plain("PRAGMA cache_size = -" + std::to_string(options.cache_kib));
    exec_plain("PRAGMA foreign_keys = ON");
  }

  ~Connection() {
    for (auto& [sql, stmt] : cache_) sqlite3_finalize(stmt);
    if (db_) sqlite3_close(db_);
  }

  void exec_plain(const std::string& sql) {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
      std::string msg = err ? err : "unknown error";
      sqlite3_free(err);
      throw Error(ErrorCode::storage, "database " + file_.string() + ": " + msg);
    }
  }

  sqlite3_stmt* prepare(std::string_view sql) {
    auto it = cache_.find(sql);  // no allocation on a hit
    if (it != cache_.end()) return it->second;
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &stmt, nullptr) != SQLITE_OK)
      fail(db_, "cannot prepare statement");
    cache_.emplace(std::string(sql), stmt);
    return stmt;
  }

  // BEGIN / COMMIT / ROLLBACK through the statement cache: every request
  // runs a few transactions, and sqlite3_exec would parse them each time.
  int step_cached(std::string_view sql) {
    sqlite3_stmt* stmt = prepare(sql);
    int rc = sqlite3_step(stmt);
    const int reset = sqlite3_reset(stmt);
    if (rc == SQLITE_DONE || rc == SQLITE_ROW) rc = reset == SQLITE_OK ? SQLITE_OK : reset;
    return rc;
  }
  void begin(bool write) {
    if (step_cached(write ? "BEGIN IMMEDIATE" : "BEGIN") != SQLITE_OK) fail(db_, "cannot begin a transaction");
  }

  sqlite3* db() const { return db_; }

 private:
  fs::path file_;
  sqlite3* db_ = nullptr;
  struct SqlHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view sql) const { return std::hash<std::string_view>{}(sql); }
  };
  std::unordered_map<std::string, sqlite3_stmt*, SqlHash, std::equal_to<>> cache_;
};

class SqliteRow final : public Row {
 public:
  explicit SqliteRow(sqlite3_stmt* stmt) : stmt_(stmt) {}
  bool is_null(int c) const override { return sqlite3_column_type(stmt_, c) == SQLITE_NULL; }
  std::int64_t integer(int c) const override { return sqlite3_column_int64(stmt_, c); }
  std::string_view text(int c) const override {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, c));
    return p ? std::string_view(p, static_cast<std::size_t>(sqlite3_column_bytes(stmt_, c))) : std::string_view();
  }
  Blob blob(int c) const override {
    const auto* p = static_cast<const std::uint8_t*>(sqlite3_column_blob(stmt_, c));
    return p ? Blob(p, static_cast<std::size_t>(sqlite3_column_bytes(stmt_, c))) : Blob();
  }

 private:
  sqlite3_stmt* stmt_;
};

class SqlcipherStore;

// Where a bulk load keeps its connection between transactions.
struct ConnectionHome {
  std::unique_ptr<Connection> conn;
  bool lent = false;  // a transaction holds it
};

class SqlcipherTransaction final : public Transaction {
 public:
  // The connection goes back to the pool when the transaction ends, or to
  // `home` when one is given (a bulk load's own connection).
  SqlcipherTransaction(SqlcipherStore& store, std::unique_ptr<Connection> conn, TxMode mode,
                       std::unique_lock<std::mutex> writer_lock, bool relax_after = false,
                       ConnectionHome* home = nullptr);
  ~SqlcipherTransaction() override;
  void commit() override;
  std::int64_t exec(std::string_view sql, Params params, const RowFn& on_row) override {
    return run(sql, params.begin(), params.size(), on_row);
  }
  std::int64_t exec_v(std::string_view sql, const std::vector<Param>& params, const RowFn& on_row) override {
    return run(sql, params.data(), params.size(), on_row);
  }

 private:
  std::int64_t run(std::string_view sql, const Param* params, std::size_t count, const RowFn& on_row);

  SqlcipherStore& store_;
  std::unique_ptr<Connection> conn_;
  std::unique_lock<std::mutex> writer_lock_;
  bool done_ = false;
  bool relax_after_ = false;  // back to synchronous=NORMAL when finished (begin_durable)
  ConnectionHome* home_ = nullptr;
};

class SqlcipherStore final : public Store {
 public:
  SqlcipherStore(fs::path file, const crypto::SecretKey& key, SqlcipherOptions options)
      : file_(std::move(file)), key_(key.clone()), options_(options) {
    // Opening checks the key and the file (page 1 is decrypted here).
    release(std::make_unique<Connection>(file_, key_, options_));
  }

  std::unique_ptr<Transaction> begin_transaction(TxMode mode) override {
    std::unique_lock<std::mutex> writer_lock;
    // One writer per process at a time; other processes are held off by
    // BEGIN IMMEDIATE and the busy timeout.
    if (mode != TxMode::read) writer_lock = std::unique_lock(writer_mu_);
    auto conn = acquire();
    conn->begin(mode != TxMode::read);
    return std::make_unique<SqlcipherTransaction>(*this, std::move(conn), mode, std::move(writer_lock));
  }

  std::unique_ptr<Transaction> begin_durable_transaction() override {
    std::unique_lock<std::mutex> writer_lock(writer_mu_);
    auto conn = acquire();
    // The safety level cannot change inside a transaction: set it for this
    // commit only; the transaction puts it back before the pool reuses the connection.
    if (!options_.synchronous_full) conn->exec_plain("PRAGMA synchronous = FULL");
    conn->begin(true);
    return std::make_unique<SqlcipherTransaction>(*this, std::move(conn), TxMode::write, std::move(writer_lock),
                                                  !options_.synchronous_full);
  }

  // Callers rely on the checkpoint (an erasure: its pre-images leave the WAL,
  // and its fsyncs make it survive a power cut), so an I/O error is reported,
  // not ignored. SQLITE_BUSY (a reader kept it from finishing) is not an
  // error: the next checkpoint completes it.
  void checkpoint() override {
    auto conn = acquire();
    const int rc = sqlite3_wal_checkpoint_v2(conn->db(), nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr);
    if (rc != SQLITE_OK && rc != SQLITE_BUSY) fail(conn->db(), "WAL checkpoint failed");
    release(std::move(conn));
  }

  std::unique_ptr<BulkLoad> begin_bulk_load_transactions() override;

  std::string backend_name() const override { return "sqlcipher"; }

  // Releases before per-module schema versions kept theirs in user_version.
  int legacy_schema_version(Transaction& tx) override {
    int version = 0;
    tx.exec("PRAGMA user_version", {}, [&](const Row& r) { version = static_cast<int>(r.integer(0)); });
    return version;
  }

  void release(std::unique_ptr<Connection> conn) {
    util::MutexLock lock(pool_mu_);
    // Enough for every worker of a busy custosd: reopening a connection
    // re-reads and decrypts the schema.
    if (idle_.size() < 64) idle_.push_back(std::move(conn));
  }

 private:
  std::unique_ptr<Connection> acquire() {
    {
      util::MutexLock lock(pool_mu_);
      if (!idle_.empty()) {
        auto conn = std::move(idle_.back());
        idle_.pop_back();
        return conn;
      }
    }
    return std::make_unique<Connection>(file_, key_, options_);
  }

  friend class SqlcipherBulkLoad;

  fs::path file_;
  crypto::SecretKey key_;
  SqlcipherOptions options_;
  std::mutex writer_mu_;
  util::Mutex pool_mu_;
  std::vector<std::unique_ptr<Connection>> idle_ CUSTOS_GUARDED_BY(pool_mu_);
};

SqlcipherTransaction::SqlcipherTransaction(SqlcipherStore& store, std::unique_ptr<Connection> conn, TxMode mode,
                                           std::unique_lock<std::mutex> writer_lock, bool relax_after,
                                           ConnectionHome* home)
    : Transaction(mode),
      store_(store),
      conn_(std::move(conn)),
      writer_lock_(std::move(writer_lock)),
      relax_after_(relax_after),
      home_(home) {}

SqlcipherTransaction::~SqlcipherTransaction() {
  if (!done_) {
    try {
      conn_->step_cached("ROLLBACK");
    } catch (...) {  // the cached statement could not be prepared (out of memory)
      sqlite3_exec(conn_->db(), "ROLLBACK", nullptr, nullptr, nullptr);
    }
  }
  if (home_) home_->lent = false;
  // A connection left inside a transaction (failed rollback) is not reused,
  // nor one whose safety level cannot be put back.
  if (!sqlite3_get_autocommit(conn_->db())) return;
  if (relax_after_ && sqlite3_exec(conn_->db(), "PRAGMA synchronous = NORMAL", nullptr, nullptr, nullptr) != SQLITE_OK)
    return;
  if (home_)
    home_->conn = std::move(conn_);
  else
    store_.release(std::move(conn_));
}

// One connection for the whole load, configured for it, never pooled: its
// cache would otherwise stay allocated in an idle pooled connection.
class SqlcipherBulkLoad final : public BulkLoad {
 public:
  explicit SqlcipherBulkLoad(SqlcipherStore& store) : store_(store) {}

  // Leaves the WAL as ordinary commits would: a passive checkpoint moves
  // what the load's longer log holds into the database file. Its failure
  // loses nothing (the pages stay in the WAL for the next checkpoint).
  ~SqlcipherBulkLoad() override {
    if (home_.conn)
      sqlite3_wal_checkpoint_v2(home_.conn->db(), nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
  }

  std::unique_ptr<Transaction> begin() override {
    if (home_.lent) throw Error(ErrorCode::internal, "a bulk load runs one transaction at a time");
    std::unique_lock<std::mutex> writer_lock(store_.writer_mu_);
    if (!home_.conn) {  // first use, or the last transaction could not roll back
      auto conn = std::make_unique<Connection>(store_.file_, store_.key_, store_.options_);
      conn->exec_plain("PRAGMA cache_size = -" + std::to_string(store_.options_.bulk_cache_kib));
      conn->exec_plain("PRAGMA wal_autocheckpoint = " + std::to_string(store_.options_.bulk_checkpoint_pages));
      home_.conn = std::move(conn);
    }
    home_.conn->begin(true);
    home_.lent = true;
    return std::make_unique<SqlcipherTransaction>(store_, std::move(home_.conn), TxMode::write,
                                                  std::move(writer_lock), false, &home_);
  }

 private:
  SqlcipherStore& store_;
  ConnectionHome home_;
};

std::unique_ptr<BulkLoad> SqlcipherStore::begin_bulk_load_transactions() { return std::make_unique<SqlcipherBulkLoad>(*this); }

void SqlcipherTransaction::commit() {
  if (done_) throw Error(ErrorCode::internal, "transaction committed twice");
  if (conn_->step_cached("COMMIT") != SQLITE_OK) fail(conn_->db(), "commit failed");
  done_ = true;
}

std::int64_t SqlcipherTransaction::run(std::string_view sql, const Param* params, std::size_t count,
                                       const RowFn& on_row) {
  if (done_) throw Error(ErrorCode::internal, "statement on a finished transaction");
  sqlite3_stmt* stmt = conn_->prepare(sql);
  struct Reset {
    sqlite3_stmt* s;
    ~Reset() {
      sqlite3_reset(s);
      sqlite3_clear_bindings(s);
    }
  } reset{stmt};
  for (std::size_t i = 0; i < count; ++i) {
    const Param& p = params[i];
    const int idx = static_cast<int>(i + 1);
    int rc = SQLITE_OK;
    switch (p.kind) {
      case Param::Kind::null: rc = sqlite3_bind_null(stmt, idx); break;
      case Param::Kind::integer: rc = sqlite3_bind_int64(stmt, idx, p.integer); break;
      case Param::Kind::text:
        rc = sqlite3_bind_text(stmt, idx, p.text.data(), static_cast<int>(p.text.size()), SQLITE_STATIC);
        break;
      case Param::Kind::blob:
        // A zero-length blob must still be a blob, not NULL.
        rc = p.blob.empty() ? sqlite3_bind_zeroblob(stmt, idx, 0)
                            : sqlite3_bind_blob(stmt, idx, p.blob.data(), static_cast<int>(p.blob.size()),
                                                SQLITE_STATIC);
        break;
    }
    if (rc != SQLITE_OK) fail(conn_->db(), "cannot bind parameter");
  }
  SqliteRow row(stmt);
  for (;;) {
    const int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
      if (on_row) on_row(row);
      continue;
    }
    if (rc == SQLITE_DONE) break;
    if (rc == SQLITE_CONSTRAINT) throw Error(ErrorCode::conflict, std::string("constraint violated: ") +
                                                                     sqlite3_errmsg(conn_->db()));
    fail(conn_->db(), "statement failed");
  }
  return sqlite3_changes(conn_->db());
}

}  // namespace

std::unique_ptr<Store> open_sqlcipher(const fs::path& file, const crypto::SecretKey& db_key,
                                      const SqlcipherOptions& options) {
  // SQLite creates the file with 0644 less the umask, and gives its -wal,
  // -shm and -journal files the main file's mode: create it 0600 first (and
  // tighten a file an older release made), so none of them is world-readable.
  util::ensure_private_file(file);
  for (const char* suffix : {"-wal", "-shm", "-journal"}) {
    const fs::path side = file.string() + suffix;
    std::error_code ec;
    if (fs::is_regular_file(fs::symlink_status(side, ec))) util::ensure_private_file(side);
  }
  return std::make_unique<SqlcipherStore>(file, db_key, options);
}

void backup_sqlcipher(const fs::path& source, const crypto::SecretKey& db_key, const fs::path& dest,
                      const SqlcipherOptions& options) {
  if (fs::exists(fs::symlink_status(dest))) throw Error(ErrorCode::conflict, dest.string() + " already exists");
  util::ensure_private_file(dest);
  Connection src(source, db_key, options);
  Connection dst(dest, db_key, options);
  // The snapshot: a read transaction that stays open across every step.
  src.exec_plain("BEGIN");
  src.exec_plain("SELECT count(*) FROM sqlite_master");
  sqlite3_backup* backup = sqlite3_backup_init(dst.db(), "main", src.db(), "main");
  if (backup == nullptr) fail(dst.db(), "cannot start the backup of " + source.string());
  int rc = SQLITE_OK;
  // Bounded steps (4 MiB of pages each) keep each call short; the held read
  // transaction means no step ever sees a newer database than the first.
  for (int busy = 0; busy < 1000;) {
    rc = sqlite3_backup_step(backup, 1024);
    if (rc == SQLITE_OK) continue;
    if (rc != SQLITE_BUSY && rc != SQLITE_LOCKED) break;
    ++busy;
    sqlite3_sleep(10);  // the destination is ours alone; this is a safety net, bounded at 10 s
  }
  sqlite3_backup_finish(backup);
  if (rc != SQLITE_DONE) fail(dst.db(), "backup of " + source.string() + " failed");
  src.exec_plain("COMMIT");
  dst.exec_plain("PRAGMA wal_checkpoint(TRUNCATE)");
  dst.exec_plain("PRAGMA journal_mode = DELETE");
}

}  // namespace custos::store
