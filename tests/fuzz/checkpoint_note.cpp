// Fuzz target: signed-note (checkpoint) parsing (c2sp.org/signed-note,
// tlog-checkpoint; audit/include/custos_audit/checkpoint.h).
//
// Input: byte 0 picks what the rest is:
//   even: a checkpoint note, verified against the vault key of the seed
//         corpus (tests/fuzz/corpus/checkpoint_note come from a real vault's
//         export) and against a key of the fuzzer's own;
//   odd:  a verifier key ("vkey").
// Invariants: every refusal is std::runtime_error (the documented error);
// an accepted note re-signed with the same origin, size and root verifies
// to the same values; an accepted vkey formats back to a vkey that parses
// to the same name and key.
#include <sodium.h>

#include <array>
#include <cstdint>
#include <stdexcept>

#include "custos_audit/checkpoint.h"
#include "fuzz_support.h"
#include "seed_keys.h"

namespace af = custos::auditfmt;

namespace {
struct OwnKey {
  std::array<std::uint8_t, 64> secret{};
  af::PublicKey pub{};
  std::string vkey;
  OwnKey() {
    if (sodium_init() < 0) std::abort();
    std::array<std::uint8_t, 32> seed{};
    seed.fill(7);
    crypto_sign_seed_keypair(pub.data(), secret.data(), seed.data());
    vkey = af::format_vkey("fuzz.example", pub);
  }
};
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const OwnKey own;
  custos::fuzz::InputReader in(data, size);
  const std::uint8_t mode = in.byte();
  const std::string_view text = in.rest();
  if (mode % 2 == 0) {
    for (const std::string_view vkey : {custos::fuzz::kSeedVaultVkey, std::string_view(own.vkey)}) {
      af::Checkpoint cp;
      try {
        cp = af::parse_and_verify_checkpoint_vkey(text, vkey);
      } catch (const std::runtime_error&) {
        continue;
      }
      std::string note;
      try {
        note = af::sign_checkpoint(cp.origin, cp.size, cp.root, "fuzz.example", own.secret);
      } catch (const std::runtime_error&) {
        FUZZ_CHECK(false, "an origin the parser accepted cannot be signed");
      }
      const af::Checkpoint again = af::parse_and_verify_checkpoint_vkey(note, own.vkey);
      FUZZ_CHECK(again.origin == cp.origin && again.size == cp.size && again.root == cp.root,
                 "a re-signed checkpoint verifies to other values");
    }
  } else {
    af::VerifierKey key;
    try {
      key = af::parse_vkey(text);
    } catch (const std::runtime_error&) {
      return 0;
    }
    const std::string formatted = af::format_vkey(key.name, key.key);
    const af::VerifierKey again = af::parse_vkey(formatted);
    FUZZ_CHECK(again.name == key.name && again.key == key.key, "format_vkey does not round-trip");
    (void)af::fingerprint(key.key);
  }
  return 0;
}
