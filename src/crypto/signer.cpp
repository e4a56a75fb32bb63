#include "custos/crypto/signer.h"

#include <sodium.h>

#include "custos/error.h"

namespace custos::crypto {

Signer::Signer(const SecretKey& seed) {
  ensure_sodium();
  secret_ = static_cast<std::uint8_t*>(sodium_malloc(crypto_sign_SECRETKEYBYTES));
  if (secret_ == nullptr) throw Error(ErrorCode::internal, "cannot allocate guarded memory for the signing key");
  crypto_sign_seed_keypair(public_key_.data(), secret_, seed.data());
}

Signer::~Signer() { sodium_free(secret_); }

std::span<const std::uint8_t, 64> Signer::secret_key() const {
  return std::span<const std::uint8_t, 64>(secret_, 64);
}

}  // namespace custos::crypto
