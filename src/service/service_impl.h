// Private to the service module: the façade's state, shared by its
// translation units (service.cpp, service_consent.cpp, ...).
#pragma once

#include <algorithm>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <nlohmann/json.hpp>

#include "custos/audit/audit_log.h"
#include "custos/breach/breach.h"
#include "custos/consent/consent.h"
#include "custos/dsr/dsr.h"
#include "custos/dsr/regulations.h"
#include "custos/crypto/keyring.h"
#include "custos/crypto/signer.h"
#include "custos/error.h"
#include "custos/outbox/outbox.h"
#include "custos/outbox/systems.h"
#include "custos/records/records.h"
#include "custos/records/rfm.h"
#include "custos/service/service.h"
#include "custos/store/key_table.h"
#include "custos/util/mutex.h"
#include "custos/util/text.h"

namespace custos::service {

// At most the first 32 bytes of `text` for an error message, anything but
// printable ASCII as '?', and "..." if cut: a message never carries more of
// what a caller sent than a person needs to recognise it.

struct Service::Impl {
  OpenOptions options;
  std::unique_ptr<crypto::Keyring> keyring;
  std::unique_ptr<store::Store> store;
  std::unique_ptr<store::KeyTable> keys;
  records::Schema schema;
  std::unique_ptr<crypto::Signer> signer;
  std::unique_ptr<audit::AuditLog> audit;
  util::Mutex audit_journal_mu;  // one enable attempt at a time
  std::unique_ptr<records::Records> records;
  std::unique_ptr<access::TokenStore> tokens;
  std::unique_ptr<consent::Ledger> consent;
  std::unique_ptr<dsr::Desk> dsr;
  std::unique_ptr<breach::Book> breaches;
  // Reloaded together on SIGHUP (reload_policies); readers take a snapshot.
  mutable util::Mutex policy_mu;
  // Read via current_regulations(), current_policy() and so on.
  mutable std::shared_ptr<const dsr::Regulations> regulations CUSTOS_GUARDED_BY(policy_mu);
  std::shared_ptr<const access::Policy> policy CUSTOS_GUARDED_BY(policy_mu);
  std::shared_ptr<const records::RfmPolicy> segments CUSTOS_GUARDED_BY(policy_mu);
  std::shared_ptr<const outbox::Systems> systems CUSTOS_GUARDED_BY(policy_mu);
  Counters* counters = nullptr;
  // Several nodes on one store (service_cluster.cpp): the policy generation
  // this node runs (the latest when it opened, read before its policy
  // files), whether its row exists, and when it last said it was alive.
  util::Mutex cluster_mu;
  std::int64_t applied_policy_generation CUSTOS_GUARDED_BY(cluster_mu) = 0;
  bool node_recorded CUSTOS_GUARDED_BY(cluster_mu) = false;
  std::int64_t last_seen_written_us CUSTOS_GUARDED_BY(cluster_mu) = 0;
  // Leases this node holds, and until when its last write holds them.
  std::map<std::string, std::int64_t> leases_held CUSTOS_GUARDED_BY(cluster_mu);
  // The latest requested policy generation (service_cluster.cpp).
  std::int64_t latest_policy_generation();
  // Downstream systems (service_outbox.cpp).
  std::unique_ptr<outbox::Outbox> outbox;
  util::Mutex outbox_listener_mu;
  std::function<void()> outbox_listener CUSTOS_GUARDED_BY(outbox_listener_mu);

  std::shared_ptr<const outbox::Systems> current_systems() const {
    util::MutexLock lock(policy_mu);
    return systems;
  }
  std::set<std::string> schema_field_names() const {
    std::set<std::string> names;
    for (const auto& f : schema.fields()) names.insert(f.name);
    return names;
  }
  // Tells the sender (if one listens) that events were committed.
  void notify_outbox();
  // Inside a DSR completion's transaction: the events its downstream systems
  // receive. `changes`: a rectification's corrections (JSON text), else "".
  void enqueue_dsr_events(store::Transaction& tx, const dsr::Request& q, const Json& report,
                          const std::string& changes);
  // Inside a consent change's transaction (consent::Ledger's change hook).
  void enqueue_consent_events(store::Transaction& tx, const std::vector<consent::Event>& events);
  // The outbox state of a request, for its JSON: per event its delivery and
  // the system's confirmation.
  Json downstream_json(store::Transaction& tx, const std::string& request_id);
  // Required systems that got an erasure event for `request_id` and have not confirmed.
  std::vector<std::string> missing_confirmations(const std::string& request_id);
  // A request as GET /v1/dsr/{id} shows it: the request, its timeline and
  // its downstream deliveries read in one transaction. The outbox sender
  // commits an event's status and its timeline note together; separate reads
  // could show a dead letter whose note is not there yet.
  Json request_view(const std::string& request_id);

