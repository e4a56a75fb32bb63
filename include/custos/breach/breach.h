// custos/breach/breach.h — personal-data breaches and their clocks.
//
//   open -> contained -> authority_notified -> subjects_notified -> closed
//   (authority_notified -> closed when subjects need not be told)
//
// Status changes are events of the incident's timeline (actor, time, type,
// note); an event may not predate the previous one or the discovery, and no
// required step may be skipped. Deadlines are computed per regime from
// policies/regulations.yaml: GDPR's authority clock is discovery + 72 h,
// exact to the minute.
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

inline const std::vector<std::string> kStatuses = {"open", "contained", "authority_notified", "subjects_notified",
                                                   "closed"};
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
};

struct Deadline {
  std::string regime, regime_name, who;  // who: authority | subjects
  std::optional<std::int64_t> due_us;    // nullopt: "without undue delay"
  bool met = false;
  bool required = true;  // false when a residents threshold is not passed
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
};

class Book {
 public:
  Book(store::Store& store, audit::AuditLog& audit) : store_(store), audit_(audit) {}

  Incident open(const audit::Actor& actor, const dsr::Regulations& regs, const std::vector<std::string>& categories,
                const NewIncident& in);
  // Appends a timeline event; a status type moves the incident. Throws
  // Error(conflict) for a skipped step, Error(invalid_field) for an event
  // out of order or in the future.
  Incident add_event(const audit::Actor& actor, const std::string& id, const Event& e);
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
  AffectedResult store_affected(const audit::Actor& actor, const std::string& id, AffectedResult r,
                                const std::map<std::string, std::set<std::string>>& found, const std::string& how);
  store::Store& store_;
  audit::AuditLog& audit_;
};

}  // namespace custos::breach
