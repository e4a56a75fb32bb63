#include "custos/store/postgres_store.h"

#include <libpq-fe.h>

#include <arpa/inet.h>
#include <dlfcn.h>

#include <cctype>
#include <charconv>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "custos/error.h"
#include "custos/util/mutex.h"

namespace custos::store {
namespace {

// libpq is loaded when the first PostgreSQL connection opens, not linked: a
// vault on the embedded store never maps it, nor the Kerberos, LDAP, SASL
// and GnuTLS libraries it pulls in (every `custos` command starts ~11 ms
// sooner, and less code sits in the address space of a process that does
// not use it). These are the functions this file calls.
#define CUSTOS_LIBPQ_FUNCTIONS(X) \
  X(PQclear) \
  X(PQcmdStatus) \
  X(PQcmdTuples) \
  X(PQconnectdbParams) \
  X(PQenterPipelineMode) \
  X(PQerrorMessage) \
  X(PQexec) \
  X(PQexecPrepared) \
  X(PQexitPipelineMode) \
  X(PQfinish) \
  X(PQftype) \
  X(PQgetResult) \
  X(PQgetisnull) \
  X(PQgetlength) \
  X(PQgetvalue) \
  X(PQntuples) \
  X(PQpipelineSync) \
  X(PQprepare) \
  X(PQputCopyData) \
  X(PQputCopyEnd) \
  X(PQresultErrorField) \
  X(PQresultStatus) \
  X(PQsendQueryParams) \
  X(PQsendQueryPrepared) \
  X(PQsetNoticeProcessor) \
  X(PQstatus)

struct Libpq {
#define X(name) decltype(&::name) name = nullptr;
  CUSTOS_LIBPQ_FUNCTIONS(X)
#undef X
};

// Throws Error(store_unavailable) when libpq.so.5 (Debian package libpq5)
// cannot be loaded; the next call tries again.
const Libpq& libpq() {
  static const Libpq lib = [] {
    void* handle = dlopen("libpq.so.5", RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr)
      throw Error(ErrorCode::store_unavailable,
                  std::string("cannot load the PostgreSQL client library (install the libpq5 package): ") + dlerror());
    Libpq l;
#define X(name)                                                                                             \
  l.name = reinterpret_cast<decltype(&::name)>(dlsym(handle, #name));                                       \
  if (l.name == nullptr)                                                                                    \
    throw Error(ErrorCode::store_unavailable, "the PostgreSQL client library libpq.so.5 lacks " #name);
    CUSTOS_LIBPQ_FUNCTIONS(X)
#undef X
    return l;
  }();
  return lib;
}

// Advisory lock namespaces (the first key of the two-int form); the second
// key is a hash of the database and schema, so vaults in different schemas
// of one database do not serialise each other.
constexpr int kWriterLockSpace = 0x43555354;   // "CUST"
constexpr int kMigrateLockSpace = 0x43555355;

// PostgreSQL type OIDs (pg_type.dat) of the results we decode.
constexpr Oid kBool = 16, kBytea = 17, kText = 25, kInt8 = 20, kInt2 = 21, kInt4 = 23, kNumeric = 1700, kFloat4 = 700,
              kFloat8 = 701;

// ---------------------------------------------------------------------------
// SQL translation

bool word_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (std::toupper(static_cast<unsigned char>(a[i])) != std::toupper(static_cast<unsigned char>(b[i]))) return false;
  return true;
}

// The index just past a quoted run starting at `i` (quote char sql[i]); a
// doubled quote inside is an escaped quote.
std::size_t skip_quoted(std::string_view sql, std::size_t i) {
  const char q = sql[i++];
  while (i < sql.size()) {
    if (sql[i] == q) {
      if (i + 1 < sql.size() && sql[i + 1] == q) {
        i += 2;
        continue;
      }
      return i + 1;
    }
    ++i;
  }
  return i;
}

// Whether the call whose '(' is at `open` has two or more top-level arguments.
bool has_several_args(std::string_view sql, std::size_t open) {
  int depth = 0;
  for (std::size_t i = open; i < sql.size();) {
    const char c = sql[i];
    if (c == '\'' || c == '"') {
      i = skip_quoted(sql, i);
      continue;
    }
    if (c == '(') ++depth;
    if (c == ')' && --depth == 0) return false;
    if (c == ',' && depth == 1) return true;
    ++i;
  }
  return false;
}

}  // namespace

// CREATE / DROP / ALTER: statements that change the schema.
bool is_schema_change(std::string_view sql) {
  const auto first = sql.find_first_not_of(" \t\n");
  if (first == std::string_view::npos) return false;
  sql.remove_prefix(first);
  for (std::string_view kw : {"CREATE ", "DROP ", "ALTER "})
    if (sql.substr(0, kw.size()) == kw) return true;
  return false;
}

std::string translate_sql_for_postgres(std::string_view sql) {
  // The statement's first words decide the statement-level rewrites.
  std::vector<std::string_view> head;
  for (std::size_t i = 0; i < sql.size() && head.size() < 4;) {
    if (!word_char(sql[i])) {
      ++i;
      continue;
    }
    std::size_t j = i;
    while (j < sql.size() && word_char(sql[j])) ++j;
    head.push_back(sql.substr(i, j - i));
    i = j;
  }
  auto head_is = [&](std::initializer_list<std::string_view> words) {
    if (head.size() < words.size()) return false;
    std::size_t k = 0;
    for (std::string_view w : words)
      if (!iequals(head[k++], w)) return false;
    return true;
  };
  const bool ddl = head_is({"CREATE", "TABLE"}) || head_is({"ALTER", "TABLE"});
  const bool insert_or_ignore = head_is({"INSERT", "OR", "IGNORE"});

  std::string out;
  out.reserve(sql.size() + 32);
  int param = 0;
  bool dropped_or_ignore = false;
  for (std::size_t i = 0; i < sql.size();) {
    const char c = sql[i];
    if (c == '\'' || c == '"') {
      const std::size_t end = skip_quoted(sql, i);
      out.append(sql.substr(i, end - i));
      i = end;
      continue;
    }
    if (c == '-' && i + 1 < sql.size() && sql[i + 1] == '-') {  // comment to end of line
      const std::size_t end = sql.find('\n', i);
      i = end == std::string_view::npos ? sql.size() : end;
      continue;
    }
    if (c == '?') {
      out += '$';
      out += std::to_string(++param);
      ++i;
      continue;
    }
    if (!word_char(c) || (i > 0 && word_char(sql[i - 1]))) {
      out += c;
      ++i;
      continue;
    }
    std::size_t j = i;
    while (j < sql.size() && word_char(sql[j])) ++j;
    const std::string_view word = sql.substr(i, j - i);
    if (insert_or_ignore && !dropped_or_ignore && iequals(word, "OR")) {
      // "INSERT OR IGNORE INTO" -> "INSERT INTO"; ON CONFLICT goes at the end.
      std::size_t k = j;
      while (k < sql.size() && std::isspace(static_cast<unsigned char>(sql[k]))) ++k;
      if (iequals(sql.substr(k, 6), "IGNORE")) {
        j = k + 6;
        while (j < sql.size() && std::isspace(static_cast<unsigned char>(sql[j]))) ++j;
        dropped_or_ignore = true;
        i = j;
        continue;
      }
    }
    if ((iequals(word, "max") || iequals(word, "min"))) {
      std::size_t k = j;
      while (k < sql.size() && std::isspace(static_cast<unsigned char>(sql[k]))) ++k;
      if (k < sql.size() && sql[k] == '(' && has_several_args(sql, k)) {
        out += iequals(word, "max") ? "greatest" : "least";
        i = j;
        continue;
      }
    }
    if (ddl) {
      if (iequals(word, "BLOB")) {
        out += "BYTEA";
      } else if (iequals(word, "INTEGER")) {
        out += "BIGINT";
      } else if (iequals(word, "TEXT")) {
        out += "TEXT COLLATE \"C\"";
      } else if (iequals(word, "WITHOUT")) {
        std::size_t k = j;
        while (k < sql.size() && std::isspace(static_cast<unsigned char>(sql[k]))) ++k;
        if (iequals(sql.substr(k, 5), "ROWID")) {
          while (!out.empty() && std::isspace(static_cast<unsigned char>(out.back()))) out.pop_back();
          i = k + 5;
          continue;
        }
        out += word;
      } else {
        out += word;
      }
    } else {
      out += word;
    }
    i = j;
  }
  if (dropped_or_ignore) {
    while (!out.empty() && (std::isspace(static_cast<unsigned char>(out.back())) || out.back() == ';')) out.pop_back();
    out += " ON CONFLICT DO NOTHING";
  }
  return out;
}

bool is_postgres_url(std::string_view url) {
  return url.starts_with("postgresql://") || url.starts_with("postgres://");
}

namespace {

// ---------------------------------------------------------------------------
// Errors

bool connection_lost(PGconn* conn, const char* sqlstate) {
  if (libpq().PQstatus(conn) == CONNECTION_BAD) return true;
  if (sqlstate == nullptr) return false;
  const std::string_view s(sqlstate);
  // Class 08: connection exception; 57P01-03: the server is shutting down
  // or cannot accept connections now.
  return s.starts_with("08") || s == "57P01" || s == "57P02" || s == "57P03";
}

// The first line of a libpq message (connection diagnostics only; never a
// statement error, whose text may quote a parameter value).
std::string first_line(const char* msg) {
  std::string s = msg ? msg : "";
  if (const auto nl = s.find('\n'); nl != std::string::npos) s.resize(nl);
  return s;
}

[[noreturn]] void throw_result_error(PGconn* conn, PGresult* res, const std::string& what) {
  const char* sqlstate = res ? libpq().PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
  const std::string state = sqlstate ? sqlstate : "";
  if (connection_lost(conn, sqlstate)) {
    if (res) libpq().PQclear(res);
    throw Error(ErrorCode::store_unavailable, "the PostgreSQL database went away (" + what + ")");
  }
  std::string msg = what;
  if (state.starts_with("23")) {
    const char* constraint = res ? libpq().PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME) : nullptr;
    msg = "constraint violated" + std::string(constraint ? ": " + std::string(constraint) : "") + " (SQLSTATE " +
          state + ")";
    if (res) libpq().PQclear(res);
    throw Error(ErrorCode::conflict, msg);
  }
  // Class 42 (syntax, undefined object) messages name only what the SQL
  // text names; others (22: data exception) may quote a value: SQLSTATE only.
  if (state.starts_with("42") && res) msg += ": " + first_line(libpq().PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
  msg += " (SQLSTATE " + (state.empty() ? std::string("none") : state) + ")";
  if (res) libpq().PQclear(res);
  throw Error(ErrorCode::storage, msg);
}

// ---------------------------------------------------------------------------
// Connections

class Connection {
 public:
  Connection(const std::string& url, const PostgresOptions& options) {
    const std::string timeout = std::to_string(options.connect_timeout_s);
    // The URL comes last: its own connect_timeout (or any other setting) wins.
    const char* keys[] = {"connect_timeout", "application_name", "dbname", nullptr};
    const char* values[] = {timeout.c_str(), "custos", url.c_str(), nullptr};
    conn_ = libpq().PQconnectdbParams(keys, values, 1);
    if (conn_ == nullptr || libpq().PQstatus(conn_) != CONNECTION_OK) {
      const std::string why = conn_ ? first_line(libpq().PQerrorMessage(conn_)) : "out of memory";
      if (conn_) libpq().PQfinish(conn_);
      conn_ = nullptr;
      throw Error(ErrorCode::store_unavailable, "cannot connect to the PostgreSQL database: " + why);
    }
    // Server notices ("relation already exists, skipping") are not errors;
    // libpq would print them on stderr.
    libpq().PQsetNoticeProcessor(conn_, [](void*, const char*) {}, nullptr);
  }
  ~Connection() {
    if (conn_) libpq().PQfinish(conn_);
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  PGconn* pg() const { return conn_; }
  bool healthy() const { return !broken_ && libpq().PQstatus(conn_) == CONNECTION_OK; }
  void mark_broken() { broken_ = true; }

  // Runs a parameterless command (or several, ';'-separated) and discards
  // any rows.
  void simple(const std::string& sql, const std::string& what) {
    PGresult* res = libpq().PQexec(conn_, sql.c_str());
    const auto status = libpq().PQresultStatus(res);
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
      broken_ = broken_ || connection_lost(conn_, res ? libpq().PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr);
      throw_result_error(conn_, res, what);
    }
    libpq().PQclear(res);
  }

  // The prepared statement's name for a portable SQL text, preparing it on
  // first use (the translation runs once per connection and text). The
  // server infers each parameter's type from the statement; where it cannot
  // (`? IS NULL`, a bare `SELECT ?`), the first call's kinds decide.
  const std::string& prepared(std::string_view sql, const Param* params, std::size_t count) {
    if (auto it = cache_.find(sql); it != cache_.end()) return it->second;
    // Appended, not "c" + to_string(...): GCC 12 at -O3 misreads the latter
    // as an overlapping memcpy (-Wrestrict, GCC bug 105329).
    std::string name = std::to_string(cache_.size());
    name.insert(name.begin(), 'c');
    const std::string text = translate_sql_for_postgres(sql);
    PGresult* res = libpq().PQprepare(conn_, name.c_str(), text.c_str(), 0, nullptr);
    const char* state = libpq().PQresultStatus(res) == PGRES_COMMAND_OK ? nullptr : libpq().PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (state && std::string_view(state) == "42P18") {  // indeterminate_datatype
      libpq().PQclear(res);
      std::vector<Oid> types(count, 0);
      for (std::size_t i = 0; i < count; ++i)
        types[i] = params[i].kind == Param::Kind::integer ? kInt8
                   : params[i].kind == Param::Kind::text  ? kText
                   : params[i].kind == Param::Kind::blob  ? kBytea
                                                          : 0;
      res = libpq().PQprepare(conn_, name.c_str(), text.c_str(), static_cast<int>(count), types.data());
    }
    if (libpq().PQresultStatus(res) != PGRES_COMMAND_OK) {
      broken_ = broken_ || connection_lost(conn_, res ? libpq().PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr);
      throw_result_error(conn_, res, "cannot prepare statement");
    }
    libpq().PQclear(res);
    return cache_.emplace(std::string(sql), name).first->second;
  }

 private:
  PGconn* conn_ = nullptr;
  bool broken_ = false;
  struct SqlHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view sql) const { return std::hash<std::string_view>{}(sql); }
  };
  std::unordered_map<std::string, std::string, SqlHash, std::equal_to<>> cache_;
};

// ---------------------------------------------------------------------------
// Rows (binary results)

std::int64_t read_be(const char* p, int bytes) {
  std::uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  // Sign-extend narrower integers.
  if (bytes < 8 && (v >> (bytes * 8 - 1)) & 1) v |= ~std::uint64_t{0} << (bytes * 8);
  return static_cast<std::int64_t>(v);
}

// The integral part of a binary numeric (sum(bigint) returns numeric).
std::int64_t numeric_to_int(const char* p, int len) {
  if (len < 8) return 0;
  const int ndigits = static_cast<int>(read_be(p, 2));
  const int weight = static_cast<int>(read_be(p + 2, 2));
  const auto sign = static_cast<std::uint16_t>(read_be(p + 4, 2));
  std::int64_t v = 0;
  for (int i = 0; i <= weight; ++i) {
    const std::int64_t digit = i < ndigits && 8 + 2 * i + 2 <= len ? read_be(p + 8 + 2 * i, 2) : 0;
    v = v * 10000 + digit;
  }
  return sign == 0x4000 ? -v : v;
}

class PgRow final : public Row {
 public:
  explicit PgRow(PGresult* res) : res_(res) {}
  void at(int row) { row_ = row; }
  bool is_null(int c) const override { return libpq().PQgetisnull(res_, row_, c) != 0; }
  std::int64_t integer(int c) const override {
    if (is_null(c)) return 0;
    const char* p = libpq().PQgetvalue(res_, row_, c);
    const int len = libpq().PQgetlength(res_, row_, c);
    switch (libpq().PQftype(res_, c)) {
      case kInt8: return read_be(p, 8);
      case kInt4: return read_be(p, 4);
      case kInt2: return read_be(p, 2);
      case kBool: return p[0] ? 1 : 0;
      case kNumeric: return numeric_to_int(p, len);
      case kFloat8: {
        double d;
        const std::uint64_t bits = static_cast<std::uint64_t>(read_be(p, 8));
        std::memcpy(&d, &bits, sizeof d);
        return static_cast<std::int64_t>(d);
      }
      case kFloat4: {
        float f;
        const auto bits = static_cast<std::uint32_t>(read_be(p, 4));
        std::memcpy(&f, &bits, sizeof f);
        return static_cast<std::int64_t>(f);
      }
      default: {  // text: parsed as SQLite would
        std::int64_t v = 0;
        std::from_chars(p, p + len, v);
        return v;
      }
    }
  }
  std::string_view text(int c) const override {
    if (is_null(c)) return {};
    switch (libpq().PQftype(res_, c)) {
      case kInt8:
      case kInt4:
      case kInt2:
      case kBool:
      case kNumeric:
        scratch_ = std::to_string(integer(c));
        return scratch_;
      default:
        return {libpq().PQgetvalue(res_, row_, c), static_cast<std::size_t>(libpq().PQgetlength(res_, row_, c))};
    }
  }
  Blob blob(int c) const override {
    if (is_null(c)) return {};
    return {reinterpret_cast<const std::uint8_t*>(libpq().PQgetvalue(res_, row_, c)),
            static_cast<std::size_t>(libpq().PQgetlength(res_, row_, c))};
  }

