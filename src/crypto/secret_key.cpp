#include "custos/crypto/secret_key.h"

#include <sodium.h>

#include <cstring>
#include <vector>

#include "custos/error.h"
#include "custos/util/mutex.h"

namespace custos::crypto {
namespace {

// sodium_malloc costs an mmap, mprotects and an mlock per call; a subject's
// DEK lives for microseconds. Keys therefore come from one guarded, locked
// arena of fixed slots, wiped on release; only when it is full do they fall
// back to a sodium_malloc of their own.
class KeyArena {
 public:
  static constexpr std::size_t kSlots = 4096;

  KeyArena() {
    base_ = static_cast<std::uint8_t*>(sodium_malloc(kSlots * SecretKey::kSize));
    if (base_ == nullptr) return;
    free_.reserve(kSlots);
    for (std::size_t i = kSlots; i-- > 0;) free_.push_back(static_cast<std::uint16_t>(i));
  }

  std::uint8_t* take() {
    util::MutexLock lock(mu_);
    if (free_.empty()) return nullptr;
    const std::uint16_t slot = free_.back();
    free_.pop_back();
    return base_ + std::size_t{slot} * SecretKey::kSize;
  }

  // Returns false if `p` is not from the arena.
  bool give_back(std::uint8_t* p) {
    if (base_ == nullptr || p < base_ || p >= base_ + kSlots * SecretKey::kSize) return false;
    sodium_memzero(p, SecretKey::kSize);
    util::MutexLock lock(mu_);
    free_.push_back(static_cast<std::uint16_t>((p - base_) / SecretKey::kSize));
    return true;
  }

 private:
  std::uint8_t* base_ = nullptr;  // never freed: keys may be released during static destruction
  util::Mutex mu_;
  std::vector<std::uint16_t> free_ CUSTOS_GUARDED_BY(mu_);
};

KeyArena& arena() {
  static KeyArena* a = new KeyArena();
  return *a;
}

void release(std::uint8_t* p) {
  if (p != nullptr && !arena().give_back(p)) sodium_free(p);
}

}  // namespace

void ensure_sodium() {
  static const int rc = sodium_init();
  if (rc < 0) throw Error(ErrorCode::internal, "libsodium failed to initialise");
}

SecretKey::SecretKey() {
  ensure_sodium();
  bytes_ = arena().take();
  if (bytes_ == nullptr) bytes_ = static_cast<std::uint8_t*>(sodium_malloc(kSize));
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
    release(bytes_);
    bytes_ = other.bytes_;
    other.bytes_ = nullptr;
  }
  return *this;
}

// Arena slots are wiped on release; sodium_free wipes before unmapping.
SecretKey::~SecretKey() { release(bytes_); }

}  // namespace custos::crypto
