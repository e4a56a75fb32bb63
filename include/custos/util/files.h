// custos/util/files.h — small, careful file helpers.
#pragma once

#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <vector>

namespace custos::util {

// Writes `bytes` to `path` atomically: a temp file in the same directory with
// `mode`, fsync, rename, fsync of the directory. Readers see old or new, never half.
void write_file_atomic(const std::filesystem::path& path, std::span<const std::uint8_t> bytes, mode_t mode);
void write_file_atomic(const std::filesystem::path& path, const std::string& text, mode_t mode);

// Writes what `produce` hands its writer to `path`, atomically and in flat
// memory: a new private temp file in the same directory (O_EXCL|O_NOFOLLOW,
// a random name, `mode`), fsync, rename, fsync of the directory. If
// `produce` throws, the temp file is removed and the exception passes on;
// `path` is untouched.
void write_file_streamed(const std::filesystem::path& path, mode_t mode,
                         const std::function<void(const std::function<bool(std::string_view)>&)>& produce);

// Reads a whole file. Throws Error(not_found) if missing, Error(storage) on I/O errors.
std::vector<std::uint8_t> read_file(const std::filesystem::path& path);
std::string read_text_file(const std::filesystem::path& path);

// Throws Error(key_error) if `path` can be read or written by group or others.
void require_owner_only(const std::filesystem::path& path);

}  // namespace custos::util
