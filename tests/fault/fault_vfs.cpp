#include "fault_vfs.h"

#define SQLITE_HAS_CODEC 1
#include <fcntl.h>
#include <sqlcipher/sqlite3.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <new>
#include <stdexcept>

namespace custos::testing {
namespace {

constexpr char kVfsName[] = "custos-fault";

FaultVfs* owner_of(sqlite3_vfs* vfs) { return static_cast<FaultVfs*>(vfs->pAppData); }

}  // namespace

// The shim's sqlite3_file: SQLite allocates szOsFile bytes; the real VFS's
// file follows this header in the same allocation.
struct FaultVfs::File {
  sqlite3_file base;  // first: SQLite sees a sqlite3_file
  FaultVfs* owner;
  std::string path;
  bool tracked;
  sqlite3_file* real;
};

namespace {

constexpr std::size_t kHeader = (sizeof(FaultVfs::File) + 15) & ~std::size_t{15};

FaultVfs::File& as_file(sqlite3_file* f) { return *reinterpret_cast<FaultVfs::File*>(f); }
sqlite3_file* real_of(sqlite3_file* f) { return as_file(f).real; }

int x_close(sqlite3_file* f) {
  FaultVfs::File& file = as_file(f);
  const int rc = file.real->pMethods ? file.real->pMethods->xClose(file.real) : SQLITE_OK;
  file.~File();
  return rc;
}
int x_read(sqlite3_file* f, void* out, int amount, sqlite3_int64 offset) {
  return real_of(f)->pMethods->xRead(real_of(f), out, amount, offset);
}
int x_write(sqlite3_file* f, const void* data, int amount, sqlite3_int64 offset) {
  return as_file(f).owner->before_write(as_file(f), data, amount, offset);
}
int x_truncate(sqlite3_file* f, sqlite3_int64 size) { return as_file(f).owner->before_truncate(as_file(f), size); }
int x_sync(sqlite3_file* f, int flags) {
  FaultVfs::File& file = as_file(f);
  if (const int rc = file.owner->before_sync(file); rc != SQLITE_OK) return rc;
  const int rc = file.real->pMethods->xSync(file.real, flags);
  if (rc == SQLITE_OK) file.owner->after_sync(file);
  return rc;
}
int x_file_size(sqlite3_file* f, sqlite3_int64* size) { return real_of(f)->pMethods->xFileSize(real_of(f), size); }
int x_lock(sqlite3_file* f, int level) { return real_of(f)->pMethods->xLock(real_of(f), level); }
int x_unlock(sqlite3_file* f, int level) { return real_of(f)->pMethods->xUnlock(real_of(f), level); }
int x_check_reserved(sqlite3_file* f, int* out) {
  return real_of(f)->pMethods->xCheckReservedLock(real_of(f), out);
}
int x_file_control(sqlite3_file* f, int op, void* arg) {
  return real_of(f)->pMethods->xFileControl(real_of(f), op, arg);
}
int x_sector_size(sqlite3_file* f) { return real_of(f)->pMethods->xSectorSize(real_of(f)); }
int x_device_characteristics(sqlite3_file* f) {
  return real_of(f)->pMethods->xDeviceCharacteristics(real_of(f));
}
int x_shm_map(sqlite3_file* f, int page, int bytes, int extend, void volatile** out) {
  return real_of(f)->pMethods->xShmMap(real_of(f), page, bytes, extend, out);
}
int x_shm_lock(sqlite3_file* f, int offset, int n, int flags) {
  return real_of(f)->pMethods->xShmLock(real_of(f), offset, n, flags);
}
void x_shm_barrier(sqlite3_file* f) { real_of(f)->pMethods->xShmBarrier(real_of(f)); }
int x_shm_unmap(sqlite3_file* f, int del) { return real_of(f)->pMethods->xShmUnmap(real_of(f), del); }

// Version 2: no xFetch, so SQLite never reads through a mapping the shim cannot see.
const sqlite3_io_methods kMethods = {
    2,           x_close,          x_read,         x_write,      x_truncate,   x_sync,
    x_file_size, x_lock,           x_unlock,       x_check_reserved, x_file_control, x_sector_size,
    x_device_characteristics, x_shm_map, x_shm_lock, x_shm_barrier, x_shm_unmap, nullptr, nullptr};

int v_open(sqlite3_vfs* vfs, const char* name, sqlite3_file* out, int flags, int* out_flags) {
  FaultVfs* owner = owner_of(vfs);
  auto* file = new (out) FaultVfs::File{};
  file->owner = owner;
  file->path = name ? name : "";
  file->tracked = name && owner->tracks(name);
  file->real = reinterpret_cast<sqlite3_file*>(reinterpret_cast<char*>(out) + kHeader);
  std::memset(file->real, 0, static_cast<std::size_t>(owner->real()->szOsFile));
  const bool existed = name && ::access(name, F_OK) == 0;
  const int rc = owner->real()->xOpen(owner->real(), name, file->real, flags, out_flags);
  if (rc != SQLITE_OK || !file->real->pMethods) {
    // SQLite calls xClose only when pMethods is set.
    if (file->real->pMethods) file->real->pMethods->xClose(file->real);
    file->~File();
    out->pMethods = nullptr;
    return rc != SQLITE_OK ? rc : SQLITE_CANTOPEN;
  }
  if (file->tracked) owner->on_open(name, existed);
  out->pMethods = &kMethods;
  return SQLITE_OK;
}
int v_delete(sqlite3_vfs* vfs, const char* name, int sync_dir) {
  FaultVfs* owner = owner_of(vfs);
  if (owner->cut()) return SQLITE_IOERR_DELETE;
  const int rc = owner->real()->xDelete(owner->real(), name, sync_dir);
  if (rc == SQLITE_OK && owner->tracks(name)) owner->on_delete(name);
  return rc;
}
int v_access(sqlite3_vfs* vfs, const char* name, int flags, int* out) {
  return owner_of(vfs)->real()->xAccess(owner_of(vfs)->real(), name, flags, out);
}
int v_full_pathname(sqlite3_vfs* vfs, const char* name, int n, char* out) {
  return owner_of(vfs)->real()->xFullPathname(owner_of(vfs)->real(), name, n, out);
}
void* v_dl_open(sqlite3_vfs* vfs, const char* name) { return owner_of(vfs)->real()->xDlOpen(owner_of(vfs)->real(), name); }
void v_dl_error(sqlite3_vfs* vfs, int n, char* out) { owner_of(vfs)->real()->xDlError(owner_of(vfs)->real(), n, out); }
void (*v_dl_sym(sqlite3_vfs* vfs, void* lib, const char* sym))(void) {
  return owner_of(vfs)->real()->xDlSym(owner_of(vfs)->real(), lib, sym);
}
void v_dl_close(sqlite3_vfs* vfs, void* lib) { owner_of(vfs)->real()->xDlClose(owner_of(vfs)->real(), lib); }
int v_randomness(sqlite3_vfs* vfs, int n, char* out) {
  return owner_of(vfs)->real()->xRandomness(owner_of(vfs)->real(), n, out);
}
int v_sleep(sqlite3_vfs* vfs, int us) { return owner_of(vfs)->real()->xSleep(owner_of(vfs)->real(), us); }
int v_current_time(sqlite3_vfs* vfs, double* out) {
  return owner_of(vfs)->real()->xCurrentTime(owner_of(vfs)->real(), out);
}
int v_get_last_error(sqlite3_vfs* vfs, int n, char* out) {
  return owner_of(vfs)->real()->xGetLastError(owner_of(vfs)->real(), n, out);
}
int v_current_time_int64(sqlite3_vfs* vfs, sqlite3_int64* out) {
  return owner_of(vfs)->real()->xCurrentTimeInt64(owner_of(vfs)->real(), out);
}

}  // namespace

FaultVfs::FaultVfs(std::filesystem::path root) : root_(std::filesystem::weakly_canonical(root).string() + "/") {
  sqlite3_initialize();
  real_ = sqlite3_vfs_find("unix");
  if (!real_) throw std::runtime_error("FaultVfs: no unix VFS");
  shim_ = new sqlite3_vfs{};
  shim_->iVersion = 2;
  shim_->szOsFile = static_cast<int>(kHeader) + real_->szOsFile;
  shim_->mxPathname = real_->mxPathname;
  shim_->zName = kVfsName;
  shim_->pAppData = this;
  shim_->xOpen = v_open;
  shim_->xDelete = v_delete;
  shim_->xAccess = v_access;
  shim_->xFullPathname = v_full_pathname;
  shim_->xDlOpen = v_dl_open;
  shim_->xDlError = v_dl_error;
  shim_->xDlSym = v_dl_sym;
  shim_->xDlClose = v_dl_close;
  shim_->xRandomness = v_randomness;
  shim_->xSleep = v_sleep;
  shim_->xCurrentTime = v_current_time;
  shim_->xGetLastError = v_get_last_error;
  shim_->xCurrentTimeInt64 = v_current_time_int64;
  if (sqlite3_vfs_register(shim_, 1) != SQLITE_OK) throw std::runtime_error("FaultVfs: cannot register");
}

FaultVfs::~FaultVfs() {
  // Connections opened through the shim must be closed first (the store's owner's job).
  sqlite3_vfs_unregister(shim_);
  if (real_) sqlite3_vfs_register(real_, 1);
  delete shim_;
}

bool FaultVfs::tracks(const char* path) const {
  const std::string p = path;
  if (p.size() >= 4 && p.compare(p.size() - 4, 4, "-shm") == 0) return false;
  return p.compare(0, root_.size(), root_) == 0;
}

FaultVfs::Counts FaultVfs::counts() {
  std::lock_guard lock(mu_);
  return counts_;
}

void FaultVfs::reset_counts() {
  std::lock_guard lock(mu_);
  counts_ = {};
}

void FaultVfs::fail_nth(std::uint64_t n) {
  std::lock_guard lock(mu_);
  counts_ = {};
  fail_at_ = n;
  fired_.clear();
}

std::string FaultVfs::fired() {
  std::lock_guard lock(mu_);
  return fired_;
}

int FaultVfs::count_and_maybe_fail(const char* kind, int code) {
  if (fail_at_ && counts_.total() == fail_at_ && fired_.empty()) {
    fired_ = kind;
    return code;
  }
  return SQLITE_OK;
}

void FaultVfs::on_open(const char* path, bool existed) {
  std::lock_guard lock(mu_);
  auto [it, fresh] = files_.try_emplace(path);
  if (!fresh) return;
  it->second.created_unsynced = !existed;
  if (existed) {
    std::error_code ec;
    it->second.synced_size = static_cast<std::int64_t>(std::filesystem::file_size(path, ec));
  }
}

void FaultVfs::on_delete(const char* path) {
  std::lock_guard lock(mu_);
  files_.erase(path);
}

int FaultVfs::before_write(File& f, const void* data, int amount, std::int64_t offset) {
  std::lock_guard lock(mu_);
  if (cut_) return SQLITE_IOERR_WRITE;
  ++counts_.writes;
  if (const int rc = count_and_maybe_fail("write", SQLITE_IOERR_WRITE); rc != SQLITE_OK) return rc;
  if (f.tracked) {
    sqlite3_int64 size = 0;
    if (f.real->pMethods->xFileSize(f.real, &size) != SQLITE_OK) return SQLITE_IOERR_WRITE;
    const std::int64_t end = std::min<std::int64_t>(offset + amount, size);
    if (offset < end) {
      std::string pre(static_cast<std::size_t>(end - offset), '\0');
      if (f.real->pMethods->xRead(f.real, pre.data(), static_cast<int>(pre.size()), offset) != SQLITE_OK)
        return SQLITE_IOERR_WRITE;
      files_[f.path].preimages.emplace_back(offset, std::move(pre));
    }
  }
  return f.real->pMethods->xWrite(f.real, data, amount, offset);
}

int FaultVfs::before_truncate(File& f, std::int64_t new_size) {
  std::lock_guard lock(mu_);
  if (cut_) return SQLITE_IOERR_TRUNCATE;
  ++counts_.truncates;
  if (const int rc = count_and_maybe_fail("truncate", SQLITE_IOERR_TRUNCATE); rc != SQLITE_OK) return rc;
  if (f.tracked) {
    sqlite3_int64 size = 0;
    if (f.real->pMethods->xFileSize(f.real, &size) != SQLITE_OK) return SQLITE_IOERR_TRUNCATE;
    if (new_size < size) {
      std::string pre(static_cast<std::size_t>(size - new_size), '\0');
      if (f.real->pMethods->xRead(f.real, pre.data(), static_cast<int>(pre.size()), new_size) != SQLITE_OK)
        return SQLITE_IOERR_TRUNCATE;
      files_[f.path].preimages.emplace_back(new_size, std::move(pre));
    }
  }
  return f.real->pMethods->xTruncate(f.real, new_size);
}

int FaultVfs::before_sync(File&) {
  std::lock_guard lock(mu_);
  if (cut_) return SQLITE_IOERR_FSYNC;
  ++counts_.syncs;
  return count_and_maybe_fail("sync", SQLITE_IOERR_FSYNC);
}

void FaultVfs::after_sync(File& f) {
  if (!f.tracked) return;
  std::lock_guard lock(mu_);
  sqlite3_int64 size = 0;
  f.real->pMethods->xFileSize(f.real, &size);
  State& s = files_[f.path];
  s.preimages.clear();
  s.synced_size = size;
  s.created_unsynced = false;
}

void FaultVfs::power_cut() {
  std::lock_guard lock(mu_);
  cut_ = true;
  for (auto& [path, s] : files_) {
    if (s.created_unsynced) {
      ::unlink(path.c_str());
      continue;
    }
    const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) continue;
    for (auto it = s.preimages.rbegin(); it != s.preimages.rend(); ++it)
      if (::pwrite(fd, it->second.data(), it->second.size(), it->first) != static_cast<ssize_t>(it->second.size()))
        throw std::runtime_error("FaultVfs: cannot restore " + path);
    if (::ftruncate(fd, s.synced_size) != 0) throw std::runtime_error("FaultVfs: cannot truncate " + path);
    ::close(fd);
  }
  files_.clear();
}

