// custos/crypto/keyring.h — versioned master keys (KEKs) and key wrapping.
//
// On disk, under <data-dir>/keys/:
//   master-<v>.key          32 random bytes, mode 0600 (key-file mode), or
//   master-<v>.argon2.json  salt, Argon2id parameters and a check value
//                           (passphrase mode; the key itself is never stored)
//
// The KEK is used only to wrap other keys (subject DEKs, blind-index keys,
// the SQLCipher key, the audit signing seed). Rotation adds a version and
// re-wraps; data is never re-encrypted. Versions load lazily, so a process
// that was started before a rotation can still unwrap keys wrapped under the
// new version. Thread-safe.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "custos/crypto/aead.h"
#include "custos/crypto/passphrase.h"
#include "custos/crypto/secret_key.h"
#include "custos/util/mutex.h"

namespace custos::crypto {

struct Argon2Params {
  unsigned long long opslimit;
  std::size_t memlimit;
  static Argon2Params moderate();     // the default for production keys
  static Argon2Params interactive();  // cheaper; for tests and small machines

  // What a parameter file may ask for. Below: weaker than anything `custos
  // init` writes. Above: a planted or damaged file could make every start
  // allocate gigabytes or spin for minutes before the passphrase is checked.
  static constexpr unsigned long long kMinOpslimit = 2;   // crypto_pwhash_OPSLIMIT_INTERACTIVE
  static constexpr unsigned long long kMaxOpslimit = 32;  // 8x OPSLIMIT_SENSITIVE
  static constexpr std::size_t kMinMemlimit = std::size_t{64} << 20;  // MEMLIMIT_INTERACTIVE, 64 MiB
  static constexpr std::size_t kMaxMemlimit = std::size_t{4} << 30;   // 4 GiB
};

class Keyring {
 public:
  // Creates version 1 in `key_dir` (created 0700 if missing). With a
  // passphrase, derives the key with Argon2id and stores only the salt,
  // parameters and a check value. Throws Error(conflict) if a master key exists.
  static void create(const std::filesystem::path& key_dir, const std::optional<Passphrase>& passphrase,
                     Argon2Params params = Argon2Params::moderate());

  // Opens an existing keyring. Versions load on first use. Throws
  // Error(key_error) if no master key exists.
  static std::unique_ptr<Keyring> open(const std::filesystem::path& key_dir,
                                       const std::optional<Passphrase>& passphrase);

  ~Keyring();

  // The KEK of `version`, loading (and checking) its file on first use.
  // Throws Error(key_error) naming the file if missing, truncated, readable
  // by group/world, or if the passphrase is wrong.
  const SecretKey& kek(std::uint32_t version);

  // The newest version present on disk.
  std::uint32_t newest_version() const;

  // Writes version newest+1 (random, or from the passphrase with a new salt).
  std::uint32_t create_next_version();

  // Deletes the file of `version` (after everything was re-wrapped): a key
  // file is overwritten in place and fsynced before it is unlinked (see
  // util::overwrite_and_unlink for where a file system defeats that).
  void retire(std::uint32_t version);

  Bytes wrap(std::uint32_t kek_version, std::string_view slot, const SecretKey& key);
  // Picks the KEK version from the wrapped blob's header.
  SecretKey unwrap(std::string_view slot, std::span<const std::uint8_t> wrapped);

  const std::filesystem::path& dir() const { return dir_; }

 private:
  Keyring(std::filesystem::path dir, const std::optional<Passphrase>& passphrase);
  SecretKey load_version(std::uint32_t version) const;

  std::filesystem::path dir_;
  std::optional<Passphrase> passphrase_;  // in guarded memory
  mutable util::Mutex mu_;
  std::map<std::uint32_t, std::unique_ptr<SecretKey>> keks_ CUSTOS_GUARDED_BY(mu_);
};

// Reads a passphrase file into guarded memory and strips one trailing newline
// (Passphrase::read_file).
Passphrase read_passphrase_file(const std::filesystem::path& path);

}  // namespace custos::crypto