  std::filesystem::path policy_dir() const {
    return options.policy_dir.empty() ? options.data_dir / "policies" : options.policy_dir;
  }

  std::shared_ptr<const access::Policy> current_policy() const {
    util::MutexLock lock(policy_mu);
    return policy;
  }
  // Loads the rules on first use when open deferred them (defer_regulations).
  std::shared_ptr<const dsr::Regulations> current_regulations() const {
    util::MutexLock lock(policy_mu);
    if (!regulations) regulations = dsr::Regulations::load(policy_dir() / "regulations.yaml");
    return regulations;
  }
  std::shared_ptr<const records::RfmPolicy> current_segments() const {
    util::MutexLock lock(policy_mu);
    return segments;
  }

  // Who acts, as the audit log records it: nothing the caller sent reaches an
  // entry unchecked (audit/FORMAT.md §1.4). A purpose is recorded only if it
  // is a name in the loaded purposes.yaml; anything else (a typo, or a
  // megabyte header) as its invalid_purpose marker.
  audit::Actor actor(const Caller& c) const {
    return {audit::recorded_label("principal", c.principal.name), audit::recorded_label("role", c.principal.role),
            audit::recorded_label("token_id", c.principal.token_id), recorded_purpose(c.purpose),
            audit::recorded_request_id(c.request_id)};
  }
  std::string recorded_purpose(const std::string& purpose) const {
    if (purpose.empty() || current_policy()->purpose(purpose) != nullptr) return purpose;
    return auditfmt::invalid_value("purpose", purpose);
  }

  // Denials are audited before the error leaves; if even that fails, the
  // caller gets audit_unavailable. `subject` may be what the caller sent.
  [[noreturn]] void deny(const Caller& c, const std::string& operation, ErrorCode code, const std::string& message,
                         const std::string& subject = "") {
    audit->append_now(actor(c), {operation, audit::recorded_subject(subject), {}, {}, false, code_name(code), ""});
    throw Error(code, message);
  }

  // Checks the operation class and the declared purpose; returns the role.
  const access::Role& authorize(const Caller& c, const access::Policy& pol, const std::string& op_class,
                                const std::string& operation, bool purpose_required,
                                const std::string& subject = "") {
    const access::Role* role = pol.role(c.principal.role);
    if (role == nullptr || !role->operations.count(op_class))
      deny(c, operation, ErrorCode::forbidden_role,
           "role '" + c.principal.role + "' may not perform " + op_class, subject);
    if (c.purpose.empty()) {
      if (purpose_required)
        deny(c, operation, ErrorCode::purpose_not_allowed,
             "this call reads personal data: declare a purpose with the Custos-Purpose header", subject);
    } else if (pol.purpose(c.purpose) == nullptr || !role->purposes.count(c.purpose)) {
      deny(c, operation, ErrorCode::purpose_not_allowed,
           "role '" + c.principal.role + "' may not declare purpose '" + util::printable_prefix(c.purpose, 32) + "'", subject);
    }
    if (const auto* only = pol.purposes_required_for(operation); only && !only->count(c.purpose)) {
      std::string names;
      for (const auto& p : *only) names += (names.empty() ? "'" : ", '") + p + "'";
      deny(c, operation, ErrorCode::purpose_not_allowed, operation + " needs the purpose " + names, subject);
    }
    return *role;
  }

  // Why a read of `id` under `purpose` is refused (code, message), if it is:
  // erased/unknown, restricted, objected (marketing), no consent (marketing).
  // `channels`, if given, receives marketing_channels' answer for a read
  // that is not refused, so the caller need not read the consent again.
  using Channels = std::optional<std::vector<std::string>>;
  std::optional<std::pair<ErrorCode, std::string>> read_refusal(const access::Policy& pol, const std::string& purpose,
                                                               const records::SubjectId& id,
                                                               Channels* channels = nullptr);

