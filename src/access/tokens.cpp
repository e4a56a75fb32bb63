#include "custos/access/tokens.h"

#include <sodium.h>

#include "custos/error.h"

namespace custos::access {
namespace {

using store::Row;
using store::TxMode;

constexpr std::string_view kPrefix = "cst_";

std::array<std::uint8_t, 32> token_hash(std::string_view token) {
  std::array<std::uint8_t, 32> h{};
  crypto_generichash(h.data(), h.size(), reinterpret_cast<const unsigned char*>(token.data()), token.size(),
                     nullptr, 0);
  return h;
}

std::string token_id(const std::array<std::uint8_t, 32>& hash) {
  char out[17];
  sodium_bin2hex(out, sizeof out, hash.data(), 8);
  return out;
}

void check_name(const std::string& name) {
  if (name.empty() || name.size() > 64 ||
      name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-@") !=
          std::string::npos)
    throw Error(ErrorCode::invalid_argument, "token name must be 1-64 characters of [A-Za-z0-9_.-@]");
}

}  // namespace

std::string TokenStore::create(const audit::Actor& actor, const std::string& name, const std::string& role) {
  check_name(name);
  std::array<std::uint8_t, 32> secret{};
  randombytes_buf(secret.data(), secret.size());
  std::string token(kPrefix);
  char b64[64];
  sodium_bin2base64(b64, sizeof b64, secret.data(), secret.size(), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
  sodium_memzero(secret.data(), secret.size());
  token += b64;
  sodium_memzero(b64, sizeof b64);
  const auto hash = token_hash(token);
  const std::string id = token_id(hash);
  auto tx = store_.begin(TxMode::write);
  std::optional<bool> revoked;
  tx->exec("SELECT revoked_at IS NOT NULL FROM tokens WHERE name = ?", {name},
           [&](const Row& r) { revoked = r.integer(0) != 0; });
  if (revoked && !*revoked) throw Error(ErrorCode::conflict, "a token named '" + name + "' already exists");
  // A revoked name may be reused: the old row goes, its audit entries stay.
  if (revoked) tx->exec("DELETE FROM tokens WHERE name = ?", {name});
  tx->exec("INSERT INTO tokens (name, token_id, role, hash, created_at) VALUES (?, ?, ?, ?, ?)",
           {name, id, role, hash, audit_.now_us()});
  audit_.append(*tx, actor, {"token.create", "", {}, {}, true, "", "name=" + name + " role=" + role + " id=" + id});
  tx->commit();
  return token;
}

void TokenStore::revoke(const audit::Actor& actor, const std::string& name, const OnRevoke& also) {
  auto tx = store_.begin(TxMode::write);
  std::optional<std::string> id;
  tx->exec("SELECT token_id FROM tokens WHERE name = ? AND revoked_at IS NULL", {name},
           [&](const Row& r) { id = std::string(r.text(0)); });
  if (!id) throw Error(ErrorCode::not_found, "no active token named '" + name + "'");
  tx->exec("UPDATE tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL", {audit_.now_us(), name});
  std::string detail = "name=" + name;
  if (also) {
    const std::string more = also(*tx, *id);
    if (!more.empty()) detail += " " + more;
  }
  audit_.append(*tx, actor, {"token.revoke", "", {}, {}, true, "", detail});
  tx->commit();
}

Principal TokenStore::authenticate(std::string_view token) {
  const Error denied(ErrorCode::unauthenticated, "missing, unknown or revoked bearer token");
  if (token.size() != kPrefix.size() + 43 || token.substr(0, kPrefix.size()) != kPrefix) throw denied;
  const auto hash = token_hash(token);
  std::optional<Principal> found;
  auto tx = store_.begin(TxMode::read);
  tx->exec("SELECT name, role, token_id, hash FROM tokens WHERE hash = ? AND revoked_at IS NULL", {hash},
           [&](const Row& r) {
             const auto stored = r.blob(3);
             if (stored.size() == hash.size() && sodium_memcmp(stored.data(), hash.data(), hash.size()) == 0)
               found = Principal{std::string(r.text(0)), std::string(r.text(1)), std::string(r.text(2))};
           });
  if (!found) throw denied;
  return *found;
}

std::vector<TokenInfo> TokenStore::list() {
  std::vector<TokenInfo> out;
  auto tx = store_.begin(TxMode::read);
  tx->exec("SELECT name, role, token_id, created_at, revoked_at FROM tokens ORDER BY name", {}, [&](const Row& r) {
    TokenInfo t{std::string(r.text(0)), std::string(r.text(1)), std::string(r.text(2)), r.integer(3), std::nullopt};
    if (!r.is_null(4)) t.revoked_us = r.integer(4);
    out.push_back(std::move(t));
  });
  return out;
}

}  // namespace custos::access
