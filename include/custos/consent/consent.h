// custos/consent/consent.h — the consent ledger.
//
// Append-only events per subject × purpose × channel (granted, denied,
// withdrawn), each with its time, source, lawful basis, notice version,
// expiry, recording principal and proof. The current state is derived and
// withdrawal wins: the latest *recorded* event decides, except that a grant
// dated before the state it would replace (a stale, backdated grant) changes
// nothing; expired grants count as absent. It is kept materialised in
// `consent_state`, so reads and campaign selection never replay history. A
// grant may be pending until its double opt-in confirmation token (stored
// hashed, single use, expiring) comes back; any later event for the same
// purpose and channel voids it. Grants may not be dated in the future.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "custos/access/policy.h"
#include "custos/audit/audit_log.h"
#include "custos/records/records.h"
#include "custos/store/store.h"

namespace custos::consent {

inline const std::vector<std::string> kChannels = {"email", "sms", "phone", "post", "push", "web"};
inline const std::vector<std::string> kSources = {"web_form", "call_centre", "import", "api", "email_link", "gpc",
                                                  "privacy_page"};
// The keys of an event's `proof` that only the vault writes: how the event
// was captured (who captured it, through which privacy-page link, signal,
// import line or data-subject request). A caller's proof may not use them
// (the service refuses it with invalid_field), so they are the part of a
// proof that is evidence rather than the caller's own words, and the part
// an erasure keeps (Ledger::erase_caller_proofs).
inline const std::vector<std::string> kVaultProofKeys = {"capture", "captured_by_role", "link_id", "signal",
                                                         "request", "import_id",         "import_line", "dsr_request"};

struct EventInput {
  std::string purpose;
  std::string channel;
  std::string event;  // granted | denied | withdrawn
  std::string source;
  std::string lawful_basis;     // default: the purpose's
  std::string notice_version;   // default: the current notice's hash
  std::int64_t at_us = 0;       // 0: now
  std::optional<std::int64_t> expires_us;
  bool double_opt_in = false;   // grant stays pending until confirmed
  // Recorded by the data subject in person (the privacy page, in their own
  // session). Such a grant also ends their objection to direct marketing
  // (Art. 21(3)): they have said yes again. A grant recorded by anyone
  // else, capturing role or import, leaves an objection standing.
  bool by_the_subject = false;
  std::string proof;            // JSON text: how it was captured (never personal values)
};

struct Event {
  std::int64_t id = 0;
  std::string subject_id, purpose, channel, event, status, source, lawful_basis, notice_version, principal, proof;
  std::int64_t at_us = 0;
  std::int64_t recorded_us = 0;
  std::optional<std::int64_t> expires_us;
};

struct State {
  std::string purpose, channel;
  std::string state;  // granted | denied | withdrawn | expired
  std::int64_t since_us = 0;
  std::optional<std::int64_t> expires_us;
  std::int64_t event_id = 0;
};

struct Recorded {
  std::vector<Event> events;
  std::optional<std::string> confirmation_token;  // double opt-in: shown once
  std::optional<std::int64_t> confirmation_expires_us;
};

class Ledger {
 public:
  Ledger(store::Store& store, audit::AuditLog& audit, std::filesystem::path notices_dir,
         std::int64_t confirmation_ttl_us = 7LL * 24 * 3600 * 1000000);

  // Validates against the policy (purpose, channel, source, times) and
  // records one event; throws Error(invalid_field / not_found) recording nothing.
  Recorded record(const audit::Actor& actor, const access::Policy& policy, const records::SubjectId& subject,
                  const EventInput& in);
  // Withdraws every purpose matching `pred` on every channel it has (GPC,
  // do-not-sell, objection), with one proof; returns the events written.
  std::vector<Event> withdraw_all(const audit::Actor& actor, const access::Policy& policy,
                                  const records::SubjectId& subject, bool sale_or_share_only,
                                  const std::string& source, const std::string& proof);
  // Confirms a pending grant; returns the confirming event. Throws
  // Error(conflict) for a used token or one voided by a later event for the
  // same purpose and channel, Error(invalid_argument) for an unknown or
  // expired one, and Error(consent_capture_not_allowed) when `may_capture`
  // (if given) refuses the pending event — all before writing anything.
  Event confirm(const audit::Actor& actor, std::string_view token,
                const std::function<bool(const Event& pending)>& may_capture = {});

  std::vector<Event> history(const records::SubjectId& subject);
  std::vector<State> current(const records::SubjectId& subject);
  bool has_active(const records::SubjectId& subject, const std::string& purpose, const std::string& channel);

  // Identity resolution (records::Records::merge calls this inside its
  // transaction): moves every event of `from` to `into` and re-derives
  // `into`'s state from the joined history by the ledger's own rule, in
  // recording order, so a withdrawal recorded on either subject is never
  // hidden by an earlier grant on the other, and a pending double opt-in of
  // either is voided by any later event of the other for that purpose and channel.
  static void merge_subject(store::Transaction& tx, const records::SubjectId& from, const records::SubjectId& into);

  // Erasure (inside the transaction that destroys the subject's key): the
  // subject's consent history is kept as proof of consent, but each event's
  // proof keeps only the vault's own evidence — its kVaultProofKeys, or all
  // of it when the vault wrote it whole (a confirmation, a GPC signal, the
  // privacy page's). Whatever a caller put there (a form's fields, an
  // address, what the subject typed) is replaced by
  // "caller_details": "erased with the subject". Returns the events changed.
  static std::size_t erase_caller_proofs(store::Transaction& tx, const records::SubjectId& subject);

  // Bulk import (service import): validates `in` as record() does and
  // records one confirmed event inside the caller's write transaction,
  // appending no audit entry (the import's chunk entry covers it). An event
  // equal to one already recorded (subject, purpose, channel, event, time,
  // source) is skipped, so a re-import adds nothing: returns false then.
  // `current_notice` is notice_version(in.purpose), computed once by the
  // caller. `new_subject`: created in this transaction (no history to check).
  bool import_event(store::Transaction& tx, const std::string& principal, const access::Policy& policy,
                    const records::SubjectId& subject, const EventInput& in, const std::string& current_notice,
                    std::int64_t now, bool new_subject);

  // The notice hash for a purpose: sha256 of policies/notices/<purpose>.txt (or default.txt).
  std::string notice_version(const std::string& purpose) const;
  // A consent receipt (Kantara / ISO/IEC 27560 fields that apply) for a confirmed grant.
  std::string receipt_json(const Event& e, const access::Policy& policy, const std::string& controller) const;

  // Called inside the transaction of every change that takes effect now
  // (a confirmed grant, denial or withdrawal; not a pending double opt-in),
  // with that change's events, so what it writes (the outbox's events for
  // downstream systems) commits with the change or not at all. Set once,
  // before the ledger is shared between threads.
  using ChangeHook = std::function<void(store::Transaction&, const std::vector<Event>&)>;
  void set_change_hook(ChangeHook hook) { change_hook_ = std::move(hook); }

 private:
  ChangeHook change_hook_;
  store::Store& store_;
  audit::AuditLog& audit_;
  std::filesystem::path notices_dir_;
  std::int64_t confirmation_ttl_us_;
};

}  // namespace custos::consent
