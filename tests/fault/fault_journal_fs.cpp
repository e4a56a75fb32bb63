#include "fault_journal_fs.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace custos::testing {
namespace {

std::string content_of(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

}  // namespace

FaultJournalFs::FaultJournalFs() { audit::set_journal_file_system_for_testing(this); }
FaultJournalFs::~FaultJournalFs() { audit::set_journal_file_system_for_testing(nullptr); }

bool FaultJournalFs::fail_now(const char* kind) {
  ++calls_;
  if (fail_at_ && calls_ == fail_at_ && fired_.empty()) {
    fired_ = kind;
    return true;
  }
  return persistent_ && fail_at_ && calls_ > fail_at_;
}

int FaultJournalFs::open(const char* path, int flags, mode_t mode) {
  std::lock_guard lock(mu_);
  if (cut_ || fail_now("open")) {
    errno = EIO;
    return -1;
  }
  const bool existed = ::access(path, F_OK) == 0;
  const int fd = ::open(path, flags, mode);
  if (fd < 0) return fd;
  fds_[fd] = path;
  if (!(flags & O_DIRECTORY) && !files_.count(path)) {
    State s;
    s.name_durable = existed;
    if (existed) s.synced = content_of(path);
    files_[path] = std::move(s);
  }
  return fd;
}

int FaultJournalFs::allocate(int fd, off_t bytes) {
  std::lock_guard lock(mu_);
  if (cut_ || fail_now("allocate")) return ENOSPC;
  return ::posix_fallocate(fd, 0, bytes);
}

int FaultJournalFs::sync(int fd) {
  std::lock_guard lock(mu_);
  if (cut_ || fail_now("sync")) {
    errno = EIO;
    return -1;
  }
  if (::fsync(fd) != 0) return -1;
  const auto it = fds_.find(fd);
  if (it == fds_.end()) return 0;
  if (const auto f = files_.find(it->second); f != files_.end()) {
    f->second.synced = content_of(it->second);
  } else {  // a directory: the names of the files in it are durable now
    const std::string dir = std::filesystem::path(it->second).lexically_normal().string();
    for (auto& [path, s] : files_)
      if (std::filesystem::path(path).parent_path().lexically_normal().string() == dir) s.name_durable = true;
  }
  return 0;
}

int FaultJournalFs::rename(const char* from, const char* to) {
  std::lock_guard lock(mu_);
  if (cut_ || fail_now("rename")) {
    errno = EIO;
    return -1;
  }
  if (::rename(from, to) != 0) return -1;
  // Taken as durable (no directory sync follows in the journal: a rename
  // lost to a power cut only sets a damaged segment aside again).
  if (auto it = files_.find(from); it != files_.end()) {
    State s = std::move(it->second);
    files_.erase(it);
    files_[to] = std::move(s);
  }
  return 0;
}

int FaultJournalFs::remove(const char* path) {
  std::lock_guard lock(mu_);
  if (cut_ || fail_now("remove")) {
    errno = EIO;
    return -1;
  }
  if (::unlink(path) != 0) return -1;
  files_.erase(path);
  return 0;
}

std::uint64_t FaultJournalFs::calls() {
  std::lock_guard lock(mu_);
  return calls_;
}

void FaultJournalFs::fail_nth(std::uint64_t n, bool persistent) {
  std::lock_guard lock(mu_);
  calls_ = 0;
  fail_at_ = n;
  persistent_ = persistent;
  fired_.clear();
}

std::string FaultJournalFs::fired() {
  std::lock_guard lock(mu_);
  return fired_;
}

void FaultJournalFs::power_cut() {
  std::lock_guard lock(mu_);
  cut_ = true;
  for (const auto& [path, s] : files_) {
    if (!s.name_durable) {
      ::unlink(path.c_str());
      continue;
    }
    const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) continue;
    if (!s.synced.empty() && ::pwrite(fd, s.synced.data(), s.synced.size(), 0) != static_cast<ssize_t>(s.synced.size()))
      throw std::runtime_error("FaultJournalFs: cannot restore " + path);
    if (::ftruncate(fd, static_cast<off_t>(s.synced.size())) != 0)
      throw std::runtime_error("FaultJournalFs: cannot truncate " + path);
    ::close(fd);
  }
  files_.clear();
}

}  // namespace custos::testing
