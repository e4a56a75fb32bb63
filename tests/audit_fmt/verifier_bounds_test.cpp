// Issue 21: a verifier that cannot be knocked over. The real custos-audit
// runs under `ulimit -v 1000000` on generated hostile files and must answer
// 5 (integrity failure) within 5 s, its peak RSS within 64 MiB; and its new
// checks (trusted checkpoint, consistency of two exports, empty exports,
// strict base64) on real files.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <fstream>
#include <sstream>

#include "custos_audit/verify.h"
#include "export_fixture.h"


// Built with -fsanitize=address (clang's __has_feature, GCC's macro)?
#if defined(__SANITIZE_ADDRESS__)
#define CUSTOS_TEST_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CUSTOS_TEST_UNDER_ASAN 1
#endif
#endif
#ifndef CUSTOS_TEST_UNDER_ASAN
#define CUSTOS_TEST_UNDER_ASAN 0
#endif

namespace custos::auditfmt {
namespace {

namespace fs = std::filesystem;

struct Outcome {
  int exit_code = -1;
  double seconds = 0;
  long peak_rss_kib = 0;  // of the verifier (the largest child so far)
};

struct Bounds : ::testing::Test {
  fs::path dir;
  testing::Fixture fx;
  fs::path key;

  void SetUp() override {
    char tmpl[] = "/tmp/custos-audit-bounds-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir = tmpl;
    key = dir / "audit.vkey";
    std::ofstream(key) << fx.vkey << "\n";
  }
  void TearDown() override { fs::remove_all(dir); }

  fs::path write(const std::string& name, const std::string& bytes) {
    const fs::path p = dir / name;
    std::ofstream(p, std::ios::binary) << bytes;
    return p;
  }

