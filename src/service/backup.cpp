// Online backup, restore and verification (include/custos/service/backup.h).
#include "custos/service/backup.h"

#include <pwd.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <fstream>
#include <regex>

#include "custos/audit/audit_log.h"
#include "custos/crypto/keyring.h"
#include "custos/crypto/signer.h"
#include "custos/error.h"
#include "custos/records/storage.h"
#include "custos/service/schema.h"
#include "custos/store/key_table.h"
#include "custos/store/sqlcipher_store.h"
#include "custos/util/files.h"

namespace custos::service {
namespace fs = std::filesystem;
using Json = nlohmann::json;
namespace {

constexpr std::string_view kMagic = "custos-backup 1\n";
constexpr std::size_t kMaxManifest = 1 << 20;
constexpr const char* kSigningSlot = "audit:signing";  // as in service.cpp

fs::path key_dir(const fs::path& data_dir) { return data_dir / "keys"; }
fs::path db_path(const fs::path& data_dir) { return data_dir / "custos.db"; }

std::string hex(std::span<const std::uint8_t> bytes) {
  std::string out(bytes.size() * 2 + 1, '\0');
  sodium_bin2hex(out.data(), out.size(), bytes.data(), bytes.size());
  out.pop_back();
  return out;
}

// BLAKE2b-256 of a stream of chunks.
class Digest {
 public:
  Digest() { crypto_generichash_init(&state_, nullptr, 0, 32); }
  void update(const std::uint8_t* p, std::size_t n) { crypto_generichash_update(&state_, p, n); }
  std::string finish() {
    std::array<std::uint8_t, 32> out{};
    crypto_generichash_final(&state_, out.data(), out.size());
    return hex(out);
  }

