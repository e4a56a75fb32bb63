// custos/crypto/blind_index.h — keyed digests for exact-match lookup.
//
// A blind index is BLAKE2b-256 keyed with the field's own random key over the
// normalised value. Equal values give equal digests; without the key the
// digest reveals nothing and cannot be brute-forced offline.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

#include "custos/crypto/secret_key.h"

namespace custos::crypto {

using BlindIndex = std::array<std::uint8_t, 32>;

BlindIndex blind_index(const SecretKey& field_key, std::string_view normalised_value);

}  // namespace custos::crypto
