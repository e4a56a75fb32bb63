// custos/crypto/signer.h — the audit log's Ed25519 signing key.
//
// Derived from a 32-byte seed that is stored wrapped by the KEK; the secret
// half lives in guarded memory and is wiped with the signer.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>

#include "custos/crypto/secret_key.h"

namespace custos::crypto {

class Signer {
 public:
  explicit Signer(const SecretKey& seed);
  ~Signer();
  Signer(const Signer&) = delete;
  Signer& operator=(const Signer&) = delete;

  const std::array<std::uint8_t, 32>& public_key() const { return public_key_; }
  // The 64-byte libsodium secret key (seed || public key), for the checkpoint signer.
  std::span<const std::uint8_t, 64> secret_key() const;

 private:
  std::array<std::uint8_t, 32> public_key_{};
  std::uint8_t* secret_;  // 64 bytes, sodium_malloc'd
};

}  // namespace custos::crypto