  // Runs custos-audit under a 1,000,000 KiB address-space limit, no shell
  // between the limit and the verifier.
  Outcome run(const std::vector<std::string>& args) {
    const auto start = std::chrono::steady_clock::now();
    const pid_t pid = ::fork();
    if (pid == 0) {
#if CUSTOS_TEST_UNDER_ASAN
      // AddressSanitizer reserves terabytes of shadow address space, so an
      // address-space limit stops it before main; its own hard RSS limit
      // (checked by a background thread, fatal) bounds the verifier instead.
      std::string options = ::getenv("ASAN_OPTIONS") ? ::getenv("ASAN_OPTIONS") : "";
      options += ":hard_rss_limit_mb=1000";
      ::setenv("ASAN_OPTIONS", options.c_str(), 1);
#else
      const rlimit as{1000000ul * 1024, 1000000ul * 1024};
      ::setrlimit(RLIMIT_AS, &as);
#endif
      const int devnull = ::open("/dev/null", O_WRONLY);
      ::dup2(devnull, 1);
      ::dup2(devnull, 2);
      std::vector<char*> argv{const_cast<char*>(CUSTOS_AUDIT_CLI_PATH)};
      for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    int status = 0;
    rusage usage{};
    ::wait4(pid, &status, 0, &usage);
    Outcome r;
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    r.peak_rss_kib = usage.ru_maxrss;
    return r;
  }

  void expect_integrity_failure(const std::vector<std::string>& args, const std::string& what) {
    const Outcome r = run(args);
    EXPECT_EQ(r.exit_code, 5) << what;
#if !CUSTOS_TEST_UNDER_ASAN
    // Under ASan the shadow memory and the slowdown are the sanitizer's, not
    // the verifier's: the plain build (CI's GCC pass) holds these bounds.
    EXPECT_LT(r.seconds, 5.0) << what;
    EXPECT_LE(r.peak_rss_kib, 64 * 1024) << what;
#endif
    RecordProperty(what + "_peak_rss_kib", static_cast<int>(r.peak_rss_kib));
  }

  std::vector<std::string> verify_args(const fs::path& file) { return {"verify", file.string(), "--pubkey", key.string()}; }
};

std::string header_line(std::uint64_t entries, std::uint64_t checkpoints, const std::string& fp) {
  return R"({"checkpoint_count":)" + std::to_string(checkpoints) + R"(,"entry_count":)" + std::to_string(entries) +
         R"(,"first_seq":0,"key_name":"test.log","origin":"test.log/audit","public_key_fingerprint":")" + fp + "\"}\n";
}

// The files are written, and their contents freed, before the verifier runs:
// a forked child's peak RSS would otherwise count the parent's pages.
TEST_F(Bounds, OneHundredMegabytesOfBracketsExitFive) {
  fs::path bare, after_magic;
  {
    const std::string brackets(100u << 20, '[');
    bare = write("brackets", brackets);
    after_magic = write("brackets-after-magic", std::string(kExportMagic) + brackets);
  }
  expect_integrity_failure(verify_args(bare), "brackets");
  expect_integrity_failure(verify_args(after_magic), "brackets_after_magic");
  expect_integrity_failure({"verify-inclusion", bare.string(), "--pubkey", key.string()}, "brackets_as_bundle");
  expect_integrity_failure({"verify-package", bare.string(), "--pubkey", key.string()}, "brackets_as_package");
}

TEST_F(Bounds, AHeaderLineOverSixtyFourKibibytesIsRefusedUnparsed) {
  fs::path file;
  {
    const std::string line = "{\"origin\":\"" + std::string(100u << 20, 'o') + "\"}\n";
    file = write("long-header", std::string(kExportMagic) + line + "Z");
  }
  expect_integrity_failure(verify_args(file), "long_header");
}

TEST_F(Bounds, HugeCountsReserveNothing) {
  fx.build(3, 3);
  std::string file = fx.write();
  const std::size_t start = kExportMagic.size();
  const std::size_t end = file.find('\n', start) + 1;
  for (const std::uint64_t claimed : {std::uint64_t{1} << 26, std::uint64_t{1} << 40, ~std::uint64_t{0}}) {
    std::string lying = file;
    lying.replace(start, end - start, header_line(claimed, claimed, fingerprint(fx.pub)));
    expect_integrity_failure(verify_args(write("counts", lying)), "count_" + std::to_string(claimed));
  }
  // A bundle whose proof claims a huge array, and openings claiming 2^32-1 subjects.
  const std::string bundle = R"({"entry":"AQ==","index":0,"tree_size":18446744073709551615,"proof":[)" +
                             std::string(1000000, ' ') + R"("00"]})";
  expect_integrity_failure({"verify-inclusion", write("bundle", bundle).string(), "--pubkey", key.string()},
                           "bundle_counts");
}

TEST_F(Bounds, NonCanonicalBase64IsAnIntegrityFailure) {
  fx.build(3, 3);
  const std::string good = fx.write();
  ASSERT_EQ(run(verify_args(write("good", good))).exit_code, 0);
  // The signature's base64 in the last checkpoint: a byte 0x80-0xFF where a
  // character was (libsodium read it as '/'), a character whose unused bits
  // are set before the padding, and whitespace.
  const std::size_t sig = good.rfind("\xE2\x80\x94 test.log ") + std::string("\xE2\x80\x94 test.log ").size();
  const std::size_t eq = good.find('=', sig);
  ASSERT_NE(eq, std::string::npos);
  for (const auto& [name, change] : std::vector<std::pair<std::string, std::function<void(std::string&)>>>{
           {"high_byte", [&](std::string& s) { s[sig + 10] = static_cast<char>(0xAF); }},
           {"unused_bits", [&](std::string& s) { s[eq - 1] = static_cast<char>(s[eq - 1] == 'A' ? 'B' : s[eq - 1] + 1); }},
           {"space", [&](std::string& s) { s[sig + 10] = ' '; }}}) {
    std::string bad = good;
    change(bad);
    expect_integrity_failure(verify_args(write(name, bad)), name);
  }
  EXPECT_FALSE(base64_decode("AQ=").has_value());
  EXPECT_FALSE(base64_decode("AR==").has_value());  // 'R' leaves bits set below the byte
  EXPECT_EQ(base64_decode("AQ==").value(), std::vector<std::uint8_t>{1});
  EXPECT_FALSE(base64_decode("A\xAF==").has_value());
  EXPECT_FALSE(base64_decode("AQ==AQ==").has_value());
  EXPECT_EQ(base64_decode("").value(), std::vector<std::uint8_t>{});
}

TEST_F(Bounds, AGiantStringInABundleIsRefused) {
  fs::path file;
  {
    const std::string bundle = R"({"entry":")" + std::string(100u << 20, 'A') + R"("})";
    file = write("giant", bundle);
  }
  expect_integrity_failure({"verify-inclusion", file.string(), "--pubkey", key.string()}, "giant_string");
}

// ---- The checks an auditor could not make before ---------------------------

TEST_F(Bounds, AnEmptyExportIsAnErrorUnlessAllowed) {
  const fs::path empty = write("empty", std::string(kExportMagic) + header_line(0, 0, fingerprint(fx.pub)) +
                                            std::string("Z\0\0\0\0", 5));
  EXPECT_EQ(run(verify_args(empty)).exit_code, 5);
  auto args = verify_args(empty);
  args.push_back("--allow-empty");
  EXPECT_EQ(run(args).exit_code, 0);
}

TEST_F(Bounds, ATrustedCheckpointCatchesEntriesDroppedWithTheirCheckpoints) {
  fx.build(100, 10);
  const fs::path full = write("full", fx.write());
  const fs::path trusted = write("trusted.cp", fx.checkpoints.back());
  // The attack FORMAT.md §4 used to admit: drop the newest entries together
  // with the checkpoints covering them, fix the counts. It verifies alone...
  testing::Fixture cut = fx;
  cut.entries.resize(90);
  cut.checkpoints.resize(9);
  const fs::path shortened = write("short", cut.write());
  EXPECT_EQ(run(verify_args(shortened)).exit_code, 0);
  // ...but not against the checkpoint the auditor saw last time.
  auto args = verify_args(shortened);
  args.insert(args.end(), {"--trusted-checkpoint", trusted.string()});
  EXPECT_EQ(run(args).exit_code, 5);
  args = verify_args(full);
  args.insert(args.end(), {"--trusted-checkpoint", trusted.string()});
  EXPECT_EQ(run(args).exit_code, 0);
  // An export that rewrote history before the trusted size (re-signed with the key) fails too.
  testing::Fixture forked;
  forked.secret = fx.secret;
  forked.pub = fx.pub;
  forked.vkey = fx.vkey;
  {
    Frontier f;
    Hash prev{};
    for (std::uint64_t i = 0; i < 120; ++i) {
      Entry e = forked.make_entry(i, prev);
      e.detail = "rewritten";
      forked.entries.push_back(encode(e));
      prev = leaf_hash(forked.entries.back());
      f.append(prev);
      if (f.size() % 10 == 0) forked.checkpoints.push_back(sign_checkpoint("test.log/audit", f.size(), f.root(), "test.log", fx.secret));
    }
  }
  args = verify_args(write("forked", forked.write()));
  EXPECT_EQ(run(args).exit_code, 0);
  args.insert(args.end(), {"--trusted-checkpoint", trusted.string()});
  EXPECT_EQ(run(args).exit_code, 5);
  // verify-consistency OLD NEW: an earlier export (or its checkpoint) against a later one.
  testing::Fixture later = fx;
  later.entries.clear();
  later.checkpoints.clear();
  later.build(130, 10);
  const fs::path newer = write("newer", later.write());
  EXPECT_EQ(run({"verify-consistency", full.string(), newer.string(), "--pubkey", key.string()}).exit_code, 0);
  EXPECT_EQ(run({"verify-consistency", trusted.string(), newer.string(), "--pubkey", key.string()}).exit_code, 0);
  EXPECT_EQ(run({"verify-consistency", full.string(), write("forked", forked.write()).string(), "--pubkey",
                 key.string()}).exit_code,
            5);
  EXPECT_EQ(run({"verify-consistency", newer.string(), full.string(), "--pubkey", key.string()}).exit_code, 5);
}

TEST_F(Bounds, UsageAndUnreadableFilesAreNotIntegrityFailures) {
  EXPECT_EQ(run({"verify", (dir / "missing").string(), "--pubkey", key.string()}).exit_code, 1);
  EXPECT_EQ(run({"verify", "--pubkey", key.string()}).exit_code, 2);
  EXPECT_EQ(run({"verify-consistency", "one", "--pubkey", key.string()}).exit_code, 2);
  EXPECT_EQ(run({"verify", "x", "--pubkey", key.string(), "--bogus"}).exit_code, 2);
}

}  // namespace
}  // namespace custos::auditfmt
