#include "custos/crypto/keyring.h"

#include <sodium.h>
#include <sys/stat.h>

#include <array>
#include <cstring>
#include <nlohmann/json.hpp>

#include "custos/error.h"
#include "custos/util/files.h"

namespace custos::crypto {
namespace fs = std::filesystem;
namespace {

constexpr std::string_view kCheckMessage = "custos-kek-check-v1";

fs::path raw_path(const fs::path& dir, std::uint32_t v) { return dir / ("master-" + std::to_string(v) + ".key"); }
fs::path argon_path(const fs::path& dir, std::uint32_t v) {
  return dir / ("master-" + std::to_string(v) + ".argon2.json");
}

std::string to_hex(std::span<const std::uint8_t> bytes) {
  std::string out(bytes.size() * 2 + 1, '\0');
  sodium_bin2hex(out.data(), out.size(), bytes.data(), bytes.size());
  out.pop_back();
  return out;
}

std::vector<std::uint8_t> from_hex(const std::string& hex, const fs::path& file) {
  std::vector<std::uint8_t> out(hex.size() / 2);
  std::size_t len = 0;
  if (sodium_hex2bin(out.data(), out.size(), hex.data(), hex.size(), nullptr, &len, nullptr) != 0 ||
      len != out.size())
    throw Error(ErrorCode::key_error, "key parameter file " + file.string() + " is corrupted");
  return out;
}

std::array<std::uint8_t, 32> check_value(const SecretKey& kek) {
  std::array<std::uint8_t, 32> out{};
  crypto_generichash(out.data(), out.size(), reinterpret_cast<const unsigned char*>(kCheckMessage.data()),
                     kCheckMessage.size(), kek.data(), SecretKey::kSize);
  return out;
}

}  // namespace

static_assert(Argon2Params::kMinOpslimit == crypto_pwhash_OPSLIMIT_INTERACTIVE);
static_assert(Argon2Params::kMinMemlimit == crypto_pwhash_MEMLIMIT_INTERACTIVE);
static_assert(Argon2Params::kMaxMemlimit <= crypto_pwhash_MEMLIMIT_MAX);

Argon2Params Argon2Params::moderate() {
  return {crypto_pwhash_OPSLIMIT_MODERATE, crypto_pwhash_MEMLIMIT_MODERATE};
}
Argon2Params Argon2Params::interactive() {
  return {crypto_pwhash_OPSLIMIT_INTERACTIVE, crypto_pwhash_MEMLIMIT_INTERACTIVE};
}

namespace {

void write_version(const fs::path& dir, std::uint32_t version, const char* passphrase, std::size_t passphrase_len,
                   bool use_passphrase, Argon2Params params) {
  if (!use_passphrase) {
    SecretKey kek = SecretKey::random();
    util::write_file_atomic(raw_path(dir, version), kek.span(), 0600);
    return;
  }
  std::array<std::uint8_t, crypto_pwhash_SALTBYTES> salt{};
  randombytes_buf(salt.data(), salt.size());
  std::uint8_t raw[SecretKey::kSize];
  if (crypto_pwhash(raw, sizeof raw, passphrase, passphrase_len, salt.data(), params.opslimit, params.memlimit,
                    crypto_pwhash_ALG_ARGON2ID13) != 0)
    throw Error(ErrorCode::internal, "Argon2id derivation ran out of memory");
  SecretKey kek = SecretKey::from_bytes(raw);
  sodium_memzero(raw, sizeof raw);
  nlohmann::json doc = {{"version", version},
                        {"alg", "argon2id13"},
                        {"opslimit", params.opslimit},
                        {"memlimit", params.memlimit},
                        {"salt", to_hex(salt)},
                        {"check", to_hex(check_value(kek))}};
  util::write_file_atomic(argon_path(dir, version), doc.dump(2) + "\n", 0600);
}

// The Argon2id cost recorded in a parameter file, refused (Error(key_error),
// naming the file and the allowed range) unless both limits are unsigned
// integers within Argon2Params' bounds.
Argon2Params read_params(const nlohmann::json& doc, const fs::path& file) {
  const auto limit = [&](const char* name, unsigned long long lo, unsigned long long hi) {
    const auto it = doc.find(name);
    if (it == doc.end() || !it->is_number_unsigned() || it->get<unsigned long long>() < lo ||
        it->get<unsigned long long>() > hi)
      throw Error(ErrorCode::key_error, "key parameter file " + file.string() + ": " + name +
                                            " must be an integer from " + std::to_string(lo) + " to " +
                                            std::to_string(hi));
    return it->get<unsigned long long>();
  };
  return {limit("opslimit", Argon2Params::kMinOpslimit, Argon2Params::kMaxOpslimit),
          static_cast<std::size_t>(limit("memlimit", Argon2Params::kMinMemlimit, Argon2Params::kMaxMemlimit))};
}

nlohmann::json read_param_doc(const fs::path& file) {
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(util::read_text_file(file));
  } catch (const nlohmann::json::exception&) {
    throw Error(ErrorCode::key_error, "key parameter file " + file.string() + " is corrupted");
  }
  if (!doc.is_object()) throw Error(ErrorCode::key_error, "key parameter file " + file.string() + " is corrupted");
  return doc;
}

}  // namespace