 private:
  crypto_generichash_state state_{};
};

std::string file_digest(const fs::path& file, std::uint64_t* size) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw Error(ErrorCode::storage, "cannot read " + file.string());
  Digest d;
  std::array<char, 64 * 1024> buf{};
  *size = 0;
  while (in) {
    in.read(buf.data(), buf.size());
    const auto n = static_cast<std::size_t>(in.gcount());
    d.update(reinterpret_cast<const std::uint8_t*>(buf.data()), n);
    *size += n;
  }
  if (in.bad()) throw Error(ErrorCode::storage, "cannot read " + file.string());
  return d.finish();
}

// A member name is a relative path of safe components; raw master keys are
// never members. Anything else in an archive is refused before a byte is written.
bool valid_member_name(const std::string& name) {
  // keys/: only the wrapped database key and passphrase parameters, never a
  // raw master key nor a leftover temp file of one.
  static const std::regex kAllowed(
      R"((custos\.db|audit\.pub|keys/db\.key\.wrapped|keys/master-[0-9]+\.argon2\.json|policies(/[A-Za-z0-9_.-]+)+))");
  if (!std::regex_match(name, kAllowed) || name.find(".tmp-") != std::string::npos) return false;
  for (const auto& part : fs::path(name))
    if (part == ".." || part == "." || part.empty()) return false;
  return true;
}

// A private scratch directory (0700) beside `near`, removed on destruction.
class ScratchDir {
 public:
  explicit ScratchDir(const fs::path& near) {
    std::string templ = (near / ".custos-scratch-XXXXXX").string();
    if (::mkdtemp(templ.data()) == nullptr)
      throw Error(ErrorCode::storage, "cannot create a scratch directory in " + near.string());
    path_ = templ;
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

fs::path dir_of(const fs::path& file) {
  const fs::path parent = fs::absolute(file).parent_path();
  return parent.empty() ? fs::path(".") : parent;
}

std::string local_principal() {
  if (const passwd* pw = ::getpwuid(::geteuid())) return std::string("local:") + pw->pw_name;
  return "local:" + std::to_string(::geteuid());
}

struct Manifest {
  Json doc;
  std::uint64_t body_offset = 0;
};

// Reads and checks the magic line and the manifest; leaves `in` at the first member.
Manifest read_manifest(std::istream& in, const fs::path& archive) {
  std::string magic(kMagic.size(), '\0');
  in.read(magic.data(), static_cast<std::streamsize>(magic.size()));
  if (!in || magic != kMagic) throw Error(ErrorCode::integrity, archive.string() + " is not a Custos backup");
  std::string line;
  char c = 0;
  while (in.get(c) && c != '\n') {
    if (line.size() >= kMaxManifest) throw Error(ErrorCode::integrity, "backup manifest is longer than 1 MiB");
    line.push_back(c);
  }
  if (c != '\n') throw Error(ErrorCode::integrity, "backup is truncated in its manifest");
  Manifest m;
  try {
    m.doc = Json::parse(line);
  } catch (const Json::exception&) {
    throw Error(ErrorCode::integrity, "backup manifest is not valid JSON");
  }
  const Json& d = m.doc;
  const auto bad = [](const std::string& what) { return Error(ErrorCode::integrity, "backup manifest: " + what); };
  if (!d.is_object() || d.value("format", "") != "custos-backup" || !d.contains("members") ||
      !d["members"].is_array() || !d.contains("audit") || !d["audit"].is_object() ||
      !d["audit"].contains("size") || !d["audit"]["size"].is_number_unsigned() || !d["audit"].contains("root") ||
      !d["audit"]["root"].is_string() || !d.contains("subjects") || !d["subjects"].is_number_integer() ||
      !d.contains("master_key_versions") || !d["master_key_versions"].is_array() || !d.contains("key_mode") ||
      !d["key_mode"].is_string())
    throw bad("a required field is missing or has the wrong type");
  bool has_db = false;
  for (const Json& member : d["members"]) {
    if (!member.is_object() || !member.contains("name") || !member["name"].is_string() || !member.contains("size") ||
        !member["size"].is_number_unsigned() || !member.contains("blake2b") || !member["blake2b"].is_string())
      throw bad("a member entry is malformed");
    if (!valid_member_name(member["name"].get<std::string>())) throw bad("a member has a disallowed name");
    has_db |= member["name"] == "custos.db";
  }
  if (!has_db) throw bad("no database member");
  for (const Json& v : d["master_key_versions"])
    if (!v.is_number_unsigned() || v.get<std::uint64_t>() == 0 || v.get<std::uint64_t>() > 1000000)
      throw bad("a master-key version is malformed");
  return m;
}

// Streams one member out of `in`, checking its digest; `sink` gets each chunk.
void read_member(std::istream& in, const Json& member, const std::function<void(const std::uint8_t*, std::size_t)>& sink) {
  std::uint64_t left = member["size"].get<std::uint64_t>();
  Digest d;
  std::array<char, 64 * 1024> buf{};
  while (left > 0) {
    const auto want = static_cast<std::streamsize>(std::min<std::uint64_t>(left, buf.size()));
    in.read(buf.data(), want);
    if (in.gcount() != want) throw Error(ErrorCode::integrity, "backup is truncated in member " + member["name"].get<std::string>());
    const auto* p = reinterpret_cast<const std::uint8_t*>(buf.data());
    d.update(p, static_cast<std::size_t>(want));
    if (sink) sink(p, static_cast<std::size_t>(want));
    left -= static_cast<std::uint64_t>(want);
  }
  const std::string expected = member["blake2b"].get<std::string>();
  if (expected.size() != 64 || sodium_memcmp(d.finish().data(), expected.data(), 64) != 0)
    throw Error(ErrorCode::integrity, "backup member " + member["name"].get<std::string>() + " fails its digest");
}

// Writes every member under `dir`, the master keys from `master_key_dir`,
// then checks the restored vault against the manifest.
Json restore_into(std::istream& in, const Manifest& m, const fs::path& dir, const RestoreOptions& options) {
  for (const Json& member : m.doc["members"]) {
    const std::string name = member["name"];
    const fs::path target = dir / name;
    util::make_private_dir(target.parent_path());
    util::AtomicFile file(target, name == "audit.pub" ? 0644 : 0600);
    read_member(in, member, [&](const std::uint8_t* p, std::size_t n) { file.write({p, n}); });
    file.commit();
  }
  if (in.peek() != std::char_traits<char>::eof())
    throw Error(ErrorCode::integrity, "backup has bytes after its last member");
  if (m.doc["key_mode"] == "key-file") {
    if (options.master_key_dir.empty())
      throw Error(ErrorCode::invalid_argument,
                  "this backup needs the vault's master-key files: pass --master-key-dir DIR (a directory "
                  "holding master-<version>.key, e.g. the old data directory's keys/)");
    for (const Json& v : m.doc["master_key_versions"]) {
      const std::string file = "master-" + std::to_string(v.get<std::uint64_t>()) + ".key";
      const fs::path from = options.master_key_dir / file;
      if (!fs::exists(from))
        throw Error(ErrorCode::invalid_argument, "master-key file " + from.string() + " is missing");
      util::require_owner_only(from);
      std::array<std::uint8_t, 32> key{};
      std::size_t len = 0;
      try {
        len = util::read_secret_file(from, key);
      } catch (const Error&) {
        sodium_memzero(key.data(), key.size());
        throw Error(ErrorCode::key_error, "master-key file " + from.string() + " is not 32 bytes long");
      }
      if (len != key.size()) throw Error(ErrorCode::key_error, "master-key file " + from.string() + " is not 32 bytes long");
      util::write_file_atomic(key_dir(dir) / file, std::span<const std::uint8_t>(key), 0600);
      sodium_memzero(key.data(), key.size());
    }
  } else if (!options.passphrase) {
    throw Error(ErrorCode::invalid_argument, "this backup's master key is passphrase-derived: pass --passphrase-file");
  }
  const auto size = m.doc["audit"]["size"].get<std::uint64_t>();
  const VaultFacts facts = vault_facts(dir, options.passphrase, size);
  if (facts.audit_size < size || facts.audit_root != m.doc["audit"]["root"].get<std::string>())
    throw Error(ErrorCode::integrity, "restored audit log does not match the backup's root at size " + std::to_string(size));
  if (facts.subjects != m.doc["subjects"].get<std::int64_t>())
    throw Error(ErrorCode::integrity, "restored vault holds " + std::to_string(facts.subjects) + " subjects, the backup " +
                                          std::to_string(m.doc["subjects"].get<std::int64_t>()));
  return {{"audit_size", size}, {"audit_root", facts.audit_root}, {"subjects", facts.subjects}};
}

}  // namespace

VaultFacts vault_facts(const fs::path& data_dir, const std::optional<crypto::Passphrase>& passphrase,
                       std::optional<std::uint64_t> at_size) {
  auto keyring = crypto::Keyring::open(key_dir(data_dir), passphrase);
  const crypto::SecretKey db_key = store::read_db_key(*keyring, key_dir(data_dir));
  auto store = store::open_sqlcipher(db_path(data_dir), db_key);
  service::migrate_schema(*store);
  store::KeyTable keys(*store, *keyring);
  crypto::Signer signer(keys.named_key(kSigningSlot));
  audit::AuditLog log(*store, signer, {});
  VaultFacts facts;
  facts.audit_size = log.size();
  const std::uint64_t size = at_size.value_or(facts.audit_size);
  if (size > facts.audit_size)
    throw Error(ErrorCode::integrity, "audit log is shorter (" + std::to_string(facts.audit_size) + ") than " +
                                          std::to_string(size));
  const auto root = log.root_at(size);
  facts.audit_root = hex(root);
  auto tx = store->begin(store::TxMode::read);
  facts.subjects = records::count_subjects(*tx);
  return facts;
}

Json backup_vault(const BackupOptions& options) {
  const auto started = std::chrono::steady_clock::now();
  const fs::path dir = options.data_dir;
  // The online backup copies a SQLCipher file; a PostgreSQL vault's tables
  // are the database's to back up (pg_dump, base backups: ciphertext only).
  if (!fs::exists(db_path(dir)) && fs::exists(dir / "store.url"))
    throw Error(ErrorCode::invalid_argument, "the vault in " + dir.string() +
                                                 " keeps its tables in PostgreSQL: back them up with the database's"
                                                 " tools (pg_dump) and keep a copy of " + (dir / "keys").string());
  if (!fs::exists(db_path(dir))) throw Error(ErrorCode::not_found, "no vault in " + dir.string());
  auto keyring = crypto::Keyring::open(key_dir(dir), options.passphrase);
  const crypto::SecretKey db_key = store::read_db_key(*keyring, key_dir(dir));

  ScratchDir scratch(dir_of(options.out));
  const fs::path snapshot = scratch.path() / "custos.db";
  store::backup_sqlcipher(db_path(dir), db_key, snapshot);

  // Facts of the snapshot itself (not of the live vault, which moved on).
  Json manifest = {{"format", "custos-backup"}, {"version", 1}};
  {
    auto store = store::open_sqlcipher(snapshot, db_key);
    service::migrate_schema(*store);
    store::KeyTable keys(*store, *keyring);
    crypto::Signer signer(keys.named_key(kSigningSlot));
    audit::AuditLog log(*store, signer, {});
    const auto size = log.size();
    manifest["audit"] = {{"size", size}, {"root", hex(log.root_at(size))}};
    auto tx = store->begin(store::TxMode::read);
    manifest["subjects"] = records::count_subjects(*tx);
    manifest["schema_versions"] = store::schema_versions(*tx);  // module -> version
  }
  // Opening the snapshot may have left WAL side files; fold them away.
  for (const char* side : {"-wal", "-shm"}) fs::remove(snapshot.string() + side);

  // Members: the snapshot, then what the live directory holds besides raw keys.
  std::vector<std::pair<std::string, fs::path>> members = {{"custos.db", snapshot}};
  Json versions = Json::array();
  bool key_files = false;
  for (const auto& e : fs::directory_iterator(key_dir(dir))) {
    const std::string name = e.path().filename().string();
    if (!e.is_regular_file()) continue;
    static const std::regex kRaw(R"(master-([0-9]+)\.key)");
    std::smatch match;
    if (std::regex_match(name, match, kRaw)) {
      versions.push_back(std::stoull(match[1]));
      key_files = true;
      continue;
    }
    static const std::regex kArgon(R"(master-([0-9]+)\.argon2\.json)");
    if (std::regex_match(name, match, kArgon)) versions.push_back(std::stoull(match[1]));
    if (valid_member_name("keys/" + name)) members.emplace_back("keys/" + name, e.path());
  }
  if (fs::exists(dir / "audit.pub")) members.emplace_back("audit.pub", dir / "audit.pub");
  if (fs::is_directory(dir / "policies"))
    for (const auto& e : fs::recursive_directory_iterator(dir / "policies")) {
      if (!e.is_regular_file()) continue;
      const std::string name = "policies/" + fs::relative(e.path(), dir / "policies").generic_string();
      if (valid_member_name(name)) members.emplace_back(name, e.path());
    }
  manifest["key_mode"] = key_files ? "key-file" : "passphrase";
  manifest["master_key_versions"] = versions;
  manifest["master_keys_included"] = false;
  manifest["created_at"] = audit::format_time_us(
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch()).count());
  Json list = Json::array();
  for (const auto& [name, path] : members) {
    std::uint64_t size = 0;
    const std::string digest = file_digest(path, &size);
    list.push_back({{"name", name}, {"size", size}, {"blake2b", digest}});
  }
  manifest["members"] = list;