 private:
  PGresult* res_;
  int row_ = 0;
  mutable std::string scratch_;
};

// A statement's parameters as libpq's PQexecPrepared and PQsendQueryPrepared
// take them, copied (a deferred statement outlives the caller's views).
// Integers and text go as text (the server parses them into whatever the
// statement's context says, as SQLite's affinity would); blobs as binary.
struct WireParams {
  std::vector<std::string> data;  // each parameter's bytes (integers in decimal)
  std::vector<bool> null;
  std::vector<int> lengths;  // of blobs; text is NUL-terminated
  std::vector<int> formats;  // 1: binary (blobs), 0: text

  WireParams(const Param* params, std::size_t count) : data(count), null(count), lengths(count), formats(count) {
    for (std::size_t i = 0; i < count; ++i) {
      const Param& p = params[i];
      switch (p.kind) {
        case Param::Kind::null: null[i] = true; break;
        case Param::Kind::integer: data[i] = std::to_string(p.integer); break;
        case Param::Kind::text: data[i].assign(p.text); break;
        case Param::Kind::blob:
          data[i].assign(reinterpret_cast<const char*>(p.blob.data()), p.blob.size());
          lengths[i] = static_cast<int>(p.blob.size());
          formats[i] = 1;
          break;
      }
    }
  }
  int count() const { return static_cast<int>(data.size()); }
  // The value pointers, valid while this object is unchanged. A zero-length
  // blob is an empty bytea, not NULL: c_str() is never null.
  std::vector<const char*> pointers() const {
    std::vector<const char*> out(data.size(), nullptr);
    for (std::size_t i = 0; i < data.size(); ++i)
      if (!null[i]) out[i] = data[i].c_str();
    return out;
  }
};

class PostgresStore;

class PostgresTransaction final : public Transaction {
 public:
  PostgresTransaction(PostgresStore& store, std::unique_ptr<Connection> conn, TxMode mode)
      : Transaction(mode), store_(store), conn_(std::move(conn)) {}
  ~PostgresTransaction() override;
  void commit() override;
  std::int64_t exec(std::string_view sql, Params params, const RowFn& on_row) override {
    return run(sql, params.begin(), params.size(), on_row);
  }
  std::int64_t exec_v(std::string_view sql, const std::vector<Param>& params, const RowFn& on_row) override {
    return run(sql, params.data(), params.size(), on_row);
  }
  void bulk_insert(std::string_view table, std::span<const std::string_view> columns,
                   const std::vector<Param>& values) override;
  void exec_deferred(std::string_view sql, Params params) override;

