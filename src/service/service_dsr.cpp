// Data-subject requests: intake through the blind index, the lifecycle, and
// fulfilment of each request type with its report.
#include <sodium.h>
#include <yaml-cpp/yaml.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "custos/audit/access_package.h"
#include "custos_audit/checkpoint.h"
#include "custos_audit/entry.h"
#include "custos/retention/retention.h"
#include "service_impl.h"

namespace custos::service {
namespace {

constexpr std::int64_t kDayUs = 86400LL * 1000000;

Json request_json(const dsr::Request& q, const dsr::Regulations& regs, std::int64_t now,
                  const std::vector<dsr::TimelineEvent>* timeline) {
  Json out = {{"id", q.id},
              {"type", q.type},
              {"regime", q.regime},
              {"status", q.status},
              {"identified_by", q.identified_by},
              {"channel", q.channel},
              {"received_at", audit::format_time_us(q.received_us)},
              {"due_at", audit::format_time_us(q.due_us)},
              {"due_date", regs.calendar().local_date(q.due_us)},
              {"overdue", q.open() && now > q.due_us},
              {"extensions", q.extensions},
              {"no_data_held", !q.subject.has_value()},
              {"created_by", q.created_by},
              {"updated_at", audit::format_time_us(q.updated_us)}};
  out["subject_id"] = q.subject ? Json(records::to_hex(*q.subject)) : Json(nullptr);
  Json matched = Json::array();
  for (const auto& sid : q.subjects) matched.push_back(records::to_hex(sid));
  out["subject_ids"] = matched;  // every subject the identifier matched
  if (q.confirm_by_us) out["confirm_receipt_by"] = audit::format_time_us(*q.confirm_by_us);
  if (!q.duplicate_of.empty()) {
    out["duplicate"] = true;
    out["duplicate_of"] = q.duplicate_of;
  }
  if (!q.denial_reason.empty()) out["denial_reason"] = q.denial_reason;
  if (!q.report.empty()) out["report"] = Json::parse(q.report, nullptr, false);
  if (const dsr::DsrRules* rules = regs.dsr(q.regime)) out["regime_name"] = rules->name;
  if (timeline) {
    Json t = Json::array();
    for (const auto& e : *timeline)
      t.push_back({{"at", audit::format_time_us(e.at_us)}, {"actor", e.actor}, {"from", e.from}, {"to", e.to},
                   {"note", e.note}});
    out["timeline"] = t;
  }
  return out;
}

// True if a spreadsheet would read `v` as a formula: it starts with =, @,
// tab or CR, or with + or - and is not just a number or phone number
// (OWASP's CSV injection list; "+49 151 1234567" and "-12.50" stay as they are).
bool reads_as_formula(std::string_view v) {
  if (v.empty()) return false;
  if (v.front() == '=' || v.front() == '@' || v.front() == '\t' || v.front() == '\r') return true;
  if (v.front() != '+' && v.front() != '-') return false;
  return v.substr(1).find_first_not_of("0123456789 .()-") != std::string_view::npos;
}

// One CSV cell (RFC 4180 quoting). A cell that would read as a formula gets
// a leading apostrophe, so a value a caller stored (a touchpoint's type, a
// name) cannot run as a formula where the subject or officer opens the file.
std::string csv_escape(const std::string& v) {
  const std::string cell = reads_as_formula(v) ? "'" + v : v;
  if (cell.find_first_of(",\"\n\r") == std::string::npos) return cell;
  std::string out = "\"";
  for (char c : cell) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

// A request as its export shows it. Once completed, the package covers only
// the subjects the officer covered (the report's `subjects`): a matched
// subject left out is, to this requester, another person, so neither their
// data nor their id goes into the package, and the report's exceptions
// about them are dropped. Before completion every matched subject is in it
// (the officer's copy to review).
dsr::Request package_view(dsr::Request q) {
  if (q.report.empty()) return q;
  Json report = Json::parse(q.report, nullptr, false);
  if (!report.is_object() || !report.contains("subjects") || !report["subjects"].is_array()) return q;
  std::set<std::string> covered;
  for (const auto& id : report["subjects"])
    if (id.is_string()) covered.insert(id.get<std::string>());
  std::erase_if(q.subjects, [&](const records::SubjectId& sid) { return !covered.count(records::to_hex(sid)); });
  q.subject = q.subjects.empty() ? std::nullopt : std::optional<records::SubjectId>(q.subjects.front());
  if (report.contains("exceptions") && report["exceptions"].is_array()) {
    Json kept = Json::array();
    for (const auto& e : report["exceptions"])
      if (!e.is_object() || !e.contains("subject_id") || !e["subject_id"].is_string() ||
          covered.count(e["subject_id"].get<std::string>()))
        kept.push_back(e);
    report["exceptions"] = kept;
  }
  q.report = report.dump();
  return q;
}

Json downstream_systems(const std::filesystem::path& file) {
  Json out = Json::array();
  try {
    const YAML::Node root = YAML::LoadFile(file.string());
    for (const auto& n : root["systems"])
      out.push_back({{"name", n["name"].as<std::string>()},
                     {"recipient", n["recipient"].as<std::string>("")},
                     {"categories", n["categories"] ? n["categories"].as<std::vector<std::string>>() : std::vector<std::string>{}},
                     {"purposes", n["purposes"] ? n["purposes"].as<std::vector<std::string>>() : std::vector<std::string>{}}});
  } catch (const YAML::Exception&) {
    throw Error(ErrorCode::invalid_argument, "cannot read " + file.string());
  }
  return out;
}

}  // namespace

Json Service::dsr_create(const Caller& caller, const Json& body) {
  const auto pol = impl_->current_policy();
  impl_->authorize(caller, *pol, "dsr", "dsr.intake", false);
  only_keys(body, {"type", "regime", "identifier", "channel", "received_at", "note", "changes"});
  dsr::Intake in;
  in.type = required_string(body, "type", 32);
  in.regime = required_string(body, "regime", 32);
  in.channel = body.contains("channel") ? required_string(body, "channel", 32) : "api";
  if (body.contains("note")) in.note = required_string(body, "note", 1000);
  const std::int64_t now = impl_->audit->now_us();
  in.received_us = parse_time_or_now(body, "received_at", now);
  if (!body.contains("identifier") || !body["identifier"].is_object() || body["identifier"].size() != 1)
    throw Error(ErrorCode::invalid_field, "field 'identifier': give exactly one of email, phone, external_id");
  // Not `*items().begin()` bound to a reference: that proxy is a temporary
  // gone at the end of the statement (ASan stack-use-after-scope, found by
  // fuzz_service_json); key and value are taken from a named iterator.
  const auto identifier = body["identifier"].begin();
  const std::string field = identifier.key();
  const auto& value = identifier.value();
  if (field != "email" && field != "phone" && field != "external_id")
    throw Error(ErrorCode::invalid_field, "field 'identifier': use email, phone or external_id");
  if (!value.is_string()) throw Error(ErrorCode::invalid_field, "field 'identifier." + field + "': expected a string");
  in.identified_by = field;
  // Every match: an identifier shared by duplicates names them all, so no
  // subject's data is left out of an export or an erasure unseen.
  in.subjects = impl_->records->find(field, value.get<std::string>());
  std::sort(in.subjects.begin(), in.subjects.end());
  const std::optional<records::SubjectId> first =
      in.subjects.empty() ? std::nullopt : std::optional<records::SubjectId>(in.subjects.front());
  if (in.type == "rectification") {
    if (!body.contains("changes")) throw Error(ErrorCode::invalid_field, "field 'changes': rectification needs the corrections");
    const FieldChanges changes = parse_fields(body["changes"], impl_->schema, true);
    for (const auto& [name, v] : changes.set) impl_->schema.validate(impl_->schema.require(name), v);
    // Only the field names are kept in the request; values are sealed by the
    // subject's key when applied. The corrections are kept sealed here too.
    if (first) in.changes = body["changes"].dump();
  } else if (body.contains("changes")) {
    throw Error(ErrorCode::invalid_argument, "property 'changes' is only for rectification");
  }
  // Never store the corrections in clear: keep only names until applied.
  std::string sealed_changes;
  if (!in.changes.empty() && first) {
    sealed_changes = impl_->seal_for_subject(*first, "dsr.changes", in.changes);
    in.changes = sealed_changes;
  }
  const auto q = impl_->dsr->intake(impl_->actor(caller), *impl_->current_regulations(), in);
  const auto timeline = impl_->dsr->timeline(q.id);
  return request_json(q, *impl_->current_regulations(), now, &timeline);
}

Json Service::dsr_list(const Caller& caller, const std::map<std::string, std::string>& query) {
  impl_->authorize(caller, *impl_->current_policy(), "dsr", "dsr.list", false);
  dsr::ListFilter f;
  f.now_us = impl_->audit->now_us();
  for (const auto& [key, value] : query) {
    if (key == "status") {
      if (std::find(dsr::kStatuses.begin(), dsr::kStatuses.end(), value) == dsr::kStatuses.end())
        throw Error(ErrorCode::invalid_argument, "parameter 'status': unknown status");
      f.status = value;
    } else if (key == "type") {
      f.type = value;
    } else if (key == "overdue") {
      if (value != "true" && value != "false") throw Error(ErrorCode::invalid_argument, "parameter 'overdue' must be true or false");
      f.overdue = value == "true";
    } else if (key == "due_within_days") {
      if (value.empty() || value.size() > 4 || value.find_first_not_of("0123456789") != std::string::npos)
        throw Error(ErrorCode::invalid_argument, "parameter 'due_within_days' must be a number of days");
      f.due_before_us = f.now_us + std::stoll(value) * kDayUs;
    } else if (key == "limit") {
      if (value.empty() || value.size() > 4 || value.find_first_not_of("0123456789") != std::string::npos || value == "0")
        throw Error(ErrorCode::invalid_argument, "parameter 'limit' must be 1-1000");
      f.limit = std::min<std::size_t>(1000, std::stoul(value));
    } else if (key == "after") {
      // A request id (the previous page's last): "dsr_" and 24 lowercase hex digits.
      if (value.size() != 28 || value.rfind("dsr_", 0) != 0 ||
          value.find_first_not_of("0123456789abcdef", 4) != std::string::npos)
        throw Error(ErrorCode::invalid_argument, "parameter 'after' must be a request id (the previous page's last)");
      f.after_id = value;
    } else {
      throw Error(ErrorCode::invalid_argument, "unknown parameter '" + util::printable_prefix(key) + "'");
    }
  }
  Json list = Json::array();
  for (const auto& q : impl_->dsr->list(f)) list.push_back(request_json(q, *impl_->current_regulations(), f.now_us, nullptr));
  return {{"requests", list}, {"count", list.size()}};
}

Json Service::Impl::request_view(const std::string& request_id) {
  auto tx = store->begin(store::TxMode::read);
  const auto q = dsr->get(*tx, request_id);
  auto timeline = dsr->timeline(*tx, q.id);
  // The requester's sealed words, shown while the subject's key exists.
  for (auto& e : timeline) {
    if (e.sealed_note.empty()) continue;
    std::string words;
    try {
      if (q.subject) words = open_for_subject(*q.subject, "dsr.note", e.sealed_note);
    } catch (const Error&) {
      words.clear();
    }
    e.note += words.empty() ? "; the requester's note is no longer readable (its subject was erased or merged)"
                            : ": " + words;
  }
  Json out = request_json(q, *current_regulations(), audit->now_us(), &timeline);
  out["downstream"] = downstream_json(*tx, q.id);
  return out;
}

Json Service::dsr_get(const Caller& caller, std::string_view id) {
  impl_->authorize(caller, *impl_->current_policy(), "dsr", "dsr.read", false);
  return impl_->request_view(std::string(id));
}

Json Service::dsr_transition(const Caller& caller, std::string_view id_text, const Json& body) {
  const auto pol = impl_->current_policy();
  impl_->authorize(caller, *pol, "dsr", "dsr.transition", false);
  only_keys(body, {"to", "note", "reason", "subjects"});
  const std::string id(id_text);
  const std::string to = required_string(body, "to", 32);
  const std::string note = body.contains("note") ? required_string(body, "note", 2000) : "";
  const std::string reason = body.contains("reason") ? required_string(body, "reason", 2000) : "";
  if (body.contains("subjects") && to != "completed")
    throw Error(ErrorCode::invalid_argument, "property 'subjects' is only for completing a request");
  if (to == "completed_with_exceptions")
    throw Error(ErrorCode::invalid_argument, "ask for 'completed': the fulfilment decides whether there are exceptions");
  if (to == "awaiting_approval")
    throw Error(ErrorCode::invalid_argument,
                "ask for 'completed': a request awaits approval when the policy asks for a second approver");
  const auto actor = impl_->actor(caller);
  // The answer is the request as it stands once the transition committed,
  // read in one snapshot (see Impl::request_view).
  const auto respond = [&](const dsr::Request& q) { return impl_->request_view(q.id); };
  if (to != "completed") return respond(impl_->dsr->transition(actor, *impl_->current_regulations(), id, to, note, reason));

  // A request is completed by asking for `completed`; whether it ends
  // `completed_with_exceptions` is the fulfilment's finding, not the caller's.
  const auto q = impl_->dsr->get(id);
  if (q.status == "awaiting_confirmation") {
    // Erased already; downstream systems' confirmations are awaited. The
    // officer may complete without them, saying why.
    const auto missing = impl_->missing_confirmations(id);
    std::string names;
    for (const auto& m : missing) names += (names.empty() ? "" : ", ") + m;
    if (!missing.empty() && reason.empty())
      throw Error(ErrorCode::conflict, "waiting for the confirmation of " + names +
                                           "; give a 'reason' to complete without it");
    const Json report = q.report.empty() ? Json::object() : Json::parse(q.report, nullptr, false);
    const std::string final_status =
        report.is_object() && report.contains("exceptions") && !report["exceptions"].empty() ? "completed_with_exceptions"
                                                                                             : "completed";
    std::string text = note;
    if (!missing.empty()) text = (text.empty() ? "" : text + "; ") + "completed without the confirmation of " + names;
    return respond(impl_->dsr->transition(actor, *impl_->current_regulations(), id, final_status, text, reason));
  }
  if (!dsr::transition_allowed(q.status, to))
    throw Error(ErrorCode::conflict, "a request in status '" + q.status + "' cannot move to 'completed'");
  const auto timeline = impl_->dsr->timeline(id);
  if (std::none_of(timeline.begin(), timeline.end(), [](const auto& e) { return e.to == "identity_verified"; }))
    throw Error(ErrorCode::conflict, "the requester's identity has not been verified");

  // Which matched subjects it covers: all, or those the officer names (the
  // rest become exceptions, with the reason).
  std::vector<records::SubjectId> covered = q.subjects, excluded;
  if (body.contains("subjects")) {
    if (!body["subjects"].is_array() || body["subjects"].empty())
      throw Error(ErrorCode::invalid_field, "field 'subjects': a non-empty list of the request's subject ids");
    if (reason.empty())
      throw Error(ErrorCode::invalid_field, "field 'reason': say why some matched subjects are left out");
    std::set<records::SubjectId> named;
    for (const auto& item : body["subjects"]) {
      if (!item.is_string()) throw Error(ErrorCode::invalid_field, "field 'subjects': subject ids as strings");
      const records::SubjectId sid = records::parse_subject_id(item.get<std::string>());
      if (std::find(q.subjects.begin(), q.subjects.end(), sid) == q.subjects.end())
        throw Error(ErrorCode::invalid_field, "field 'subjects': " + records::to_hex(sid) +
                                                  " is not a subject this request matched");
      named.insert(sid);
    }
    covered.assign(named.begin(), named.end());
    for (const auto& sid : q.subjects)
      if (!named.count(sid)) excluded.push_back(sid);
  }

  if (q.type == "erasure") {
    // Four eyes: the first principal's completion waits for a second one.
    if (pol->dsr_workflow().erasure_second_approver) {
      if (q.status != "awaiting_approval") {
        std::string ask = note.empty() ? "completion asked; a second principal must approve" : note;
        if (!excluded.empty()) ask += "; proposed to leave out " + std::to_string(excluded.size()) + " matched subject(s)";
        return respond(impl_->dsr->transition(actor, *impl_->current_regulations(), id, "awaiting_approval", ask, reason));
      }
      std::string asked_by;
      for (const auto& e : timeline)
        if (e.to == "awaiting_approval") asked_by = e.actor;
      if (asked_by == actor.principal)
        impl_->deny(caller, "dsr.transition", ErrorCode::second_approver_required,
                    "four eyes: another principal must approve completing this erasure",
                    q.subject ? records::to_hex(*q.subject) : "");
    }
    // A hold blocks the erasure; the policy may say to deny it outright.
    if (pol->dsr_workflow().deny_erasure_under_hold) {
      std::size_t held = 0;
      for (const auto& sid : covered) held += impl_->records->metadata(sid).legal_hold ? 1 : 0;
      if (held > 0) {
        const std::string basis =
            "legal hold on " + std::to_string(held) + " of the matched subjects: erasure is not required where "
            "processing is necessary for the establishment, exercise or defence of legal claims (GDPR Art. 17(3)(e))";
        return respond(impl_->dsr->transition(actor, *impl_->current_regulations(), id, "denied", note, basis));
      }
    }
  }
  const Json fulfilled = impl_->fulfil(actor, *pol, q, covered, excluded, reason);
  std::string final_status =
      fulfilled.contains("exceptions") && !fulfilled["exceptions"].empty() ? "completed_with_exceptions" : "completed";
  std::string text = note;
  if (q.status == "awaiting_approval") text = (text.empty() ? "" : text + "; ") + "approved by a second principal";
  // Downstream systems (policies/systems.yaml) are told in the completion's
  // own transaction; an erasure a system must confirm waits for it.
  std::string changes;
  if (q.type == "rectification" && q.subject && !q.changes.empty())
    changes = impl_->open_for_subject(*q.subject, "dsr.changes", q.changes);
  if (q.type == "erasure" && fulfilled.contains("erased") && !fulfilled["erased"]["subjects"].empty()) {
    const auto sys = impl_->current_systems();
    if (std::any_of(sys->all().begin(), sys->all().end(),
                    [](const outbox::System& s) { return s.confirmation_required && s.receives("erasure"); })) {
      final_status = "awaiting_confirmation";
      text = (text.empty() ? "" : text + "; ") + "erased; waiting for the confirmation of downstream systems";
    }
  }
  const auto done = impl_->dsr->transition(
      actor, *impl_->current_regulations(), id, final_status, text, reason, fulfilled.dump(),
      [&](store::Transaction& tx, const dsr::Request& updated) { impl_->enqueue_dsr_events(tx, updated, fulfilled, changes); });
  sodium_memzero(changes.data(), changes.size());
  impl_->notify_outbox();
  return respond(done);
}

Json Service::Impl::fulfil(const audit::Actor& actor, const access::Policy& pol, const dsr::Request& q,
                           const std::vector<records::SubjectId>& covered,
                           const std::vector<records::SubjectId>& excluded, const std::string& reason) {
  Json report = {{"type", q.type}, {"completed_at", audit::format_time_us(audit->now_us())}};
  if (q.subjects.empty()) {
    report["no_data_held"] = true;
    report["summary"] = "no personal data is held on the identifier given";
    return report;
  }
  Json subject_ids = Json::array();
  for (const auto& sid : covered) subject_ids.push_back(records::to_hex(sid));
  report["subjects"] = subject_ids;
  // Matched subjects the officer left out are exceptions of every type.
  Json exceptions = Json::array();
  for (const auto& sid : excluded)
    exceptions.push_back({{"record", "subject"}, {"subject_id", records::to_hex(sid)},
                          {"basis", "left out by the officer"}, {"detail", reason}});
  const std::filesystem::path dir = policy_dir();
  if (q.type == "access" || q.type == "portability") {
    report["export"] = "GET /v1/dsr/" + q.id + "/export";
    report["summary"] = "export prepared for the subject";
  } else if (q.type == "rectification") {
    // The corrections are sealed under the request's first subject's key
    // (after a merge, the survivor's: dsr::Desk::follow_merge).
    if (!q.subject) throw Error(ErrorCode::conflict, "the request names no subject; nothing to rectify");
    const Json changes = Json::parse(open_for_subject(*q.subject, "dsr.changes", q.changes));
    const FieldChanges c = parse_fields(changes, schema, true);
    std::size_t applied = 0;
    for (const auto& sid : covered) {
      if (records->metadata(sid).status != "active") continue;
      // The matched subjects may share the corrected identifiers; any other
      // subject holding them is a duplicate_subject refusal, as for PATCH.
      try {
        records->update(actor, sid, c.set, c.remove, q.subjects);
      } catch (const records::DuplicateSubject& e) {
        // Nothing was applied (the first update refuses for every subject alike).
        audit->append_now(actor, {"subject.update", records::to_hex(sid), {}, {}, false, code_name(e.code()),
                                  "request=" + q.id, e.subject_ids()});
        throw;
      }
      ++applied;
    }
    if (applied == 0) throw Error(ErrorCode::conflict, "the subject was erased; nothing to rectify");
    Json fields = Json::array();
    for (const auto& [name, v] : c.set) fields.push_back(name);
    for (const auto& name : c.remove) fields.push_back(name);
    report["fields_changed"] = fields;
    report["notify_downstream"] = downstream_systems(dir / "systems.yaml");
  } else if (q.type == "erasure") {
    // Every erasure report has the same keys; only their contents differ.
    Json retained = Json::array();
    const auto policy = retention::Policy::load(dir / "retention.yaml");
    std::set<std::string> fields_erased;
    Json erased_ids = Json::array();
    std::int64_t index_entries = 0, touchpoint_types = 0;
    std::size_t held = 0, already = 0, merged = 0;
    for (const auto& sid : covered) {
      const std::string hex = records::to_hex(sid);
      // Orders outlive an erasure for their retention period (policies/retention.yaml).
      const auto orders = records->orders(sid);
      if (!orders.empty() && policy.orders.period_us() > 0) {
        std::int64_t last = 0;
        for (const auto& o : orders) last = std::max(last, o.at_us);
        retained.push_back({{"record", "orders"}, {"subject_id", hex}, {"count", orders.size()},
                            {"basis", policy.orders.basis},
                            {"until", current_regulations()->calendar().local_date(last + policy.orders.period_us())}});
      }
      const records::Subject meta = records->metadata(sid);
      if (meta.legal_hold) {
        ++held;
        retained.push_back({{"record", "subject"}, {"subject_id", hex}, {"basis", "legal hold"},
                            {"until", "the hold is lifted"}});
        exceptions.push_back({{"record", "subject"}, {"subject_id", hex}, {"basis", "legal hold"},
                              {"detail", "nothing was erased while the hold stands; erase again once it is lifted"}});
      } else if (meta.status == "active") {
        const auto r = records->erase(actor, sid);
        fields_erased.insert(r.fields_erased.begin(), r.fields_erased.end());
        index_entries += r.index_entries_removed;
        touchpoint_types += r.touchpoint_types_erased;
        erased_ids.push_back(hex);
      } else if (meta.status == "merged") {
        ++merged;  // its data moved to the survivor, which the request covers (follow_merge)
      } else {
        ++already;
      }
    }
    report["erased"] = {{"subjects", erased_ids},
                        {"fields", fields_erased},
                        {"blind_index_entries", index_entries},
                        {"touchpoint_notes", erased_ids.empty()
                                                 ? (held > 0 ? "kept (legal hold)" : "already crypto-shredded")
                                                 : "crypto-shredded (the subject's key is destroyed)"},
                        {"touchpoint_types_erased", touchpoint_types},
                        {"consent_history", "kept as proof of consent (pseudonymous): the vault's evidence of each event;"
                                             " the details callers put in its proof erased"}};
    std::string note;
    if (already > 0) note = std::to_string(already) + " matched subject(s) were already erased";
    if (merged > 0)
      note += (note.empty() ? "" : "; ") + std::to_string(merged) +
              " matched subject(s) were merged into another subject (their data went with it)";
    if (!note.empty()) report["erased"]["note"] = note;
    report["retained"] = retained;
    // Only systems with something to act on are told.
    report["notify_downstream"] = erased_ids.empty() ? Json::array() : downstream_systems(dir / "systems.yaml");
  } else if (q.type == "restriction") {
    for (const auto& sid : covered)
      if (records->metadata(sid).status == "active") records->set_flags(actor, sid, std::nullopt, true);
    report["restricted"] = true;
    report["summary"] = "processing restricted to storage and legal claims until lifted";
    report["notify_downstream"] = downstream_systems(dir / "systems.yaml");
  } else if (q.type == "objection" || q.type == "opt_out_sale_share") {
    const bool sale_only = q.type == "opt_out_sale_share";
    std::set<std::string> withdrawn;
    for (const auto& sid : covered)
      for (const auto& e : consent->withdraw_all(actor, pol, sid, sale_only, "api", Json({{"dsr_request", q.id}}).dump()))
        withdrawn.insert(e.purpose + "/" + e.channel);
    report["withdrawn"] = withdrawn;
  }
  report["exceptions"] = exceptions;
  return report;
}

std::string Service::Impl::seal_for_subject(const records::SubjectId& id, const std::string& what,
                                            const std::string& plaintext) {
  return records->seal_note(id, what, plaintext);
}

std::string Service::Impl::open_for_subject(const records::SubjectId& id, const std::string& what,
                                            const std::string& sealed) {
  return records->open_note(id, what, sealed);
}

namespace {

// Buffers output into chunks for the sink; stops the export when the reader
// is gone (the sink returns false).
class ChunkWriter {
 public:
  struct ReaderGone {};
  explicit ChunkWriter(const std::function<bool(std::string_view)>& sink) : sink_(sink) { buffer_.reserve(kChunk); }
  void put(std::string_view text) {
    buffer_.append(text);
    if (buffer_.size() >= kChunk) flush();
  }
  void flush() {
    if (buffer_.empty()) return;
    if (!sink_(buffer_)) throw ReaderGone{};
    buffer_.clear();
  }

