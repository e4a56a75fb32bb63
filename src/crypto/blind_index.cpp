#include "custos/crypto/blind_index.h"

#include <sodium.h>

namespace custos::crypto {

BlindIndex blind_index(const SecretKey& field_key, std::string_view normalised_value) {
  BlindIndex out{};
  crypto_generichash(out.data(), out.size(), reinterpret_cast<const unsigned char*>(normalised_value.data()),
                     normalised_value.size(), field_key.data(), SecretKey::kSize);
  return out;
}

}  // namespace custos::crypto
