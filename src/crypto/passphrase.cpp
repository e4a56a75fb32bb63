#include "custos/crypto/passphrase.h"

#include <sodium.h>

#include <cstring>
#include <span>

#include "custos/crypto/secret_key.h"
#include "custos/error.h"
#include "custos/util/files.h"

namespace custos::crypto {

struct Passphrase::Guarded {
  explicit Guarded(std::size_t capacity) {
    ensure_sodium();
    bytes = static_cast<char*>(sodium_malloc(capacity == 0 ? 1 : capacity));
    if (bytes == nullptr) throw Error(ErrorCode::internal, "cannot allocate guarded memory for a passphrase");
  }
  ~Guarded() { sodium_free(bytes); }  // wipes before unmapping
  Guarded(const Guarded&) = delete;
  Guarded& operator=(const Guarded&) = delete;
  char* bytes = nullptr;
  std::size_t size = 0;
};

Passphrase::Passphrase(std::string_view text) {
  auto guarded = std::make_shared<Guarded>(text.size());
  std::memcpy(guarded->bytes, text.data(), text.size());
  guarded->size = text.size();
  guarded_ = std::move(guarded);
}

Passphrase Passphrase::read_file(const std::filesystem::path& path) {
  auto guarded = std::make_shared<Guarded>(kMaxSize);
  std::size_t len = 0;
  try {
    len = util::read_secret_file(path, std::span<std::uint8_t>(reinterpret_cast<std::uint8_t*>(guarded->bytes),
                                                                kMaxSize));
  } catch (const Error& e) {
    if (e.code() == ErrorCode::key_error)
      throw Error(ErrorCode::key_error, "passphrase file " + path.string() + " is longer than " +
                                            std::to_string(kMaxSize) + " bytes");
    throw Error(ErrorCode::key_error, "cannot read passphrase file " + path.string());
  }
  if (len > 0 && guarded->bytes[len - 1] == '\n') --len;
  if (len > 0 && guarded->bytes[len - 1] == '\r') --len;
  if (len == 0) throw Error(ErrorCode::key_error, "passphrase file " + path.string() + " is empty");
  guarded->size = len;
  Passphrase out;
  out.guarded_ = std::move(guarded);
  return out;
}

const char* Passphrase::data() const noexcept { return guarded_ ? guarded_->bytes : ""; }
std::size_t Passphrase::size() const noexcept { return guarded_ ? guarded_->size : 0; }

}  // namespace custos::crypto
