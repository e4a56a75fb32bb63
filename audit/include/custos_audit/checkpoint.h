// custos_audit/checkpoint.h — signed tree heads in the C2SP formats.
//
// A checkpoint (c2sp.org/tlog-checkpoint) is the body
//     <origin>\n<tree size>\n<base64 root hash>\n
// signed as a note (c2sp.org/signed-note): the body, an empty line, and one
// line per signature "— <key name> <base64(key id || Ed25519 signature)>\n".
// The key id is the first 4 bytes of SHA-256(<key name> || "\n" || 0x01 ||
// public key). A verifier key ("vkey") is "<name>+<hex key id>+<base64(0x01 || public key)>".
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "custos_audit/merkle.h"

namespace custos::auditfmt {

using PublicKey = std::array<std::uint8_t, 32>;

struct Checkpoint {
  std::string origin;
  std::uint64_t size = 0;
  Hash root{};
  std::string note;
};

struct VerifierKey {
  std::string name;
  PublicKey key{};
};

std::string sign_checkpoint(std::string_view origin, std::uint64_t size, const Hash& root, std::string_view key_name,
                            std::span<const std::uint8_t, 64> secret_key);

// Throws std::runtime_error saying what is wrong (format, unknown key, bad signature).
Checkpoint parse_and_verify_checkpoint(std::string_view note, const VerifierKey& key);
Checkpoint parse_and_verify_checkpoint_vkey(std::string_view note, std::string_view vkey);

std::string format_vkey(std::string_view name, const PublicKey& key);
// Throws std::runtime_error on a malformed vkey.
VerifierKey parse_vkey(std::string_view vkey);
// Hex SHA-256 of the 32-byte public key.
std::string fingerprint(const PublicKey& key);

}  // namespace custos::auditfmt