void Keyring::create(const fs::path& key_dir, const std::optional<Passphrase>& passphrase, Argon2Params params) {
  ensure_sodium();
  util::make_private_dir(key_dir);
  if (fs::exists(raw_path(key_dir, 1)) || fs::exists(argon_path(key_dir, 1)))
    throw Error(ErrorCode::conflict, "a master key already exists in " + key_dir.string());
  if (passphrase && passphrase->empty()) throw Error(ErrorCode::invalid_argument, "the passphrase file is empty");
  write_version(key_dir, 1, passphrase ? passphrase->data() : nullptr, passphrase ? passphrase->size() : 0,
                passphrase.has_value(), params);
}

Keyring::Keyring(fs::path dir, const std::optional<Passphrase>& passphrase)
    : dir_(std::move(dir)), passphrase_(passphrase) {}

Keyring::~Keyring() = default;

std::unique_ptr<Keyring> Keyring::open(const fs::path& key_dir, const std::optional<Passphrase>& passphrase) {
  ensure_sodium();
  std::unique_ptr<Keyring> ring(new Keyring(key_dir, passphrase));
  if (ring->newest_version() == 0)
    throw Error(ErrorCode::key_error, "no master key in " + key_dir.string() + " (run `custos init`)");
  return ring;
}

std::uint32_t Keyring::newest_version() const {
  std::uint32_t newest = 0;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("master-", 0) != 0) continue;
    const auto dot = name.find('.');
    if (dot == std::string::npos) continue;
    const std::string suffix = name.substr(dot);
    if (suffix != ".key" && suffix != ".argon2.json") continue;
    try {
      newest = std::max<std::uint32_t>(newest, static_cast<std::uint32_t>(std::stoul(name.substr(7, dot - 7))));
    } catch (const std::exception&) {
    }
  }
  return newest;
}

