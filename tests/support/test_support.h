// Helpers shared by the test suites: temporary directories, a freshly
// initialised vault, and running the built binaries.
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "custos/crypto/keyring.h"
#include "custos/crypto/secret_key.h"
#include "custos/error.h"
#include "custos/service/service.h"
#include "custos/store/store.h"

namespace custos::testing {

// A unique directory under /tmp, removed (recursively) on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

std::filesystem::path shipped_policies();

// The store a test vault is created in. Empty (SQLCipher in the data dir)
// unless CUSTOS_TEST_STORE names a PostgreSQL database (scripts/test.sh
// sets it for its second ctest run): then a fresh schema in that database,
// so every vault starts empty and vaults of parallel tests never meet.
std::string fresh_test_store_url();
// True in the suite's PostgreSQL run (CUSTOS_TEST_STORE names a database):
// for the few tests of SQLCipher-only or journal-only behaviour, which skip.
bool vaults_on_postgres();
// A PostgreSQL cluster for the backend conformance tests, given in either
// run: CUSTOS_TEST_PG_URL, else CUSTOS_TEST_STORE; empty if neither.
std::string postgres_test_url();
// A fresh, empty schema in the database `base_url` names, as a URL.
std::string fresh_postgres_schema(const std::string& base_url);
// The store of the vault in `data_dir`, opened directly (its SQLCipher file,
// or the PostgreSQL database `init` recorded in <data-dir>/store.url).
std::unique_ptr<store::Store> open_vault_store(const std::filesystem::path& data_dir, crypto::Keyring& keyring);

// A vault initialised in a temp dir (fast KDF), opened as a Service.
// The configuration matrix changes how: CUSTOS_TEST_KEY=passphrase protects
// the master key with a passphrase instead of a key file (when the test gives
// none), CUSTOS_TEST_JOURNAL=on records reads through the audit journal as
// custosd does (a local file on SQLCipher, the audit_pending table on PostgreSQL).
struct TestVault {
 private:
  std::optional<std::string> passphrase_;  // first: init and open use it

 public:
  TempDir dir;
  service::InitResult init;
  std::unique_ptr<service::Service> service;
  explicit TestVault(std::optional<std::string> passphrase = std::nullopt);
  service::Caller caller(const std::string& role, const std::string& purpose);
  service::Caller admin(const std::string& purpose = "administration");
  // Reopens the service with an injected clock (Unix microseconds).
  void use_clock(std::function<std::int64_t()> clock);
  std::filesystem::path data_dir() const { return dir.path() / "data"; }
  // How this vault is opened (data dir, passphrase, journal): for a test
  // that reopens it, so a matrix run reopens it the same way.
  service::OpenOptions open_options() const;
};

// The subject ids a marketing caller's campaign fetch for `purpose` on
// `channel` returns (asking for the e-mail field).
std::set<std::string> campaign_ids(TestVault& v, const std::string& purpose, const std::string& channel);

// A fresh (or existing) SQLCipher store at `file`, migrated to the vault's
// schema (service::migrate_schema), for tests that drive modules directly.
std::unique_ptr<store::Store> open_migrated_store(const std::filesystem::path& file, const crypto::SecretKey& key);
// Turns a current SQLCipher database back into what the global runner of
// release `version` (1..9) left: the tables of every later step dropped, the
// indexes later steps dropped created again, no module versions and
// PRAGMA user_version = `version`. Rows of the remaining tables are kept. For
// tests of upgrades from a real old data dir; later steps rerun on open.
void regress_to_global_schema(store::Transaction& tx, int version);

struct RunResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs `argv` (no shell) with `stdin_text`, capturing stdout and stderr.
RunResult run(const std::vector<std::string>& argv, const std::string& stdin_text = "");

// The ErrorCode `fn` throws as custos::Error; ErrorCode::internal if it
// throws nothing (so an expected failure that did not happen fails the test).
ErrorCode code_of(const std::function<void()>& fn);

// True if any file under `dir` contains `needle` as bytes.
std::vector<std::string> files_containing(const std::filesystem::path& dir, const std::string& needle);

}  // namespace custos::testing
