// custos/crypto/passphrase.h — a passphrase held only in guarded memory.
//
// The bytes live in one sodium_malloc'd buffer (guard pages, mlock'ed where
// the OS allows, wiped by sodium_free); copies share that buffer, so passing
// a Passphrase through option structs never leaves a copy on the ordinary
// heap. custosd keeps one for its whole life (new master-key versions load
// lazily), which is why it must not sit in a std::string. Thread-safe
// (immutable after construction).
#pragma once

#include <cstddef>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

namespace custos::crypto {

class Passphrase {
 public:
  // Copies `text` into guarded memory. Implicit so tests and the CLI can pass
  // literals; the caller's copy is then the caller's to wipe.
  Passphrase(std::string_view text);  // NOLINT(google-explicit-constructor)
  Passphrase(const std::string& text) : Passphrase(std::string_view(text)) {}  // NOLINT
  Passphrase(const char* text) : Passphrase(std::string_view(text)) {}         // NOLINT

  // Reads a passphrase file straight into guarded memory (no heap copy) and
  // strips one trailing "\n" or "\r\n". Throws Error(key_error) if it is
  // missing, unreadable, empty or longer than kMaxSize bytes.
  static Passphrase read_file(const std::filesystem::path& path);

  static constexpr std::size_t kMaxSize = 4096;

  const char* data() const noexcept;
  std::size_t size() const noexcept;
  bool empty() const noexcept { return size() == 0; }

 private:
  struct Guarded;
  Passphrase() = default;
  std::shared_ptr<const Guarded> guarded_;
};

}  // namespace custos::crypto
