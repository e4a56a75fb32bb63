#include "custos/util/files.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <streambuf>

#include "custos/error.h"

namespace custos::util {
namespace fs = std::filesystem;
namespace {

[[noreturn]] void fail(const std::string& what, const fs::path& path, int err) {
  throw Error(ErrorCode::storage, what + " " + path.string() + ": " + std::strerror(err));
}

void write_all(int fd, const std::uint8_t* data, std::size_t size, const fs::path& path) {
  std::size_t done = 0;
  while (done < size) {
    const ssize_t n = ::write(fd, data + done, size - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("cannot write", path, errno);
    }
    done += static_cast<std::size_t>(n);
  }
}

void fsync_parent(const fs::path& path) {
  const fs::path dir = path.parent_path().empty() ? fs::path(".") : path.parent_path();
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

// 16 hex digits from the kernel's CSPRNG: a name another local user cannot
// predict and plant a link at in advance.
std::string random_suffix() {
  std::array<std::uint8_t, 8> bytes{};
  std::size_t got = 0;
  while (got < bytes.size()) {
    const ssize_t n = ::getrandom(bytes.data() + got, bytes.size() - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw Error(ErrorCode::internal, "getrandom failed");
    }
    got += static_cast<std::size_t>(n);
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (const auto b : bytes) {
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 15]);
  }
  return out;
}

}  // namespace

// A write buffer over the temp file's descriptor; errors are remembered and
// reported by commit() (an ostream only sets badbit).
class AtomicFile::Buffer final : public std::streambuf {
 public:
  Buffer(int fd, const fs::path& path) : fd_(fd), path_(path) { setp(buf_.data(), buf_.data() + buf_.size()); }
  ~Buffer() override { sodium_memzero(buf_.data(), buf_.size()); }  // it may have held personal data

  bool drain() {
    const std::size_t n = static_cast<std::size_t>(pptr() - pbase());
    if (n == 0) return true;
    try {
      write_all(fd_, reinterpret_cast<const std::uint8_t*>(pbase()), n, path_);
    } catch (const Error&) {
      failed_ = true;
      return false;
    }
    setp(buf_.data(), buf_.data() + buf_.size());
    return true;
  }
  bool failed() const { return failed_; }

 protected:
  int_type overflow(int_type ch) override {
    if (!drain()) return traits_type::eof();
    if (!traits_type::eq_int_type(ch, traits_type::eof())) {
      *pptr() = traits_type::to_char_type(ch);
      pbump(1);
    }
    return traits_type::not_eof(ch);
  }
  int sync() override { return drain() ? 0 : -1; }

 private:
  int fd_;
  fs::path path_;
  bool failed_ = false;
  std::array<char, 64 * 1024> buf_{};
};

AtomicFile::AtomicFile(fs::path path, mode_t mode) : path_(std::move(path)) {
  for (int attempt = 0; attempt < 16 && fd_ < 0; ++attempt) {
    temp_ = path_.string() + ".tmp-" + random_suffix();
    fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd_ < 0 && errno != EEXIST) fail("cannot write", path_, errno);
  }
  if (fd_ < 0) fail("cannot write", path_, EEXIST);
  // O_CREAT honours the umask; the mode must be exact.
  if (::fchmod(fd_, mode) != 0) {
    const int err = errno;
    ::close(fd_);
    ::unlink(temp_.c_str());
    fd_ = -1;
    fail("cannot set the mode of", path_, err);
  }
}

AtomicFile::~AtomicFile() {
  stream_.reset();
  buffer_.reset();
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(temp_.c_str());
  }
}

void AtomicFile::write(std::span<const std::uint8_t> bytes) {
  if (fd_ < 0) throw Error(ErrorCode::internal, "write after commit of " + path_.string());
  if (buffer_ && !buffer_->drain()) fail("cannot write", path_, EIO);
  write_all(fd_, bytes.data(), bytes.size(), path_);
}

std::ostream& AtomicFile::stream() {
  if (!stream_) {
    buffer_ = std::make_unique<Buffer>(fd_, path_);
    stream_ = std::make_unique<std::ostream>(buffer_.get());
  }
  return *stream_;
}

void AtomicFile::commit() {
  if (fd_ < 0) throw Error(ErrorCode::internal, "commit twice of " + path_.string());
  if (stream_) stream_->flush();
  if (buffer_ && (!buffer_->drain() || buffer_->failed() || !*stream_)) fail("cannot write", path_, EIO);
  if (::fsync(fd_) != 0) fail("cannot sync", path_, errno);
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(temp_.c_str());
    fail("cannot write", path_, err);
  }
  // rename(2) replaces the directory entry: a symlink or hard link at
  // `path_` is swapped out, never written through.
  if (::rename(temp_.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    ::unlink(temp_.c_str());
    fail("cannot rename into", path_, err);
  }
  fsync_parent(path_);
}

void write_file_atomic(const fs::path& path, std::span<const std::uint8_t> bytes, mode_t mode) {
  AtomicFile file(path, mode);
  file.write(bytes);
  file.commit();
}

void write_file_atomic(const fs::path& path, const std::string& text, mode_t mode) {
  write_file_atomic(path, std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()),
                    mode);
}

