// Data-subject requests: intake through the blind index, the lifecycle, and
// fulfilment of each request type with its report.
#include <yaml-cpp/yaml.h>

#include <nlohmann/json.hpp>
#include <sstream>

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

std::string csv_escape(const std::string& v) {
  if (v.find_first_of(",\"\n\r") == std::string::npos) return v;
  std::string out = "\"";
  for (char c : v) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

std::string csv(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) {
  std::ostringstream out;
  for (std::size_t i = 0; i < header.size(); ++i) out << (i ? "," : "") << csv_escape(header[i]);
  out << "\r\n";
  for (const auto& row : rows) {
    for (std::size_t i = 0; i < row.size(); ++i) out << (i ? "," : "") << csv_escape(row[i]);
    out << "\r\n";
  }
  return out.str();
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
  const auto& [field, value] = *body["identifier"].items().begin();
  if (field != "email" && field != "phone" && field != "external_id")
    throw Error(ErrorCode::invalid_field, "field 'identifier': use email, phone or external_id");
  if (!value.is_string()) throw Error(ErrorCode::invalid_field, "field 'identifier." + field + "': expected a string");
  in.identified_by = field;
  const auto matches = impl_->records->find(field, value.get<std::string>());
  if (!matches.empty()) in.subject = matches.front();
  if (in.type == "rectification") {
    if (!body.contains("changes")) throw Error(ErrorCode::invalid_field, "field 'changes': rectification needs the corrections");
    const FieldChanges changes = parse_fields(body["changes"], impl_->schema, true);
    for (const auto& [name, v] : changes.set) impl_->schema.validate(impl_->schema.require(name), v);
    // Only the field names are kept in the request; values are sealed by the
    // subject's key when applied. The corrections are kept sealed here too.
    if (in.subject) {
      in.changes = body["changes"].dump();
    }
  } else if (body.contains("changes")) {
    throw Error(ErrorCode::invalid_argument, "property 'changes' is only for rectification");
  }
  // Never store the corrections in clear: keep only names until applied.
  std::string sealed_changes;
  if (!in.changes.empty() && in.subject) {
    sealed_changes = impl_->seal_for_subject(*in.subject, "dsr.changes", in.changes);
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
    } else {
      throw Error(ErrorCode::invalid_argument, "unknown parameter '" + util::printable_prefix(key) + "'");
    }
  }
  Json list = Json::array();
  for (const auto& q : impl_->dsr->list(f)) list.push_back(request_json(q, *impl_->current_regulations(), f.now_us, nullptr));
  return {{"requests", list}, {"count", list.size()}};
}

Json Service::dsr_get(const Caller& caller, std::string_view id) {
  impl_->authorize(caller, *impl_->current_policy(), "dsr", "dsr.read", false);
  const auto q = impl_->dsr->get(std::string(id));
  const auto timeline = impl_->dsr->timeline(q.id);
  return request_json(q, *impl_->current_regulations(), impl_->audit->now_us(), &timeline);
}

Json Service::dsr_transition(const Caller& caller, std::string_view id_text, const Json& body) {
  const auto pol = impl_->current_policy();
  impl_->authorize(caller, *pol, "dsr", "dsr.transition", false);
  only_keys(body, {"to", "note", "reason"});
  const std::string id(id_text);
  const std::string to = required_string(body, "to", 32);
  const std::string note = body.contains("note") ? required_string(body, "note", 2000) : "";
  const std::string reason = body.contains("reason") ? required_string(body, "reason", 2000) : "";
  const auto actor = impl_->actor(caller);
  std::string report;
  std::string final_status = to;
  // A request is completed by asking for `completed`; whether it ends
  // `completed_with_exceptions` is the fulfilment's finding, not the caller's.
  if (to == "completed") {
    const auto q = impl_->dsr->get(id);
    if (!dsr::transition_allowed(q.status, to))
      throw Error(ErrorCode::conflict, "a request in status '" + q.status + "' cannot move to 'completed'");
    bool verified = false;
    for (const auto& e : impl_->dsr->timeline(id)) verified = verified || e.to == "identity_verified";
    if (!verified) throw Error(ErrorCode::conflict, "the requester's identity has not been verified");
    const Json fulfilled = impl_->fulfil(actor, *pol, q);
    if (fulfilled.contains("exceptions") && !fulfilled["exceptions"].empty()) final_status = "completed_with_exceptions";
    report = fulfilled.dump();
  } else if (to == "completed_with_exceptions") {
    throw Error(ErrorCode::invalid_argument, "ask for 'completed': the fulfilment decides whether there are exceptions");
  }
  const auto q = impl_->dsr->transition(actor, *impl_->current_regulations(), id, final_status, note, reason, report);
  const auto timeline = impl_->dsr->timeline(q.id);
  return request_json(q, *impl_->current_regulations(), impl_->audit->now_us(), &timeline);
}

