#include "custos/service/service.h"

#include <pwd.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>

#include "custos/audit/audit_log.h"
#include "custos/consent/consent.h"
#include "custos/crypto/keyring.h"
#include "custos/crypto/signer.h"
#include "custos/error.h"
#include "custos/records/records.h"
#include "custos/records/storage.h"
#include "custos/service/schema.h"
#include "custos/store/key_table.h"
#include "custos/store/postgres_store.h"
#include "custos/store/sqlcipher_store.h"
#include "custos/util/files.h"
#include "custos_audit/checkpoint.h"
#include "custos_audit/merkle.h"
#include "custos_audit/verify.h"
#include "service_impl.h"

namespace custos::service {
namespace fs = std::filesystem;
namespace {

constexpr const char* kSigningSlot = "audit:signing";
constexpr const char* kJournalSlot = "audit:journal";
constexpr std::size_t kMaxBatch = 1000;

fs::path key_dir(const fs::path& data_dir) { return data_dir / "keys"; }
fs::path db_path(const fs::path& data_dir) { return data_dir / "custos.db"; }
fs::path store_url_path(const fs::path& data_dir) { return data_dir / "store.url"; }

// A wrapped random key whose only use is to prove, at open, that this node's
// master key is the one the database's keys are wrapped with (rotation
// re-wraps it with the others).
constexpr const char* kKeyCheckSlot = "key_check";

// The store URL to use: the one asked for, else the one `init` remembered in
// the data dir, else SQLCipher in the data dir. Never echoed in an error (a
// URL may carry a password).
std::string resolve_store_url(const fs::path& dir, const std::string& requested) {
  if (!requested.empty()) return requested;
  std::error_code ec;
  if (fs::exists(store_url_path(dir), ec)) {
    util::require_owner_only(store_url_path(dir));
    std::string url = util::read_text_file(store_url_path(dir));
    while (!url.empty() && (url.back() == '\n' || url.back() == '\r' || url.back() == ' ')) url.pop_back();
    if (!url.empty()) return url;
  }
  return "sqlcipher:";
}

bool is_sqlcipher_url(const std::string& url) { return url.starts_with("sqlcipher:"); }

void require_known_scheme(const std::string& url) {
  if (!is_sqlcipher_url(url) && !store::is_postgres_url(url))
    throw Error(ErrorCode::invalid_argument,
                "store URL: expected sqlcipher: or postgresql://… (the URL is not repeated here)");
}

// The SQLCipher file a "sqlcipher:" URL names: the data dir's custos.db, or
// "sqlcipher:PATH".
fs::path sqlcipher_file(const fs::path& dir, const std::string& url) {
  const std::string rest = url.substr(std::string_view("sqlcipher:").size());
  return rest.empty() ? db_path(dir) : fs::path(rest);
}

// Refuses a node whose master key does not unwrap the database's key check
// (another vault's key file, or a wrong passphrase that still derived a key).
void verify_master_key(store::Store& store, crypto::Keyring& keyring) {
  store::KeyTable keys(store, keyring);
  try {
    // None in a vault from before the check: its keys are checked on first use.
    (void)keys.find_named_key(kKeyCheckSlot);
  } catch (const Error&) {
    throw Error(ErrorCode::key_error, "the master key in " + keyring.dir().string() +
                                          " does not match this database (another vault's key?): refusing to start");
  }
}

std::string local_user() {
  if (const passwd* pw = ::getpwuid(::geteuid())) return pw->pw_name;
  return std::to_string(::geteuid());
}

std::uint64_t parse_u64(std::string_view text, const char* what) {
  if (text.empty() || text.size() > 19 || text.find_first_not_of("0123456789") != std::string_view::npos)
    throw Error(ErrorCode::invalid_argument, std::string("parameter '") + what + "' must be a non-negative integer");
  return std::stoull(std::string(text));
}

Json hashes_to_json(const std::vector<audit::Hash>& hashes) {
  Json out = Json::array();
  for (const auto& h : hashes) out.push_back(auditfmt::to_hex(h));
  return out;
}

Json checkpoint_json(const audit::Checkpoint& cp) {
  return {{"size", cp.size},
          {"root", auditfmt::to_hex(cp.root)},
          {"time", audit::format_time_us(cp.at_us)},
          {"note", cp.note}};
}

// Purposes that may still read a subject restricted under GDPR Art. 18
// (purposes.yaml `allowed_when_restricted`).
bool allowed_when_restricted(const access::Policy& pol, const std::string& purpose) {
  const access::Purpose* p = pol.purpose(purpose);
  return p != nullptr && p->allowed_when_restricted;
}

}  // namespace

// Why a read of `id` under `purpose` is refused, if it is: in this order, so
// that each answer reveals no more than the one before it —
//   erased or unknown        not_found (as for an id that never existed)
//   restricted (Art. 18)     subject_restricted, unless the purpose is allowed_when_restricted
//   objected (Art. 21)       subject_restricted, for marketing purposes
//   no active consent        consent_missing, for marketing purposes
std::optional<std::pair<ErrorCode, std::string>> Service::Impl::read_refusal(const access::Policy& pol,
                                                                             const std::string& purpose_name,
                                                                             const records::SubjectId& id,
                                                                             Channels* channels) {
  auto& impl = *this;
  records::Subject meta;
  try {
    meta = impl.records->metadata(id);
  } catch (const Error& e) {
    if (e.code() != ErrorCode::not_found) throw;
    return std::pair{ErrorCode::not_found, std::string("subject not found")};
  }
  if (meta.status != "active") return std::pair{ErrorCode::not_found, std::string("subject not found")};
  if (meta.restricted && !allowed_when_restricted(pol, purpose_name))
    return std::pair{ErrorCode::subject_restricted, "the subject's processing is restricted (GDPR Art. 18): purpose '" +
                                                        util::printable_prefix(purpose_name, 32) + "' may not read it"};
  const access::Purpose* purpose = pol.purpose(purpose_name);
  if (purpose != nullptr && purpose->marketing) {
    if (meta.objected)
      return std::pair{ErrorCode::subject_restricted,
                       std::string("the subject objected to marketing (GDPR Art. 21(3))")};
  }
  Channels covered = impl.marketing_channels(pol, purpose_name, meta);
  if (covered && covered->empty())
    return std::pair{ErrorCode::consent_missing, "the subject has no active consent for purpose '" +
                                                     util::printable_prefix(purpose_name, 32) + "'"};
  if (channels != nullptr) *channels = std::move(covered);
  return std::nullopt;
}

namespace {

const std::vector<std::string> kChannels = {"email", "sms", "phone", "post", "push", "web", "in_person", "chat",
                                            "social", "call_centre"};

}  // namespace

[[noreturn]] void bad_body(const std::string& why) { throw Error(ErrorCode::invalid_argument, why); }

void refuse_vault_proof_keys(const Json& proof, const char* field) {
  for (const auto& key : consent::kVaultProofKeys)
    if (proof.contains(key))
      throw Error(ErrorCode::invalid_field, std::string("field '") + field + "." + key +
                                                "': written by the vault itself, never given by a caller");
}

void only_keys(const Json& body, std::initializer_list<const char*> allowed) {
  if (!body.is_object()) bad_body("request body must be a JSON object");
  for (const auto& [key, value] : body.items()) {
    bool ok = false;
    for (const char* a : allowed) ok = ok || key == a;
    if (!ok) bad_body("unknown property '" + util::printable_prefix(key) + "'");
  }
}

FieldChanges parse_fields(const Json& body, const records::Schema& schema, bool allow_null) {
  only_keys(body, {"fields"});
  if (!body.contains("fields")) bad_body("property 'fields' is required");
  const Json& fields = body["fields"];
  if (!fields.is_object()) bad_body("property 'fields' must be an object");
  FieldChanges out;
  for (const auto& [name, value] : fields.items()) {
    const records::FieldSpec& spec = schema.require(name);
    if (value.is_null() && allow_null) {
      out.remove.push_back(spec.name);
    } else if (value.is_string()) {
      out.set.emplace(spec.name, value.get<std::string>());
    } else {
      throw Error(ErrorCode::invalid_field, "field '" + spec.name + "': expected a string");
    }
  }
  return out;
}

std::int64_t parse_time_or_now(const Json& body, const char* key, std::int64_t now) {
  if (!body.contains(key)) return now;
  if (!body[key].is_string()) throw Error(ErrorCode::invalid_field, std::string("field '") + key + "': expected an RFC 3339 time");
  const auto t = audit::parse_time_us(body[key].get<std::string>());
  if (!t) throw Error(ErrorCode::invalid_field, std::string("field '") + key + "': expected an RFC 3339 time");
  return *t;
}

namespace {
// A time that says when something happened: now or before, give or take a
// client clock 5 minutes fast (as consent, DSR and breach times). Activity
// dated ahead would keep its subject out of retention until that date.
std::int64_t parse_past_time_or_now(const Json& body, const char* key, std::int64_t now) {
  const std::int64_t t = parse_time_or_now(body, key, now);
  if (t > now + 5LL * 60 * 1000000)
    throw Error(ErrorCode::invalid_field, std::string("field '") + key + "': more than 5 minutes in the future");
  return t;
}
}  // namespace

std::string required_string(const Json& body, const char* key, std::size_t max_len) {
  if (!body.contains(key) || !body[key].is_string())
    throw Error(ErrorCode::invalid_field, std::string("field '") + key + "': a string is required");
  std::string v = body[key].get<std::string>();
  if (v.empty() || v.size() > max_len)
    throw Error(ErrorCode::invalid_field, std::string("field '") + key + "': must be 1-" + std::to_string(max_len) +
                                              " characters");
  return v;
}

records::Touchpoint parse_touchpoint(const Json& body, std::int64_t now) {
  only_keys(body, {"channel", "type", "at", "notes"});
  records::Touchpoint tp;
  tp.channel = required_string(body, "channel", 32);
  if (std::find(kChannels.begin(), kChannels.end(), tp.channel) == kChannels.end())
    throw Error(ErrorCode::invalid_field, "field 'channel': unknown channel");
  tp.type = required_string(body, "type", 64);
  tp.at_us = parse_past_time_or_now(body, "at", now);
  if (body.contains("notes")) {
    if (!body["notes"].is_string()) throw Error(ErrorCode::invalid_field, "field 'notes': expected a string");
    tp.notes = body["notes"].get<std::string>();
  }
  return tp;
}

records::Order parse_order(const Json& body, std::int64_t now) {
  only_keys(body, {"amount_minor", "currency", "at"});
  if (!body.contains("amount_minor") || !body["amount_minor"].is_number_integer())
    throw Error(ErrorCode::invalid_field, "field 'amount_minor': an integer amount in minor units is required");
  records::Order order;
  order.amount_minor = body["amount_minor"].get<std::int64_t>();
  order.currency = required_string(body, "currency", 3);
  order.at_us = parse_past_time_or_now(body, "at", now);
  return order;
}

InitResult init_data_dir(const InitOptions& options) {
  crypto::ensure_sodium();
  const fs::path dir = options.data_dir;
  std::error_code ec;
  const std::string url = options.store_url.empty() ? "sqlcipher:" : options.store_url;
  require_known_scheme(url);
  util::make_private_dir(dir);
  if (fs::exists(db_path(dir)) || fs::exists(store::db_key_path(key_dir(dir))) || fs::exists(store_url_path(dir)))
    throw Error(ErrorCode::conflict, "data directory " + dir.string() + " is already initialised");
  std::unique_ptr<store::Store> pg;
  if (store::is_postgres_url(url)) {
    // Before any key is made: a database that already holds a vault is
    // refused (its nodes share that vault's key; copy it instead).
    pg = store::open_postgres(url);
    migrate_schema(*pg);  // creates the tables in an empty database; a vault's are current
    auto tx = pg->begin(store::TxMode::read);
    if (store::meta_value(*tx, "kek_version"))
      throw Error(ErrorCode::conflict, "the PostgreSQL database already holds a vault: start further nodes with a "
                                       "copy of its key material instead of running init");
  }
  crypto::Keyring::create(key_dir(dir), options.passphrase,
                          options.fast_kdf ? crypto::Argon2Params::interactive() : crypto::Argon2Params::moderate());
  auto keyring = crypto::Keyring::open(key_dir(dir), options.passphrase);
  {
    std::unique_ptr<store::Store> store;
    if (pg) {
      store = std::move(pg);
      util::write_file_atomic(store_url_path(dir), url + "\n", 0600);
    } else {
      const crypto::SecretKey db_key = crypto::SecretKey::random();
      store::write_db_key(*keyring, 1, key_dir(dir), db_key);
      store = store::open_sqlcipher(sqlcipher_file(dir, url), db_key);
    }
    migrate_schema(*store);
    {
      auto tx = store->begin(store::TxMode::write);
      store::KeyTable::set_kek_version(*tx, 1);
      tx->commit();
    }
    // The master-key check (verify_master_key): a key only this keyring unwraps.
    store::KeyTable(*store, *keyring).named_key(kKeyCheckSlot);
  }
  // Default policies, for the operator to edit.
  const fs::path policies = dir / "policies";
  if (!fs::exists(policies) && !options.shipped_policies.empty() && fs::exists(options.shipped_policies)) {
    fs::copy(options.shipped_policies, policies, fs::copy_options::recursive, ec);
    if (ec) throw Error(ErrorCode::storage, "cannot copy policies into " + policies.string() + ": " + ec.message());
  }
  OpenOptions open_options;
  open_options.data_dir = dir;
  open_options.store_url = url;
  open_options.passphrase = options.passphrase;
  if (!fs::exists(policies)) open_options.policy_dir = options.shipped_policies;
  auto service = Service::open(open_options);
  Caller op{service->local_operator(), "administration", "init"};
  InitResult result;
  result.admin_token = service->create_token(op, "admin", "admin")["token"].get<std::string>();
  result.admin_token_file = dir / "admin.token";
  util::write_file_atomic(result.admin_token_file, result.admin_token + "\n", 0600);
  result.audit_verifier_key = service->audit_verifier_key();
  util::write_file_atomic(dir / "audit.pub", result.audit_verifier_key + "\n", 0644);
  service->checkpoint_if_due();
  return result;
}

Service::Service(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) { impl_->counters = &counters_; }
Service::~Service() = default;

std::unique_ptr<Service> Service::open(const OpenOptions& options) {
  crypto::ensure_sodium();
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  const fs::path dir = options.data_dir;
  const std::string url = resolve_store_url(dir, options.store_url);
  require_known_scheme(url);
  const bool sqlcipher = is_sqlcipher_url(url);
  if (sqlcipher ? !fs::exists(sqlcipher_file(dir, url)) : !fs::exists(key_dir(dir)))
    throw Error(ErrorCode::not_found, "no vault in " + dir.string() + " (run `custos init --data-dir " +
                                          dir.string() + "`)");
  impl->keyring = crypto::Keyring::open(key_dir(dir), options.passphrase);
  if (sqlcipher) {
    const crypto::SecretKey db_key = store::read_db_key(*impl->keyring, key_dir(dir));
    impl->store = store::open_sqlcipher(sqlcipher_file(dir, url), db_key);
  } else {
    impl->store = store::open_postgres(url);
  }
  verify_master_key(*impl->store, *impl->keyring);
  const SchemaChange schema_change = migrate_schema_noting_changes(*impl->store);
  impl->keys = std::make_unique<store::KeyTable>(*impl->store, *impl->keyring);
  {
    // Before the policy files are read: a reload asked for after this read
    // is newer than what this node runs, and follow_cluster() applies it.
    util::MutexLock lock(impl->cluster_mu);
    impl->applied_policy_generation = impl->latest_policy_generation();
  }
  impl->schema = records::Schema::load(impl->policy_dir() / "schema.yaml");
  for (const auto& f : impl->schema.fields())
    for (const auto& c : f.channels)
      if (std::find(consent::kChannels.begin(), consent::kChannels.end(), c) == consent::kChannels.end())
        throw Error(ErrorCode::invalid_argument, "schema.yaml: field '" + f.name + "': unknown channel '" + c + "'");
  {
    // Nothing shares impl yet; the lock states that these are policy_mu's.
    util::MutexLock lock(impl->policy_mu);
    impl->policy = access::Policy::load(impl->policy_dir(), impl->schema);
    impl->segments =
        std::make_shared<const records::RfmPolicy>(records::RfmPolicy::load(impl->policy_dir() / "segments.yaml"));
  }
  impl->signer = std::make_unique<crypto::Signer>(impl->keys->named_key(kSigningSlot));
  audit::Options ao;
  ao.node_id = options.node_id;
  ao.checkpoint_every_entries = options.checkpoint_every_entries;
  ao.checkpoint_every_ms = options.checkpoint_every_ms;
  ao.now_us = options.clock_us;
  impl->audit = std::make_unique<audit::AuditLog>(*impl->store, *impl->signer, ao);
  // An upgrade is audited: which modules moved from which version to which.
  // The entry commits after the steps (the audit tables are among what
  // moved); a crash in between leaves the vault upgraded and this entry
  // missing, never the reverse.
  if (schema_change.upgraded())
    impl->audit->append_now({"system:" + options.node_id, "system", "", "administration", "schema-migration"},
                            {.operation = "schema.migrate", .detail = schema_change.describe()});
  const fs::path journal_dir = dir / "audit-journal";
  // The journal holds reads' entries on this node's disk until they are
  // folded. On a shared PostgreSQL database a node may never come back, so
  // there every entry commits to the database before its plaintext leaves.
  impl->options.audit_journal = options.audit_journal && impl->store->backend_name() == "sqlcipher";
  if (impl->options.audit_journal)
    impl->audit->enable_journal(journal_dir, impl->keys->named_key(kJournalSlot), options.audit_journal_options);
  // Not journaling (not asked, or another process holds the journal): fold
  // a crashed owner's leftovers, or learn whose folds to wait for.
  if (!impl->audit->journal_active() && fs::exists(journal_dir))
    impl->audit->recover_journal(journal_dir, impl->keys->named_key(kJournalSlot));
  // On a shared database the journal is a table in it: a read's entry is
  // one small insert there, and any node folds the table into the tree.
  if (options.audit_journal && !impl->options.audit_journal)
    impl->audit->enable_pending_table(std::chrono::milliseconds(options.audit_journal_options.fold_interval_ms),
                                      options.audit_journal_options.max_pending_while_fold_fails);
  impl->records = std::make_unique<records::Records>(*impl->store, *impl->keys, impl->schema, *impl->audit);
  impl->tokens = std::make_unique<access::TokenStore>(*impl->store, *impl->audit);
  impl->consent = std::make_unique<consent::Ledger>(*impl->store, *impl->audit, impl->policy_dir() / "notices");
  impl->dsr = std::make_unique<dsr::Desk>(*impl->store, *impl->audit);
  impl->breaches = std::make_unique<breach::Book>(*impl->store, *impl->audit);
  {
    util::MutexLock lock(impl->policy_mu);
    const fs::path regulations_file = impl->policy_dir() / "regulations.yaml";
    if (!options.defer_regulations || !dsr::declares_current_version(util::read_text_file(regulations_file)))
      impl->regulations = dsr::Regulations::load(regulations_file);  // else current_regulations() loads it
    // Downstream systems: a URL that is not https (or loopback http) refuses to open.
    impl->systems = outbox::Systems::load(impl->policy_dir() / "systems.yaml", impl->schema_field_names());
  }
  impl->outbox = std::make_unique<outbox::Outbox>(*impl->store, *impl->keys);
  impl->consent->set_change_hook([p = impl.get()](store::Transaction& tx, const std::vector<consent::Event>& events) {
    p->enqueue_consent_events(tx, events);
  });
  // A corrected value waiting for a downstream system is sealed under the
  // vault's payload key: it goes with the subject's own key. So does what
  // callers wrote into the subject's consent proofs (the history itself
  // stays, as proof of consent, with the vault's own evidence).
  impl->records->set_key_destroyed_hook([p = impl.get()](store::Transaction& tx, const records::SubjectId& id) {
    p->outbox->forget_subject(tx, records::to_hex(id), p->audit->now_us());
    consent::Ledger::erase_caller_proofs(tx, id);
  });
  return std::unique_ptr<Service>(new Service(std::move(impl)));
}

const fs::path& Service::data_dir() const { return impl_->options.data_dir; }

access::Principal Service::authenticate(std::string_view bearer_token) {
  return impl_->tokens->authenticate(bearer_token);
}

std::unique_ptr<store::ReadSnapshot> Service::read_snapshot() {
  return std::make_unique<store::ReadSnapshot>(*impl_->store);
}

access::Principal Service::local_operator() const { return {"local:" + local_user(), "admin", ""}; }

bool Service::reload_policies(std::string* error) {
  try {
    auto next = access::Policy::load(impl_->policy_dir(), impl_->schema);
    auto next_segments =
        std::make_shared<const records::RfmPolicy>(records::RfmPolicy::load(impl_->policy_dir() / "segments.yaml"));
    // Deadlines too: a file that fails to parse or names an unknown calendar
    // throws here, and the rules in force stay.
    auto next_regulations = dsr::Regulations::load(impl_->policy_dir() / "regulations.yaml");
    auto next_systems = outbox::Systems::load(impl_->policy_dir() / "systems.yaml", impl_->schema_field_names());
    util::MutexLock lock(impl_->policy_mu);
    impl_->systems = std::move(next_systems);
    impl_->policy = std::move(next);
    impl_->segments = std::move(next_segments);
    impl_->regulations = std::move(next_regulations);
    return true;
  } catch (const Error& e) {
    if (error) *error = e.what();
    return false;
  }
}

std::shared_ptr<const access::Policy> Service::policy() const { return impl_->current_policy(); }

namespace {

// The body's `on_conflict` (records::OnConflict); absent means reject.
records::OnConflict parse_on_conflict(const Json& body) {
  if (!body.is_object() || !body.contains("on_conflict")) return records::OnConflict::reject;
  const Json& v = body["on_conflict"];
  if (v == "reject") return records::OnConflict::reject;
  if (v == "merge") return records::OnConflict::merge;
  if (v == "create") return records::OnConflict::create;
  bad_body("property 'on_conflict' must be one of reject, merge, create");
}

// The body without `on_conflict`, for parse_fields.
Json without_on_conflict(const Json& body) {
  if (!body.is_object() || !body.contains("on_conflict")) return body;
  Json copy = body;
  copy.erase("on_conflict");
  return copy;
}

std::vector<std::string> hex_strings(const std::vector<records::SubjectId>& ids) {
  std::vector<std::string> out;
  for (const auto& id : ids) out.push_back(records::to_hex(id));
  return out;
}

Json hex_ids(const std::vector<records::SubjectId>& ids) { return hex_strings(ids); }

// A reason recorded in the append-only log (erasure, merge): bounded like
// a label (audit/FORMAT.md §1.4), and never echoed in an error.
constexpr std::size_t kMaxReason = 128;
bool valid_reason(std::string_view reason) {
  const bool control = std::any_of(reason.begin(), reason.end(), [](char ch) {
    const auto c = static_cast<unsigned char>(ch);
    return c < 0x20 || c == 0x7f;
  });
  return !reason.empty() && reason.size() <= kMaxReason && !control;
}

}  // namespace

Json Service::create_subject(const Caller& caller, const Json& body) {
  const auto pol = impl_->current_policy();
  const auto& role = impl_->authorize(caller, *pol, "records.write", "subject.create", false);
  const records::OnConflict on_conflict = parse_on_conflict(body);
  const FieldChanges in = parse_fields(without_on_conflict(body), impl_->schema, false);
  if (in.set.empty()) throw Error(ErrorCode::invalid_field, "a subject needs at least one field");
  if (on_conflict == records::OnConflict::merge)
    if (const auto why = impl_->merge_refusal(*pol, role, in.set))
      impl_->deny(caller, "subject.create", ErrorCode::forbidden_role, *why);
  std::int64_t created_us = 0;
  // Refusals are audited by Records inside its transaction.
  const auto outcome = impl_->records->create_resolved(impl_->actor(caller), {in.set}, on_conflict, &created_us)[0];
  using Kind = records::CreateOutcome::Kind;
  if (outcome.kind == Kind::duplicate)
    throw impl_->duplicate_for(*pol, role, caller.purpose, hex_strings(outcome.matches), outcome.matched_on);
  if (outcome.kind == Kind::restricted)
    throw Error(ErrorCode::subject_restricted, "the matching subject is restricted (GDPR Art. 18): it changes only"
                                               " through a rectification request");
  if (outcome.kind == Kind::merged)
    return {{"id", records::to_hex(outcome.id)},
            {"merged", true},
            {"matched_on", outcome.matched_on},
            {"fields_added", impl_->visible_fields(*pol, role, outcome.fields_added)},
            {"fields_kept", impl_->visible_fields(*pol, role, outcome.fields_kept)}};
  // Echo the new subject as this role may see it, without another decryption.
  const auto spec = impl_->read_spec(*pol, role);
  records::Subject s;
  s.id = outcome.id;
  s.status = "active";
  s.created_us = s.updated_us = created_us;
  for (const auto& [name, value] : in.set)
    if (std::find(spec.fields.begin(), spec.fields.end(), name) != spec.fields.end())
      s.fields.emplace(name, impl_->schema.validate(impl_->schema.require(name), value));
  Json out = impl_->subject_json(s, spec);
  counters_.decryptions -= s.fields.size();  // nothing was decrypted
  return out;
}

Json Service::batch_create(const Caller& caller, const Json& body) {
  const auto pol = impl_->current_policy();
  const auto& role = impl_->authorize(caller, *pol, "records.write", "subject.create", false);
  only_keys(body, {"subjects", "on_conflict"});
  const records::OnConflict on_conflict = parse_on_conflict(body);
  if (!body.contains("subjects") || !body["subjects"].is_array()) bad_body("property 'subjects' must be an array");
  const Json& items = body["subjects"];
  if (items.size() > kMaxBatch)
    throw Error(ErrorCode::payload_too_large, "a batch holds at most " + std::to_string(kMaxBatch) + " subjects");
  Json results = Json::array();
  std::vector<records::FieldMap> valid;
  std::vector<std::size_t> valid_index;
  for (std::size_t i = 0; i < items.size(); ++i) {
    try {
      FieldChanges in = parse_fields(items[i], impl_->schema, false);
      if (in.set.empty()) throw Error(ErrorCode::invalid_field, "a subject needs at least one field");
      for (const auto& [name, value] : in.set) impl_->schema.validate(impl_->schema.require(name), value);
      if (on_conflict == records::OnConflict::merge)
        if (const auto why = impl_->merge_refusal(*pol, role, in.set)) {
          impl_->audit->append_now(impl_->actor(caller), {"subject.create", "", {}, {}, false,
                                                          code_name(ErrorCode::forbidden_role), "on_conflict=merge"});
          throw Error(ErrorCode::forbidden_role, *why);
        }
      valid.push_back(std::move(in.set));
      valid_index.push_back(i);
      results.push_back(nullptr);
    } catch (const Error& e) {
      const int status = e.code() == ErrorCode::invalid_field ? 422 : e.code() == ErrorCode::forbidden_role ? 403 : 400;
      results.push_back({{"index", i}, {"status", status},
                         {"error", {{"code", code_name(e.code())}, {"detail", e.what()}}}});
    }
  }
  std::vector<records::CreateOutcome> outcomes;
  if (!valid.empty()) outcomes = impl_->records->create_resolved(impl_->actor(caller), valid, on_conflict);
  std::size_t created = 0, merged = 0;
  using Kind = records::CreateOutcome::Kind;
  for (std::size_t k = 0; k < outcomes.size(); ++k) {
    const auto& o = outcomes[k];
    const std::size_t at = valid_index[k];
    switch (o.kind) {
      case Kind::created:
        results[at] = {{"index", at}, {"status", 201}, {"id", records::to_hex(o.id)}};
        ++created;
        break;
      case Kind::merged:
        results[at] = {{"index", at},
                       {"status", 200},
                       {"id", records::to_hex(o.id)},
                       {"merged", true},
                       {"matched_on", o.matched_on},
                       {"fields_added", impl_->visible_fields(*pol, role, o.fields_added)},
                       {"fields_kept", impl_->visible_fields(*pol, role, o.fields_kept)}};
        ++merged;
        break;
      case Kind::duplicate: {
        const records::DuplicateSubject e = impl_->duplicate_for(*pol, role, caller.purpose, hex_strings(o.matches), o.matched_on);
        results[at] = {{"index", at},
                       {"status", 409},
                       {"error",
                        {{"code", code_name(e.code())},
                         {"detail", e.what()},
                         {"subject_ids", e.subject_ids()},
                         {"matched_on", o.matched_on}}}};
        break;
      }
      case Kind::restricted:
        results[at] = {{"index", at},
                       {"status", 403},
                       {"error",
                        {{"code", code_name(ErrorCode::subject_restricted)},
                         {"detail", "the matching subject is restricted (GDPR Art. 18): it changes only through"
                                    " a rectification request"},
                         {"subject_ids", impl_->nameable_matches(*pol, role, caller.purpose, hex_strings(o.matches),
                                                                 o.matched_on)},
                         {"matched_on", o.matched_on}}}};
        break;
    }
  }
  return {{"results", results},
          {"created", created},
          {"merged", merged},
          {"failed", items.size() - created - merged}};
}

Json Service::subject_duplicates(const Caller& caller, const std::map<std::string, std::string>& query) {
  impl_->authorize(caller, *impl_->current_policy(), "dsr", "subject.duplicates", true);
  std::optional<std::pair<std::string, records::SubjectId>> after;
  std::size_t limit = 100;
  for (const auto& [key, value] : query) {
    if (key == "after") {
      const auto colon = value.find(':');
      const records::FieldSpec* spec = colon == std::string::npos ? nullptr : impl_->schema.find(value.substr(0, colon));
      if (spec == nullptr || !spec->searchable)
        throw Error(ErrorCode::invalid_argument, "parameter 'after' must be a next_after value of a previous page");
      after.emplace(spec->name, records::parse_subject_id(std::string_view(value).substr(colon + 1)));
    } else if (key == "limit") {
      limit = parse_u64(value, "limit");
      if (limit == 0 || limit > 1000) throw Error(ErrorCode::invalid_argument, "parameter 'limit' must be 1-1000");
    } else {
      throw Error(ErrorCode::invalid_argument, "unknown parameter '" + util::printable_prefix(key) + "'");
    }
  }
  const auto clusters = impl_->records->duplicate_clusters(after, limit);
  Json list = Json::array();
  audit::Event event{"subject.duplicates", "", {}, {}, true, "", "clusters=" + std::to_string(clusters.size()), {}};
  for (const auto& c : clusters) {
    list.push_back({{"matched_on", c.matched_on}, {"subject_ids", hex_ids(c.subjects)}});
    for (const auto& id : c.subjects) event.subject_ids.push_back(records::to_hex(id));
  }
  // Which subjects share an identifier is itself personal data: recorded
  // (naming them) before it is returned.
  impl_->audit->append_now(impl_->actor(caller), event);
  Json out = {{"clusters", list}, {"next_after", nullptr}};
  if (clusters.size() == limit && !clusters.empty())
    out["next_after"] = clusters.back().matched_on + ":" + records::to_hex(clusters.back().subjects.front());
  return out;
}

Json Service::merge_subjects(const Caller& caller, std::string_view id_text, const Json& body) {
  const auto pol = impl_->current_policy();
  const records::SubjectId survivor = records::parse_subject_id(id_text);
  const std::string survivor_hex = records::to_hex(survivor);
  // Irreversible (the merged-away keys are shredded): erasure's operation class.
  impl_->authorize(caller, *pol, "records.erase", "subject.merge", true, survivor_hex);
  only_keys(body, {"subjects", "reason"});
  if (!body.contains("subjects") || !body["subjects"].is_array() || body["subjects"].empty() ||
      body["subjects"].size() > 100)
    bad_body("property 'subjects' must be an array of 1-100 subject ids to merge into this one");
  std::vector<records::SubjectId> merged_away;
  for (const auto& v : body["subjects"]) {
    if (!v.is_string()) bad_body("property 'subjects' must hold subject ids");
    merged_away.push_back(records::parse_subject_id(v.get<std::string>()));
  }
  const std::string reason = body.contains("reason") && body["reason"].is_string() ? body["reason"].get<std::string>() : "";
  if (!valid_reason(reason))
    impl_->deny(caller, "subject.merge", ErrorCode::invalid_argument,
                "a merge needs a reason of 1-" + std::to_string(kMaxReason) +
                    " bytes without control characters (e.g. a ticket reference)",
                survivor_hex);
  records::MergeReport r;
  const auto actor = impl_->actor(caller);
  std::size_t requests_followed = 0;
  try {
    // Consent history and open data-subject requests follow the data to the
    // survivor, in the merge's transaction: a request that matched a
    // merged-away subject still covers its data (export, erasure, ...).
    r = impl_->records->merge(actor, survivor, merged_away, "reason=" + reason,
                              [&](store::Transaction& tx, const records::SubjectId& from, const records::SubjectId& to,
                                  const records::Records::NoteResealer& reseal) {
                                consent::Ledger::merge_subject(tx, from, to);
                                requests_followed += dsr::Desk::follow_merge(
                                    tx, from, to, impl_->audit->now_us(), actor.principal,
                                    [&](const std::string& sealed) { return reseal("dsr.changes", sealed); });
                              });
  } catch (const Error& e) {
    switch (e.code()) {
      case ErrorCode::subject_restricted:
      case ErrorCode::conflict:
      case ErrorCode::not_found:
      case ErrorCode::invalid_argument: impl_->deny(caller, "subject.merge", e.code(), e.what(), survivor_hex);
      default: throw;
    }
  }
  return {{"id", r.survivor},
          {"merged", r.merged},
          {"fields_added", r.fields_added},
          {"fields_kept", r.fields_kept},
          {"touchpoints_moved", r.touchpoints_moved},
          {"orders_moved", r.orders_moved},
          {"open_requests_followed", requests_followed},
          {"merged_keys", "shredded (the merged-away subjects' data keys are destroyed)"}};
}

Json Service::get_subject(const Caller& caller, std::string_view id_text) {
  const auto pol = impl_->current_policy();
  const records::SubjectId id = records::parse_subject_id(id_text);
  const auto& role = impl_->authorize(caller, *pol, "records.read", "subject.read", true, records::to_hex(id));
  // A marketing purpose sees the contact fields of the channels consented to.
  Impl::Channels channels;
  if (const auto refusal = impl_->read_refusal(*pol, caller.purpose, id, &channels))
    impl_->deny(caller, "subject.read", refusal->first, refusal->second, records::to_hex(id));
  const auto spec = impl_->read_spec(*pol, role);
  return impl_->subject_json(
      impl_->records->read(impl_->actor(caller), id, channels ? impl_->for_channels(spec, *channels) : spec), spec);
}

Json Service::batch_get(const Caller& caller, const Json& body) {
  const auto pol = impl_->current_policy();
  const auto& role = impl_->authorize(caller, *pol, "records.read", "subject.read", true);
  only_keys(body, {"ids"});
  if (!body.contains("ids") || !body["ids"].is_array()) bad_body("property 'ids' must be an array of subject ids");
  const Json& items = body["ids"];
  if (items.size() > kMaxBatch)
    throw Error(ErrorCode::payload_too_large, "a batch holds at most " + std::to_string(kMaxBatch) + " ids");
  Json results = Json::array();
  std::vector<records::SubjectId> ids;
  std::vector<std::size_t> at;
  for (std::size_t i = 0; i < items.size(); ++i) {
    try {
      if (!items[i].is_string()) throw Error(ErrorCode::invalid_argument, "subject id must be a string");
      ids.push_back(records::parse_subject_id(items[i].get<std::string>()));
      at.push_back(i);
      results.push_back(nullptr);
    } catch (const Error& e) {
      results.push_back({{"index", i}, {"status", 400}, {"error", {{"code", code_name(e.code())}, {"detail", e.what()}}}});
    }
  }
  const auto spec = impl_->read_spec(*pol, role);
  // Marketing reads skip subjects without consent (reported per item).
  // Restricted subjects (Art. 18) only for purposes allowed_when_restricted.
  // Every refused item is its own audited denial, with its own code.
  std::vector<std::optional<ErrorCode>> refused(ids.size());
  std::vector<records::SubjectId> allowed;
  std::vector<std::size_t> allowed_at;
  std::vector<Impl::Channels> allowed_channels;
  for (std::size_t k = 0; k < ids.size(); ++k) {
    Impl::Channels channels;
    if (const auto refusal = impl_->read_refusal(*pol, caller.purpose, ids[k], &channels)) {
      refused[k] = refusal->first;
      impl_->audit->append_now(impl_->actor(caller), {"subject.read", records::to_hex(ids[k]), {}, {}, false,
                                                      code_name(refusal->first), ""});
      continue;
    }
    allowed.push_back(ids[k]);
    allowed_at.push_back(k);
    allowed_channels.push_back(std::move(channels));
  }
  const auto read =
      impl_->read_for_purpose(impl_->actor(caller), *pol, caller.purpose, allowed, spec, &allowed_channels);
  std::vector<std::optional<records::Subject>> subjects(ids.size());
  for (std::size_t j = 0; j < allowed.size(); ++j) subjects[allowed_at[j]] = read[j];
  for (std::size_t k = 0; k < ids.size(); ++k) {
    if (refused[k] && *refused[k] != ErrorCode::not_found) {
      const bool consent = *refused[k] == ErrorCode::consent_missing;
      results[at[k]] = {{"index", at[k]}, {"status", 403}, {"id", records::to_hex(ids[k])},
                        {"error", {{"code", code_name(*refused[k])},
                                   {"detail", consent ? "no active consent for this purpose"
                                                      : "the subject's processing is restricted for this purpose"}}}};
    } else if (subjects[k]) {
      results[at[k]] = {{"index", at[k]}, {"status", 200}, {"subject", impl_->subject_json(*subjects[k], spec)}};
    } else {
      results[at[k]] = {{"index", at[k]}, {"status", 404}, {"id", records::to_hex(ids[k])},
                        {"error", {{"code", "not_found"}, {"detail", "subject not found"}}}};
    }
  }
  return {{"results", results}};
}

Json Service::find_subjects(const Caller& caller, std::string_view field, std::string_view value) {
  const auto pol = impl_->current_policy();
  const auto& role = impl_->authorize(caller, *pol, "records.read", "subject.lookup", true);
  // A lookup by a value the role sees only masked (or not at all) would
  // confirm what masking hides: refused before the index is consulted, so a
  // hit and a miss look the same.
  const records::FieldSpec& by = impl_->schema.require(field);
  if (pol->visibility(role, by) != access::Visibility::plain)
    impl_->deny(caller, "subject.lookup", ErrorCode::forbidden_role,
                "role '" + caller.principal.role + "' does not see '" + by.name +
                    "' in plain, so it may not look subjects up by it");
  std::vector<records::SubjectId> ids;
  std::vector<Impl::Channels> ids_channels;  // each match's consented channels (marketing purposes)
  const bool may_read_restricted = allowed_when_restricted(*pol, caller.purpose);
  for (const auto& match : impl_->records->find_metadata(field, value)) {
    if (!may_read_restricted && match.restricted) {
      // Left out, as for marketing without consent; the refusal is audited.
      impl_->audit->append_now(impl_->actor(caller), {"subject.lookup", records::to_hex(match.id), {}, {}, false,
                                                      code_name(ErrorCode::subject_restricted), ""});
      continue;
    }
    // Under a marketing purpose a value of a channel-bound field finds only
    // subjects whose consent covers one of its channels: a phone number does
    // not lead marketing to the e-mail address of a subject who consented
    // to e-mail only.
    Impl::Channels channels = impl_->marketing_channels(*pol, caller.purpose, match);
    if (channels && (channels->empty() || impl_->for_channels({{by.name}, {}}, *channels).fields.empty())) continue;
    ids.push_back(match.id);
    ids_channels.push_back(std::move(channels));
  }
  const auto spec = impl_->read_spec(*pol, role);
  Json subjects = Json::array();
  if (!ids.empty()) {
    records::ReadSpec lookup = spec;
    lookup.operation = "subject.lookup";
    const auto read = impl_->read_for_purpose(impl_->actor(caller), *pol, caller.purpose, ids, lookup, &ids_channels);
    for (const auto& s : read)
      if (s) subjects.push_back(impl_->subject_json(*s, spec));
  } else {
    // A miss is audited too: someone asked about this field.
    impl_->audit->append_now(impl_->actor(caller), {"subject.lookup", "", {std::string(field)}, {}, true, "", "matches=0"});
  }
  return {{"subjects", subjects}};
}

Json Service::patch_subject(const Caller& caller, std::string_view id_text, const Json& body) {
  const auto pol = impl_->current_policy();
  const records::SubjectId id = records::parse_subject_id(id_text);
  const auto& role = impl_->authorize(caller, *pol, "records.write", "subject.update", false, records::to_hex(id));
  // Art. 18: a restricted subject changes only through a rectification request.
  if (impl_->records->metadata(id).restricted)
    impl_->deny(caller, "subject.update", ErrorCode::subject_restricted,
                "the subject's processing is restricted (GDPR Art. 18): change it through a rectification request",
                records::to_hex(id));
  const FieldChanges in = parse_fields(body, impl_->schema, true);
  if (in.set.empty() && in.remove.empty()) throw Error(ErrorCode::invalid_argument, "no fields to change");
  // A role changes only what it may see (plain or masked): the service desk,
  // which sees no birth date, may not overwrite or remove one blind.
  std::vector<std::string> named;
  for (const auto& [name, v] : in.set) named.push_back(name);
  named.insert(named.end(), in.remove.begin(), in.remove.end());
  for (const auto& name : named)
    if (impl_->visible_fields(*pol, role, {name}).empty())
      impl_->deny(caller, "subject.update", ErrorCode::forbidden_role,
                  "role '" + role.name + "' does not see '" + name + "', so it may not change it", records::to_hex(id));
  try {
    impl_->records->update(impl_->actor(caller), id, in.set, in.remove);
  } catch (const records::DuplicateSubject& e) {
    // Named to the caller only if it may look subjects up by what matched.
    // Create's rule: a new identifier that names another subject is refused
    // (409, naming it); audited as a denial, like create's refusals.
    impl_->audit->append_now(impl_->actor(caller),
                             {"subject.update", records::to_hex(id), {}, {}, false, code_name(e.code()),
                              "matched_on=" + [&] {
                                std::string on;
                                for (const auto& f : e.matched_on()) on += (on.empty() ? "" : ",") + f;
                                return on;
                              }(),
                              e.subject_ids()});
    throw impl_->duplicate_for(*pol, role, caller.purpose, e.subject_ids(), e.matched_on());
  }
  return {{"id", records::to_hex(id)}, {"updated_fields", named}};
}

Json Service::erase_subject(const Caller& caller, std::string_view id_text, std::string_view reason) {
  const auto pol = impl_->current_policy();
  const records::SubjectId id = records::parse_subject_id(id_text);
  // Irreversible, so its own operation class, and a purpose that justifies
  // it (purposes.yaml required_for: [subject.erase]).
  impl_->authorize(caller, *pol, "records.erase", "subject.erase", true, records::to_hex(id));
  if (!valid_reason(reason))
    impl_->deny(caller, "subject.erase", ErrorCode::invalid_argument,
                "erasure needs a reason of 1-" + std::to_string(kMaxReason) +
                    " bytes without control characters (e.g. a ticket reference)",
                records::to_hex(id));
  // Art. 18(1)(b): a subject who asked for restriction instead of erasure is
  // erased only through their own erasure request (a DSR), never directly.
  if (impl_->records->metadata(id).restricted)
    impl_->deny(caller, "subject.erase", ErrorCode::subject_restricted,
                "the subject's processing is restricted (GDPR Art. 18): erase it through an erasure request",
                records::to_hex(id));
  const auto r = impl_->records->erase(impl_->actor(caller), id, true, "crypto-shred reason=" + std::string(reason));
  return {{"id", r.subject_id},
          {"status", "erased"},
          {"fields_erased", r.fields_erased},
          {"index_entries_removed", r.index_entries_removed},
          {"touchpoint_notes", "shredded (their key is destroyed)"},
          {"touchpoint_types", "erased (free text about the subject)"},
          {"touchpoints", "channel and time retained (no identity)"},
          {"orders", "retained (not personal data)"}};
}

Json Service::add_touchpoint(const Caller& caller, std::string_view id_text, const Json& body) {
  const records::SubjectId id = records::parse_subject_id(id_text);
  impl_->authorize(caller, *impl_->current_policy(), "records.write", "touchpoint.create", false, records::to_hex(id));
  // Art. 18: a restricted subject changes only through a rectification request.
  if (impl_->records->metadata(id).restricted)
    impl_->deny(caller, "touchpoint.create", ErrorCode::subject_restricted,
                "the subject's processing is restricted (GDPR Art. 18): change it through a rectification request",
                records::to_hex(id));
  const records::Touchpoint tp = parse_touchpoint(body, impl_->audit->now_us());
  const std::string tp_id = impl_->records->add_touchpoint(impl_->actor(caller), id, tp);
  return {{"id", tp_id}, {"subject_id", records::to_hex(id)}, {"channel", tp.channel}, {"type", tp.type},
          {"at", audit::format_time_us(tp.at_us)}};
}

Json Service::add_order(const Caller& caller, std::string_view id_text, const Json& body) {
  const records::SubjectId id = records::parse_subject_id(id_text);
  impl_->authorize(caller, *impl_->current_policy(), "records.write", "order.create", false, records::to_hex(id));
  // Art. 18: a restricted subject changes only through a rectification request.
  if (impl_->records->metadata(id).restricted)
    impl_->deny(caller, "order.create", ErrorCode::subject_restricted,
                "the subject's processing is restricted (GDPR Art. 18): change it through a rectification request",
                records::to_hex(id));
  const records::Order order = parse_order(body, impl_->audit->now_us());
  const std::string order_id = impl_->records->add_order(impl_->actor(caller), id, order);
  return {{"id", order_id}, {"subject_id", records::to_hex(id)}, {"amount_minor", order.amount_minor},
          {"currency", order.currency}, {"at", audit::format_time_us(order.at_us)}};
}

Json Service::audit_entries(const Caller& caller, const std::map<std::string, std::string>& params) {
  impl_->authorize(caller, *impl_->current_policy(), "audit", "audit.query", false);
  audit::Query q;
  for (const auto& [key, value] : params) {
    if (key == "subject") q.subject_id = value;
    else if (key == "principal") q.principal = value;
    else if (key == "purpose") q.purpose = value;
    else if (key == "operation") q.operation = value;
    else if (key == "from" || key == "to") {
      const auto t = audit::parse_time_us(value);
      if (!t) throw Error(ErrorCode::invalid_argument, "parameter '" + key + "' must be an RFC 3339 time");
      (key == "from" ? q.from_us : q.to_us) = *t;
    } else if (key == "after") q.after_seq = parse_u64(value, "after");
    else if (key == "limit") {
      q.limit = parse_u64(value, "limit");
      if (q.limit == 0 || q.limit > 1000) throw Error(ErrorCode::invalid_argument, "parameter 'limit' must be 1-1000");
    } else throw Error(ErrorCode::invalid_argument, "unknown parameter '" + util::printable_prefix(key) + "'");
  }
  if (q.from_us && q.to_us && *q.to_us < *q.from_us)
    throw Error(ErrorCode::invalid_argument, "parameter 'to' is before 'from'");
  const auto entries = impl_->audit->query(q);
  Json list = Json::array();
  for (const auto& e : entries) list.push_back(Json::parse(auditfmt::to_json(e)));
  Json out = {{"entries", list}};
  out["next_after"] = entries.size() == q.limit && !entries.empty() ? Json(entries.back().seq) : Json(nullptr);
  // The filter is what the caller typed: recorded only if it is a subject id.
  impl_->audit->append_now(impl_->actor(caller), {"audit.query", audit::recorded_subject(q.subject_id), {}, {}, true,
                                                  "", "returned=" + std::to_string(entries.size())});
  return out;
}

Json Service::audit_checkpoint(const Caller& caller) {
  impl_->authorize(caller, *impl_->current_policy(), "audit", "audit.checkpoint", false);
  const auto cp = impl_->audit->checkpoint_now();
  Json out = checkpoint_json(cp);
  out["verifier_key"] = impl_->audit->verifier_key();
  return out;
}

Json Service::audit_inclusion_proof(const Caller& caller, std::string_view index_text, std::string_view size_text) {
  impl_->authorize(caller, *impl_->current_policy(), "audit", "audit.proof", false);
  const std::uint64_t index = parse_u64(index_text, "index");
  const std::uint64_t size = size_text.empty() ? impl_->audit->checkpoint_now().size : parse_u64(size_text, "size");
  const auto proof = impl_->audit->inclusion_proof(index, size);
  const auto bytes = impl_->audit->entry_bytes(index);
  Json out = {{"index", index},
              {"tree_size", size},
              {"leaf_hash", auditfmt::to_hex(auditfmt::leaf_hash(bytes))},
              {"entry", auditfmt::base64_encode(bytes)},
              {"proof", hashes_to_json(proof)},
              {"root", auditfmt::to_hex(impl_->audit->root_at(size))},
              {"key_name", impl_->audit->options().key_name}};
  if (const auto cp = impl_->audit->checkpoint_at(size)) out["checkpoint"] = cp->note;
  return out;
}

Json Service::audit_consistency_proof(const Caller& caller, std::string_view first_text, std::string_view second_text) {
  impl_->authorize(caller, *impl_->current_policy(), "audit", "audit.proof", false);
  const std::uint64_t first = parse_u64(first_text, "first");
  const std::uint64_t second = parse_u64(second_text, "second");
  const auto proof = impl_->audit->consistency_proof(first, second);
  return {{"first", first},
          {"second", second},
          {"first_root", auditfmt::to_hex(impl_->audit->root_at(first))},
          {"second_root", auditfmt::to_hex(impl_->audit->root_at(second))},
          {"proof", hashes_to_json(proof)}};
}

void Service::audit_export(const Caller& caller, std::ostream& out) {
  impl_->authorize(caller, *impl_->current_policy(), "audit", "audit.export", false);
  impl_->audit->append_now(impl_->actor(caller), {"audit.export", "", {}, {}, true, "", ""});
  impl_->audit->export_to(out);
}

std::string Service::audit_verifier_key() const { return impl_->audit->verifier_key(); }

Json Service::verify_export_file(const fs::path& file) const {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw Error(ErrorCode::not_found, "cannot read export file " + file.string());
  const auto result = auditfmt::verify_export(in, impl_->audit->verifier_key());
  if (!result.ok) throw Error(ErrorCode::integrity, result.error);
  return {{"ok", true}, {"summary", result.summary}};
}

void Service::checkpoint_if_due() { impl_->audit->checkpoint_if_due(); }

std::uint64_t Service::audit_size() { return impl_->audit->size(); }

bool Service::audit_journal_active() const { return impl_->audit->journal_active(); }

bool Service::retry_audit_journal() {
  if (!impl_->options.audit_journal || impl_->audit->journal_active()) return false;
  util::MutexLock lock(impl_->audit_journal_mu);
  if (impl_->audit->journal_active()) return false;
  return impl_->audit->enable_journal(impl_->options.data_dir / "audit-journal", impl_->keys->named_key(kJournalSlot),
                                      impl_->options.audit_journal_options);
}

audit::JournalStatus Service::audit_journal_status() { return impl_->audit->journal_status(); }

std::uint64_t Service::audit_checkpoint_size() {
  const auto cp = impl_->audit->latest_checkpoint();
  return cp ? cp->size : 0;
}

Json Service::create_token(const Caller& caller, const std::string& name, const std::string& role) {
  const auto pol = impl_->current_policy();
  impl_->authorize(caller, *pol, "admin", "token.create", false);
  if (pol->role(role) == nullptr) throw Error(ErrorCode::invalid_argument, "unknown role '" + util::printable_prefix(role) + "'");
  const std::string token = impl_->tokens->create(impl_->actor(caller), name, role);
  return {{"name", name}, {"role", role}, {"token", token}};
}

void Service::authorize_metrics(const Caller& caller) {
  const access::Role* role = impl_->current_policy()->role(caller.principal.role);
  if (role != nullptr && (role->operations.count("admin") || role->operations.count("audit"))) return;
  impl_->deny(caller, "metrics.read", ErrorCode::forbidden_role,
              "role '" + caller.principal.role + "' may not read the metrics: they are for the admin and audit operations");
}

Json Service::revoke_token(const Caller& caller, const std::string& name) {
  impl_->authorize(caller, *impl_->current_policy(), "admin", "token.revoke", false);
  // The links the token minted end with it, and so do their sessions: a
  // stolen CRM token's links must not outlive its revocation by days.
  impl_->tokens->revoke(impl_->actor(caller), name, [&](store::Transaction& tx, const std::string& token_id) {
    return expire_privacy_links_of(tx, token_id, impl_->audit->now_us());
  });
  return {{"name", name}, {"revoked", true}};
}

Json Service::rotate_keys(const Caller& caller) {
  impl_->authorize(caller, *impl_->current_policy(), "keys", "key.rotate", false);
  const auto report = store::rotate_keys(
      *impl_->store, *impl_->keyring, key_dir(impl_->options.data_dir), {records::subject_data_keys()},
      [&](store::Transaction& tx, const store::RotationReport& r) {
        impl_->audit->append(tx, impl_->actor(caller),
                             {"key.rotate", "", {}, {}, true, "",
                              "from=" + std::to_string(r.old_version) + " to=" + std::to_string(r.new_version) +
                                  " data_keys=" + std::to_string(r.data_keys)});
      });
  return {{"old_version", report.old_version},
          {"new_version", report.new_version},
          {"data_keys_rewrapped", report.data_keys},
          {"named_keys_rewrapped", report.named_keys}};
}

Json Service::retire_keys(const Caller& caller) {
  impl_->authorize(caller, *impl_->current_policy(), "keys", "key.retire", false);
  const auto retired = store::retire_old_keks(*impl_->store, *impl_->keyring, key_dir(impl_->options.data_dir),
                                                 {records::subject_data_keys()});
  impl_->audit->append_now(impl_->actor(caller), {"key.retire", "", {}, {}, true, "",
                                                  "retired=" + std::to_string(retired.size())});
  Json out = {{"retired_versions", retired}};
  // Said with every retirement, not only in the docs: an operator deciding
  // whether old backups or disks still hold the key must know this.
  if (!retired.empty())
    out["erasure_caveat"] =
        "each retired key file was overwritten in place, fsynced and unlinked; on copy-on-write file systems "
        "(btrfs, ZFS, overlay upper layers), on SSDs (wear levelling) and in snapshots or backups of the key "
        "directory the old bytes may survive: see docs/operations.md, 'Retiring master keys'";
  return out;
}

}  // namespace custos::service
