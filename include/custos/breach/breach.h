// custos/breach/breach.h — personal-data breaches and their clocks.
//
//   open -> contained -> closed  (open -> closed when nothing was left to contain)
//
// Notifications are events of their own, in any state before `closed`
// (notifying the authority within 72 h usually comes before containment):
// each `notified` event names the regime and the recipient it satisfies
// (authority, individuals, attorney_general, media, hhs, ...), so telling one
// regulator never marks another as told. Every recipient of every regime of
// the incident has its own clock from policies/regulations.yaml, with its
// conditions (high risk, number of residents); closing is refused while a
// required notice is outstanding. GDPR's authority clock is discovery + 72 h,
// exact to the minute.
//
// Events may not predate the previous one or the discovery. Rows written
// before per-recipient events (`authority_notified`, `subjects_notified`)
// still count: they satisfy the authority / individuals of every regime.
#pragma once

#include <optional>
#include <set>
#include <string>
#include <vector>

#include "custos/audit/audit_log.h"
#include "custos/dsr/regulations.h"
#include "custos/records/records.h"
#include "custos/store/store.h"

namespace custos::breach {

// authority_notified and subjects_notified: statuses of incidents recorded
// before notifications became events; kept so such rows can be listed.
inline const std::vector<std::string> kStatuses = {"open", "contained", "closed", "authority_notified",
                                                   "subjects_notified"};
inline const std::vector<std::string> kSeverities = {"low", "medium", "high", "critical"};

struct Incident {
  std::string id, status, description, severity, created_by;
  std::int64_t discovered_us = 0, updated_us = 0;
  std::optional<std::int64_t> occurred_from_us, occurred_to_us;
  std::vector<std::string> categories, regimes;
  bool high_risk = false;
  std::optional<std::int64_t> affected_count;
  std::string residents;    // JSON {"CA": 1200, ...} or empty
  std::string computation;  // JSON of the last computeAffected
};

struct Event {
  std::int64_t at_us = 0, recorded_us = 0;
  std::string actor, type, note;
  std::string regime, recipient;  // type "notified": whom it told, under which regime
};

struct Deadline {
  std::string regime, regime_name, who;  // who: the recipient key (authority, individuals, attorney_general, ...)
  std::string recipient_name, timing, source;
  std::optional<std::int64_t> due_us;    // nullopt: no fixed period (`timing` says how soon)
  bool met = false;
  std::optional<std::int64_t> met_us;
  bool required = true;    // false when a condition (high risk, residents) does not hold
  bool projected = false;  // counted from another notice's due date until that notice is sent
  std::string condition;   // the condition and what it was decided on, e.g. "more than 500 residents of CA (700)"
};

struct NewIncident {
  std::int64_t discovered_us = 0;
  std::optional<std::int64_t> occurred_from_us, occurred_to_us;
  std::string description, severity = "medium";
  std::vector<std::string> categories, regimes;
  bool high_risk = false;
  std::string residents;
};

// What computeAffected found, and what it was computed against.
struct AffectedResult {
  std::int64_t count = 0;
  std::uint64_t first_seq = 0, last_seq = 0, entries_scanned = 0;
  audit::Checkpoint checkpoint;
  std::vector<std::pair<std::string, std::vector<std::string>>> sample;  // subject hex, fields
  std::optional<std::pair<std::int64_t, std::int64_t>> window_us;  // [from, to) of an audit-log computation
};

class Book {
 public:
  Book(store::Store& store, audit::AuditLog& audit) : store_(store), audit_(audit) {}

  Incident open(const audit::Actor& actor, const dsr::Regulations& regs, const std::vector<std::string>& categories,
                const NewIncident& in);
  // Appends a timeline event; `contained` and `closed` move the incident.
  // A `notified` event names its recipient (and its regime, when more than
  // one regime of the incident has that recipient). Throws Error(conflict)
  // for a closed incident, a second containment or a close with required
  // notices outstanding; Error(invalid_field) for an event out of order, in
  // the future, or naming an unknown regime or recipient (listing the valid).
  Incident add_event(const audit::Actor& actor, const dsr::Regulations& regs, const std::string& id, const Event& e);
  Incident get(const std::string& id);
  std::vector<Event> timeline(const std::string& id);
  std::vector<Incident> list(const std::string& status);
  std::vector<Deadline> deadlines(const Incident& i, const dsr::Regulations& regs);

  // Every subject whose data a compromised principal or token touched in
  // [from, to), from the audit log up to a freshly signed checkpoint.
  AffectedResult affected_by_access(const audit::Actor& actor, const std::string& id,
                                    const std::set<std::string>& principals, const std::set<std::string>& token_ids,
                                    std::int64_t from_us, std::int64_t to_us);
  // Every active subject holding data in the leaked categories.
  AffectedResult affected_by_categories(const audit::Actor& actor, const std::string& id,
                                        const records::Schema& schema, const std::set<std::string>& categories);
  std::vector<records::SubjectId> affected_subjects(const std::string& id, std::size_t limit,
                                                    const std::optional<records::SubjectId>& after);

 private:
  std::vector<Event> timeline_in(store::Transaction& tx, const std::string& id);
  std::vector<Deadline> deadlines_in(store::Transaction& tx, const Incident& i, const dsr::Regulations& regs);
  AffectedResult store_affected(const audit::Actor& actor, const std::string& id, AffectedResult r,
                                const std::map<std::string, std::set<std::string>>& found, const std::string& how);
  store::Store& store_;
  audit::AuditLog& audit_;
};

}  // namespace custos::breach