SecretKey Keyring::load_version(std::uint32_t version) const {
  const fs::path raw = raw_path(dir_, version);
  const fs::path argon = argon_path(dir_, version);
  if (fs::exists(raw)) {
    util::require_owner_only(raw);
    // Read straight into a stack buffer that is wiped, never into the heap.
    std::array<std::uint8_t, SecretKey::kSize> bytes{};
    std::size_t len = 0;
    try {
      len = util::read_secret_file(raw, bytes);
    } catch (const Error& e) {
      if (e.code() != ErrorCode::key_error) throw;
      len = bytes.size() + 1;
    }
    if (len != SecretKey::kSize) {
      sodium_memzero(bytes.data(), bytes.size());
      throw Error(ErrorCode::key_error, "master key file " + raw.string() + " is " +
                                            (len > bytes.size() ? std::string("longer than 32") : std::to_string(len)) +
                                            " bytes long, expected 32 (truncated or corrupted)");
    }
    SecretKey key = SecretKey::from_bytes(bytes);
    sodium_memzero(bytes.data(), bytes.size());
    return key;
  }
  if (!fs::exists(argon))
    throw Error(ErrorCode::key_error, "master key version " + std::to_string(version) + " is missing from " +
                                          dir_.string());
  util::require_owner_only(argon);
  if (!passphrase_)
    throw Error(ErrorCode::key_error, "master key version " + std::to_string(version) +
                                          " is passphrase-derived; pass --passphrase-file");
  const nlohmann::json doc = read_param_doc(argon);
  if (!doc.contains("salt") || !doc.contains("check") || !doc["salt"].is_string() || !doc["check"].is_string())
    throw Error(ErrorCode::key_error, "key parameter file " + argon.string() + " is corrupted");
  const Argon2Params params = read_params(doc, argon);
  const auto salt = from_hex(doc["salt"].get<std::string>(), argon);
  const auto check = from_hex(doc["check"].get<std::string>(), argon);
  if (salt.size() != crypto_pwhash_SALTBYTES || check.size() != 32)
    throw Error(ErrorCode::key_error, "key parameter file " + argon.string() + " is corrupted");
  std::uint8_t raw_key[SecretKey::kSize];
  if (crypto_pwhash(raw_key, sizeof raw_key, passphrase_->data(), passphrase_->size(), salt.data(),
                    params.opslimit, params.memlimit, crypto_pwhash_ALG_ARGON2ID13) != 0)
    throw Error(ErrorCode::internal, "Argon2id derivation ran out of memory");
  SecretKey key = SecretKey::from_bytes(raw_key);
  sodium_memzero(raw_key, sizeof raw_key);
  const auto expected = check_value(key);
  if (sodium_memcmp(expected.data(), check.data(), 32) != 0)
    throw Error(ErrorCode::key_error, "wrong passphrase for master key version " + std::to_string(version));
  return key;
}

const SecretKey& Keyring::kek(std::uint32_t version) {
  util::MutexLock lock(mu_);
  auto it = keks_.find(version);
  if (it == keks_.end()) it = keks_.emplace(version, std::make_unique<SecretKey>(load_version(version))).first;
  return *it->second;
}

std::uint32_t Keyring::create_next_version() {
  util::MutexLock lock(mu_);
  const std::uint32_t next = newest_version() + 1;
  const bool passphrase_mode = fs::exists(argon_path(dir_, next - 1));
  if (passphrase_mode && !passphrase_)
    throw Error(ErrorCode::key_error, "the master key is passphrase-derived; pass --passphrase-file");
  Argon2Params params = Argon2Params::moderate();
  // Keep the cost the operator chose at init.
  if (passphrase_mode) params = read_params(read_param_doc(argon_path(dir_, next - 1)), argon_path(dir_, next - 1));
  write_version(dir_, next, passphrase_ ? passphrase_->data() : nullptr, passphrase_ ? passphrase_->size() : 0,
                passphrase_mode, params);
  return next;
}

void Keyring::retire(std::uint32_t version) {
  util::MutexLock lock(mu_);
  keks_.erase(version);
  std::error_code ec;
  fs::path raw = raw_path(dir_, version);
  // Overwrite the key file's own blocks (same inode) and fsync before
  // unlinking; a rename of a zeroed copy would leave the key in the old blocks.
  if (fs::exists(fs::symlink_status(raw))) util::overwrite_and_unlink(raw);
  fs::remove(argon_path(dir_, version), ec);
}

Bytes Keyring::wrap(std::uint32_t kek_version, std::string_view slot, const SecretKey& key) {
  return wrap_key(kek(kek_version), kek_version, slot, key);
}

SecretKey Keyring::unwrap(std::string_view slot, std::span<const std::uint8_t> wrapped) {
  const SealHeader header = peek_header(wrapped);
  return unwrap_key(kek(header.key_version), slot, wrapped);
}

Passphrase read_passphrase_file(const fs::path& path) { return Passphrase::read_file(path); }

}  // namespace custos::crypto
