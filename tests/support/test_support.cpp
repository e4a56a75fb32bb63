#include "test_support.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <regex>

#include <nlohmann/json.hpp>
#include <sodium.h>

#include "custos/service/schema.h"
#include "custos/store/key_table.h"
#include "custos/store/postgres_store.h"
#include "custos/store/sqlcipher_store.h"
#include "custos/util/files.h"

namespace custos::testing {
namespace fs = std::filesystem;

TempDir::TempDir() {
  std::string templ = (fs::temp_directory_path() / "custos-test-XXXXXX").string();
  if (::mkdtemp(templ.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = templ;
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::permissions(path_, fs::perms::owner_all, fs::perm_options::add, ec);
  fs::remove_all(path_, ec);
}

std::unique_ptr<store::Store> open_migrated_store(const fs::path& file, const crypto::SecretKey& key) {
  auto store = store::open_sqlcipher(file, key);
  service::migrate_schema(*store);
  return store;
}

void regress_to_global_schema(store::Transaction& tx, int version) {
  static const std::regex create_table(R"(CREATE TABLE(?: IF NOT EXISTS)?\s+(\w+))");
  static const std::regex create_index(R"(CREATE (?:UNIQUE )?INDEX\s+(\w+))");
  static const std::regex drop_index(R"(DROP INDEX(?: IF EXISTS)?\s+(\w+))");
  for (const auto& module : service::schema()) {
    std::map<std::string, std::string> index_ddl;  // as the kept steps created them
    for (const auto& step : module.steps) {
      const bool kept = step.legacy_global > 0 && step.legacy_global <= version;
      for (const std::string_view sql_view : step.statements) {
        const std::string sql(sql_view);
        std::smatch m;
        if (kept) {
          if (std::regex_search(sql, m, create_index)) index_ddl[m[1]] = sql;
          continue;
        }
        if (std::regex_search(sql, m, create_table)) tx.exec("DROP TABLE IF EXISTS " + m[1].str());
        if (std::regex_search(sql, m, drop_index) && index_ddl.count(m[1])) {
          std::string ddl = index_ddl[m[1]];
          ddl.insert(ddl.find("INDEX") + 5, " IF NOT EXISTS");
          tx.exec(ddl);
        }
      }
    }
  }
  tx.exec("DROP TABLE IF EXISTS schema_versions");
  tx.exec("PRAGMA user_version = " + std::to_string(version));
}

fs::path shipped_policies() { return fs::path(CUSTOS_SOURCE_DIR) / "policies"; }

std::string postgres_test_url() {
  for (const char* name : {"CUSTOS_TEST_PG_URL", "CUSTOS_TEST_STORE"})
    if (const char* url = std::getenv(name); url && store::is_postgres_url(url)) return url;
  return "";
}

bool vaults_on_postgres() {
  const char* url = std::getenv("CUSTOS_TEST_STORE");
  return url != nullptr && store::is_postgres_url(url);
}

std::string fresh_test_store_url() {
  const char* url = std::getenv("CUSTOS_TEST_STORE");
  if (url == nullptr || !store::is_postgres_url(url)) return "";
  return fresh_postgres_schema(url);
}

std::string fresh_postgres_schema(const std::string& base) {
  unsigned char raw[8];
  randombytes_buf(raw, sizeof raw);
  char hex[sizeof raw * 2 + 1];
  sodium_bin2hex(hex, sizeof hex, raw, sizeof raw);
  const std::string schema = std::string("t_") + hex;
  store::postgres_exec_admin(base, "CREATE SCHEMA " + schema);
  // libpq's URL form of `options=-c search_path=<schema>`.
  return base + (base.find('?') == std::string::npos ? "?" : "&") + "options=-csearch_path%3D" + schema;
}

std::unique_ptr<store::Store> open_vault_store(const fs::path& data_dir, crypto::Keyring& keyring) {
  std::error_code ec;
  if (fs::exists(data_dir / "store.url", ec)) {
    std::string url = util::read_text_file(data_dir / "store.url");
    while (!url.empty() && std::isspace(static_cast<unsigned char>(url.back()))) url.pop_back();
    return store::open_postgres(url);
  }
  return store::open_sqlcipher(data_dir / "custos.db", store::read_db_key(keyring, data_dir / "keys"));
}

namespace {

// The configuration matrix (docs/testing.md): ctest runs the records, service,
// identity and DSR suites once more with each of these set, so a behaviour
// that holds only with the key file, or only without custosd's audit journal,
// is caught.
bool matrix_journal_on() {
  const char* v = std::getenv("CUSTOS_TEST_JOURNAL");
  return v != nullptr && std::string_view(v) == "on";
}

std::optional<std::string> matrix_passphrase() {
  const char* v = std::getenv("CUSTOS_TEST_KEY");
  if (v == nullptr || std::string_view(v) != "passphrase") return std::nullopt;
  return std::string("correct horse battery staple, matrix run");
}

}  // namespace

TestVault::TestVault(std::optional<std::string> passphrase)
    : passphrase_(passphrase ? passphrase : matrix_passphrase()) {
  service::InitOptions o;
  o.data_dir = data_dir();
  o.store_url = fresh_test_store_url();
  o.passphrase = passphrase_;
  o.fast_kdf = true;
  o.shipped_policies = shipped_policies();
  init = service::init_data_dir(o);
  service = service::Service::open(open_options());
}

service::OpenOptions TestVault::open_options() const {
  service::OpenOptions open;
  open.data_dir = data_dir();
  open.passphrase = passphrase_;
  open.audit_journal = matrix_journal_on();
  return open;
}

service::Caller TestVault::caller(const std::string& role, const std::string& purpose) {
  return service::Caller{access::Principal{"test-" + role, role, "tok-" + role}, purpose, "req-test"};
}

void TestVault::use_clock(std::function<std::int64_t()> clock) {
  service.reset();
  service::OpenOptions open = open_options();
  open.clock_us = std::move(clock);
  service = service::Service::open(open);
}

service::Caller TestVault::admin(const std::string& purpose) { return caller("admin", purpose); }

RunResult run(const std::vector<std::string>& argv, const std::string& stdin_text) {
  int in_pipe[2], out_pipe[2], err_pipe[2];
  if (::pipe(in_pipe) || ::pipe(out_pipe) || ::pipe(err_pipe)) throw std::runtime_error("pipe failed");
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(in_pipe[0], 0);
    ::dup2(out_pipe[1], 1);
    ::dup2(err_pipe[1], 2);
    for (int fd : {in_pipe[0], in_pipe[1], out_pipe[0], out_pipe[1], err_pipe[0], err_pipe[1]}) ::close(fd);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::close(in_pipe[0]);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  RunResult r;
  // Feed stdin and drain both outputs without deadlocking on full pipes.
  std::size_t written = 0;
  bool in_open = true;
  if (stdin_text.empty()) {
    ::close(in_pipe[1]);
    in_open = false;
  }
  bool out_open = true, err_open = true;
  while (out_open || err_open) {
    pollfd fds[3];
    int n = 0;
    if (out_open) fds[n++] = {out_pipe[0], POLLIN, 0};
    if (err_open) fds[n++] = {err_pipe[0], POLLIN, 0};
    if (in_open) fds[n++] = {in_pipe[1], POLLOUT, 0};
    if (::poll(fds, n, 60000) <= 0) break;  // bounded: a hung child fails the test
    for (int i = 0; i < n; ++i) {
      if (!fds[i].revents) continue;
      if (fds[i].fd == in_pipe[1]) {
        const ssize_t w = ::write(in_pipe[1], stdin_text.data() + written, stdin_text.size() - written);
        if (w > 0) written += static_cast<std::size_t>(w);
        if (w < 0 || written == stdin_text.size()) {
          ::close(in_pipe[1]);
          in_open = false;
        }
        continue;
      }
      char buf[65536];
      const ssize_t got = ::read(fds[i].fd, buf, sizeof buf);
      if (got <= 0) {
        ::close(fds[i].fd);
        (fds[i].fd == out_pipe[0] ? out_open : err_open) = false;
      } else {
        (fds[i].fd == out_pipe[0] ? r.out : r.err).append(buf, static_cast<std::size_t>(got));
      }
    }
  }
  if (in_open) ::close(in_pipe[1]);
  if (out_open) ::close(out_pipe[0]);
  if (err_open) ::close(err_pipe[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

std::set<std::string> campaign_ids(TestVault& v, const std::string& purpose, const std::string& channel) {
  std::set<std::string> ids;
  v.service->campaign_fetch(v.caller("marketing", purpose),
                            {{"purpose", purpose}, {"channel", channel}, {"fields", {"email"}}},
                            [&](const std::string& line) {
                              const auto j = nlohmann::json::parse(line);
                              if (j.contains("id")) ids.insert(j["id"].get<std::string>());
                              return true;
                            });
  return ids;
}

std::vector<std::string> files_containing(const fs::path& dir, const std::string& needle) {
  std::vector<std::string> hits;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    std::ifstream in(entry.path(), std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (bytes.find(needle) != std::string::npos) hits.push_back(entry.path().string());
  }
  return hits;
}

ErrorCode code_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.code();
  }
  return ErrorCode::internal;
}

}  // namespace custos::testing
