#include "custos/dsr/dsr.h"

#include <sodium.h>

#include <algorithm>
#include <set>

#include "custos/error.h"

namespace custos::dsr {
namespace {

using store::Row;
using store::TxMode;

constexpr const char* kColumns =
    "id, type, regime, status, subject_id, identified_by, channel, received_at, due_at, confirm_by, extensions,"
    " duplicate_of, denial_reason, changes, report, created_by, updated_at";

Request from_row(const Row& r) {
  Request q;
  q.id = std::string(r.text(0));
  q.type = std::string(r.text(1));
  q.regime = std::string(r.text(2));
  q.status = std::string(r.text(3));
  if (!r.is_null(4) && r.blob(4).size() == 16) {
    records::SubjectId sid{};
    std::copy(r.blob(4).begin(), r.blob(4).end(), sid.begin());
    q.subject = sid;
  }
  q.identified_by = std::string(r.text(5));
  q.channel = std::string(r.text(6));
  q.received_us = r.integer(7);
  q.due_us = r.integer(8);
  if (!r.is_null(9)) q.confirm_by_us = r.integer(9);
  q.extensions = static_cast<int>(r.integer(10));
  q.duplicate_of = std::string(r.text(11));
  q.denial_reason = std::string(r.text(12));
  q.changes = std::string(r.text(13));
  q.report = std::string(r.text(14));
  q.created_by = std::string(r.text(15));
  q.updated_us = r.integer(16);
  return q;
}

void load_subjects(store::Transaction& tx, Request& q) {
  tx.exec("SELECT subject_id FROM dsr_subjects WHERE request_id = ? ORDER BY subject_id", {q.id}, [&](const Row& r) {
    if (r.blob(0).size() != 16) return;
    records::SubjectId sid{};
    std::copy(r.blob(0).begin(), r.blob(0).end(), sid.begin());
    q.subjects.push_back(sid);
  });
  // Requests taken in before every match was recorded name one subject.
  if (q.subjects.empty() && q.subject) q.subjects.push_back(*q.subject);
}

std::optional<Request> load(store::Transaction& tx, const std::string& id) {
  std::optional<Request> out;
  tx.exec(std::string("SELECT ") + kColumns + " FROM dsr_requests WHERE id = ?", {id},
          [&](const Row& r) { out = from_row(r); });
  if (out) load_subjects(tx, *out);
  return out;
}

void add_event(store::Transaction& tx, const std::string& id, std::int64_t at, const std::string& actor,
               const std::string& from, const std::string& to, const std::string& note,
               const std::string& sealed_note = "") {
  const std::int64_t seq = tx.scalar("SELECT coalesce(max(seq), 0) + 1 FROM dsr_events WHERE request_id = ?", {id}).value_or(1);
  tx.exec("INSERT INTO dsr_events (request_id, seq, at, actor, from_status, to_status, note) VALUES (?, ?, ?, ?, ?, ?, ?)",
          {id, seq, at, actor, from, to, note});
  if (!sealed_note.empty())
    tx.exec("INSERT INTO dsr_event_notes (request_id, seq, sealed) VALUES (?, ?, ?)", {id, seq, sealed_note});
}

// A request matching several subjects names them all in `subject_ids`, which
// the entry commits to (audit/FORMAT.md §1.5) rather than listing: each
// subject's access package then proves its own membership and names no
// other. One subject is named in `subject_id` as usual.
std::vector<std::string> covered_ids(const Request& q) {
  std::vector<std::string> ids;
  if (q.subjects.size() > 1)
    for (const auto& sid : q.subjects) ids.push_back(records::to_hex(sid));
  return ids;
}

bool one_of(const std::vector<std::string>& v, const std::string& x) { return std::find(v.begin(), v.end(), x) != v.end(); }

}  // namespace

bool transition_allowed(const std::string& from, const std::string& to) {
  static const std::vector<std::pair<std::string, std::vector<std::string>>> table = {
      {"received", {"identity_verified", "extended", "denied", "canceled"}},
      {"identity_verified", {"in_progress", "extended", "denied", "canceled"}},
      {"in_progress",
       {"awaiting_approval", "completed", "completed_with_exceptions", "extended", "denied", "canceled",
        "awaiting_confirmation"}},
      {"extended",
       {"identity_verified", "in_progress", "awaiting_approval", "completed", "completed_with_exceptions", "denied",
        "canceled", "awaiting_confirmation"}},
      // The second principal completes, or the request goes back to work.
      {"awaiting_approval", {"in_progress", "completed", "completed_with_exceptions", "denied", "canceled",
                             "awaiting_confirmation"}},
      // Erased already: only completion remains (confirmed, or overridden).
      {"awaiting_confirmation", {"completed", "completed_with_exceptions"}},
  };
  for (const auto& [f, tos] : table)
    if (f == from) return one_of(tos, to);
  return false;
}

Request Desk::intake(const audit::Actor& actor, const Regulations& regs, const Intake& in) {
  if (!one_of(kTypes, in.type)) throw Error(ErrorCode::invalid_field, "field 'type': unknown request type");
  const DsrRules& rules = regs.require_dsr(in.regime);  // lists the valid names
  regs.calendar().check_in_range(in.received_us, "received_at");
  const std::int64_t now = audit_.now_us();
  if (in.received_us > now + 5LL * 60 * 1000000)
    throw Error(ErrorCode::invalid_field, "field 'received_at': in the future");
  Request q;
  std::array<std::uint8_t, 12> raw{};
  randombytes_buf(raw.data(), raw.size());
  char hex[25];
  sodium_bin2hex(hex, sizeof hex, raw.data(), raw.size());
  q.id = std::string("dsr_") + hex;
  q.type = in.type;
  q.regime = rules.key;  // the canonical name, also when an alias was given
  q.status = "received";
  q.subjects = in.subjects;
  std::sort(q.subjects.begin(), q.subjects.end());
  q.subjects.erase(std::unique(q.subjects.begin(), q.subjects.end()), q.subjects.end());
  if (!q.subjects.empty()) q.subject = q.subjects.front();
  q.identified_by = in.identified_by;
  q.channel = in.channel;
  q.received_us = in.received_us;
  // A type may have its own clock (CCPA opt-outs: 15 business days).
  q.due_us = regs.due(rules, in.type, in.received_us);
  q.confirm_by_us = regs.confirm_by(rules, in.received_us);
  q.changes = in.changes;
  q.created_by = actor.principal;
  q.updated_us = now;
  auto tx = store_.begin(TxMode::write);
  if (q.subject) {
    tx->exec("SELECT id FROM dsr_requests WHERE subject_id = ? AND type = ? AND status NOT IN"
             " ('completed', 'completed_with_exceptions', 'denied', 'canceled') ORDER BY received_at LIMIT 1",
             {*q.subject, q.type}, [&](const Row& r) { q.duplicate_of = std::string(r.text(0)); });
  }
  tx->exec("INSERT INTO dsr_requests (id, type, regime, status, subject_id, identified_by, channel, received_at,"
           " due_at, confirm_by, extensions, duplicate_of, denial_reason, changes, report, created_by, updated_at)"
           " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, '', ?, '', ?, ?)",
           {q.id, q.type, q.regime, q.status, q.subject ? store::Param(store::Blob(*q.subject)) : store::Param(),
            q.identified_by, q.channel, q.received_us, q.due_us,
            q.confirm_by_us ? store::Param(*q.confirm_by_us) : store::Param(), q.duplicate_of, q.changes,
            q.created_by, now});
  for (const auto& sid : q.subjects)
    tx->exec("INSERT INTO dsr_subjects (request_id, subject_id) VALUES (?, ?)", {q.id, store::Blob(sid)});
  std::string note = in.note.empty() ? "request received via " + q.channel : in.note;
  if (q.subjects.size() > 1)
    note += "; the identifier matches " + std::to_string(q.subjects.size()) + " subjects, all covered";
  add_event(*tx, q.id, now, actor.principal, "", "received", note, in.sealed_note);
  // Every matched subject is named (subject_ids), so each one's access log
  // shows the request.
  audit::Event event{"dsr.intake", q.subjects.size() == 1 ? records::to_hex(q.subjects[0]) : "", {}, {}, true, "",
                     "request=" + q.id + " type=" + q.type + " regime=" + q.regime +
                         (q.subject ? "" : " no_data_held=1") +
                         (q.subjects.size() > 1 ? " subjects=" + std::to_string(q.subjects.size()) : "") +
                         (q.duplicate_of.empty() ? "" : " duplicate_of=" + q.duplicate_of)};
  event.subject_ids = covered_ids(q);
  audit_.append(*tx, actor, event);
  tx->commit();
  return q;
}

Request Desk::transition(const audit::Actor& actor, const Regulations& regs, const std::string& id,
                         const std::string& to, const std::string& note, const std::string& reason,
                         const std::string& report,
                         const std::function<void(store::Transaction&, const Request&)>& in_tx) {
  if (!one_of(kStatuses, to)) throw Error(ErrorCode::invalid_field, "field 'to': unknown status");
  if (to == "denied" && reason.empty()) throw Error(ErrorCode::invalid_field, "field 'reason': a denial needs a reason");
  if (to == "extended" && reason.empty())
    throw Error(ErrorCode::invalid_field, "field 'reason': an extension needs a reason");
  auto tx = store_.begin(TxMode::write);
  auto q = load(*tx, id);
  if (!q) throw Error(ErrorCode::not_found, "request " + id.substr(0, 40) + " not found");
  if (!transition_allowed(q->status, to))
    throw Error(ErrorCode::conflict, "a request in status '" + q->status + "' cannot move to '" + to + "'");
  const std::int64_t now = audit_.now_us();
  if (to == "extended") {
    const DsrRules* rules = regs.dsr(q->regime);
    const auto extended = rules ? regs.extended_due(*rules, q->type, q->received_us, q->extensions + 1) : std::nullopt;
    if (!extended) throw Error(ErrorCode::conflict, "regime '" + q->regime + "' allows no further extension");
    if (now > q->due_us) throw Error(ErrorCode::conflict, "the request is already overdue; it can no longer be extended");
    // Counted from receipt, as the law counts it: GDPR Art. 12(3) one month
    // plus two further months = receipt + 3 months, then rolled (Reg.
    // 1182/71 Art. 3(4)); CCPA 7021(b) at most 90 days from receipt.
    q->due_us = *extended;
    q->extensions += 1;
  }
  if (to == "denied") q->denial_reason = reason;
  const std::string from = q->status;
  q->status = to;
  q->updated_us = now;
  if (!report.empty()) q->report = report;
  tx->exec("UPDATE dsr_requests SET status = ?, due_at = ?, extensions = ?, denial_reason = ?, report = ?,"
           " updated_at = ? WHERE id = ?",
           {q->status, q->due_us, q->extensions, q->denial_reason, q->report, now, id});
  std::string text = note;
  if (!reason.empty()) text += std::string(text.empty() ? "" : "; ") + "reason: " + reason;
  add_event(*tx, id, now, actor.principal, from, to, text);
  audit::Event event{"dsr.transition", q->subjects.size() == 1 ? records::to_hex(q->subjects[0]) : "", {}, {}, true, "",
                     "request=" + id + " from=" + from + " to=" + to};
  event.subject_ids = covered_ids(*q);
  audit_.append(*tx, actor, event);
  if (in_tx) in_tx(*tx, *q);
  tx->commit();
  return *q;
}

void Desk::add_note(store::Transaction& tx, const std::string& id, std::int64_t at_us, const std::string& actor,
                    const std::string& note) {
  const auto q = load(tx, id);
  if (!q) throw Error(ErrorCode::not_found, "request " + id.substr(0, 40) + " not found");
  add_event(tx, id, at_us, actor, q->status, q->status, note);
}

std::size_t Desk::follow_merge(store::Transaction& tx, const records::SubjectId& from, const records::SubjectId& into,
                               std::int64_t at_us, const std::string& actor,
                               const std::function<std::string(const std::string& sealed)>& reseal_changes) {
  // Open requests naming `from` among their matches, or (taken in before
  // every match was recorded) as their one subject.
  std::set<std::string> ids;
  const auto collect = [&](const Row& r) { ids.insert(std::string(r.text(0))); };
  constexpr const char* kOpen = " AND r.status NOT IN ('completed', 'completed_with_exceptions', 'denied', 'canceled')";
  tx.exec(std::string("SELECT r.id FROM dsr_subjects s JOIN dsr_requests r ON r.id = s.request_id"
                      " WHERE s.subject_id = ?") + kOpen,
          {store::Blob(from)}, collect);
  tx.exec(std::string("SELECT r.id FROM dsr_requests r WHERE r.subject_id = ?") + kOpen, {store::Blob(from)}, collect);
  for (const std::string& id : ids) {
    const auto q = load(tx, id);
    if (!q) continue;
    const auto named = [&](const records::SubjectId& sid) {
      return std::find(q->subjects.begin(), q->subjects.end(), sid) != q->subjects.end();
    };
    // load() names an older request's one subject without a dsr_subjects
    // row: both ids are written, so `from` is not lost once `into` is.
    for (const records::SubjectId& sid : {from, into}) {
      const bool stored = tx.scalar("SELECT count(*) FROM dsr_subjects WHERE request_id = ? AND subject_id = ?",
                                    {id, store::Blob(sid)})
                              .value_or(0) != 0;
      if (!stored) tx.exec("INSERT INTO dsr_subjects (request_id, subject_id) VALUES (?, ?)", {id, store::Blob(sid)});
    }
    if (q->subject && *q->subject == from) {
      // The rectification's changes are sealed under the first subject's key,
      // which the merge destroys.
      const std::string changes = q->changes.empty() ? "" : reseal_changes(q->changes);
      tx.exec("UPDATE dsr_requests SET subject_id = ?, changes = ?, updated_at = ? WHERE id = ?",
              {store::Blob(into), changes, at_us, id});
    }
    add_event(tx, id, at_us, actor, q->status, q->status,
              "subject " + records::to_hex(from) + " was merged into " + records::to_hex(into) +
                  (named(into) ? ", which the request already covers" : "; the request now covers it too"));
  }
  return ids.size();
}

Request Desk::get(store::Transaction& tx, const std::string& id) {
  auto q = load(tx, id);
  if (!q) throw Error(ErrorCode::not_found, "request " + id.substr(0, 40) + " not found");
  return *q;
}

Request Desk::get(const std::string& id) {
  auto tx = store_.begin(TxMode::read);
  return get(*tx, id);
}

std::vector<TimelineEvent> Desk::timeline(store::Transaction& tx, const std::string& id) {
  std::vector<TimelineEvent> out;
  tx.exec("SELECT e.at, e.actor, e.from_status, e.to_status, e.note, n.sealed FROM dsr_events e"
          " LEFT JOIN dsr_event_notes n ON n.request_id = e.request_id AND n.seq = e.seq"
          " WHERE e.request_id = ? ORDER BY e.seq",
          {id}, [&](const Row& r) {
            out.push_back({r.integer(0), std::string(r.text(1)), std::string(r.text(2)), std::string(r.text(3)),
                           std::string(r.text(4)), r.is_null(5) ? std::string() : std::string(r.text(5))});
          });
  return out;
}

std::vector<TimelineEvent> Desk::timeline(const std::string& id) {
  auto tx = store_.begin(TxMode::read);
  return timeline(*tx, id);
}

std::vector<Request> Desk::list(const ListFilter& f) {
  std::string sql = std::string("SELECT ") + kColumns + " FROM dsr_requests WHERE 1 = 1";
  std::vector<store::Param> params;
  if (!f.status.empty()) sql += " AND status = ?", params.emplace_back(f.status);
  if (!f.type.empty()) sql += " AND type = ?", params.emplace_back(f.type);
  if (f.overdue) {
    sql += " AND status NOT IN ('completed', 'completed_with_exceptions', 'denied', 'canceled') AND due_at < ?";
    params.emplace_back(f.now_us);
  }
  if (f.due_before_us) {
    sql += " AND status NOT IN ('completed', 'completed_with_exceptions', 'denied', 'canceled') AND due_at < ?";
    params.emplace_back(*f.due_before_us);
  }
  // Keyset paging in the listing's own order (due date, then id): the page
  // after the request `after_id` (an unknown id gives an empty page).
  if (!f.after_id.empty()) {
    sql += " AND (due_at > (SELECT due_at FROM dsr_requests WHERE id = ?) OR (due_at = (SELECT due_at FROM"
           " dsr_requests WHERE id = ?) AND id > ?))";
    params.emplace_back(f.after_id);
    params.emplace_back(f.after_id);
    params.emplace_back(f.after_id);
  }
  sql += " ORDER BY due_at, id LIMIT ?";
  params.emplace_back(static_cast<std::int64_t>(f.limit));
  std::vector<Request> out;
  auto tx = store_.begin(TxMode::read);
  tx->exec_v(sql, params, [&](const Row& r) { out.push_back(from_row(r)); });
  return out;
}

}  // namespace custos::dsr