 private:
  struct Deferred {
    const std::string* name;  // the connection's prepared statement (stable: a map node)
    WireParams params;
  };
  // Deferred statements sent at most this many to a pipeline: the client
  // writes the whole pipeline before it reads a result, so an unbounded one
  // could fill both directions of the socket and stall (libpq, "Pipeline Mode").
  static constexpr std::size_t kMaxDeferred = 64;

  std::int64_t run(std::string_view sql, const Param* params, std::size_t count, const RowFn& on_row);
  // Sends the deferred statements, and then COMMIT if `commit`, in one
  // pipeline (one round trip) and reads every result. Throws the first
  // failure (the transaction is then failed, as after any failed
  // statement). With `commit`, returns the COMMIT's result for commit() to
  // judge; else null.
  PGresult* send_deferred(bool commit);
  void check_usable() const {
    if (done_) throw Error(ErrorCode::internal, "statement on a finished transaction");
  }

  PostgresStore& store_;
  std::unique_ptr<Connection> conn_;
  std::vector<Deferred> deferred_;
  bool done_ = false;
};

class PostgresStore final : public Store {
 public:
  PostgresStore(std::string url, PostgresOptions options) : url_(std::move(url)), options_(options) {
    auto conn = std::make_unique<Connection>(url_, options_);
    lock_key_ = scope_key(*conn);
    begin_write_sql_ = "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock(" +
                       std::to_string(kWriterLockSpace) + ", " + std::to_string(lock_key_) + ")";
    prepare_database(*conn);
    release(std::move(conn));
  }

