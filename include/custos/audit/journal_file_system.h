// custos/audit/journal_file_system.h — the audit journal's file calls, as a seam.
//
// The journal (journal.h) writes records by copying them into memory-mapped
// segments; every other file operation it makes (creating, opening and
// reserving a segment, syncing the directory, renaming a damaged segment,
// removing one) goes through a JournalFileSystem. Production uses the POSIX
// calls directly; crash and fault tests (tests/fault/) install one that
// counts the calls, fails the N-th, and at a simulated power cut drops what
// was never synced. Records are still copied straight into the mapping, so
// the read path costs what it did.
#pragma once

#include <sys/types.h>

namespace custos::audit {

// Each call has the POSIX call's contract: open returns a descriptor or -1
// with errno set; allocate returns 0 or an errno value (posix_fallocate);
// sync, rename and remove return 0 or -1 with errno set.
class JournalFileSystem {
 public:
  virtual ~JournalFileSystem() = default;
  virtual int open(const char* path, int flags, mode_t mode) = 0;
  virtual int allocate(int fd, off_t bytes) = 0;
  virtual int sync(int fd) = 0;
  virtual int rename(const char* from, const char* to) = 0;
  virtual int remove(const char* path) = 0;
};

// The POSIX calls (open, posix_fallocate, fsync, rename, unlink).
JournalFileSystem& posix_journal_file_system();

// For tests only: the file system every journal uses from now on, process
// wide (nullptr: back to POSIX). Set it before a journal opens and keep it
// alive while one is open.
void set_journal_file_system_for_testing(JournalFileSystem* file_system);

}  // namespace custos::audit