void write_file_streamed(const fs::path& path, mode_t mode,
                         const std::function<void(const std::function<bool(std::string_view)>&)>& produce) {
  AtomicFile file(path, mode);  // removed again if `produce` throws
  produce([&](std::string_view chunk) {
    file.write({reinterpret_cast<const std::uint8_t*>(chunk.data()), chunk.size()});
    return true;
  });
  file.commit();
}

void make_private_dir(const fs::path& dir) {
  std::error_code ec;
  if (!dir.parent_path().empty()) fs::create_directories(dir.parent_path(), ec);
  if (ec) throw Error(ErrorCode::storage, "cannot create " + dir.parent_path().string() + ": " + ec.message());
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) fail("cannot create", dir, errno);
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) fail("cannot create", dir, errno);
  if (!S_ISDIR(st.st_mode)) throw Error(ErrorCode::storage, dir.string() + " exists and is not a directory");
  if ((st.st_mode & 07777) != 0700 && ::chmod(dir.c_str(), 0700) != 0) fail("cannot make private", dir, errno);
}

void ensure_private_file(const fs::path& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0 && errno == EEXIST) fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ELOOP) throw Error(ErrorCode::storage, path.string() + " is a symbolic link; refusing to open it");
    fail("cannot open", path, errno);
  }
  struct stat st {};
  const bool ok = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
  const bool tightened = ok && ((st.st_mode & 07777) == 0600 || ::fchmod(fd, 0600) == 0);
  const int err = errno;
  ::close(fd);
  if (!ok) throw Error(ErrorCode::storage, path.string() + " is not a regular file");
  if (!tightened) fail("cannot make private", path, err);
}

namespace {

// The whole of `path` in a few large reads, sized from fstat (a file that
// grows meanwhile is still read to its end): an istreambuf_iterator copies a
// byte at a time, which under the sanitizers was most of a policy load.
template <typename Buffer>
Buffer read_whole(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) throw Error(ErrorCode::not_found, "file " + path.string() + " does not exist");
    fail("cannot read", path, errno);
  }
  struct stat st {};
  const std::size_t hint = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? static_cast<std::size_t>(st.st_size) : 0;
  Buffer out;
  out.resize(hint + 1);  // one byte beyond: the read that finds the end
  std::size_t got = 0;
  for (;;) {
    if (got == out.size()) out.resize(out.size() * 2);
    const ssize_t n = ::read(fd, out.data() + got, out.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      fail("cannot read", path, err);
    }
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  ::close(fd);
  out.resize(got);
  return out;
}

}  // namespace

std::vector<std::uint8_t> read_file(const fs::path& path) { return read_whole<std::vector<std::uint8_t>>(path); }

std::string read_text_file(const fs::path& path) { return read_whole<std::string>(path); }

std::size_t read_secret_file(const fs::path& path, std::span<std::uint8_t> buffer) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) throw Error(ErrorCode::not_found, "file " + path.string() + " does not exist");
    fail("cannot read", path, errno);
  }
  std::size_t got = 0;
  for (;;) {
    // One byte of slack beyond the buffer would be needed to tell "exactly
    // full" from "longer"; read into the buffer, then probe with one byte.
    std::uint8_t probe = 0;
    std::uint8_t* dest = got < buffer.size() ? buffer.data() + got : &probe;
    const std::size_t room = got < buffer.size() ? buffer.size() - got : 1;
    const ssize_t n = ::read(fd, dest, room);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      sodium_memzero(buffer.data(), got);
      fail("cannot read", path, err);
    }
    if (n == 0) break;
    if (dest == &probe) {
      sodium_memzero(&probe, 1);
      ::close(fd);
      sodium_memzero(buffer.data(), got);
      throw Error(ErrorCode::key_error, "secret file " + path.string() + " is longer than " +
                                            std::to_string(buffer.size()) + " bytes");
    }
    got += static_cast<std::size_t>(n);
  }
  ::close(fd);
  return got;
}

void overwrite_and_unlink(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) fail("cannot open for overwriting", path, errno);
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(ErrorCode::storage, path.string() + " is not a regular file; not overwritten");
  }
  const std::array<std::uint8_t, 4096> zeros{};
  off_t offset = 0;
  while (offset < st.st_size) {
    const std::size_t chunk = static_cast<std::size_t>(std::min<off_t>(st.st_size - offset, zeros.size()));
    const ssize_t n = ::pwrite(fd, zeros.data(), chunk, offset);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      ::close(fd);
      fail("cannot overwrite", path, err);
    }
    offset += n;
  }
  if (::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    fail("cannot sync", path, err);
  }
  ::close(fd);
  if (::unlink(path.c_str()) != 0) fail("cannot remove", path, errno);
  fsync_parent(path);
}

void require_owner_only(const fs::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    throw Error(ErrorCode::key_error, "key file " + path.string() + " is missing");
  if ((st.st_mode & 077) != 0)
    throw Error(ErrorCode::key_error, "key file " + path.string() +
                                          " is readable or writable by group/others; run: chmod 600 " +
                                          path.string());
}

}  // namespace custos::util
