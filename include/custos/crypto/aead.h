// custos/crypto/aead.h — sealing personal values and wrapping keys.
//
// Every sealed value carries a small header so formats and keys can evolve:
//
//   byte 0      format version (kSealFormat)
//   bytes 1-4   key version (big-endian): DEK version for fields, KEK version
//               for wrapped keys
//   bytes 5-8   schema version (big-endian; 0 for wrapped keys)
//   bytes 9-32  XChaCha20-Poly1305 nonce (random)
//   then        ciphertext || 16-byte tag
//
// The header is authenticated together with the caller's associated data,
// so a ciphertext moved to another subject, field or key slot fails to open.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "custos/crypto/secret_key.h"

namespace custos::crypto {

using Bytes = std::vector<std::uint8_t>;

inline constexpr std::uint8_t kSealFormat = 1;
inline constexpr std::size_t kSealHeaderSize = 1 + 4 + 4 + 24;
inline constexpr std::size_t kSealOverhead = kSealHeaderSize + 16;
inline constexpr std::size_t kSealNonceSize = 24;

struct SealHeader {
  std::uint8_t format = kSealFormat;
  std::uint32_t key_version = 0;
  std::uint32_t schema_version = 0;
};

// Seals `plaintext`; `ad` is bound but not stored.
Bytes seal(const SecretKey& key, const SealHeader& header, std::span<const std::uint8_t> ad,
           std::span<const std::uint8_t> plaintext);

// The same, with a nonce the caller drew: batches take every nonce from one
// CSPRNG call (RandomBatch) instead of one call per value. `nonce` must be
// fresh random bytes used for nothing else; 192-bit random XChaCha20 nonces
// do not repeat in practice, exactly as with seal(). `key` is raw key bytes
// that live in guarded memory (a SecretKey, or a RandomBatch of keys).
Bytes seal_with_nonce(std::span<const std::uint8_t, SecretKey::kSize> key, const SealHeader& header,
                      std::span<const std::uint8_t, kSealNonceSize> nonce, std::span<const std::uint8_t> ad,
                      std::span<const std::uint8_t> plaintext);

// Reads the header without opening (to pick the key version).
// Throws Error(integrity) if the blob is too short or of an unknown format.
SealHeader peek_header(std::span<const std::uint8_t> sealed);

// Opens a sealed blob. Throws Error(integrity, what_for + ": ...") when the
// tag does not verify (wrong key, wrong AD, or tampered bytes).
Bytes open(const SecretKey& key, std::span<const std::uint8_t> ad, std::span<const std::uint8_t> sealed,
           std::string_view what_for);

// Associated data for a personal field: subject id || 0 || field || 0 || schema version.
Bytes field_ad(std::span<const std::uint8_t> subject_id, std::string_view field, std::uint32_t schema_version);

// Wrapping a key under a KEK: `slot` names what the key is for (e.g.
// "dek:<subject hex>", "index:email", "db") and is bound as AD.
Bytes wrap_key(const SecretKey& kek, std::uint32_t kek_version, std::string_view slot, const SecretKey& key);
SecretKey unwrap_key(const SecretKey& kek, std::string_view slot, std::span<const std::uint8_t> wrapped);
// wrap_key for raw key bytes in guarded memory, with a caller-drawn nonce (see seal_with_nonce).
Bytes wrap_key_with_nonce(const SecretKey& kek, std::uint32_t kek_version, std::string_view slot,
                          std::span<const std::uint8_t, SecretKey::kSize> key,
                          std::span<const std::uint8_t, kSealNonceSize> nonce);

// `size` bytes from ONE CSPRNG call, in guarded memory (sodium_malloc: guard
// pages, mlock where allowed), wiped when the batch dies: the data keys, ids
// and nonces of an ingest batch. Bytes are handed out once each, in order.
class RandomBatch {
 public:
  explicit RandomBatch(std::size_t size);
  ~RandomBatch();
  RandomBatch(const RandomBatch&) = delete;
  RandomBatch& operator=(const RandomBatch&) = delete;
  // The next N unused bytes. Throws Error(internal) when the batch is used up.
  template <std::size_t N>
  std::span<const std::uint8_t, N> take() {
    return std::span<const std::uint8_t, N>(take_bytes(N), N);
  }

 private:
  const std::uint8_t* take_bytes(std::size_t n);
  std::uint8_t* bytes_;
  std::size_t size_;
  std::size_t used_ = 0;
};

inline std::span<const std::uint8_t> as_bytes(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

}  // namespace custos::crypto
