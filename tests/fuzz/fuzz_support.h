// Shared by the libFuzzer targets (tests/fuzz/*.cpp) and their replay driver.
//
// A target's contract: LLVMFuzzerTestOneInput returns 0 for every input and
// aborts (FUZZ_CHECK) when an invariant breaks. An exception that escapes it
// is a finding too: libFuzzer reports it as a crash (std::terminate), and the
// replay driver lets it end the test.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>

namespace custos::fuzz {

[[noreturn]] inline void fail(const char* file, int line, const std::string& what) {
  std::fprintf(stderr, "FUZZ INVARIANT BROKEN at %s:%d: %s\n", file, line, what.c_str());
  std::abort();
}

#define FUZZ_CHECK(cond, what)                                                      \
  do {                                                                              \
    if (!(cond)) ::custos::fuzz::fail(__FILE__, __LINE__, std::string(#cond ": ") + (what)); \
  } while (0)

// A private directory for the whole process, on tmpfs when there is one
// (the journal and vault targets write files on every input; fsync on tmpfs
// is cheap). Removed at exit.
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    std::string base = std::filesystem::exists("/dev/shm") ? "/dev/shm" : std::filesystem::temp_directory_path().string();
    std::string templ = base + "/custos-fuzz-XXXXXX";
    if (::mkdtemp(templ.data()) == nullptr) std::abort();
    static const std::string keep = templ;
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(keep, ec);
    });
    return std::filesystem::path(templ);
  }();
  return dir;
}

// Reads the input front to back; past the end every read yields zeros / empty.
class InputReader {
 public:
  InputReader(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}
  std::uint8_t byte() { return pos_ < size_ ? data_[pos_++] : 0; }
  std::uint16_t u16() { return static_cast<std::uint16_t>((byte() << 8) | byte()); }
  std::string_view take(std::size_t n) {
    n = std::min(n, size_ - pos_);
    std::string_view out(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return out;
  }
  std::string_view rest() { return take(size_ - pos_); }
  std::size_t remaining() const { return size_ - pos_; }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t pos_ = 0;
};

}  // namespace custos::fuzz
