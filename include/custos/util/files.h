// custos/util/files.h — small, careful file helpers.
#pragma once

#include <filesystem>
#include <span>
#include <string>
#include <sys/types.h>
#include <vector>

namespace custos::util {

// Writes `bytes` to `path` atomically: a temp file in the same directory with
// `mode`, fsync, rename, fsync of the directory. Readers see old or new, never half.
void write_file_atomic(const std::filesystem::path& path, std::span<const std::uint8_t> bytes, mode_t mode);
void write_file_atomic(const std::filesystem::path& path, const std::string& text, mode_t mode);

// Reads a whole file. Throws Error(not_found) if missing, Error(storage) on I/O errors.
std::vector<std::uint8_t> read_file(const std::filesystem::path& path);
std::string read_text_file(const std::filesystem::path& path);

// Throws Error(key_error) if `path` can be read or written by group or others.
void require_owner_only(const std::filesystem::path& path);

}  // namespace custos::util