  // Marketing purposes need the subject's active consent on one of the
  // purpose's channels, and never reach restricted, objected or erased
  // subjects. For a subject whose metadata the caller has read: the
  // purpose's channels its active consent covers (empty: refused); nullopt
  // for a purpose that is not marketing.
  Channels marketing_channels(const access::Policy& pol, const std::string& purpose, const records::Subject& meta);
  // Of a marketing purpose's channels, those the subject's active consent to
  // it covers; nullopt for a purpose that is not marketing.
  Channels consented_channels(const access::Policy& pol, const std::string& purpose, const records::SubjectId& id);
  // `spec` without the fields bound to channels (schema.yaml `channels`) of
  // which none is in `channels`: what a marketing purpose may see of a
  // subject whose consent covers `channels`.
  records::ReadSpec for_channels(records::ReadSpec spec, const std::vector<std::string>& channels) const;
  // Reads `ids` as `spec` allows, and, under a marketing purpose, each
  // without the channel-bound fields its consent does not cover (one
  // read_many per set of consented channels, so each audited read names
  // the fields it disclosed). `known`, if given, holds each id's
  // consented channels, already read (marketing_channels); otherwise they
  // are read here. Results in the order of `ids`.
  std::vector<std::optional<records::Subject>> read_for_purpose(const audit::Actor& actor, const access::Policy& pol,
                                                                const std::string& purpose,
                                                                const std::vector<records::SubjectId>& ids,
                                                                const records::ReadSpec& spec,
                                                                const std::vector<Channels>* known = nullptr);

  // Fulfils a completed data-subject request; returns its report.
  // `covered`: the matched subjects it acts on; `excluded` (with the
  // officer's `reason`) are reported as exceptions.
  Json fulfil(const audit::Actor& actor, const access::Policy& pol, const dsr::Request& q,
              const std::vector<records::SubjectId>& covered, const std::vector<records::SubjectId>& excluded,
              const std::string& reason);
  // Pending DSR corrections are kept sealed under the subject's own key.
  std::string seal_for_subject(const records::SubjectId& id, const std::string& what, const std::string& plaintext);
  std::string open_for_subject(const records::SubjectId& id, const std::string& what, const std::string& sealed);

  // Whether `role` sees every one of `fields` in plain: what it may look
  // subjects up by (find_subjects). A duplicate refusal names the subjects an
  // identifier matched only then, or it would turn a value the role sees
  // masked into a subject id (and a name).
  bool sees_plain(const access::Policy& pol, const access::Role& role, const std::vector<std::string>& fields) const {
    return std::all_of(fields.begin(), fields.end(), [&](const std::string& name) {
      const records::FieldSpec* f = schema.find(name);
      return f != nullptr && pol.visibility(role, *f) == access::Visibility::plain;
    });
  }
  // Of the subjects (hex) an identifier matched, what a caller may be told:
  // all of them if its role sees every identifier that matched in plain and
  // none is restricted beyond its purpose (as find_subjects leaves a
  // restricted subject out unless the purpose is allowed_when_restricted);
  // otherwise none.
  std::vector<std::string> nameable_matches(const access::Policy& pol, const access::Role& role,
                                            const std::string& purpose, std::vector<std::string> ids,
                                            const std::vector<std::string>& matched_on) {
    if (!sees_plain(pol, role, matched_on)) return {};
    const access::Purpose* p = pol.purpose(purpose);
    if (p == nullptr || !p->allowed_when_restricted)
      for (const auto& id : ids)
        if (records->metadata(records::parse_subject_id(id)).restricted) return {};
    return ids;
  }
  // The duplicate refusal as the caller may hear it (nameable_matches).
  records::DuplicateSubject duplicate_for(const access::Policy& pol, const access::Role& role,
                                          const std::string& purpose, std::vector<std::string> ids,
                                          std::vector<std::string> matched_on) {
    ids = nameable_matches(pol, role, purpose, std::move(ids), matched_on);
    return records::DuplicateSubject(std::move(ids), std::move(matched_on));
  }
  // Why `role` may not merge `fields` into an existing subject, if it may
  // not: a merge joins the subject a searchable identifier names and answers
  // with its id, so the role must see each such identifier in plain. Decided
  // from the request alone, before any match, so a hit and a miss look the same.
  std::optional<std::string> merge_refusal(const access::Policy& pol, const access::Role& role,
                                           const records::FieldMap& fields) const {
    for (const auto& [name, value] : fields) {
      const records::FieldSpec* f = schema.find(name);
      if (f != nullptr && f->searchable && pol.visibility(role, *f) != access::Visibility::plain)
        return "role '" + role.name + "' does not see '" + name +
               "' in plain, so it may not merge into the subject that holds it (on_conflict merge)";
    }
    return std::nullopt;
  }
  // Of `names`, the fields `role` sees at all (plain or masked): what a
  // merge may report as added or kept.
  std::vector<std::string> visible_fields(const access::Policy& pol, const access::Role& role,
                                          const std::vector<std::string>& names) const {
    std::vector<std::string> out;
    for (const auto& name : names) {
      const records::FieldSpec* f = schema.find(name);
      if (f != nullptr && pol.visibility(role, *f) != access::Visibility::none) out.push_back(name);
    }
    return out;
  }

