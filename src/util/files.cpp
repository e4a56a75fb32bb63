#include "custos/util/files.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>

#include "custos/error.h"

namespace custos::util {
namespace fs = std::filesystem;

void write_file_atomic(const fs::path& path, std::span<const std::uint8_t> bytes, mode_t mode) {
  const fs::path tmp = path.string() + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) throw Error(ErrorCode::storage, "cannot write " + path.string() + ": " + std::strerror(errno));
  ::fchmod(fd, mode);  // O_CREAT honours the umask; the mode must be exact
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      throw Error(ErrorCode::storage, "cannot write " + path.string() + ": " + std::strerror(err));
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    ::unlink(tmp.c_str());
    throw Error(ErrorCode::storage, "cannot sync " + path.string());
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    throw Error(ErrorCode::storage, "cannot rename into " + path.string() + ": " + std::strerror(errno));
  }
  const int dfd = ::open(path.parent_path().empty() ? "." : path.parent_path().c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

void write_file_atomic(const fs::path& path, const std::string& text, mode_t mode) {
  write_file_atomic(path, std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()),
                    mode);
}

void write_file_streamed(const fs::path& path, mode_t mode,
                         const std::function<void(const std::function<bool(std::string_view)>&)>& produce) {
  unsigned char nonce[8];
  randombytes_buf(nonce, sizeof nonce);
  char hex[sizeof nonce * 2 + 1];
  sodium_bin2hex(hex, sizeof hex, nonce, sizeof nonce);
  const fs::path tmp = path.string() + ".tmp-" + hex;
  // A new file only: never one planted (or a symlink) at the temp name.
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
  if (fd < 0) throw Error(ErrorCode::storage, "cannot write " + path.string() + ": " + std::strerror(errno));
  const auto fail = [&](const std::string& what, int err) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw Error(ErrorCode::storage, "cannot " + what + " " + path.string() + (err ? std::string(": ") + std::strerror(err) : ""));
  };
  ::fchmod(fd, mode);  // O_CREAT honours the umask; the mode must be exact
  const auto write = [&](std::string_view chunk) {
    std::size_t done = 0;
    while (done < chunk.size()) {
      const ssize_t n = ::write(fd, chunk.data() + done, chunk.size() - done);
      if (n < 0) {
        if (errno == EINTR) continue;
        fail("write", errno);
      }
      done += static_cast<std::size_t>(n);
    }
    return true;
  };
  try {
    produce(write);
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::fsync(fd) != 0) fail("sync", errno);
  if (::close(fd) != 0) {
    ::unlink(tmp.c_str());
    throw Error(ErrorCode::storage, "cannot sync " + path.string());
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw Error(ErrorCode::storage, "cannot rename into " + path.string() + ": " + std::strerror(err));
  }
  const int dfd = ::open(path.parent_path().empty() ? "." : path.parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

std::vector<std::uint8_t> read_file(const fs::path& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw Error(ErrorCode::not_found, "file " + path.string() + " does not exist");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorCode::storage, "cannot read " + path.string());
  std::vector<std::uint8_t> out((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw Error(ErrorCode::storage, "cannot read " + path.string());
  return out;
}

std::string read_text_file(const fs::path& path) {
  const auto bytes = read_file(path);
  return std::string(bytes.begin(), bytes.end());
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
