// custos/util/files.h — small, careful file helpers.
//
// Every file that may hold personal data or key material (exports, key
// files, tokens, the database) is written through these helpers, so that
// three promises hold everywhere:
//   * it is created with exactly the mode asked for (0600), whatever the umask;
//   * nothing is written through a link somebody planted: temp files are
//     created O_CREAT|O_EXCL|O_NOFOLLOW under an unpredictable name, and the
//     final name is replaced by rename(2), which never follows a symlink and
//     never writes into another hard link of the old file;
//   * readers see the old content or the new, never half (fsync, rename,
//     fsync of the directory).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <ostream>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace custos::util {

// A file being written: a private temp file beside `path` until commit()
// renames it into place. If the object dies uncommitted (an exception, an
// abandoned export), the temp file is removed and `path` is untouched.
// Not thread-safe.
class AtomicFile {
 public:
  // Creates "<path>.tmp-<random>" with O_CREAT|O_EXCL|O_NOFOLLOW and exactly
  // `mode`. Throws Error(storage) naming `path` if it cannot.
  AtomicFile(std::filesystem::path path, mode_t mode);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(std::span<const std::uint8_t> bytes);
  // A stream over the temp file, for writers that produce a stream.
  std::ostream& stream();
  // Flushes, fsyncs, renames over `path` and fsyncs the directory.
  // Throws Error(storage) if any step fails (the temp file is then removed).
  void commit();

  const std::filesystem::path& temp_path() const { return temp_; }

 private:
  class Buffer;
  std::filesystem::path path_;
  std::filesystem::path temp_;
  int fd_ = -1;
  std::unique_ptr<Buffer> buffer_;
  std::unique_ptr<std::ostream> stream_;
};

// Writes `bytes` to `path` atomically through an AtomicFile.
void write_file_atomic(const std::filesystem::path& path, std::span<const std::uint8_t> bytes, mode_t mode);
void write_file_atomic(const std::filesystem::path& path, const std::string& text, mode_t mode);

// Writes what `produce` hands its writer to `path`, atomically and in flat
// memory: through an AtomicFile. If
// `produce` throws, the temp file is removed and the exception passes on;
// `path` is untouched.
void write_file_streamed(const std::filesystem::path& path, mode_t mode,
                         const std::function<void(const std::function<bool(std::string_view)>&)>& produce);

// Creates `dir` (and missing parents) and sets it to exactly 0700.
// Throws Error(storage) if it cannot, or if `dir` exists and is not a directory.
void make_private_dir(const std::filesystem::path& dir);

// Makes sure `path` exists as a regular file of mode 0600 before a library
// (SQLite) opens it: creates it O_CREAT|O_EXCL|O_NOFOLLOW if missing,
// tightens the mode of an existing one. Throws Error(storage) if `path` is a
// symlink or not a regular file.
void ensure_private_file(const std::filesystem::path& path);

// Reads a whole file. Throws Error(not_found) if missing, Error(storage) on I/O errors.
std::vector<std::uint8_t> read_file(const std::filesystem::path& path);
std::string read_text_file(const std::filesystem::path& path);

// Reads a secret file straight into `buffer` (no intermediate copy on the
// heap) and returns its length. Throws Error(not_found) if missing,
// Error(key_error) if it is longer than `buffer`, Error(storage) on I/O
// errors; on any throw the part of `buffer` already read is wiped.
std::size_t read_secret_file(const std::filesystem::path& path, std::span<std::uint8_t> buffer);

// Destroys a key file as well as a file system lets us: overwrites its
// blocks in place with zeros (same inode, no rename), fsyncs, unlinks, and
// fsyncs the directory. Copy-on-write file systems (btrfs, ZFS), journals
// with data=journal, and SSDs (wear levelling, remapped blocks) may keep the
// old bytes anyway; see docs/operations.md. Throws Error(storage).
void overwrite_and_unlink(const std::filesystem::path& path);

// Throws Error(key_error) if `path` can be read or written by group or others.
void require_owner_only(const std::filesystem::path& path);

}  // namespace custos::util
