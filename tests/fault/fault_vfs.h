// Crash and fault injection under the SQLCipher store's file I/O.
//
// FaultVfs is a SQLite VFS shim over the default "unix" VFS (the model is
// LevelDB's FaultInjectionTestEnv). While it lives it is the default VFS,
// so every database the process opens (the store needs no option) goes
// through it; files under `root` are tracked:
//  * every xWrite and xTruncate first saves the bytes it replaces (its
//    pre-image) unless they are already saved since the file's last xSync;
//    xSync forgets them and records the file's size as synced;
//  * power_cut() simulates losing power: pre-images are written back (newest
//    first), each file is cut to its synced size, files created since the
//    tracking began and never synced are removed (SQLite's unix VFS syncs the
//    directory on a new journal or WAL file's first sync, so a synced file's
//    name is durable); deletions are taken as durable. After it, every call
//    fails: the process is to end (_exit) without touching the files again.
//  * fail_nth(n) makes the n-th xWrite / xSync / xTruncate (counted together
//    from the call) fail with SQLITE_IOERR_* without doing anything.
// SQLCipher encrypts pages above the VFS, so the shim sees ciphertext.
// The -shm file is not tracked: SQLite rebuilds it after a crash.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <mutex>
#include <string>
#include <vector>

struct sqlite3_vfs;

namespace custos::testing {

class FaultVfs {
 public:
  explicit FaultVfs(std::filesystem::path root);
  ~FaultVfs();
  FaultVfs(const FaultVfs&) = delete;
  FaultVfs& operator=(const FaultVfs&) = delete;

  struct Counts {
    std::uint64_t writes = 0, syncs = 0, truncates = 0;
    std::uint64_t total() const { return writes + syncs + truncates; }
  };
  // Counts since construction or the last fail_nth / reset_counts.
  Counts counts();
  void reset_counts();
  // Fails the n-th write, sync or truncate from now (0: none).
  void fail_nth(std::uint64_t n);
  // What the armed fault hit ("write", "sync", "truncate"), empty if it has not fired.
  std::string fired();
  // Drops everything not synced (see above); later calls fail.
  void power_cut();

  // The VFS glue (fault_vfs.cpp) calls these.
  struct File;
  int before_write(File& f, const void* data, int amount, std::int64_t offset);
  int before_truncate(File& f, std::int64_t size);
  int before_sync(File& f);
  void after_sync(File& f);
  void on_open(const char* path, bool existed);
  void on_delete(const char* path);
  bool tracks(const char* path) const;
  bool cut() const { return cut_; }
  sqlite3_vfs* real() const { return real_; }

 private:
  struct State {
    bool created_unsynced = false;
    std::int64_t synced_size = 0;
    std::vector<std::pair<std::int64_t, std::string>> preimages;  // oldest first
  };
  int count_and_maybe_fail(const char* kind, int code);

  std::string root_;
  sqlite3_vfs* real_ = nullptr;
  sqlite3_vfs* shim_ = nullptr;
  std::mutex mu_;
  std::map<std::string, State> files_;
  Counts counts_;
  std::uint64_t fail_at_ = 0;  // index into the combined count; 0: off
  std::string fired_;
  bool cut_ = false;
};

// Fails the n-th allocation SQLite makes (SQLCipher allocates through it
// too), as SQLite's own malloc tests do, by installing allocator methods
// with sqlite3_config(SQLITE_CONFIG_MALLOC). install() shuts SQLite down
// and starts it again, so it must run before any connection opens (in a
// forked child whose parent closed its own).
namespace sqlite_malloc_fault {
void install();
void fail_nth(std::uint64_t n);  // counted from this call; 0: none
std::uint64_t calls();
bool fired();
}  // namespace sqlite_malloc_fault

}  // namespace custos::testing
