// custos/store/store.h — the storage interface every backend implements.
//
// A Store hands out Transactions; each logical operation of the vault runs in
// exactly one. SQL is written once, in the portable subset both backends
// accept: positional `?` parameters, INTEGER / TEXT / BLOB columns, no UPSERT,
// no RETURNING, no window functions. Backends translate placeholders and
// column types (the PostgreSQL backend maps BLOB to BYTEA and `?` to `$n`).
//
// Everything a store sees is already ciphertext, a blind index or a
// non-personal column; the SQLCipher backend encrypts the file as well.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace custos::store {

using Blob = std::span<const std::uint8_t>;

// A statement parameter: a view, valid for the duration of the call.
struct Param {
  enum class Kind { null, integer, text, blob };
  Kind kind = Kind::null;
  std::int64_t integer = 0;
  std::string_view text;
  Blob blob;

  Param() = default;
  Param(std::nullptr_t) {}
  Param(std::int64_t v) : kind(Kind::integer), integer(v) {}
  Param(int v) : kind(Kind::integer), integer(v) {}
  Param(std::uint32_t v) : kind(Kind::integer), integer(v) {}
  Param(std::string_view v) : kind(Kind::text), text(v) {}
  Param(const std::string& v) : kind(Kind::text), text(v) {}
  Param(const char* v) : kind(Kind::text), text(v) {}
  Param(Blob v) : kind(Kind::blob), blob(v) {}
  Param(const std::vector<std::uint8_t>& v) : kind(Kind::blob), blob(v) {}
  template <std::size_t N>
  Param(const std::array<std::uint8_t, N>& v) : kind(Kind::blob), blob(v) {}
};

using Params = std::initializer_list<Param>;

// One result row; views are valid only inside the row callback.
class Row {
 public:
  virtual ~Row() = default;
  virtual bool is_null(int column) const = 0;
  virtual std::int64_t integer(int column) const = 0;
  virtual std::string_view text(int column) const = 0;
  virtual Blob blob(int column) const = 0;
  std::vector<std::uint8_t> blob_copy(int column) const {
    const Blob b = blob(column);
    return {b.begin(), b.end()};
  }
};

using RowFn = std::function<void(const Row&)>;

// `insert_only`: a write transaction that only inserts rows under fresh keys
// into tables whose rows no transaction updates in place (the audit's
// pending entries). It does not queue behind the writers' lock on
// PostgreSQL, so it never waits for a long write; SQLCipher has one writer
// at a time anyway and runs it as `write`.
enum class TxMode { read, write, insert_only };

class Transaction {
 public:
  // Rolls back unless commit() succeeded.
  virtual ~Transaction() = default;
  virtual void commit() = 0;
  // Runs a statement; calls `on_row` for each result row. Returns the number
  // of rows changed (for INSERT/UPDATE/DELETE).
  virtual std::int64_t exec(std::string_view sql, Params params = {}, const RowFn& on_row = nullptr) = 0;
  // Same, with a runtime-sized parameter list.
  virtual std::int64_t exec_v(std::string_view sql, const std::vector<Param>& params,
                              const RowFn& on_row = nullptr) = 0;
  // Runs a statement whose outcome the caller does not read (an INSERT: no
  // rows, no count). Its failure may surface later: at the transaction's
  // next statement or at commit(), which then throw it and leave the
  // transaction failed, so nothing of it is committed. Statements keep
  // their order, and the transaction's later reads see their effects. A
  // backend may send such statements together (PostgreSQL: in one pipeline
  // with the next statement's round trip or with the COMMIT, instead of a
  // round trip each); the default runs it at once.
  virtual void exec_deferred(std::string_view sql, Params params = {}) { exec(sql, params); }
  TxMode mode() const { return mode_; }

  // Inserts rows into `table`: `values` holds columns.size() parameters per
  // row, row after row. For batch ingest; a constraint violation fails the
  // whole call (Error(conflict)) and leaves the transaction unusable on
  // PostgreSQL. The default runs one prepared INSERT per row; the PostgreSQL
  // backend streams the rows with COPY … FROM STDIN (FORMAT binary).
  virtual void bulk_insert(std::string_view table, std::span<const std::string_view> columns,
                           const std::vector<Param>& values) {
    std::string sql = "INSERT INTO " + std::string(table) + " (";
    for (std::size_t c = 0; c < columns.size(); ++c) (sql += c ? ", " : "") += columns[c];
    sql += ") VALUES (";
    for (std::size_t c = 0; c < columns.size(); ++c) sql += c ? ", ?" : "?";
    sql += ")";
    std::vector<Param> row(columns.size());
    for (std::size_t at = 0; at + columns.size() <= values.size(); at += columns.size()) {
      for (std::size_t c = 0; c < columns.size(); ++c) row[c] = values[at + c];
      exec_v(sql, row);
    }
  }

