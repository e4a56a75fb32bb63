// Backup and restore (issue 21): the restore drill under write load, and the
// attacks on an archive (tampering, truncation, path traversal, a non-empty
// target), through the real `custos` binary on a real vault.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "custos/audit/audit_log.h"
#include "custos/crypto/keyring.h"
#include "custos/crypto/signer.h"
#include "custos/records/storage.h"
#include "custos/service/backup.h"
#include "custos/store/key_table.h"
#include "custos/store/postgres_store.h"
#include "test_support.h"

namespace custos {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::run;
using testing::TempDir;
using testing::TestVault;

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}
void spit(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << bytes;
}

json person(int i) {
  return {{"fields",
           {{"email", "drill" + std::to_string(i) + "@example.com"},
            {"given_name", "Given" + std::to_string(i)},
            {"family_name", "Family" + std::to_string(i)}}}};
}

class Backup : public ::testing::Test {
 protected:
  // `custos backup` copies SQLCipher files; a PostgreSQL vault is backed up
  // with the database's tools (docs/postgresql.md).
  void SetUp() override {
    if (!testing::fresh_test_store_url().empty()) GTEST_SKIP() << "backup is SQLCipher-only";
  }
  TestVault vault;
  TempDir work;
  fs::path archive = work.path() / "vault.backup";
  testing::RunResult custos(std::vector<std::string> args) {
    args.insert(args.begin(), {CUSTOS_CLI_PATH, "--data-dir", vault.data_dir().string()});
    return run(args);
  }
  testing::RunResult backup() { return custos({"backup", "--out", archive.string()}); }
  testing::RunResult restore_to(const fs::path& dir) {
    return custos({"restore", archive.string(), "--data-dir", dir.string(), "--master-key-dir",
                   (vault.data_dir() / "keys").string()});
  }
  // The archive's manifest (second line) and the offset of the first member.
  std::pair<json, std::size_t> manifest() {
    const std::string bytes = slurp(archive);
    const auto first = bytes.find('\n');
    const auto second = bytes.find('\n', first + 1);
    return {json::parse(bytes.substr(first + 1, second - first - 1)), second + 1};
  }
};

