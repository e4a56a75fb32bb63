#include "custos/crypto/secret_key.h"

#include <sodium.h>

#include <cstring>

#include "custos/error.h"

namespace custos::crypto {

void ensure_sodium() {
  static const int rc = sodium_init();
  if (rc < 0) throw Error(ErrorCode::internal, "libsodium failed to initialise");
}

SecretKey::SecretKey() {
  ensure_sodium();
  bytes_ = static_cast<std::uint8_t*>(sodium_malloc(kSize));
  if (bytes_ == nullptr) throw Error(ErrorCode::internal, "cannot allocate guarded memory for a key");
}

SecretKey SecretKey::random() {
  SecretKey key;
  randombytes_buf(key.bytes_, kSize);
  return key;
}

SecretKey SecretKey::from_bytes(std::span<const std::uint8_t> bytes) {
  if (bytes.size() != kSize) throw Error(ErrorCode::key_error, "key material has the wrong length");
  SecretKey key;
  std::memcpy(key.bytes_, bytes.data(), kSize);
  return key;
}

SecretKey SecretKey::clone() const { return from_bytes(span()); }

SecretKey::SecretKey(SecretKey&& other) noexcept : bytes_(other.bytes_) { other.bytes_ = nullptr; }

SecretKey& SecretKey::operator=(SecretKey&& other) noexcept {
  if (this != &other) {
    if (bytes_ != nullptr) sodium_free(bytes_);
    bytes_ = other.bytes_;
    other.bytes_ = nullptr;
  }
  return *this;
}

// sodium_free zeroes the region before unmapping it.
SecretKey::~SecretKey() {
  if (bytes_ != nullptr) sodium_free(bytes_);
}

}  // namespace custos::crypto
