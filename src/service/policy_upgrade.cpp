// `custos policy upgrade` (include/custos/service/policy_upgrade.h).
#include "custos/service/policy_upgrade.h"

#include <pwd.h>
#include <unistd.h>

#include "custos/audit/audit_log.h"
#include "custos/crypto/keyring.h"
#include "custos/crypto/signer.h"
#include "custos/dsr/regulations.h"
#include "custos/error.h"
#include "custos/service/schema.h"
#include "custos/store/key_table.h"
#include "custos/store/postgres_store.h"
#include "custos/store/sqlcipher_store.h"
#include "custos/util/files.h"

namespace custos::service {
namespace fs = std::filesystem;
using Json = nlohmann::json;

namespace {

constexpr const char* kSigningSlot = "audit:signing";  // as in service.cpp

std::string local_principal() {
  if (const passwd* pw = ::getpwuid(::geteuid())) return std::string("local:") + pw->pw_name;
  return "local:" + std::to_string(::geteuid());
}

// The store the vault lives in, as Service::open finds it: the URL asked
// for, else the one `init` remembered, else SQLCipher in the data dir.
std::unique_ptr<store::Store> open_store(const PolicyUpgradeOptions& o, crypto::Keyring& keyring) {
  std::string url = o.store_url;
  std::error_code ec;
  if (url.empty() && fs::exists(o.data_dir / "store.url", ec)) {
    util::require_owner_only(o.data_dir / "store.url");
    url = util::read_text_file(o.data_dir / "store.url");
    while (!url.empty() && (url.back() == '\n' || url.back() == '\r' || url.back() == ' ')) url.pop_back();
  }
  if (store::is_postgres_url(url)) return store::open_postgres(url);
  const std::string rest = url.starts_with("sqlcipher:") ? url.substr(10) : std::string();
  if (!url.empty() && !url.starts_with("sqlcipher:"))
    throw Error(ErrorCode::invalid_argument, "store URL: expected sqlcipher: or postgresql://… (the URL is not repeated here)");
  const fs::path file = rest.empty() ? o.data_dir / "custos.db" : fs::path(rest);
  if (!fs::exists(file, ec))
    throw Error(ErrorCode::not_found, "no vault in " + o.data_dir.string() + " (run `custos init --data-dir " +
                                          o.data_dir.string() + "`)");
  return store::open_sqlcipher(file, store::read_db_key(keyring, o.data_dir / "keys"));
}

}  // namespace

Json upgrade_policies(const PolicyUpgradeOptions& options) {
  if (!fs::exists(options.data_dir / "keys"))
    throw Error(ErrorCode::not_found, "no vault in " + options.data_dir.string() + " (run `custos init --data-dir " +
                                          options.data_dir.string() + "`)");
  const fs::path policy_dir = options.policy_dir.empty() ? options.data_dir / "policies" : options.policy_dir;
  // The audit log first: without it nothing may change.
  auto keyring = crypto::Keyring::open(options.data_dir / "keys", options.passphrase);
  auto store = open_store(options, *keyring);
  // A previous release's data dir is upgraded here, before anything else
  // opens it: the migration is audited as Service::open audits it (found by
  // Upgrade.ADataDirOfThePreviousReleaseOpensAndMigrates: it used to run
  // silently, and the Service that opened the vault next saw nothing to record).
  const SchemaChange schema_change = migrate_schema_noting_changes(*store);
  store::KeyTable keys(*store, *keyring);
  crypto::Signer signer(keys.named_key(kSigningSlot));
  audit::AuditLog log(*store, signer, {});
  if (schema_change.upgraded())
    log.append_now({"system:node-1", "system", "", "administration", "schema-migration"},
                   {.operation = "schema.migrate", .detail = schema_change.describe()});

  const std::string old_text = util::read_text_file(policy_dir / "regulations.yaml");
  const dsr::RegulationsUpgrade u = dsr::upgrade_regulations(policy_dir, options.shipped_dir);
  Json out = {{"file", (policy_dir / "regulations.yaml").string()},
              {"from_version", u.from_version},
              {"to_version", u.to_version},
              {"changed", u.changed},
              {"calendars_added", u.calendars_added},
              {"notes", u.notes},
              {"audited", false}};
  if (!u.changed) return out;
  out["backup"] = u.backup.string();
  out["eu_calendar"] = u.eu_calendar;
  try {
    out["audit_index"] = log.append_now(
        {local_principal(), "admin", "", "administration", "policy-upgrade"},
        {.operation = "policy.upgrade",
         .detail = "regulations.yaml version " + std::to_string(u.from_version) + " -> " + std::to_string(u.to_version) +
                   (u.calendars_added ? "; calendars.yaml added" : "") + "; eu-gdpr calendar " + u.eu_calendar +
                   "; notes=" + std::to_string(u.notes.size())});
  } catch (...) {
    // Fail closed: an upgrade nobody can see in the log did not happen.
    std::error_code ec;
    util::write_file_atomic(policy_dir / "regulations.yaml", old_text, 0644);
    fs::remove(u.backup, ec);
    if (u.calendars_added) fs::remove(policy_dir / "calendars.yaml", ec);
    throw;
  }
  out["audited"] = true;
  return out;
}

}  // namespace custos::service
