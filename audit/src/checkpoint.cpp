#include "custos_audit/checkpoint.h"

#include <openssl/sha.h>
#include <sodium.h>

#include <charconv>
#include <cstring>
#include <stdexcept>
#include <vector>

namespace custos::auditfmt {
namespace {

constexpr std::string_view kDash = "\xE2\x80\x94 ";  // U+2014 and a space
constexpr std::uint8_t kEd25519Type = 0x01;

std::array<std::uint8_t, 4> key_id(std::string_view name, const PublicKey& key) {
  std::vector<std::uint8_t> buf(name.begin(), name.end());
  buf.push_back('\n');
  buf.push_back(kEd25519Type);
  buf.insert(buf.end(), key.begin(), key.end());
  std::uint8_t digest[SHA256_DIGEST_LENGTH];
  SHA256(buf.data(), buf.size(), digest);
  return {digest[0], digest[1], digest[2], digest[3]};
}

std::string body_of(std::string_view origin, std::uint64_t size, const Hash& root) {
  return std::string(origin) + "\n" + std::to_string(size) + "\n" + base64_encode(root) + "\n";
}

[[noreturn]] void bad(const std::string& why) { throw std::runtime_error("checkpoint: " + why); }

}  // namespace

std::string sign_checkpoint(std::string_view origin, std::uint64_t size, const Hash& root, std::string_view key_name,
                            std::span<const std::uint8_t, 64> secret_key) {
  const std::string body = body_of(origin, size, root);
  PublicKey pub;
  crypto_sign_ed25519_sk_to_pk(pub.data(), secret_key.data());
  std::vector<std::uint8_t> sig(4 + crypto_sign_BYTES);
  const auto id = key_id(key_name, pub);
  std::copy(id.begin(), id.end(), sig.begin());
  crypto_sign_detached(sig.data() + 4, nullptr, reinterpret_cast<const unsigned char*>(body.data()), body.size(),
                       secret_key.data());
  return body + "\n" + std::string(kDash) + std::string(key_name) + " " + base64_encode(sig) + "\n";
}

Checkpoint parse_and_verify_checkpoint(std::string_view note, const VerifierKey& key) {
  const auto split = note.find("\n\n");
  if (split == std::string_view::npos) bad("no signature block");
  const std::string_view body = note.substr(0, split + 1);
  // Body: exactly three lines.
  Checkpoint cp;
  cp.note = std::string(note);
  const auto l1 = body.find('\n');
  const auto l2 = body.find('\n', l1 + 1);
  const auto l3 = body.find('\n', l2 + 1);
  if (l1 == std::string_view::npos || l2 == std::string_view::npos || l3 != body.size() - 1)
    bad("the body must be origin, size and root lines");
  cp.origin = std::string(body.substr(0, l1));
  const std::string_view size_text = body.substr(l1 + 1, l2 - l1 - 1);
  if (size_text.empty() || size_text.size() > 20 || size_text.find_first_not_of("0123456789") != std::string_view::npos ||
      (size_text.size() > 1 && size_text[0] == '0'))
    bad("tree size is not a decimal number");
  // Twenty digits may still exceed 2^64 - 1: from_chars reports that
  // instead of throwing std::out_of_range past the documented error.
  if (std::from_chars(size_text.data(), size_text.data() + size_text.size(), cp.size).ec != std::errc())
    bad("tree size is not a decimal number");
  const auto root = base64_decode(body.substr(l2 + 1, l3 - l2 - 1));
  if (!root || root->size() != 32) bad("root hash is not 32 bytes of base64");
  std::copy(root->begin(), root->end(), cp.root.begin());
  // Signature lines: accept the note if one line is by `key` and verifies.
  std::string_view sigs = note.substr(split + 2);
  const auto want_id = key_id(key.name, key.key);
  bool found = false;
  while (!sigs.empty()) {
    const auto nl = sigs.find('\n');
    if (nl == std::string_view::npos) bad("signature line is not newline-terminated");
    const std::string_view line = sigs.substr(0, nl);
    sigs.remove_prefix(nl + 1);
    if (line.substr(0, kDash.size()) != kDash) bad("malformed signature line");
    const std::string_view rest = line.substr(kDash.size());
    const auto space = rest.find(' ');
    if (space == std::string_view::npos) bad("malformed signature line");
    if (rest.substr(0, space) != key.name) continue;
    const auto sig = base64_decode(rest.substr(space + 1));
    if (!sig || sig->size() != 4 + crypto_sign_BYTES) bad("malformed signature");
    if (!std::equal(want_id.begin(), want_id.end(), sig->begin())) continue;
    if (crypto_sign_verify_detached(sig->data() + 4, reinterpret_cast<const unsigned char*>(body.data()), body.size(),
                                    key.key.data()) != 0)
      bad("signature does not verify");
    found = true;
  }
  if (!found) bad("not signed by key '" + key.name + "'");
  return cp;
}

Checkpoint parse_and_verify_checkpoint_vkey(std::string_view note, std::string_view vkey) {
  return parse_and_verify_checkpoint(note, parse_vkey(vkey));
}

std::string format_vkey(std::string_view name, const PublicKey& key) {
  const auto id = key_id(name, key);
  char hex[9];
  sodium_bin2hex(hex, sizeof hex, id.data(), id.size());
  std::vector<std::uint8_t> typed{kEd25519Type};
  typed.insert(typed.end(), key.begin(), key.end());
  return std::string(name) + "+" + hex + "+" + base64_encode(typed);
}

VerifierKey parse_vkey(std::string_view vkey) {
  const auto p1 = vkey.find('+');
  const auto p2 = vkey.find('+', p1 == std::string_view::npos ? 0 : p1 + 1);
  if (p1 == std::string_view::npos || p2 == std::string_view::npos || p1 == 0)
    throw std::runtime_error("verifier key: expected <name>+<key id>+<base64 key>");
  VerifierKey out;
  out.name = std::string(vkey.substr(0, p1));
  const auto typed = base64_decode(vkey.substr(p2 + 1));
  if (!typed || typed->size() != 33 || (*typed)[0] != kEd25519Type)
    throw std::runtime_error("verifier key: not an Ed25519 key");
  std::copy(typed->begin() + 1, typed->end(), out.key.begin());
  const auto id = key_id(out.name, out.key);
  char hex[9];
  sodium_bin2hex(hex, sizeof hex, id.data(), id.size());
  if (vkey.substr(p1 + 1, p2 - p1 - 1) != hex) throw std::runtime_error("verifier key: key id does not match the key");
  return out;
}

std::string fingerprint(const PublicKey& key) {
  Hash h;
  SHA256(key.data(), key.size(), h.data());
  return to_hex(h);
}

}  // namespace custos::auditfmt