TEST_F(Backup, ARestoreDrillUnderWriteLoadGetsEverySubjectAndTheAuditRoot) {
  std::mutex mu;
  std::map<std::string, json> written;  // id -> fields, in the live vault
  for (int i = 0; i < 50; ++i) {
    const json r = vault.service->create_subject(vault.admin(), person(i));
    written[r["id"]] = person(i)["fields"];
  }
  const std::size_t before_backup = written.size();
  std::condition_variable grew;
  std::atomic<bool> stop{false};
  std::atomic<int> during{0};
  std::atomic<bool> backing_up{false};
  std::thread writer([&] {
    for (int i = 1000; !stop; ++i) {
      const json r = vault.service->create_subject(vault.admin(), person(i));
      vault.service->get_subject(vault.caller("service", "customer_service"), r["id"].get<std::string>());
      {
        std::lock_guard lock(mu);
        written[r["id"]] = person(i)["fields"];
        if (backing_up) ++during;
      }
      grew.notify_all();
    }
  });
  // Waits (bounded) until the writer has added `n` more subjects.
  const auto wait_for_more = [&](std::size_t n) {
    std::unique_lock lock(mu);
    const std::size_t target = written.size() + n;
    return grew.wait_for(lock, std::chrono::seconds(60), [&] { return written.size() >= target; });
  };
  ASSERT_TRUE(wait_for_more(5));  // the load is on before the backup starts
  backing_up = true;
  const auto b = backup();
  backing_up = false;
  const bool more = wait_for_more(3);  // and goes on after it
  stop = true;
  writer.join();
  ASSERT_TRUE(more);
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_GT(during.load(), 0) << "no write overlapped the backup";
  const json summary = json::parse(b.out);
  struct stat st {};
  ASSERT_EQ(::stat(archive.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  const fs::path restored = work.path() / "restored";
  const auto r = restore_to(restored);
  ASSERT_EQ(r.exit_code, 0) << r.err;

  // Every subject in the restore reads exactly as it does in the live vault;
  // every subject written before the backup started is there.
  service::OpenOptions o;
  o.data_dir = restored;
  auto svc = service::Service::open(o);
  const auto caller = vault.caller("admin", "customer_service");
  std::int64_t present = 0;
  for (const auto& [id, fields] : written) {
    const json live = vault.service->get_subject(caller, id);
    ASSERT_EQ(live["fields"]["email"], fields["email"]);
    try {
      const json got = svc->get_subject(caller, id);
      EXPECT_EQ(got, live) << id;
      ++present;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::not_found);
    }
  }
  EXPECT_EQ(present, summary["subjects"].get<std::int64_t>());
  EXPECT_GE(present, static_cast<std::int64_t>(before_backup));
  EXPECT_LT(present, static_cast<std::int64_t>(written.size()));  // the load went on after the snapshot

  // The audit root at the snapshot's size: the manifest's, the restored
  // vault's, and the live vault's (an append-only log has the same root at
  // that size however far it has grown since).
  const auto size = summary["audit"]["size"].get<std::uint64_t>();
  const auto root = summary["audit"]["root"].get<std::string>();
  EXPECT_EQ(service::vault_facts(vault.data_dir(), std::nullopt, size).audit_root, root);
  svc.reset();
  EXPECT_EQ(service::vault_facts(restored, std::nullopt, size).audit_root, root);
  EXPECT_GT(service::vault_facts(vault.data_dir(), std::nullopt).audit_size, size);

  const auto v = custos({"backup", "verify", archive.string()});
  ASSERT_EQ(v.exit_code, 0) << v.err;
  EXPECT_EQ(json::parse(v.out)["opened"], true);
}

TEST_F(Backup, TheArchiveHoldsNoRawMasterKeyAndNoPlaintext) {
  vault.service->create_subject(vault.admin(), person(7));
  ASSERT_EQ(backup().exit_code, 0);
  const std::string bytes = slurp(archive);
  EXPECT_EQ(bytes.find("drill7@example.com"), std::string::npos);
  EXPECT_EQ(bytes.find("Given7"), std::string::npos);
  EXPECT_EQ(bytes.find(slurp(vault.data_dir() / "keys" / "master-1.key")), std::string::npos);
  EXPECT_EQ(bytes.find("SQLite format 3"), std::string::npos);
  EXPECT_EQ(manifest().first["master_keys_included"], false);
  // Without the key a restore refuses, and leaves nothing behind.
  const fs::path target = work.path() / "nokey";
  const auto r = custos({"restore", archive.string(), "--data-dir", target.string()});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--master-key-dir"), std::string::npos);
  EXPECT_FALSE(fs::exists(target));
  // Without the key, verify still checks every digest.
  const auto v = run({CUSTOS_CLI_PATH, "--data-dir", (work.path() / "elsewhere").string(), "backup", "verify",
                      archive.string()});
  ASSERT_EQ(v.exit_code, 0) << v.err;
  EXPECT_EQ(json::parse(v.out)["opened"], false);
}

TEST_F(Backup, ATamperedOrTruncatedArchiveFailsAsAnIntegrityError) {
  for (int i = 0; i < 20; ++i) vault.service->create_subject(vault.admin(), person(i));
  ASSERT_EQ(backup().exit_code, 0);
  const std::string good = slurp(archive);
  const auto offset = manifest().second;
  std::string flipped = good;
  flipped[offset + 5000] = static_cast<char>(flipped[offset + 5000] ^ 1);  // inside custos.db
  spit(archive, flipped);
  EXPECT_EQ(custos({"backup", "verify", archive.string()}).exit_code, 5);
  const fs::path target = work.path() / "tampered";
  EXPECT_EQ(restore_to(target).exit_code, 5);
  EXPECT_FALSE(fs::exists(target));
  spit(archive, good.substr(0, good.size() - 10));
  EXPECT_EQ(custos({"backup", "verify", archive.string()}).exit_code, 5);
  spit(archive, good + "x");
  EXPECT_EQ(custos({"backup", "verify", archive.string()}).exit_code, 5);
  spit(archive, "not a backup\n");
  EXPECT_EQ(custos({"backup", "verify", archive.string()}).exit_code, 5);
}

TEST_F(Backup, AMemberNamedOutsideTheDataDirIsRefusedBeforeAnythingIsWritten) {
  ASSERT_EQ(backup().exit_code, 0);
  auto [doc, offset] = manifest();
  const std::string bytes = slurp(archive);
  for (const char* evil : {"../escaped", "policies/../../escaped", "/tmp/escaped", "keys/master-1.key"}) {
    json m = doc;
    m["members"][m["members"].size() - 1]["name"] = evil;
    spit(archive, "custos-backup 1\n" + m.dump() + "\n" + bytes.substr(offset));
    const fs::path target = work.path() / "target";
    const auto r = restore_to(target);
    EXPECT_EQ(r.exit_code, 5) << evil << ": " << r.err;
    EXPECT_FALSE(fs::exists(target)) << evil;
    EXPECT_FALSE(fs::exists(work.path() / "escaped")) << evil;
  }
}

TEST_F(Backup, RestoreRefusesANonEmptyTarget) {
  ASSERT_EQ(backup().exit_code, 0);
  const fs::path target = work.path() / "busy";
  fs::create_directories(target);
  spit(target / "precious", "keep me");
  EXPECT_EQ(restore_to(target).exit_code, 1);
  EXPECT_EQ(slurp(target / "precious"), "keep me");
  // The live vault itself is never a restore target.
  EXPECT_EQ(restore_to(vault.data_dir()).exit_code, 1);
}

TEST_F(Backup, APassphraseVaultRestoresWithItsPassphrase) {
  TestVault pv(std::string("drill passphrase"));
  pv.service->create_subject(pv.admin(), person(1));
  const fs::path pass = work.path() / "pass";
  spit(pass, "drill passphrase\n");
  ::chmod(pass.c_str(), 0600);
  const auto b = run({CUSTOS_CLI_PATH, "--data-dir", pv.data_dir().string(), "--passphrase-file", pass.string(),
                      "backup", "--out", archive.string()});
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_EQ(json::parse(b.out)["key_mode"], "passphrase");
  const fs::path target = work.path() / "pv";
  const auto r = run({CUSTOS_CLI_PATH, "--passphrase-file", pass.string(), "restore", archive.string(), "--data-dir",
                      target.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["subjects"], 1);
}

// ------------------------------------------------------------ PostgreSQL
// A PostgreSQL vault is backed up with pg_dump plus a copy of the data
// dir's key material (docs/postgresql.md, "Backup and restore"). This drill
// does exactly what that section tells an operator, with the real tools on
// the suite's throwaway cluster (CUSTOS_TEST_PG_URL, scripts/pg_cluster.sh).

// PostgreSQL's client tools: PG_BIN, else Debian's PostgreSQL 15.
std::string pg_tool(const std::string& name) {
  const char* bin = std::getenv("PG_BIN");
  return std::string(bin && *bin ? bin : "/usr/lib/postgresql/15/bin") + "/" + name;
}

// `url` with its database name replaced (postgresql://host/DB?params).
std::string with_database(const std::string& url, const std::string& db) {
  const auto query = url.find('?');
  const auto slash = url.rfind('/', query == std::string::npos ? url.size() : query);
  return url.substr(0, slash + 1) + db + (query == std::string::npos ? "" : url.substr(query));
}

struct AuditFacts {
  std::uint64_t size = 0;
  std::string root;
  std::int64_t subjects = 0;
};

// The audit log's size, its root at `at_size` (default: its size) and the
// subject count, read from the vault's store directly, as an auditor's
// tool would, without the service appending anything.
AuditFacts audit_facts(const fs::path& data_dir, std::optional<std::uint64_t> at_size = std::nullopt) {
  auto ring = crypto::Keyring::open(data_dir / "keys", std::nullopt);
  auto store = testing::open_vault_store(data_dir, *ring);
  store::KeyTable keys(*store, *ring);
  crypto::Signer signer(keys.named_key("audit:signing"));
  audit::AuditLog log(*store, signer, {});
  AuditFacts f;
  f.size = log.size();
  const auto root = log.root_at(at_size.value_or(f.size));
  static const char* kHex = "0123456789abcdef";
  for (const auto byte : root) {
    f.root += kHex[static_cast<unsigned char>(byte) >> 4];
    f.root += kHex[static_cast<unsigned char>(byte) & 15];
  }
  auto tx = store->begin(store::TxMode::read);
  f.subjects = records::count_subjects(*tx);
  return f;
}

TEST(PostgresBackup, PgDumpPlusTheKeyDirectoryRestoresEverySubjectAndTheAuditRoot) {
  const std::string base = testing::postgres_test_url();
  if (base.empty()) GTEST_SKIP() << "needs a PostgreSQL cluster (CUSTOS_TEST_PG_URL; scripts/test.sh starts one)";
  TempDir work;
  const fs::path live_dir = work.path() / "live";
  const std::string live_url = testing::fresh_postgres_schema(base);
  const std::string schema = live_url.substr(live_url.rfind("%3D") + 3);
  {
    service::InitOptions o;
    o.data_dir = live_dir;
    o.store_url = live_url;
    o.fast_kdf = true;
    o.shipped_policies = testing::shipped_policies();
    service::init_data_dir(o);
  }
  service::OpenOptions open_live;
  open_live.data_dir = live_dir;
  auto live = service::Service::open(open_live);
  const service::Caller admin{access::Principal{"test-admin", "admin", "tok-admin"}, "administration", "req-test"};
  const service::Caller reader{access::Principal{"test-admin", "admin", "tok-admin"}, "customer_service", "req-test"};

  std::mutex mu;
  std::map<std::string, json> written;  // id -> fields
  for (int i = 0; i < 40; ++i) {
    const json r = live->create_subject(admin, person(i));
    written[r["id"]] = person(i)["fields"];
  }
  std::set<std::string> before_dump;
  for (const auto& [id, fields] : written) before_dump.insert(id);
  // Writes and audited reads go on while pg_dump runs: its snapshot must
  // still be one consistent state of subjects, keys and the audit tree.
  std::condition_variable grew;
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    for (int i = 1000; !stop; ++i) {
      const json r = live->create_subject(admin, person(i));
      live->get_subject(reader, r["id"].get<std::string>());
      std::lock_guard lock(mu);
      written[r["id"]] = person(i)["fields"];
      grew.notify_all();
    }
  });
  const auto wait_for_more = [&](std::size_t n) {
    std::unique_lock lock(mu);
    const std::size_t target = written.size() + n;
    return grew.wait_for(lock, std::chrono::seconds(60), [&] { return written.size() >= target; });
  };
  const bool loaded = wait_for_more(3);
  const fs::path dump = work.path() / "vault.pgdump";
  const auto d = run({pg_tool("pg_dump"), "--dbname=" + live_url, "--schema=" + schema, "--format=custom",
                      "--no-owner", "--file=" + dump.string()});
  const bool more = wait_for_more(3);
  stop = true;
  writer.join();
  ASSERT_TRUE(loaded && more) << "the write load did not run around the dump";
  ASSERT_EQ(d.exit_code, 0) << d.err;

  // A fresh database, the dump restored into it, and a new data dir that
  // holds a copy of the key material and names the new database.
  unsigned char raw[6];
  randombytes_buf(raw, sizeof raw);
  std::string db = "restored_";
  for (const auto b : raw) db += "0123456789abcdef"[b >> 4], db += "0123456789abcdef"[b & 15];
  store::postgres_exec_admin(base, "CREATE DATABASE " + db);
  struct DropDatabase {
    std::string base, db;
    ~DropDatabase() {
      try {
        store::postgres_exec_admin(base, "DROP DATABASE IF EXISTS " + db + " WITH (FORCE)");
      } catch (...) {
      }
    }
  } drop{base, db};
  const std::string restored_db_url = with_database(base, db);
  const auto r = run({pg_tool("pg_restore"), "--dbname=" + restored_db_url, "--no-owner", "--exit-on-error",
                      dump.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const fs::path restored_dir = work.path() / "restored";
  fs::create_directories(restored_dir);
  ::chmod(restored_dir.c_str(), 0700);
  fs::copy(live_dir / "keys", restored_dir / "keys", fs::copy_options::recursive);
  fs::copy(live_dir / "policies", restored_dir / "policies", fs::copy_options::recursive);
  const std::string restored_url = restored_db_url + "&options=-csearch_path%3D" + schema;
  {
    const int fd = ::open((restored_dir / "store.url").c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
    ASSERT_GE(fd, 0);
    const std::string line = restored_url + "\n";
    ASSERT_EQ(::write(fd, line.data(), line.size()), static_cast<ssize_t>(line.size()));
    ::close(fd);
  }

  // The audit tree: the restored log is a prefix of the live one, with the
  // same root at its size; the subject count is the dump's.
  const AuditFacts restored = audit_facts(restored_dir);
  const AuditFacts live_now = audit_facts(live_dir, restored.size);
  ASSERT_GT(restored.size, 0u);
  EXPECT_GT(live_now.size, restored.size);  // the load went on after the snapshot
  EXPECT_EQ(restored.root, live_now.root);

  // Every subject: those in the dump read exactly as in the live vault
  // (every field opens under the copied keys); every one written before the
  // dump started is there.
  service::OpenOptions open_restored;
  open_restored.data_dir = restored_dir;
  auto svc = service::Service::open(open_restored);
  std::int64_t present = 0;
  for (const auto& [id, fields] : written) {
    const json want = live->get_subject(reader, id);
    ASSERT_EQ(want["fields"]["email"], fields["email"]);
    try {
      EXPECT_EQ(svc->get_subject(reader, id), want) << id;
      ++present;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::not_found) << id;
      EXPECT_EQ(before_dump.count(id), 0u) << "written before the dump started, missing after restore: " << id;
    }
  }
  EXPECT_EQ(present, restored.subjects);
  EXPECT_LT(present, static_cast<std::int64_t>(written.size()));
  // The restored vault takes writes on its own from there.
  EXPECT_NO_THROW(svc->create_subject(admin, person(99999)));
}

}  // namespace
}  // namespace custos