  std::unique_ptr<Transaction> begin_transaction(TxMode mode) override {
    auto conn = acquire();
    try {
      const char* begin_sql = mode == TxMode::write         ? begin_write_sql_.c_str()
                              : mode == TxMode::insert_only ? "BEGIN ISOLATION LEVEL READ COMMITTED"
                                                            : "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";
      conn->simple(begin_sql, "cannot begin a transaction");
    } catch (...) {
      conn->mark_broken();
      throw;
    }
    return std::make_unique<PostgresTransaction>(*this, std::move(conn), mode);
  }

  // Commits are durable when the server says so (synchronous_commit = on,
  // the default); a write transaction is already what this asks for.
  std::unique_ptr<Transaction> begin_durable_transaction() override { return begin_transaction(TxMode::write); }

  // PostgreSQL recycles its WAL itself; a CHECKPOINT needs superuser rights
  // the vault's role should not have. Nothing to do.
  void checkpoint() override {}

  std::string backend_name() const override { return "postgresql"; }

  void release(std::unique_ptr<Connection> conn) {
    if (!conn->healthy()) return;
    util::MutexLock lock(pool_mu_);
    if (static_cast<int>(idle_.size()) < options_.max_idle_connections) idle_.push_back(std::move(conn));
  }

 private:
  std::unique_ptr<Connection> acquire() {
    {
      util::MutexLock lock(pool_mu_);
      while (!idle_.empty()) {
        auto conn = std::move(idle_.back());
        idle_.pop_back();
        if (conn->healthy()) return conn;
      }
    }
    return std::make_unique<Connection>(url_, options_);
  }