 private:
  static constexpr std::size_t kChunk = 64 * 1024;
  const std::function<bool(std::string_view)>& sink_;
  std::string buffer_;
};

// One JSON array written element by element: "[a,b,...]".
class ArrayWriter {
 public:
  explicit ArrayWriter(ChunkWriter& out) : out_(out) { out_.put("["); }
  void add(const Json& item) {
    out_.put(first_ ? "" : ",");
    out_.put(item.dump());
    first_ = false;
  }
  void close() { out_.put("]"); }

 private:
  ChunkWriter& out_;
  bool first_ = true;
};

// One CSV table written row by row (RFC 4180 line ends).
class CsvWriter {
 public:
  CsvWriter(ChunkWriter& out, const std::vector<std::string>& header) : out_(out) { row(header); }
  void row(const std::vector<std::string>& cells) {
    for (std::size_t i = 0; i < cells.size(); ++i) {
      if (i) out_.put(",");
      out_.put(csv_escape(cells[i]));
    }
    out_.put("\r\n");
  }

 private:
  ChunkWriter& out_;
};

const std::vector<std::string> kExportTables = {"fields", "touchpoints", "orders", "consent_history", "access_log"};

}  // namespace

void Service::dsr_export(const Caller& caller, std::string_view id_text, const ExportFormat& format,
                         const std::function<bool(std::string_view)>& write) {
  const auto pol = impl_->current_policy();
  // The purpose dsr_fulfilment is required (policy: required_for dsr.export).
  impl_->authorize(caller, *pol, "dsr", "dsr.export", true);
  const bool csv_out = format.format == "csv";
  if (!csv_out && format.format != "json")
    throw Error(ErrorCode::invalid_argument, "parameter 'format': json or csv");
  if (csv_out && std::find(kExportTables.begin(), kExportTables.end(), format.table) == kExportTables.end())
    throw Error(ErrorCode::invalid_argument,
                "parameter 'table': with format=csv, one of fields, touchpoints, orders, consent_history, access_log");
  if (!csv_out && !format.table.empty())
    throw Error(ErrorCode::invalid_argument, "parameter 'table' is only for format=csv");
  const auto q = package_view(impl_->dsr->get(std::string(id_text)));
  if (q.type != "access" && q.type != "portability")
    throw Error(ErrorCode::conflict, "only access and portability requests have an export");
  if (q.status == "received" || q.status == "denied" || q.status == "canceled")
    throw Error(ErrorCode::conflict, "the request must be identity-verified and not denied or canceled");
  const std::int64_t now = impl_->audit->now_us();
  const auto actor = impl_->actor(caller);
  // Everything decrypted, for the subject (Art. 15 / 20): all schema fields.
  records::ReadSpec spec;
  for (const auto& f : impl_->schema.fields()) spec.fields.push_back(f.name);
  spec.operation = "dsr.export";
  const auto active = [&](const records::SubjectId& sid) { return impl_->records->metadata(sid).status == "active"; };

  ChunkWriter out(write);
  try {
    // Fields: each active subject's, read (and audited) before they leave.
    const auto write_subject = [&](const records::SubjectId& sid, const std::function<void(const Json&)>& emit) {
      if (!active(sid)) {
        // Erased, or merged into another subject (whose data the request
        // then covers too: dsr::Desk::follow_merge).
        const std::string status = impl_->records->metadata(sid).status;
        emit({{"id", records::to_hex(sid)}, {"status", status}, {"fields", Json::object()}});
        return;
      }
      const records::Subject s = impl_->records->read(actor, sid, spec);
      counters_.decryptions += s.fields.size();
      Json fields = Json::object();
      for (const auto& [k, v] : s.fields) fields[k] = v;
      emit({{"id", records::to_hex(sid)}, {"status", "active"}, {"created_at", audit::format_time_us(s.created_us)},
            {"fields", std::move(fields)}});
    };
    const auto each_touchpoint = [&](const std::function<void(const records::SubjectId&, const records::Touchpoint&)>& f) {
      for (const auto& sid : q.subjects) {
        if (!active(sid)) continue;
        impl_->records->for_each_touchpoint(actor, sid, true, [&](const records::Touchpoint& tp) {
          f(sid, tp);
          return true;
        });
      }
    };
    const auto each_order = [&](const std::function<void(const records::SubjectId&, const records::Order&)>& f) {
      for (const auto& sid : q.subjects)
        for (const auto& o : impl_->records->orders(sid)) f(sid, o);
    };
    const auto each_consent = [&](const std::function<void(const records::SubjectId&, const consent::Event&)>& f) {
      for (const auto& sid : q.subjects)
        for (const auto& e : impl_->consent->history(sid)) f(sid, e);
    };
    // The subjects' own access log, each entry with an inclusion proof
    // against one signed checkpoint: `custos-audit verify-inclusion`.
    const auto cp = audit::access_package_checkpoint(*impl_->audit);
    const auto each_access = [&](const std::function<void(const auditfmt::Entry&)>& f) {
      std::set<std::uint64_t> seen;  // an entry naming two matched subjects is given once
      for (const auto& sid : q.subjects) {
        audit::Query aq;
        aq.subject_id = records::to_hex(sid);
        aq.limit = 1000;
        for (;;) {
          const auto page = impl_->audit->query(aq);
          for (const auto& e : page)
            if (e.seq < cp.size && (q.subjects.size() == 1 || seen.insert(e.seq).second)) f(e);
          if (page.size() < aq.limit) break;
          aq.after_seq = page.back().seq;
        }
      }
    };

    if (csv_out) {
      if (format.table == "fields") {
        CsvWriter t(out, {"subject_id", "field", "value"});
        for (const auto& sid : q.subjects)
          write_subject(sid, [&](const Json& subj) {
            for (const auto& [k, v] : subj["fields"].items()) t.row({subj["id"], k, v.get<std::string>()});
          });
      } else if (format.table == "touchpoints") {
        CsvWriter t(out, {"subject_id", "id", "channel", "type", "at", "notes"});
        each_touchpoint([&](const records::SubjectId& sid, const records::Touchpoint& tp) {
          t.row({records::to_hex(sid), tp.id, tp.channel, tp.type, audit::format_time_us(tp.at_us), tp.notes.value_or("")});
        });
      } else if (format.table == "orders") {
        CsvWriter t(out, {"subject_id", "id", "amount_minor", "currency", "at"});
        each_order([&](const records::SubjectId& sid, const records::Order& o) {
          t.row({records::to_hex(sid), o.id, std::to_string(o.amount_minor), o.currency, audit::format_time_us(o.at_us)});
        });
      } else if (format.table == "consent_history") {
        CsvWriter t(out, {"subject_id", "purpose", "channel", "event", "status", "at", "source", "lawful_basis",
                          "notice_version"});
        each_consent([&](const records::SubjectId& sid, const consent::Event& e) {
          t.row({records::to_hex(sid), e.purpose, e.channel, e.event, e.status, audit::format_time_us(e.at_us), e.source,
                 e.lawful_basis, e.notice_version});
        });
      } else {
        CsvWriter t(out, {"seq", "time", "principal", "role", "purpose", "operation", "outcome", "fields"});
        each_access([&](const auditfmt::Entry& e) {
          std::string fields;
          for (const auto& f : e.fields) fields += (fields.empty() ? "" : " ") + f;
          t.row({std::to_string(e.seq), e.time, e.principal, e.role, e.purpose, e.operation, e.outcome, fields});
        });
      }
      out.flush();
      return;
    }

    const std::string request = request_json(q, *impl_->current_regulations(), now, nullptr).dump();
    out.put("{\"request\":" + request);
    out.put(",\"controller\":" + Json(impl_->current_regulations()->controller()).dump());
    out.put(",\"generated_at\":" + Json(audit::format_time_us(now)).dump());
    if (q.subjects.empty()) {
      out.put(",\"no_data_held\":true}");
      out.flush();
      return;
    }
    // `subject` is the first matched subject, `subjects` all of them; every
    // record below carries the subject_id it belongs to.
    std::set<std::string> categories;
    out.put(",\"subjects\":");
    ArrayWriter subjects(out);
    Json first;
    for (const auto& sid : q.subjects)
      write_subject(sid, [&](const Json& subj) {
        for (const auto& [k, v] : subj["fields"].items()) categories.insert(impl_->schema.require(k).category);
        if (first.is_null()) first = subj;
        subjects.add(subj);
      });
    subjects.close();
    out.put(",\"subject\":" + first.dump());
    out.put(",\"touchpoints\":");
    ArrayWriter tps(out);
    each_touchpoint([&](const records::SubjectId& sid, const records::Touchpoint& tp) {
      tps.add({{"subject_id", records::to_hex(sid)}, {"id", tp.id}, {"channel", tp.channel}, {"type", tp.type},
               {"at", audit::format_time_us(tp.at_us)}, {"notes", tp.notes ? Json(*tp.notes) : Json(nullptr)}});
    });
    tps.close();
    out.put(",\"orders\":");
    ArrayWriter orders(out);
    each_order([&](const records::SubjectId& sid, const records::Order& o) {
      orders.add({{"subject_id", records::to_hex(sid)}, {"id", o.id}, {"amount_minor", o.amount_minor},
                  {"currency", o.currency}, {"at", audit::format_time_us(o.at_us)}});
    });
    orders.close();
    out.put(",\"consent_history\":");
    ArrayWriter history(out);
    each_consent([&](const records::SubjectId& sid, const consent::Event& e) {
      history.add({{"subject_id", records::to_hex(sid)}, {"purpose", e.purpose}, {"channel", e.channel},
                   {"event", e.event}, {"status", e.status}, {"at", audit::format_time_us(e.at_us)},
                   {"source", e.source}, {"lawful_basis", e.lawful_basis}, {"notice_version", e.notice_version}});
    });
    history.close();
    // Disclosures: recipients of the categories the subjects have data in.
    out.put(",\"disclosures\":");
    ArrayWriter disclosures(out);
    for (const auto& sys : downstream_systems(impl_->policy_dir() / "systems.yaml"))
      for (const auto& c : sys["categories"])
        if (categories.count(c.get<std::string>())) {
          disclosures.add(sys);
          break;
        }
    disclosures.close();
    // Each subject's own access log (audit/FORMAT.md §5): bundles proven
    // against one checkpoint, an entry covering many subjects carrying only
    // this subject's membership opening, so nothing names another subject
    // (finding 7). `access_log` is the first matched subject's,
    // `further_access_logs` the others'; each verifies with
    // `custos-audit verify-package`.
    const auto write_access_log = [&](const records::SubjectId& sid) {
      const std::string hex = records::to_hex(sid);
      out.put("{\"verifier_key\":" + Json(impl_->audit->verifier_key()).dump() + ",\"checkpoint\":" +
              Json(cp.note).dump() + ",\"tree_size\":" + std::to_string(cp.size) +
              ",\"subject_id\":" + Json(hex).dump() + ",\"entries\":");
      ArrayWriter entries(out);
      audit::for_each_access_bundle(*impl_->audit, hex, cp, [&](Json b) { entries.add(b); });
      entries.close();
      out.put("}");
    };
    out.put(",\"access_log\":");
    write_access_log(q.subjects.front());
    if (q.subjects.size() > 1) {
      out.put(",\"further_access_logs\":[");
      for (std::size_t i = 1; i < q.subjects.size(); ++i) {
        if (i > 1) out.put(",");
        write_access_log(q.subjects[i]);
      }
      out.put("]");
    }
    out.put("}");
    out.flush();
  } catch (const ChunkWriter::ReaderGone&) {
    // The reader left; what was read is audited, nothing more is sent.
  }
}

Json Service::dsr_export(const Caller& caller, std::string_view id) {
  std::string text;
  dsr_export(caller, id, {}, [&](std::string_view chunk) {
    text.append(chunk);
    return true;
  });
  return Json::parse(text);
}

}  // namespace custos::service