  util::AtomicFile out(options.out, 0600);
  std::ostream& os = out.stream();
  os << kMagic << manifest.dump() << "\n";
  std::uint64_t bytes = kMagic.size() + manifest.dump().size() + 1;
  for (std::size_t i = 0; i < members.size(); ++i) {
    // Re-read each member and check it still matches what the manifest says
    // (a policy edited meanwhile must not produce an archive that fails verify).
    std::ifstream in(members[i].second, std::ios::binary);
    std::array<char, 64 * 1024> buf{};
    Digest d;
    std::uint64_t size = 0;
    while (in) {
      in.read(buf.data(), buf.size());
      const auto n = static_cast<std::size_t>(in.gcount());
      d.update(reinterpret_cast<const std::uint8_t*>(buf.data()), n);
      os.write(buf.data(), static_cast<std::streamsize>(n));
      size += n;
    }
    if (size != list[i]["size"].get<std::uint64_t>() || d.finish() != list[i]["blake2b"].get<std::string>())
      throw Error(ErrorCode::conflict, members[i].first + " changed during the backup; run it again");
    bytes += size;
  }
  out.commit();

  // The backup is a copy of every subject's data: record who took it.
  {
    auto store = store::open_sqlcipher(db_path(dir), db_key);
    service::migrate_schema(*store);
    store::KeyTable keys(*store, *keyring);
    crypto::Signer signer(keys.named_key(kSigningSlot));
    audit::AuditLog log(*store, signer, {});
    log.append_now({local_principal(), "admin", "", "administration", "backup"},
                   {.operation = "vault.backup",
                    .detail = "audit_size=" + std::to_string(manifest["audit"]["size"].get<std::uint64_t>()) +
                              " subjects=" + std::to_string(manifest["subjects"].get<std::int64_t>())});
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return {{"file", options.out.string()},
          {"bytes", bytes},
          {"audit", manifest["audit"]},
          {"subjects", manifest["subjects"]},
          {"master_keys_included", false},
          {"key_mode", manifest["key_mode"]},
          {"seconds", seconds}};
}

Json restore_vault(const RestoreOptions& options) {
  std::ifstream in(options.archive, std::ios::binary);
  if (!in) throw Error(ErrorCode::not_found, "cannot read backup " + options.archive.string());
  const Manifest m = read_manifest(in, options.archive);
  const fs::path dir = options.data_dir;
  std::error_code ec;
  const bool existed = fs::exists(dir, ec);
  if (existed && (!fs::is_directory(dir, ec) || !fs::is_empty(dir, ec)))
    throw Error(ErrorCode::conflict, "restore target " + dir.string() + " exists and is not an empty directory");
  util::make_private_dir(dir);
  try {
    Json out = restore_into(in, m, dir, options);
    out["data_dir"] = dir.string();
    return out;
  } catch (...) {
    // Nothing half-restored stays behind.
    if (existed) {
      for (const auto& e : fs::directory_iterator(dir, ec)) fs::remove_all(e.path(), ec);
    } else {
      fs::remove_all(dir, ec);
    }
    throw;
  }
}

Json verify_backup(const RestoreOptions& options) {
  std::ifstream in(options.archive, std::ios::binary);
  if (!in) throw Error(ErrorCode::not_found, "cannot read backup " + options.archive.string());
  const Manifest m = read_manifest(in, options.archive);
  const bool can_open = m.doc["key_mode"] == "key-file" ? !options.master_key_dir.empty() : options.passphrase.has_value();
  Json out = {{"members", m.doc["members"].size()},
              {"audit", m.doc["audit"]},
              {"subjects", m.doc["subjects"]},
              {"created_at", m.doc.value("created_at", "")}};
  if (!can_open) {
    for (const Json& member : m.doc["members"]) read_member(in, member, nullptr);
    if (in.peek() != std::char_traits<char>::eof())
      throw Error(ErrorCode::integrity, "backup has bytes after its last member");
    out["digests"] = "ok";
    out["opened"] = false;
    out["note"] = m.doc["key_mode"] == "key-file"
                      ? "digests checked; pass --master-key-dir to also open the database and check the audit root"
                      : "digests checked; pass --passphrase-file to also open the database and check the audit root";
    return out;
  }
  ScratchDir scratch(fs::temp_directory_path());
  const Json facts = restore_into(in, m, scratch.path() / "vault", options);
  out["digests"] = "ok";
  out["opened"] = true;
  out["checked"] = facts;
  return out;
}

}  // namespace custos::service
