// custos/dsr/dsr.h — data-subject requests: intake, lifecycle, deadlines.
//
//   received -> identity_verified -> in_progress -> completed
//   in_progress | extended -> awaiting_approval -> completed (four eyes on
//   erasure: the policy's dsr.erasure_second_approver; a second principal)
//   any open state -> denied (reason required) | canceled | extended (once
//   per the regime's limit; moves the due date; work resumes from there)
//   in_progress | extended | awaiting_approval -> awaiting_confirmation ->
//   completed (an erasure is fulfilled here but waits for the downstream
//   systems whose confirmation policies/systems.yaml requires; the officer
//   may complete it without them, with a reason)
//
// Every transition is kept in the request's timeline and in the audit log,
// in the same transaction. Fulfilment (export, erasure, ...) is done by the
// service façade, which owns the domain modules; this desk keeps the state.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "custos/audit/audit_log.h"
#include "custos/dsr/regulations.h"
#include "custos/records/records.h"
#include "custos/store/store.h"

namespace custos::dsr {

inline const std::vector<std::string> kTypes = {"access",      "portability", "rectification",     "erasure",
                                                "restriction", "objection",   "opt_out_sale_share"};
// completed_with_exceptions: fulfilled as far as the law allows, with what
// could not be done and why in the report (e.g. an erasure under legal hold).
// awaiting_approval: an erasure one principal asked to complete, waiting for a
// second principal (policy dsr.erasure_second_approver).
// awaiting_confirmation: an erasure fulfilled in the vault whose downstream
// systems have not all confirmed it yet (outbox module).
inline const std::vector<std::string> kStatuses = {"received",  "identity_verified",         "in_progress",
                                                   "extended",  "awaiting_approval",         "completed",
                                                   "completed_with_exceptions", "denied",    "canceled",
                                                   "awaiting_confirmation"};

struct Request {
  std::string id, type, regime, status;
  std::optional<records::SubjectId> subject;  // the first of `subjects`; nullopt: no data held
  // Every subject the identifier matched at intake (duplicates included), in
  // id order. Fulfilment covers all of them unless the officer names which.
  std::vector<records::SubjectId> subjects;
  std::string identified_by;                  // email | phone | external_id (never the value)
  std::string channel;
  std::int64_t received_us = 0, due_us = 0, updated_us = 0;
  std::optional<std::int64_t> confirm_by_us;
  int extensions = 0;
  std::string duplicate_of, denial_reason, changes, report, created_by;
  bool open() const {
    return status != "completed" && status != "completed_with_exceptions" && status != "denied" &&
           status != "canceled";
  }
};

struct TimelineEvent {
  std::int64_t at_us = 0;
  std::string actor, from, to, note;
  std::string sealed_note;  // the requester's words, sealed under the subject's key ("" if none)
};

struct Intake {
  std::string type, regime, identified_by, channel, note;
  std::vector<records::SubjectId> subjects;  // every subject the identifier matches
  std::int64_t received_us = 0;
  std::string changes;  // rectification: JSON of the requested field changes
  // The requester's own words, sealed by the caller under the key of the
  // first of `subjects` (opaque here); kept beside the intake's note.
  std::string sealed_note;
};

struct ListFilter {
  std::string status, type;
  bool overdue = false;
  std::optional<std::int64_t> due_before_us;
  std::int64_t now_us = 0;
  std::size_t limit = 100;
  std::string after_id;  // the page after this request, in (due_at, id) order
};

class Desk {
 public:
  Desk(store::Store& store, audit::AuditLog& audit) : store_(store), audit_(audit) {}

  Request intake(const audit::Actor& actor, const Regulations& regs, const Intake& in);
  // Throws Error(conflict) for an illegal transition or a second extension,
  // Error(invalid_field) for a denial without reason. `report` is stored
  // with the transition (fulfilment results).
  // `in_tx` (if given) runs inside the transition's transaction with the
  // updated request, so what it writes (the outbox's events) commits with
  // the transition or not at all.
  Request transition(const audit::Actor& actor, const Regulations& regs, const std::string& id,
                     const std::string& to, const std::string& note, const std::string& reason,
                     const std::string& report = "",
                     const std::function<void(store::Transaction&, const Request&)>& in_tx = {});
  // Adds a timeline event that changes no status (a downstream system's
  // delivery or confirmation), in the caller's transaction. Throws
  // Error(not_found) for an unknown request.
  void add_note(store::Transaction& tx, const std::string& id, std::int64_t at_us, const std::string& actor,
                const std::string& note);
  // Identity resolution merged subject `from` into `into` (Records::merge
  // calls this inside its transaction, before `from`'s key is destroyed).
  // Every OPEN request that matched `from` follows it: `into` joins its
  // subjects (`from` stays, for its own access log), so fulfilment still
  // covers the data that moved; a request whose first subject was `from`
  // gets `into` as its first subject, its sealed rectification changes
  // re-sealed for `into` by `reseal_changes`. Each followed request gets a
  // timeline note in the same transaction. Closed requests are history and
  // stay as they were. Returns how many requests followed.
  static std::size_t follow_merge(store::Transaction& tx, const records::SubjectId& from,
                                  const records::SubjectId& into, std::int64_t at_us, const std::string& actor,
                                  const std::function<std::string(const std::string& sealed)>& reseal_changes);
  Request get(const std::string& id);
  std::vector<TimelineEvent> timeline(const std::string& id);
  // The same reads inside the caller's transaction, so that a request, its
  // timeline and what other modules keep about it come from one snapshot.
  Request get(store::Transaction& tx, const std::string& id);
  std::vector<TimelineEvent> timeline(store::Transaction& tx, const std::string& id);
  std::vector<Request> list(const ListFilter& filter);

 private:
  store::Store& store_;
  audit::AuditLog& audit_;
};

// Legal transitions, for documentation and tests.
bool transition_allowed(const std::string& from, const std::string& to);

}  // namespace custos::dsr