  // A hash of the database and schema the URL selects (int4).
  static int scope_key(Connection& conn) {
    PGresult* res = libpq().PQexec(conn.pg(), "SELECT hashtext(current_database() || '/' || coalesce(current_schema(), ''))");
    if (libpq().PQresultStatus(res) != PGRES_TUPLES_OK) throw_result_error(conn.pg(), res, "cannot read the schema name");
    const int key = std::stoi(libpq().PQgetvalue(res, 0, 0));
    libpq().PQclear(res);
    return key;
  }


  // What the portable SQL needs of the server beyond the tables (the
  // modules' migrations create those, through service::migrate_schema and
  // store::migrate): min()/max() over bytea, which SQLite has and PostgreSQL
  // lacks. Once per database, under a session advisory lock so concurrent
  // first openers do not race.
  void prepare_database(Connection& conn) {
    const std::string lock_args = std::to_string(kMigrateLockSpace) + ", " + std::to_string(lock_key_);
    conn.simple("SELECT pg_advisory_lock(" + lock_args + ")", "cannot take the migration lock");
    try {
      PGresult* res = libpq().PQexec(conn.pg(),
                             "SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
                             " WHERE p.proname = 'custos_bytea_smaller' AND n.nspname = current_schema()");
      if (libpq().PQresultStatus(res) != PGRES_TUPLES_OK) throw_result_error(conn.pg(), res, "cannot read the catalogue");
      const bool present = libpq().PQntuples(res) > 0;
      libpq().PQclear(res);
      if (!present)
        conn.simple(
            "BEGIN;"
            "CREATE FUNCTION custos_bytea_smaller(a bytea, b bytea) RETURNS bytea LANGUAGE sql IMMUTABLE STRICT"
            " AS 'SELECT CASE WHEN a <= b THEN a ELSE b END';"
            "CREATE FUNCTION custos_bytea_larger(a bytea, b bytea) RETURNS bytea LANGUAGE sql IMMUTABLE STRICT"
            " AS 'SELECT CASE WHEN a >= b THEN a ELSE b END';"
            "CREATE AGGREGATE min(bytea) (SFUNC = custos_bytea_smaller, STYPE = bytea, COMBINEFUNC ="
            " custos_bytea_smaller, PARALLEL = SAFE);"
            "CREATE AGGREGATE max(bytea) (SFUNC = custos_bytea_larger, STYPE = bytea, COMBINEFUNC ="
            " custos_bytea_larger, PARALLEL = SAFE);"
            "COMMIT",
            "cannot create the bytea aggregates");
    } catch (...) {
      libpq().PQclear(libpq().PQexec(conn.pg(), ("SELECT pg_advisory_unlock(" + lock_args + ")").c_str()));
      throw;
    }
    conn.simple("SELECT pg_advisory_unlock(" + lock_args + ")", "cannot release the migration lock");
  }

