// custos/crypto/secret_key.h — a 32-byte symmetric key in guarded memory.
//
// The bytes live in sodium_malloc'd memory (guard pages, mlock'ed where the
// OS allows) and are wiped when the key dies. Keys are move-only so a copy
// never lingers on the ordinary heap.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace custos::crypto {

class SecretKey {
 public:
  static constexpr std::size_t kSize = 32;

  // A fresh key from the OS CSPRNG.
  static SecretKey random();
  // Copies `bytes` (must be kSize long) into guarded memory.
  static SecretKey from_bytes(std::span<const std::uint8_t> bytes);

  SecretKey(SecretKey&& other) noexcept;
  SecretKey& operator=(SecretKey&& other) noexcept;
  SecretKey(const SecretKey&) = delete;
  SecretKey& operator=(const SecretKey&) = delete;
  ~SecretKey();

  const std::uint8_t* data() const noexcept { return bytes_; }
  std::span<const std::uint8_t, kSize> span() const noexcept {
    return std::span<const std::uint8_t, kSize>(bytes_, kSize);
  }
  // A deep copy into new guarded memory (for caches that must outlive a lookup).
  SecretKey clone() const;

 private:
  SecretKey();
  std::uint8_t* bytes_;
};

// Initialises libsodium once; throws custos::Error if it cannot.
void ensure_sodium();

}  // namespace custos::crypto
