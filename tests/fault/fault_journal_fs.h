// Crash and fault injection under the audit journal's file calls
// (custos/audit/journal_file_system.h); the journal's half of FaultVfs.
//
// While it lives every journal in the process uses it. It counts the calls,
// can fail the n-th (open, allocate, sync, rename, remove: EIO, allocate
// ENOSPC), and power_cut() drops what was never synced: each file it saw is
// put back to its content at its last sync (or at the first open, for a file
// an earlier process left), files created and never named durably (no sync
// of their directory since) are removed. The journal writes records through
// a memory mapping the seam cannot see; a power cut is what makes that
// visible. After power_cut every call fails: the process is to _exit.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include "custos/audit/journal_file_system.h"

namespace custos::testing {

class FaultJournalFs final : public audit::JournalFileSystem {
 public:
  FaultJournalFs();
  ~FaultJournalFs() override;

  int open(const char* path, int flags, mode_t mode) override;
  int allocate(int fd, off_t bytes) override;
  int sync(int fd) override;
  int rename(const char* from, const char* to) override;
  int remove(const char* path) override;

  std::uint64_t calls();
  // Fails the n-th call counted from now (0: none), and with `persistent`
  // every call after it too (a disk that stays full or broken).
  void fail_nth(std::uint64_t n, bool persistent = false);
  std::string fired();             // the failed call's name, empty if none
  void power_cut();

 private:
  struct State {
    bool name_durable = true;
    std::string synced;  // content at the last sync
  };
  bool fail_now(const char* kind);

  std::mutex mu_;
  std::map<std::string, State> files_;
  std::map<int, std::string> fds_;  // descriptors it opened: file or directory path
  std::uint64_t calls_ = 0, fail_at_ = 0;
  bool persistent_ = false;
  std::string fired_;
  bool cut_ = false;
};

}  // namespace custos::testing