  std::string url_;
  PostgresOptions options_;
  int lock_key_ = 0;
  std::string begin_write_sql_;
  util::Mutex pool_mu_;
  std::vector<std::unique_ptr<Connection>> idle_ CUSTOS_GUARDED_BY(pool_mu_);
};

PostgresTransaction::~PostgresTransaction() {
  if (!done_) {
    PGresult* res = libpq().PQexec(conn_->pg(), "ROLLBACK");
    if (libpq().PQresultStatus(res) != PGRES_COMMAND_OK) conn_->mark_broken();
    libpq().PQclear(res);
  }
  store_.release(std::move(conn_));
}

void PostgresTransaction::commit() {
  if (done_) throw Error(ErrorCode::internal, "transaction committed twice");
  PGresult* res = deferred_.empty() ? libpq().PQexec(conn_->pg(), "COMMIT") : send_deferred(/*commit=*/true);
  // A COMMIT of an aborted transaction "succeeds" as a ROLLBACK.
  const bool ok = libpq().PQresultStatus(res) == PGRES_COMMAND_OK && std::strcmp(libpq().PQcmdStatus(res), "COMMIT") == 0;
  if (!ok) {
    done_ = libpq().PQresultStatus(res) == PGRES_COMMAND_OK;  // rolled back: nothing left to undo
    if (libpq().PQresultStatus(res) != PGRES_COMMAND_OK) {
      conn_->mark_broken();
      throw_result_error(conn_->pg(), res, "commit failed");
    }
    libpq().PQclear(res);
    throw Error(ErrorCode::storage, "commit failed: the transaction had failed and was rolled back");
  }
  libpq().PQclear(res);
  done_ = true;
}

void PostgresTransaction::exec_deferred(std::string_view sql, Params params) {
  check_usable();
  const std::string* name = nullptr;
  try {
    name = &conn_->prepared(sql, params.begin(), params.size());
  } catch (const Error& e) {
    if (e.code() == ErrorCode::store_unavailable) conn_->mark_broken();
    throw;
  }
  deferred_.push_back({name, WireParams(params.begin(), params.size())});
  if (deferred_.size() >= kMaxDeferred) send_deferred(/*commit=*/false);
}

PGresult* PostgresTransaction::send_deferred(bool commit) {
  std::vector<Deferred> batch;
  batch.swap(deferred_);
  PGconn* pg = conn_->pg();
  const auto broken = [&](const char* what) -> Error {
    conn_->mark_broken();
    return Error(ErrorCode::store_unavailable,
                 std::string("the PostgreSQL database went away (") + what + ": " + first_line(libpq().PQerrorMessage(pg)) + ")");
  };
  if (libpq().PQenterPipelineMode(pg) != 1) throw broken("cannot enter pipeline mode");
  for (const Deferred& d : batch) {
    const std::vector<const char*> values = d.params.pointers();
    if (libpq().PQsendQueryPrepared(pg, d.name->c_str(), d.params.count(), values.data(), d.params.lengths.data(),
                                    d.params.formats.data(), 1) != 1)
      throw broken("cannot send a statement");
  }
  if (commit && libpq().PQsendQueryParams(pg, "COMMIT", 0, nullptr, nullptr, nullptr, nullptr, 1) != 1)
    throw broken("cannot send COMMIT");
  if (libpq().PQpipelineSync(pg) != 1) throw broken("cannot send the pipeline");
  // One result (then a null) per statement, then the sync. After a failure
  // the server skips the rest (PGRES_PIPELINE_ABORTED) up to the sync; the
  // explicit transaction stays open, failed, for the destructor's ROLLBACK.
  PGresult* failed = nullptr;
  PGresult* committed = nullptr;
  const std::size_t expected = batch.size() + (commit ? 1 : 0);
  for (std::size_t i = 0; i < expected; ++i) {
    PGresult* res = libpq().PQgetResult(pg);
    if (res == nullptr) {
      if (failed) libpq().PQclear(failed);
      throw broken("a result is missing");
    }
    const auto status = libpq().PQresultStatus(res);
    if (status == PGRES_FATAL_ERROR && failed == nullptr) {
      failed = res;
    } else if (commit && i == batch.size() && status != PGRES_PIPELINE_ABORTED) {
      committed = res;
    } else {
      libpq().PQclear(res);
    }
    while (PGresult* extra = libpq().PQgetResult(pg)) libpq().PQclear(extra);  // the null that ends a statement's results
  }
  PGresult* sync = libpq().PQgetResult(pg);
  const bool synced = sync != nullptr && libpq().PQresultStatus(sync) == PGRES_PIPELINE_SYNC;
  if (sync) libpq().PQclear(sync);
  if (!synced || libpq().PQexitPipelineMode(pg) != 1) {
    if (failed) libpq().PQclear(failed);
    if (committed) libpq().PQclear(committed);
    throw broken("the pipeline did not end");
  }
  if (failed) {
    if (committed) libpq().PQclear(committed);
    if (connection_lost(pg, libpq().PQresultErrorField(failed, PG_DIAG_SQLSTATE))) conn_->mark_broken();
    throw_result_error(pg, failed, "statement failed");
  }
  if (commit && committed == nullptr) throw broken("COMMIT got no result");
  return committed;
}

std::int64_t PostgresTransaction::run(std::string_view sql, const Param* params, std::size_t count,
                                      const RowFn& on_row) {
  check_usable();
  if (!deferred_.empty()) send_deferred(/*commit=*/false);
  // Schema changes (the modules' migrations) have no parameters and are run
  // once: the simple protocol, not a cached prepared statement.
  if (count == 0 && is_schema_change(sql)) {
    try {
      conn_->simple(translate_sql_for_postgres(sql), "schema change failed");
    } catch (const Error& e) {
      if (e.code() == ErrorCode::store_unavailable) conn_->mark_broken();
      throw;
    }
    return 0;
  }
  const std::string* name = nullptr;
  try {
    name = &conn_->prepared(sql, params, count);
  } catch (const Error& e) {
    if (e.code() == ErrorCode::store_unavailable) conn_->mark_broken();
    throw;
  }
  const WireParams wire(params, count);
  const std::vector<const char*> values = wire.pointers();
  PGresult* res = libpq().PQexecPrepared(conn_->pg(), name->c_str(), wire.count(), values.data(), wire.lengths.data(),
                                         wire.formats.data(), 1);
  const auto status = libpq().PQresultStatus(res);
  if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) {
    if (connection_lost(conn_->pg(), res ? libpq().PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr)) conn_->mark_broken();
    throw_result_error(conn_->pg(), res, "statement failed");
  }
  struct Clear {
    PGresult* r;
    ~Clear() { libpq().PQclear(r); }
  } clear{res};
  if (status == PGRES_TUPLES_OK && on_row) {
    PgRow row(res);
    const int n = libpq().PQntuples(res);
    for (int r = 0; r < n; ++r) {
      row.at(r);
      on_row(row);
    }
  }
  const char* changed = libpq().PQcmdTuples(res);
  return changed && *changed ? std::stoll(changed) : 0;
}

// Binary COPY: a header, then per row a 16-bit field count and each field
// as a 32-bit length (-1: NULL) and its bytes in the type's binary format
// (int8 big-endian, text and bytea raw). Every INTEGER column is BIGINT here.
void PostgresTransaction::bulk_insert(std::string_view table, std::span<const std::string_view> columns,
                                      const std::vector<Param>& values) {
  check_usable();
  if (!deferred_.empty()) send_deferred(/*commit=*/false);
  if (columns.empty() || values.empty()) return;
  std::string sql = "COPY " + std::string(table) + " (";
  for (std::size_t c = 0; c < columns.size(); ++c) (sql += c ? ", " : "") += columns[c];
  sql += ") FROM STDIN (FORMAT binary)";
  PGresult* res = libpq().PQexec(conn_->pg(), sql.c_str());
  if (libpq().PQresultStatus(res) != PGRES_COPY_IN) {
    if (connection_lost(conn_->pg(), res ? libpq().PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr)) conn_->mark_broken();
    throw_result_error(conn_->pg(), res, "cannot start COPY");
  }
  libpq().PQclear(res);

  std::string buf;
  buf.reserve(1 << 20);
  auto put16 = [&](std::uint16_t v) {
    v = htons(v);
    buf.append(reinterpret_cast<const char*>(&v), 2);
  };
  auto put32 = [&](std::uint32_t v) {
    v = htonl(v);
    buf.append(reinterpret_cast<const char*>(&v), 4);
  };
  bool failed = false;
  auto flush = [&] {
    if (!failed && libpq().PQputCopyData(conn_->pg(), buf.data(), static_cast<int>(buf.size())) != 1) failed = true;
    buf.clear();
  };
  buf.append("PGCOPY\n\377\r\n\0", 11);
  put32(0);  // flags
  put32(0);  // header extension length
  for (std::size_t at = 0; at + columns.size() <= values.size(); at += columns.size()) {
    put16(static_cast<std::uint16_t>(columns.size()));
    for (std::size_t c = 0; c < columns.size(); ++c) {
      const Param& p = values[at + c];
      switch (p.kind) {
        case Param::Kind::null: put32(0xFFFFFFFFu); break;
        case Param::Kind::integer: {
          put32(8);
          const auto u = static_cast<std::uint64_t>(p.integer);
          put32(static_cast<std::uint32_t>(u >> 32));
          put32(static_cast<std::uint32_t>(u));
          break;
        }
        case Param::Kind::text:
          put32(static_cast<std::uint32_t>(p.text.size()));
          buf.append(p.text);
          break;
        case Param::Kind::blob:
          put32(static_cast<std::uint32_t>(p.blob.size()));
          buf.append(reinterpret_cast<const char*>(p.blob.data()), p.blob.size());
          break;
      }
    }
    if (buf.size() >= (1 << 20)) flush();
  }
  put16(0xFFFF);  // trailer
  flush();
  if (libpq().PQputCopyEnd(conn_->pg(), failed ? "custos: COPY data could not be sent" : nullptr) != 1) failed = true;
  res = libpq().PQgetResult(conn_->pg());
  const bool ok = libpq().PQresultStatus(res) == PGRES_COMMAND_OK;
  if (!ok) {
    if (connection_lost(conn_->pg(), res ? libpq().PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr)) conn_->mark_broken();
    // Drain whatever else the server sends for this command.
    for (PGresult* more = libpq().PQgetResult(conn_->pg()); more; more = libpq().PQgetResult(conn_->pg())) libpq().PQclear(more);
    throw_result_error(conn_->pg(), res, "COPY into " + std::string(table) + " failed");
  }
  libpq().PQclear(res);
  for (PGresult* more = libpq().PQgetResult(conn_->pg()); more; more = libpq().PQgetResult(conn_->pg())) libpq().PQclear(more);
  if (failed) throw Error(ErrorCode::store_unavailable, "the PostgreSQL database went away (COPY)");
}

}  // namespace

std::unique_ptr<Store> open_postgres(const std::string& url, const PostgresOptions& options) {
  return std::make_unique<PostgresStore>(url, options);
}

void postgres_exec_admin(const std::string& url, const std::string& sql) {
  Connection conn(url, PostgresOptions{});
  conn.simple(sql, "administrative statement failed");
}

}  // namespace custos::store
