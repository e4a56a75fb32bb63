// Files that may hold personal data or key material: the attacks of issue 21
// (a planted link at the temp name or the output, a loose umask, a retired
// key left in its blocks, a hostile Argon2 parameter file), each run against
// the real helpers and the real `custos` binary.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>

#include "custos/crypto/keyring.h"
#include "custos/util/files.h"
#include "test_support.h"

namespace custos {
namespace {

namespace fs = std::filesystem;
using testing::code_of;
using testing::run;
using testing::TempDir;

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void spit(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << text;
}

unsigned mode_of(const fs::path& p) {
  struct stat st {};
  if (::lstat(p.c_str(), &st) != 0) return 07777 + 1;
  return st.st_mode & 07777;
}

bool is_regular_not_link(const fs::path& p) {
  struct stat st {};
  return ::lstat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::vector<std::string> names_in(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

class FilesAttack : public ::testing::Test {
 protected:
  TempDir tmp;
  fs::path victim = tmp.path() / "victim";
  fs::path out = tmp.path() / "export.json";
  void SetUp() override { spit(victim, "another user's file\n"); }
};

TEST_F(FilesAttack, APlantedSymlinkAtTheTempNameIsNotFollowed) {
  for (const char* suffix : {".tmp", ".partial", ".tmp-0", ".new"})
    fs::create_symlink(victim, out.string() + suffix);
  util::write_file_atomic(out, std::string("personal data\n"), 0600);
  EXPECT_EQ(slurp(victim), "another user's file\n");
  EXPECT_EQ(slurp(out), "personal data\n");
  EXPECT_TRUE(is_regular_not_link(out));
  EXPECT_EQ(mode_of(out), 0600u);
  EXPECT_TRUE(fs::is_symlink(out.string() + ".tmp"));  // left alone, not removed or replaced
}

TEST_F(FilesAttack, ASymlinkAtTheOutputIsReplacedNotWrittenThrough) {
  fs::create_symlink(victim, out);
  util::write_file_atomic(out, std::string("personal data\n"), 0600);
  EXPECT_EQ(slurp(victim), "another user's file\n");
  EXPECT_TRUE(is_regular_not_link(out));
  EXPECT_EQ(slurp(out), "personal data\n");
  EXPECT_EQ(mode_of(out), 0600u);
}

TEST_F(FilesAttack, AHardLinkAtTheOutputKeepsItsOldContent) {
  fs::create_hard_link(victim, out);
  util::write_file_atomic(out, std::string("personal data\n"), 0600);
  EXPECT_EQ(slurp(victim), "another user's file\n");
  EXPECT_EQ(slurp(out), "personal data\n");
}

TEST_F(FilesAttack, TheModeIsExactWhateverTheUmask) {
  const mode_t old = ::umask(0);
  util::write_file_atomic(out, std::string("x"), 0600);
  ::umask(old);
  EXPECT_EQ(mode_of(out), 0600u);
}

TEST_F(FilesAttack, AnAbandonedWriteLeavesNeitherTheOutputNorATempFile) {
  {
    util::AtomicFile file(out, 0600);
    file.stream() << "half of an export";
  }
  EXPECT_FALSE(fs::exists(out));
  EXPECT_EQ(names_in(tmp.path()), std::vector<std::string>{"victim"});
}

TEST_F(FilesAttack, AStreamedWriteLandsWhole) {
  util::AtomicFile file(out, 0600);
  for (int i = 0; i < 100000; ++i) file.stream() << "line " << i << "\n";
  file.commit();
  const std::string text = slurp(out);
  EXPECT_EQ(text.substr(text.size() - 11), "line 99999\n");
  EXPECT_NE(text.find("line 0\n"), std::string::npos);
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 100000);
  EXPECT_EQ(names_in(tmp.path()), (std::vector<std::string>{"export.json", "victim"}));
}

TEST_F(FilesAttack, ThePrivateFileForTheDatabaseRefusesASymlink) {
  fs::create_symlink(victim, out);
  EXPECT_EQ(code_of([&] { util::ensure_private_file(out); }), ErrorCode::storage);
  EXPECT_EQ(mode_of(victim), mode_of(victim));  // untouched
  spit(tmp.path() / "loose.db", "");
  fs::permissions(tmp.path() / "loose.db", fs::perms(0644));
  util::ensure_private_file(tmp.path() / "loose.db");
  EXPECT_EQ(mode_of(tmp.path() / "loose.db"), 0600u);
}

TEST_F(FilesAttack, ASecretFileLongerThanItsBufferIsRefusedAndTheBufferWiped) {
  spit(out, std::string(40, 'k'));
  std::array<std::uint8_t, 32> buf{};
  EXPECT_EQ(code_of([&] { util::read_secret_file(out, buf); }), ErrorCode::key_error);
  EXPECT_EQ(std::count(buf.begin(), buf.end(), 0), 32);
  spit(out, std::string(32, 'k'));
  EXPECT_EQ(util::read_secret_file(out, buf), 32u);
  EXPECT_EQ(buf[31], 'k');
}

// The CLI end to end.
class FilesCli : public ::testing::Test {
 protected:
  TempDir tmp;
  fs::path data = tmp.path() / "data";
  testing::RunResult custos(std::vector<std::string> args, const std::string& in = "") {
    args.insert(args.begin(), {CUSTOS_CLI_PATH, "--data-dir", data.string()});
    return run(args, in);
  }
};

TEST_F(FilesCli, InitMakesTheDataDirPrivateAndTheDatabase0600) {
  const mode_t old = ::umask(022);
  const auto r = custos({"init", "--fast-kdf"});
  ::umask(old);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(mode_of(data), 0700u);
  EXPECT_EQ(mode_of(data / "keys"), 0700u);
  EXPECT_EQ(mode_of(data / "custos.db"), 0600u);
  EXPECT_EQ(mode_of(data / "admin.token"), 0600u);
  ASSERT_EQ(custos({"subject", "put"}, R"({"fields": {"email": "mode@example.com"}})").exit_code, 0);
  for (const char* side : {"custos.db-wal", "custos.db-shm"})
    if (fs::exists(data / side)) {
      EXPECT_EQ(mode_of(data / side), 0600u) << side;
    }
}

TEST_F(FilesCli, AnOlderDatabaseMadeWorldReadableIsTightenedOnOpen) {
  ASSERT_EQ(custos({"init", "--fast-kdf"}).exit_code, 0);
  fs::permissions(data / "custos.db", fs::perms(0644));
  ASSERT_EQ(custos({"audit", "checkpoint"}).exit_code, 0);
  EXPECT_EQ(mode_of(data / "custos.db"), 0600u);
}

TEST_F(FilesCli, AuditExportDoesNotFollowAPlantedSymlink) {
  ASSERT_EQ(custos({"init", "--fast-kdf"}).exit_code, 0);
  const fs::path victim = tmp.path() / "victim";
  spit(victim, "another user's file\n");
  const fs::path out = tmp.path() / "audit.export";
  fs::create_symlink(victim, out.string() + ".tmp");
  fs::create_symlink(victim, out.string() + ".partial");
  const auto r = custos({"audit", "export", "--out", out.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(slurp(victim), "another user's file\n");
  EXPECT_TRUE(is_regular_not_link(out));
  EXPECT_EQ(mode_of(out), 0600u);
  EXPECT_EQ(custos({"audit", "verify", out.string()}).exit_code, 0);
  // The same through a symlink at the output itself.
  fs::remove(out);
  fs::create_symlink(victim, out);
  ASSERT_EQ(custos({"audit", "export", "--out", out.string()}).exit_code, 0);
  EXPECT_EQ(slurp(victim), "another user's file\n");
  EXPECT_TRUE(is_regular_not_link(out));
}

TEST_F(FilesCli, KeyRetireOverwritesTheKeyFileInPlaceBeforeUnlinking) {
  ASSERT_EQ(custos({"init", "--fast-kdf"}).exit_code, 0);
  // A second name for the key file's inode shows what happened to its blocks:
  // a rename of a zeroed copy would leave the key readable through it.
  const fs::path witness = tmp.path() / "witness";
  fs::create_hard_link(data / "keys" / "master-1.key", witness);
  ASSERT_EQ(slurp(witness).size(), 32u);
  ASSERT_EQ(custos({"key", "rotate"}).exit_code, 0);
  const auto r = custos({"key", "retire"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(fs::exists(data / "keys" / "master-1.key"));
  EXPECT_EQ(slurp(witness), std::string(32, '\0'));
  EXPECT_NE(r.out.find("copy-on-write"), std::string::npos) << r.out;  // says where it cannot be guaranteed
}

class Argon2Bounds : public ::testing::Test {
 protected:
  TempDir tmp;
  fs::path keys = tmp.path() / "keys";
  fs::path params = keys / "master-1.argon2.json";
  void SetUp() override {
    crypto::Keyring::create(keys, crypto::Passphrase("correct horse"), crypto::Argon2Params::interactive());
  }
  // Rewrites one field of the parameter file, then loads the key; returns the error text ("" if it loaded).
  std::string load_with(const char* field, const nlohmann::json& value) {
    auto doc = nlohmann::json::parse(slurp(params));
    doc[field] = value;
    util::write_file_atomic(params, doc.dump(), 0600);
    try {
      crypto::Keyring::open(keys, crypto::Passphrase("correct horse"))->kek(1);
      return "";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::key_error) << e.what();
      return e.what();
    }
  }
};

TEST_F(Argon2Bounds, TheCostTheFileAsksForIsBounded) {
  EXPECT_EQ(load_with("opslimit", crypto::Argon2Params::interactive().opslimit), "");
  const std::string huge = load_with("memlimit", 1ull << 40);
  EXPECT_NE(huge.find("memlimit must be an integer from"), std::string::npos) << huge;
  EXPECT_NE(huge.find(params.string()), std::string::npos) << huge;
  load_with("memlimit", crypto::Argon2Params::interactive().memlimit);
  EXPECT_NE(load_with("opslimit", 1000000).find("opslimit must be"), std::string::npos);
  EXPECT_NE(load_with("opslimit", 1).find("opslimit must be"), std::string::npos);
  EXPECT_NE(load_with("opslimit", -2).find("opslimit must be"), std::string::npos);
  EXPECT_NE(load_with("opslimit", "2").find("opslimit must be"), std::string::npos);
  EXPECT_NE(load_with("opslimit", 2.5).find("opslimit must be"), std::string::npos);
  load_with("opslimit", crypto::Argon2Params::interactive().opslimit);
  EXPECT_NE(load_with("memlimit", 1024).find("memlimit must be"), std::string::npos);
}

TEST_F(Argon2Bounds, APassphraseFileIsReadIntoGuardedMemoryAndBounded) {
  const fs::path file = tmp.path() / "pass";
  spit(file, "correct horse\r\n");
  const auto p = crypto::read_passphrase_file(file);
  EXPECT_EQ(std::string(p.data(), p.size()), "correct horse");
  EXPECT_NO_THROW(crypto::Keyring::open(keys, p)->kek(1));
  spit(file, std::string(crypto::Passphrase::kMaxSize + 1, 'p'));
  EXPECT_EQ(code_of([&] { crypto::read_passphrase_file(file); }), ErrorCode::key_error);
  spit(file, "\n");
  EXPECT_EQ(code_of([&] { crypto::read_passphrase_file(file); }), ErrorCode::key_error);
}

}  // namespace
}  // namespace custos
