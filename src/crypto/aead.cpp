#include "custos/crypto/aead.h"

#include <sodium.h>

#include <cstring>

#include "custos/error.h"

namespace custos::crypto {
namespace {

constexpr std::size_t kNonceSize = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
static_assert(kNonceSize == 24);
static_assert(crypto_aead_xchacha20poly1305_ietf_ABYTES == 16);

void put_u32(std::uint8_t* out, std::uint32_t v) {
  out[0] = static_cast<std::uint8_t>(v >> 24);
  out[1] = static_cast<std::uint8_t>(v >> 16);
  out[2] = static_cast<std::uint8_t>(v >> 8);
  out[3] = static_cast<std::uint8_t>(v);
}

std::uint32_t get_u32(const std::uint8_t* in) {
  return (std::uint32_t{in[0]} << 24) | (std::uint32_t{in[1]} << 16) | (std::uint32_t{in[2]} << 8) |
         std::uint32_t{in[3]};
}

// The AD actually authenticated: the stored header (minus the nonce, which
// the construction binds anyway) followed by the caller's AD.
// One allocation of the final size: growing a 9-byte vector by insert() made
// GCC 12 at -O3 see a copy past its end (-Warray-bounds), and cost a realloc.
Bytes full_ad(const std::uint8_t* header, std::span<const std::uint8_t> ad) {
  Bytes out(9 + ad.size());
  std::memcpy(out.data(), header, 9);
  if (!ad.empty()) std::memcpy(out.data() + 9, ad.data(), ad.size());
  return out;
}

}  // namespace

namespace {

// Seals into `out`, whose nonce bytes (9..32) are already set.
void seal_in_place(Bytes& out, const std::uint8_t* key, const SealHeader& header, std::span<const std::uint8_t> ad,
                   std::span<const std::uint8_t> plaintext) {
  out[0] = header.format;
  put_u32(&out[1], header.key_version);
  put_u32(&out[5], header.schema_version);
  // The AD authenticated: the header without the nonce (bound anyway), then the caller's.
  std::uint8_t small[256];
  Bytes large;
  std::uint8_t* aad = small;
  if (9 + ad.size() > sizeof small) {
    large.resize(9 + ad.size());
    aad = large.data();
  }
  std::memcpy(aad, out.data(), 9);
  if (!ad.empty()) std::memcpy(aad + 9, ad.data(), ad.size());
  unsigned long long clen = 0;
  crypto_aead_xchacha20poly1305_ietf_encrypt(out.data() + kSealHeaderSize, &clen, plaintext.data(),
                                             plaintext.size(), aad, 9 + ad.size(), nullptr, &out[9], key);
  out.resize(kSealHeaderSize + clen);
}

}  // namespace

Bytes seal(const SecretKey& key, const SealHeader& header, std::span<const std::uint8_t> ad,
           std::span<const std::uint8_t> plaintext) {
  Bytes out(kSealOverhead + plaintext.size());
  randombytes_buf(&out[9], kNonceSize);
  seal_in_place(out, key.data(), header, ad, plaintext);
  return out;
}

Bytes seal_with_nonce(std::span<const std::uint8_t, SecretKey::kSize> key, const SealHeader& header,
                      std::span<const std::uint8_t, kSealNonceSize> nonce, std::span<const std::uint8_t> ad,
                      std::span<const std::uint8_t> plaintext) {
  Bytes out(kSealOverhead + plaintext.size());
  std::memcpy(&out[9], nonce.data(), kNonceSize);
  seal_in_place(out, key.data(), header, ad, plaintext);
  return out;
}

SealHeader peek_header(std::span<const std::uint8_t> sealed) {
  if (sealed.size() < kSealOverhead) throw Error(ErrorCode::integrity, "sealed value is truncated");
  if (sealed[0] != kSealFormat) throw Error(ErrorCode::integrity, "sealed value has an unknown format version");
  return SealHeader{sealed[0], get_u32(&sealed[1]), get_u32(&sealed[5])};
}

Bytes open(const SecretKey& key, std::span<const std::uint8_t> ad, std::span<const std::uint8_t> sealed,
           std::string_view what_for) {
  try {
    peek_header(sealed);
  } catch (const Error& e) {
    throw Error(ErrorCode::integrity, std::string(what_for) + ": " + e.what());
  }
  const Bytes aad = full_ad(sealed.data(), ad);
  Bytes out(sealed.size() - kSealOverhead);
  unsigned long long mlen = 0;
  if (crypto_aead_xchacha20poly1305_ietf_decrypt(out.data(), &mlen, nullptr, sealed.data() + kSealHeaderSize,
                                                 sealed.size() - kSealHeaderSize, aad.data(), aad.size(),
                                                 &sealed[9], key.data()) != 0) {
    throw Error(ErrorCode::integrity,
                std::string(what_for) + ": ciphertext failed authentication (tampered, moved or wrong key)");
  }
  out.resize(mlen);
  return out;
}

Bytes field_ad(std::span<const std::uint8_t> subject_id, std::string_view field, std::uint32_t schema_version) {
  Bytes ad;
  ad.reserve(subject_id.size() + field.size() + 6);
  ad.insert(ad.end(), subject_id.begin(), subject_id.end());
  ad.push_back(0);
  ad.insert(ad.end(), field.begin(), field.end());
  ad.push_back(0);
  std::uint8_t v[4];
  put_u32(v, schema_version);
  ad.insert(ad.end(), v, v + 4);
  return ad;
}

Bytes wrap_key(const SecretKey& kek, std::uint32_t kek_version, std::string_view slot, const SecretKey& key) {
  const std::string ad = std::string("custos-wrap\0", 12) + std::string(slot);
  return seal(kek, SealHeader{kSealFormat, kek_version, 0}, as_bytes(ad), key.span());
}

Bytes wrap_key_with_nonce(const SecretKey& kek, std::uint32_t kek_version, std::string_view slot,
                          std::span<const std::uint8_t, SecretKey::kSize> key,
                          std::span<const std::uint8_t, kSealNonceSize> nonce) {
  std::string ad("custos-wrap\0", 12);
  ad += slot;
  return seal_with_nonce(kek.span(), SealHeader{kSealFormat, kek_version, 0}, nonce, as_bytes(ad), key);
}

RandomBatch::RandomBatch(std::size_t size) : size_(size) {
  ensure_sodium();  // sodium_malloc aborts before sodium_init
  bytes_ = static_cast<std::uint8_t*>(sodium_malloc(size == 0 ? 1 : size));
  if (bytes_ == nullptr) throw Error(ErrorCode::internal, "cannot allocate guarded memory");
  randombytes_buf(bytes_, size);
}

RandomBatch::~RandomBatch() { sodium_free(bytes_); }  // zeroes before freeing

const std::uint8_t* RandomBatch::take_bytes(std::size_t n) {
  if (size_ - used_ < n) throw Error(ErrorCode::internal, "random batch used up");
  const std::uint8_t* out = bytes_ + used_;
  used_ += n;
  return out;
}

SecretKey unwrap_key(const SecretKey& kek, std::string_view slot, std::span<const std::uint8_t> wrapped) {
  const std::string ad = std::string("custos-wrap\0", 12) + std::string(slot);
  Bytes raw = open(kek, as_bytes(ad), wrapped, "wrapped key");
  if (raw.size() != SecretKey::kSize) {
    sodium_memzero(raw.data(), raw.size());
    throw Error(ErrorCode::integrity, "wrapped key has the wrong length");
  }
  SecretKey key = SecretKey::from_bytes(raw);
  sodium_memzero(raw.data(), raw.size());
  return key;
}

}  // namespace custos::crypto