namespace sqlite_malloc_fault {
namespace {
sqlite3_mem_methods real_methods{};
std::atomic<std::uint64_t> call_count{0}, fail_at{0};
std::atomic<bool> has_fired{false};

bool fail_this_one() {
  const std::uint64_t n = ++call_count;
  const std::uint64_t at = fail_at.load();
  if (at && n == at) {
    has_fired = true;
    return true;
  }
  return false;
}
void* faulty_malloc(int bytes) { return fail_this_one() ? nullptr : real_methods.xMalloc(bytes); }
void* faulty_realloc(void* p, int bytes) { return fail_this_one() ? nullptr : real_methods.xRealloc(p, bytes); }
}  // namespace

void install() {
  if (sqlite3_shutdown() != SQLITE_OK) throw std::runtime_error("sqlite_malloc_fault: SQLite is in use");
  if (sqlite3_config(SQLITE_CONFIG_GETMALLOC, &real_methods) != SQLITE_OK)
    throw std::runtime_error("sqlite_malloc_fault: cannot read the allocator");
  sqlite3_mem_methods faulty = real_methods;
  faulty.xMalloc = faulty_malloc;
  faulty.xRealloc = faulty_realloc;
  if (sqlite3_config(SQLITE_CONFIG_MALLOC, &faulty) != SQLITE_OK || sqlite3_initialize() != SQLITE_OK)
    throw std::runtime_error("sqlite_malloc_fault: cannot install the allocator");
}
void fail_nth(std::uint64_t n) {
  call_count = 0;
  has_fired = false;
  fail_at = n;
}
std::uint64_t calls() { return call_count.load(); }
bool fired() { return has_fired.load(); }
}  // namespace sqlite_malloc_fault

}  // namespace custos::testing