  // Convenience: the first column of the first row as an integer, if any.
  std::optional<std::int64_t> scalar(std::string_view sql, Params params = {}) {
    std::optional<std::int64_t> out;
    exec(sql, params, [&](const Row& r) {
      if (!out && !r.is_null(0)) out = r.integer(0);
    });
    return out;
  }

 protected:
  explicit Transaction(TxMode mode) : mode_(mode) {}

 private:
  TxMode mode_;
};

// The write transactions of one bulk load (an import's chunks), begun one
// at a time from Store::begin_bulk_load(). Each has exactly the guarantees of
// Store::begin(TxMode::write): atomic, durable on commit, rolled back unless
// committed, serialised with every other writer. What differs is cost only:
// a backend may keep one connection, its page cache and its log for the
// whole load (SQLCipher: see SqlcipherOptions::bulk_*). A transaction must
// end before the next begins and before the BulkLoad is destroyed.
class BulkLoad {
 public:
  virtual ~BulkLoad() = default;
  virtual std::unique_ptr<Transaction> begin() = 0;
};

class Store {
 public:
  virtual ~Store() = default;
  // Write transactions are serialised (one writer at a time, across
  // processes for SQLCipher); read transactions see a consistent snapshot.
  // Inside a ReadSnapshot of this store on the calling thread, a read
  // transaction is a share of the snapshot's; a write transaction (or a
  // durable one) first ends the sharing (see ReadSnapshot).
  std::unique_ptr<Transaction> begin(TxMode mode);
  // A write transaction whose commit survives a power cut, not only a crash
  // of the process (SQLCipher: synchronous=FULL for this commit, one fsync).
  // For commits after which other copies of the data are discarded.
  std::unique_ptr<Transaction> begin_durable();
  // Ends the sharing of this thread's ReadSnapshot of this store, if any:
  // its next read transaction sees every commit made before it began. For a
  // thread that waited for another thread's or process's commit (the audit
  // fold) and must now read what it committed.
  void end_shared_reads();
  // Pushes committed pages into the main file and truncates the log (after
  // an erasure, so no pre-image of shredded data survives in the WAL).
  virtual void checkpoint() = 0;
  // For loads that commit many large write transactions in a row. The
  // default begins each with begin(TxMode::write).
  std::unique_ptr<BulkLoad> begin_bulk_load();
  virtual std::string backend_name() const = 0;
  // The global schema version a release before per-module versions recorded
  // (SQLCipher: PRAGMA user_version), 0 if none; read by the migration
  // runner (migrations.h) to adopt such a database in place.
  virtual int legacy_schema_version(Transaction& tx) {
    (void)tx;
    return 0;
  }

 protected:
  // What a backend implements: a transaction of its own, never shared.
  virtual std::unique_ptr<Transaction> begin_transaction(TxMode mode) = 0;
  virtual std::unique_ptr<Transaction> begin_durable_transaction() = 0;
  virtual std::unique_ptr<BulkLoad> begin_bulk_load_transactions();
};

// The reads of one short piece of work (a request: authenticate, look up,
// read) in one read transaction of the backend instead of one each: while a
// ReadSnapshot lives, every read transaction its thread begins on `store`
// is a share of one backend transaction, begun at the first of them and
// ended with the snapshot. They see the same data, pay for one BEGIN and
// one COMMIT (SQLCipher: one set of file locks; PostgreSQL: one round trip
// fewer per read), and find the pages the earlier ones loaded still cached.
//
// A write transaction begun on the thread ends the sharing first (its
// reads run on its own connection as before), so a read after the thread's
// own write sees the write: the next read transaction starts a fresh
// share. A statement that fails ends it too (PostgreSQL cannot run another
// statement in a failed transaction). Shares begun before either keep the
// transaction they had until they end.
//
// Not for long work, nor around a bulk load (whose transactions do not end
// the sharing): an open read transaction keeps SQLite from
// checkpointing past it and holds a PostgreSQL connection. Snapshots nest
// (an inner one of the same store adds nothing); not movable, not shared
// between threads.
class ReadSnapshot {
 public:
  explicit ReadSnapshot(Store& store);
  ~ReadSnapshot();
  ReadSnapshot(const ReadSnapshot&) = delete;
  ReadSnapshot& operator=(const ReadSnapshot&) = delete;

 private:
  friend class Store;
  friend class SharedRead;
  Store& store_;
  ReadSnapshot* outer_;                  // the thread's enclosing snapshot, of any store
  std::shared_ptr<Transaction> shared_;  // the backend transaction, from the first read on
};

}  // namespace custos::store
