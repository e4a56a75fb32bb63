// custos/access/tokens.h — bearer API tokens.
//
// A token is "cst_" + 43 base64url characters (256 random bits), shown once
// at creation. The store keeps only its BLAKE2b-256 hash; authentication
// finds the row by hash and compares in constant time. Revocation is a
// column, read on every authentication, so it applies to the next request
// of every running process.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "custos/audit/audit_log.h"
#include "custos/store/store.h"

namespace custos::access {

struct Principal {
  std::string name;      // token name, or "local:<user>"
  std::string role;
  std::string token_id;  // short public id of the token (hash prefix); empty for local
};

struct TokenInfo {
  std::string name, role, token_id;
  std::int64_t created_us = 0;
  std::optional<std::int64_t> revoked_us;
};

class TokenStore {
 public:
  TokenStore(store::Store& store, audit::AuditLog& audit) : store_(store), audit_(audit) {}

  // Returns the token text (only time it exists). Throws Error(conflict) if
  // an unrevoked token of that name exists.
  std::string create(const audit::Actor& actor, const std::string& name, const std::string& role);
  // Throws Error(not_found). `also` runs in the revocation's transaction with
  // the token's public id, to end what the token issued (privacy links); the
  // text it returns is added to the audit entry's detail.
  using OnRevoke = std::function<std::string(store::Transaction&, const std::string& token_id)>;
  void revoke(const audit::Actor& actor, const std::string& name, const OnRevoke& also = {});
  // Throws Error(unauthenticated) for unknown, malformed or revoked tokens.
  Principal authenticate(std::string_view token);
  std::vector<TokenInfo> list();

 private:
  store::Store& store_;
  audit::AuditLog& audit_;
};

}  // namespace custos::access
