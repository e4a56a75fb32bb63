// Backup and restore (issue 21): the restore drill under write load, and the
// attacks on an archive (tampering, truncation, path traversal, a non-empty
// target), through the real `custos` binary on a real vault.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "custos/service/backup.h"
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

}  // namespace
}  // namespace custos