Json Service::Impl::fulfil(const audit::Actor& actor, const access::Policy& pol, const dsr::Request& q) {
  Json report = {{"type", q.type}, {"completed_at", audit::format_time_us(audit->now_us())}};
  if (!q.subject) {
    report["no_data_held"] = true;
    report["summary"] = "no personal data is held on the identifier given";
    return report;
  }
  const records::SubjectId id = *q.subject;
  const records::Subject meta = records->metadata(id);
  const std::filesystem::path dir = policy_dir();
  if (q.type == "access" || q.type == "portability") {
    report["export"] = "GET /v1/dsr/" + q.id + "/export";
    report["summary"] = "export prepared for the subject";
  } else if (q.type == "rectification") {
    if (meta.status != "active") throw Error(ErrorCode::conflict, "the subject was erased; nothing to rectify");
    const Json changes = Json::parse(open_for_subject(id, "dsr.changes", q.changes));
    const FieldChanges c = parse_fields(changes, schema, true);
    records->update(actor, id, c.set, c.remove);
    Json fields = Json::array();
    for (const auto& [name, v] : c.set) fields.push_back(name);
    for (const auto& name : c.remove) fields.push_back(name);
    report["fields_changed"] = fields;
    report["notify_downstream"] = downstream_systems(dir / "systems.yaml");
  } else if (q.type == "erasure") {
    Json retained = Json::array();
    const auto orders = records->orders(id);
    // Orders outlive an erasure for their retention period (policies/retention.yaml).
    const auto policy = retention::Policy::load(dir / "retention.yaml");
    if (!orders.empty() && policy.orders.period_us() > 0) {
      std::int64_t last = 0;
      for (const auto& o : orders) last = std::max(last, o.at_us);
      retained.push_back({{"record", "orders"}, {"count", orders.size()}, {"basis", policy.orders.basis},
                          {"until", regulations->calendar().local_date(last + policy.orders.period_us())}});
    }
    // Every erasure report has the same keys; only their contents differ.
    Json exceptions = Json::array();
    Json notify = Json::array();
    const Json consent_kept = "kept as proof of consent (pseudonymous; no personal values)";
    if (meta.legal_hold) {
      retained.push_back({{"record", "subject"}, {"basis", "legal hold"}, {"until", "the hold is lifted"}});
      exceptions.push_back({{"record", "subject"},
                            {"basis", "legal hold"},
                            {"detail", "nothing was erased while the hold stands; erase again once it is lifted"}});
      report["erased"] = {{"fields", Json::array()},
                          {"blind_index_entries", 0},
                          {"touchpoint_notes", "kept (legal hold)"},
                          {"consent_history", consent_kept}};
    } else if (meta.status == "active") {
      const auto r = records->erase(actor, id);
      report["erased"] = {{"fields", r.fields_erased},
                          {"blind_index_entries", r.index_entries_removed},
                          {"touchpoint_notes", "crypto-shredded (the subject's key is destroyed)"},
                          {"consent_history", consent_kept}};
      // Only systems with something to act on are told.
      notify = downstream_systems(dir / "systems.yaml");
    } else {
      report["erased"] = {{"fields", Json::array()},
                          {"blind_index_entries", 0},
                          {"touchpoint_notes", "already crypto-shredded"},
                          {"consent_history", consent_kept},
                          {"note", "the subject was already erased"}};
    }
    report["retained"] = retained;
    report["exceptions"] = exceptions;
    report["notify_downstream"] = notify;
  } else if (q.type == "restriction") {
    records->set_flags(actor, id, std::nullopt, true);
    report["restricted"] = true;
    report["summary"] = "processing restricted to storage and legal claims until lifted";
    report["notify_downstream"] = downstream_systems(dir / "systems.yaml");
  } else if (q.type == "objection" || q.type == "opt_out_sale_share") {
    const bool sale_only = q.type == "opt_out_sale_share";
    const auto events = consent->withdraw_all(actor, pol, id, sale_only, "api",
                                              Json({{"dsr_request", q.id}}).dump());
    Json withdrawn = Json::array();
    for (const auto& e : events) withdrawn.push_back(e.purpose + "/" + e.channel);
    report["withdrawn"] = withdrawn;
  }
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

Json Service::dsr_export(const Caller& caller, std::string_view id_text) {
  const auto pol = impl_->current_policy();
  impl_->authorize(caller, *pol, "dsr", "dsr.export", true);
  const auto q = impl_->dsr->get(std::string(id_text));
  if (q.type != "access" && q.type != "portability")
    throw Error(ErrorCode::conflict, "only access and portability requests have an export");
  if (q.status == "received" || q.status == "denied" || q.status == "canceled")
    throw Error(ErrorCode::conflict, "the request must be identity-verified and not denied or canceled");
  const std::int64_t now = impl_->audit->now_us();
  Json out = {{"request", request_json(q, *impl_->current_regulations(), now, nullptr)},
              {"controller", impl_->current_regulations()->controller()},
              {"generated_at", audit::format_time_us(now)}};
  if (!q.subject) {
    out["no_data_held"] = true;
    return out;
  }
  const records::SubjectId id = *q.subject;
  const std::string hex = records::to_hex(id);
  const auto actor = impl_->actor(caller);
  // Everything decrypted, for the subject (Art. 15 / 20): all schema fields.
  records::ReadSpec spec;
  for (const auto& f : impl_->schema.fields()) spec.fields.push_back(f.name);
  spec.operation = "dsr.export";
  const records::Subject s = impl_->records->read(actor, id, spec);
  counters_.decryptions += s.fields.size();
  Json fields = Json::object();
  for (const auto& [k, v] : s.fields) fields[k] = v;
  out["subject"] = {{"id", hex}, {"created_at", audit::format_time_us(s.created_us)}, {"fields", fields}};
  Json tps = Json::array();
  std::vector<std::vector<std::string>> tp_rows;
  for (const auto& tp : impl_->records->touchpoints(actor, id, true)) {
    tps.push_back({{"id", tp.id}, {"channel", tp.channel}, {"type", tp.type}, {"at", audit::format_time_us(tp.at_us)},
                   {"notes", tp.notes ? Json(*tp.notes) : Json(nullptr)}});
    tp_rows.push_back({tp.id, tp.channel, tp.type, audit::format_time_us(tp.at_us), tp.notes.value_or("")});
  }
  out["touchpoints"] = tps;
  Json orders = Json::array();
  std::vector<std::vector<std::string>> order_rows;
  for (const auto& o : impl_->records->orders(id)) {
    orders.push_back({{"id", o.id}, {"amount_minor", o.amount_minor}, {"currency", o.currency},
                      {"at", audit::format_time_us(o.at_us)}});
    order_rows.push_back({o.id, std::to_string(o.amount_minor), o.currency, audit::format_time_us(o.at_us)});
  }
  out["orders"] = orders;
  Json history = Json::array();
  std::vector<std::vector<std::string>> consent_rows;
  for (const auto& e : impl_->consent->history(id)) {
    history.push_back({{"purpose", e.purpose}, {"channel", e.channel}, {"event", e.event}, {"status", e.status},
                       {"at", audit::format_time_us(e.at_us)}, {"source", e.source}, {"lawful_basis", e.lawful_basis},
                       {"notice_version", e.notice_version}});
    consent_rows.push_back({e.purpose, e.channel, e.event, e.status, audit::format_time_us(e.at_us), e.source,
                            e.lawful_basis, e.notice_version});
  }
  out["consent_history"] = history;
  // Disclosures: recipients of the categories this subject has data in.
  std::set<std::string> categories;
  for (const auto& [k, v] : s.fields) categories.insert(impl_->schema.require(k).category);
  Json disclosures = Json::array();
  for (const auto& sys : downstream_systems(impl_->policy_dir() / "systems.yaml")) {
    for (const auto& c : sys["categories"])
      if (categories.count(c.get<std::string>())) {
        disclosures.push_back(sys);
        break;
      }
  }
  out["disclosures"] = disclosures;
  // The subject's own access log, each entry with an inclusion proof against
  // a signed checkpoint: verifiable with `custos-audit verify-inclusion`.
  const auto cp = impl_->audit->checkpoint_now();
  Json entries = Json::array();
  audit::Query aq;
  aq.subject_id = hex;
  aq.limit = 1000;
  for (;;) {
    const auto page = impl_->audit->query(aq);
    for (const auto& e : page) {
      if (e.seq >= cp.size) continue;
      Json proof = Json::array();
      for (const auto& h : impl_->audit->inclusion_proof(e.seq, cp.size)) proof.push_back(auditfmt::to_hex(h));
      entries.push_back({{"entry", auditfmt::base64_encode(auditfmt::encode(e))},
                         {"index", e.seq},
                         {"tree_size", cp.size},
                         {"proof", proof},
                         {"checkpoint", cp.note},
                         {"decoded", Json::parse(auditfmt::to_json(e))}});
    }
    if (page.size() < aq.limit) break;
    aq.after_seq = page.back().seq;
  }
  out["access_log"] = {{"verifier_key", impl_->audit->verifier_key()}, {"checkpoint", cp.note},
                       {"tree_size", cp.size}, {"entries", entries}};
  out["csv"] = {{"touchpoints", csv({"id", "channel", "type", "at", "notes"}, tp_rows)},
                {"orders", csv({"id", "amount_minor", "currency", "at"}, order_rows)},
                {"consent_history", csv({"purpose", "channel", "event", "status", "at", "source", "lawful_basis",
                                         "notice_version"},
                                        consent_rows)}};
  return out;
}

}  // namespace custos::service