  records::ReadSpec read_spec(const access::Policy& pol, const access::Role& role) const {
    records::ReadSpec spec;
    for (const auto& f : schema.fields()) {
      const access::Visibility v = pol.visibility(role, f);
      if (v == access::Visibility::none) continue;
      spec.fields.push_back(f.name);
      if (v == access::Visibility::masked) spec.masked.push_back(f.name);
    }
    return spec;
  }

  Json subject_json(const records::Subject& s, const records::ReadSpec& spec) {
    Json fields = Json::object();
    for (const auto& [name, value] : s.fields) {
      const bool masked = std::find(spec.masked.begin(), spec.masked.end(), name) != spec.masked.end();
      fields[name] = masked ? access::mask_value(schema.require(name), value) : value;
    }
    counters->decryptions += s.fields.size();
    Json out = {{"id", records::to_hex(s.id)},
                {"status", s.status},
                {"created_at", audit::format_time_us(s.created_us)},
                {"updated_at", audit::format_time_us(s.updated_us)},
                {"fields", std::move(fields)}};
    if (!spec.masked.empty()) {
      Json masked = Json::array();
      for (const auto& m : spec.masked)
        if (s.fields.count(m)) masked.push_back(m);
      out["masked_fields"] = masked;
    }
    if (s.legal_hold) out["legal_hold"] = true;
    if (s.restricted) out["restricted"] = true;
    return out;
  }
};


// Shared request-body helpers.
struct FieldChanges {
  records::FieldMap set;
  std::vector<std::string> remove;
};
// {"fields": {...}}: every value a string (or null, to remove, when allowed).
FieldChanges parse_fields(const Json& body, const records::Schema& schema, bool allow_null);
[[noreturn]] void bad_body(const std::string& why);
void only_keys(const Json& body, std::initializer_list<const char*> allowed);
// A caller's consent evidence (`proof`, an import's `evidence`) may not carry
// the keys the vault itself writes there (capture, captured_by_role, link_id,
// signal, request, import_id, import_line, dsr_request): evidence that says
// "captured on the privacy page" or "the subject's GPC signal" is the vault's
// word, never a caller's. Throws Error(invalid_field) naming the key.
void refuse_vault_proof_keys(const Json& proof, const char* field);
std::string required_string(const Json& body, const char* key, std::size_t max_len);
std::int64_t parse_time_or_now(const Json& body, const char* key, std::int64_t now);
// The bodies of POST /v1/subjects/{id}/touchpoints and /orders (also one
// item of their batch routes and of an import line); throw invalid_field.
// Ends (expires now) every privacy link the token `token_id` issued and
// its session, in the token's revocation; returns a detail for its audit
// entry ("" if there were none).
std::string expire_privacy_links_of(store::Transaction& tx, const std::string& token_id, std::int64_t now);
records::Touchpoint parse_touchpoint(const Json& body, std::int64_t now);
records::Order parse_order(const Json& body, std::int64_t now);

}  // namespace custos::service
