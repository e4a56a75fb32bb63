// Breaches (the 72-hour clock and affected subjects) and retention runs.
#include <nlohmann/json.hpp>

#include "custos/retention/retention.h"
#include "service_impl.h"

namespace custos::service {
namespace {

constexpr std::int64_t kHourUs = 3600LL * 1000000;

std::vector<std::string> string_list(const Json& body, const char* key, bool required) {
  if (!body.contains(key)) {
    if (required) throw Error(ErrorCode::invalid_field, std::string("field '") + key + "': required");
    return {};
  }
  if (!body[key].is_array()) throw Error(ErrorCode::invalid_field, std::string("field '") + key + "': expected an array of strings");
  std::vector<std::string> out;
  for (const auto& v : body[key]) {
    if (!v.is_string()) throw Error(ErrorCode::invalid_field, std::string("field '") + key + "': expected strings");
    out.push_back(v.get<std::string>());
  }
  return out;
}

std::optional<std::int64_t> optional_time(const Json& body, const char* key) {
  if (!body.contains(key) || body[key].is_null()) return std::nullopt;
  return parse_time_or_now(body, key, 0);
}

Json incident_json(const breach::Incident& i, const std::vector<breach::Deadline>& deadlines,
                   const std::vector<breach::Event>* timeline, std::int64_t now) {
  Json out = {{"id", i.id},
              {"status", i.status},
              {"discovered_at", audit::format_time_us(i.discovered_us)},
              {"description", i.description},
              {"severity", i.severity},
              {"categories", i.categories},
              {"regimes", i.regimes},
              {"high_risk", i.high_risk},
              {"created_by", i.created_by},
              {"updated_at", audit::format_time_us(i.updated_us)}};
  out["occurred_from"] = i.occurred_from_us ? Json(audit::format_time_us(*i.occurred_from_us)) : Json(nullptr);
  out["occurred_to"] = i.occurred_to_us ? Json(audit::format_time_us(*i.occurred_to_us)) : Json(nullptr);
  out["affected_count"] = i.affected_count ? Json(*i.affected_count) : Json(nullptr);
  if (!i.residents.empty()) out["residents"] = Json::parse(i.residents, nullptr, false);
  if (!i.computation.empty()) out["affected_computation"] = Json::parse(i.computation, nullptr, false);
  Json ds = Json::array();
  bool overdue = false;
  std::optional<std::int64_t> next_due;
  for (const auto& d : deadlines) {
    Json j = {{"regime", d.regime},   {"law", d.regime_name}, {"notify", d.who},       {"recipient", d.recipient_name},
              {"met", d.met},         {"required", d.required}, {"source", d.source}};
    if (d.met_us) j["met_at"] = audit::format_time_us(*d.met_us);
    if (!d.condition.empty()) j["condition"] = d.condition;
    if (!d.timing.empty()) j["timing"] = d.timing;
    if (d.projected) j["projected"] = true;  // counted from the due date of the notice it follows
    if (d.met_us && d.due_us) j["late"] = *d.met_us > *d.due_us;
    if (d.due_us) {
      j["due_at"] = audit::format_time_us(*d.due_us);
      const bool late = !d.met && d.required && now > *d.due_us;
      j["overdue"] = late;
      j["hours_left"] = static_cast<double>(*d.due_us - now) / static_cast<double>(kHourUs);
      overdue = overdue || late;
      if (!d.met && d.required && (!next_due || *d.due_us < *next_due)) next_due = *d.due_us;
    } else {
      j["due_at"] = nullptr;
      j["without_undue_delay"] = true;  // no fixed period: `timing` gives the statute's words
    }
    ds.push_back(std::move(j));
  }
  out["deadlines"] = ds;
  out["overdue"] = overdue;
  out["next_deadline"] = next_due ? Json(audit::format_time_us(*next_due)) : Json(nullptr);
  if (timeline) {
    Json t = Json::array();
    for (const auto& e : *timeline) {
      Json j = {{"at", audit::format_time_us(e.at_us)}, {"recorded_at", audit::format_time_us(e.recorded_us)},
                {"actor", e.actor}, {"type", e.type}, {"note", e.note}};
      if (e.type == "notified") j["regime"] = e.regime, j["recipient"] = e.recipient;
      t.push_back(std::move(j));
    }
    out["timeline"] = t;
  }
  return out;
}

}  // namespace

Json Service::breach_create(const Caller& caller, const Json& body) {
  impl_->authorize(caller, *impl_->current_policy(), "breach", "breach.open", false);
  only_keys(body, {"discovered_at", "occurred_from", "occurred_to", "description", "categories", "regimes", "severity",
                   "high_risk", "residents"});
  breach::NewIncident in;
  const std::int64_t now = impl_->audit->now_us();
  in.discovered_us = parse_time_or_now(body, "discovered_at", now);
  in.occurred_from_us = optional_time(body, "occurred_from");
  in.occurred_to_us = optional_time(body, "occurred_to");
  in.description = required_string(body, "description", 8000);
  in.categories = string_list(body, "categories", true);
  in.regimes = body.contains("regimes") ? string_list(body, "regimes", true) : std::vector<std::string>{"eu-gdpr"};
  if (body.contains("severity")) in.severity = required_string(body, "severity", 16);
  if (body.contains("high_risk")) {
    if (!body["high_risk"].is_boolean()) throw Error(ErrorCode::invalid_field, "field 'high_risk': expected true or false");
    in.high_risk = body["high_risk"].get<bool>();
  }
  if (body.contains("residents")) {
    if (!body["residents"].is_object()) throw Error(ErrorCode::invalid_field, "field 'residents': expected {\"REGION\": count}");
    for (const auto& [k, v] : body["residents"].items())
      if (!v.is_number_unsigned()) throw Error(ErrorCode::invalid_field, "field 'residents': counts must be non-negative integers");
    in.residents = body["residents"].dump();
  }
  const auto i = impl_->breaches->open(impl_->actor(caller), *impl_->current_regulations(), impl_->schema.categories(), in);
  const auto timeline = impl_->breaches->timeline(i.id);
  return incident_json(i, impl_->breaches->deadlines(i, *impl_->current_regulations()), &timeline, now);
}

Json Service::breach_list(const Caller& caller, const std::map<std::string, std::string>& query) {
  impl_->authorize(caller, *impl_->current_policy(), "breach", "breach.list", false);
  std::string status;
  bool at_risk = false, overdue = false;
  double margin_hours = 24;
  for (const auto& [key, value] : query) {
    if (key == "status") {
      if (std::find(breach::kStatuses.begin(), breach::kStatuses.end(), value) == breach::kStatuses.end())
        throw Error(ErrorCode::invalid_argument, "parameter 'status': unknown status");
      status = value;
    } else if (key == "at_risk" || key == "overdue") {
      if (value != "true" && value != "false") throw Error(ErrorCode::invalid_argument, "parameter '" + key + "' must be true or false");
      (key == "at_risk" ? at_risk : overdue) = value == "true";
    } else if (key == "margin_hours") {
      if (value.empty() || value.size() > 5 || value.find_first_not_of("0123456789") != std::string::npos)
        throw Error(ErrorCode::invalid_argument, "parameter 'margin_hours' must be a whole number of hours");
      margin_hours = std::stod(value);
    } else {
      throw Error(ErrorCode::invalid_argument, "unknown parameter '" + util::printable_prefix(key) + "'");
    }
  }
  const std::int64_t now = impl_->audit->now_us();
  Json list = Json::array();
  for (const auto& i : impl_->breaches->list(status)) {
    const auto deadlines = impl_->breaches->deadlines(i, *impl_->current_regulations());
    bool is_overdue = false, is_at_risk = false;
    for (const auto& d : deadlines) {
      if (d.met || !d.required || !d.due_us) continue;
      if (now > *d.due_us) is_overdue = true;
      else if (*d.due_us - now < static_cast<std::int64_t>(margin_hours * static_cast<double>(kHourUs))) is_at_risk = true;
    }
    if (overdue && !is_overdue) continue;
    if (at_risk && !is_at_risk) continue;
    Json j = incident_json(i, deadlines, nullptr, now);
    j["at_risk"] = is_at_risk;
    list.push_back(std::move(j));
  }
  return {{"breaches", list}, {"count", list.size()}};
}

Json Service::breach_get(const Caller& caller, std::string_view id) {
  impl_->authorize(caller, *impl_->current_policy(), "breach", "breach.read", false);
  const auto i = impl_->breaches->get(std::string(id));
  const auto timeline = impl_->breaches->timeline(i.id);
  return incident_json(i, impl_->breaches->deadlines(i, *impl_->current_regulations()), &timeline, impl_->audit->now_us());
}

Json Service::breach_add_event(const Caller& caller, std::string_view id, const Json& body) {
  impl_->authorize(caller, *impl_->current_policy(), "breach", "breach.event", false);
  only_keys(body, {"type", "at", "note", "actor", "regime", "recipient"});
  breach::Event e;
  e.type = required_string(body, "type", 32);
  e.at_us = parse_time_or_now(body, "at", impl_->audit->now_us());
  e.note = body.contains("note") ? required_string(body, "note", 4000) : "";
  if (body.contains("regime")) e.regime = required_string(body, "regime", 32);
  if (body.contains("recipient")) e.recipient = required_string(body, "recipient", 64);
  const auto regs = impl_->current_regulations();
  const auto i = impl_->breaches->add_event(impl_->actor(caller), *regs, std::string(id), e);
  const auto timeline = impl_->breaches->timeline(i.id);
  return incident_json(i, impl_->breaches->deadlines(i, *regs), &timeline, impl_->audit->now_us());
}

Json Service::breach_compute_affected(const Caller& caller, std::string_view id, const Json& body) {
  impl_->authorize(caller, *impl_->current_policy(), "breach", "breach.compute_affected", false);
  only_keys(body, {"principals", "token_ids", "from", "to", "categories"});
  breach::AffectedResult r;
  std::string method;
  if (body.contains("categories")) {
    if (body.contains("principals") || body.contains("token_ids"))
      throw Error(ErrorCode::invalid_argument, "give either categories or principals/token_ids, not both");
    const auto cats = string_list(body, "categories", true);
    r = impl_->breaches->affected_by_categories(impl_->actor(caller), std::string(id), impl_->schema,
                                                {cats.begin(), cats.end()});
    method = "categories";
  } else {
    const auto principals = string_list(body, "principals", false);
    const auto tokens = string_list(body, "token_ids", false);
    if (!body.contains("from") || !body.contains("to"))
      throw Error(ErrorCode::invalid_field, "field 'from': a time window [from, to) is required");
    const std::int64_t from = parse_time_or_now(body, "from", 0);
    const std::int64_t to = parse_time_or_now(body, "to", 0);
    r = impl_->breaches->affected_by_access(impl_->actor(caller), std::string(id), {principals.begin(), principals.end()},
                                            {tokens.begin(), tokens.end()}, from, to);
    method = "audit_log";
  }
  Json sample = Json::array();
  for (const auto& [subject, fields] : r.sample) {
    std::set<std::string> cats;
    for (const auto& f : fields)
      if (const auto* spec = impl_->schema.find(f)) cats.insert(spec->category);
    sample.push_back({{"subject_id", subject}, {"fields", fields}, {"categories", cats}});
  }
  return {{"breach_id", std::string(id)},
          {"method", method},
          {"count", r.count},
          {"subjects", sample},
          {"subjects_listed", sample.size()},
          {"audit_range", {{"first_seq", r.first_seq}, {"last_seq", r.last_seq}, {"entries_scanned", r.entries_scanned}}},
          {"checkpoint", {{"size", r.checkpoint.size}, {"root", auditfmt::to_hex(r.checkpoint.root)}, {"note", r.checkpoint.note}}}};
}

Json Service::breach_affected(const Caller& caller, std::string_view id, const std::map<std::string, std::string>& query) {
  const auto pol = impl_->current_policy();
  // Which purpose may list them: purposes.yaml `required_for` (default breach_notification).
  const auto& role = impl_->authorize(caller, *pol, "breach", "breach.notify_list", true);
  impl_->breaches->get(std::string(id));
  std::optional<records::SubjectId> after;
  std::size_t limit = 500;
  for (const auto& [k, v] : query) {
    if (k == "after") after = records::parse_subject_id(v);
    else if (k == "limit") {
      if (v.empty() || v.size() > 4 || v.find_first_not_of("0123456789") != std::string::npos || v == "0")
        throw Error(ErrorCode::invalid_argument, "parameter 'limit' must be 1-1000");
      limit = std::min<std::size_t>(1000, std::stoul(v));
    } else throw Error(ErrorCode::invalid_argument, "unknown parameter '" + util::printable_prefix(k) + "'");
  }
  // Contact fields only, as this role may see them.
  const auto visible = impl_->read_spec(*pol, role);
  records::ReadSpec spec;
  spec.operation = "breach.notify_list";
  for (const auto& f : visible.fields)
    if (impl_->schema.require(f).category == "contact" || f == "given_name" || f == "family_name") {
      spec.fields.push_back(f);
      if (std::find(visible.masked.begin(), visible.masked.end(), f) != visible.masked.end()) spec.masked.push_back(f);
    }
  const auto ids = impl_->breaches->affected_subjects(std::string(id), limit, after);
  Json subjects = Json::array();
  for (const auto& s : impl_->records->read_many(impl_->actor(caller), ids, spec))
    if (s) subjects.push_back(impl_->subject_json(*s, spec));
  Json out = {{"breach_id", std::string(id)}, {"subjects", subjects}};
  out["next_after"] = ids.size() == limit ? Json(records::to_hex(ids.back())) : Json(nullptr);
  return out;
}

Json Service::set_legal_hold(const Caller& caller, std::string_view id_text, bool hold) {
  const records::SubjectId id = records::parse_subject_id(id_text);
  impl_->authorize(caller, *impl_->current_policy(), "dsr", "subject.legal_hold", false, records::to_hex(id));
  impl_->records->set_flags(impl_->actor(caller), id, hold, std::nullopt);
  return {{"id", records::to_hex(id)}, {"legal_hold", hold}};
}

Json Service::set_legal_hold(const Caller& caller, std::string_view id_text, const Json& body) {
  impl_->authorize(caller, *impl_->current_policy(), "dsr", "subject.legal_hold", false);
  only_keys(body, {"hold"});
  if (!body.contains("hold") || !body["hold"].is_boolean())
    throw Error(ErrorCode::invalid_field, "field 'hold': true or false is required");
  return set_legal_hold(caller, id_text, body["hold"].get<bool>());
}

Json Service::retention_run(const Caller& caller, const Json& body) {
  const bool asks_dry_run = body.is_object() && body.contains("dry_run") && body["dry_run"] == true;
  impl_->authorize(caller, *impl_->current_policy(), "admin", asks_dry_run ? "retention.dry_run" : "retention.run", false);
  only_keys(body, {"dry_run"});
  if (body.contains("dry_run") && !body["dry_run"].is_boolean())
    throw Error(ErrorCode::invalid_field, "field 'dry_run': must be a boolean");
  return retention_run(caller, body.value("dry_run", false));
}

Json Service::retention_run(const Caller& caller, bool dry_run) {
  impl_->authorize(caller, *impl_->current_policy(), "admin", dry_run ? "retention.dry_run" : "retention.run", false);
  const auto policy = retention::Policy::load(impl_->policy_dir() / "retention.yaml");
  const auto r = retention::run(*impl_->store, *impl_->records, *impl_->audit, impl_->actor(caller), policy,
                                impl_->audit->now_us(), dry_run);
  Json purged = Json::array(), kept = Json::array();
  for (const auto& p : r.purged)
    purged.push_back({{"subject_id", p.subject_id}, {"last_activity", audit::format_time_us(p.last_activity_us)},
                      {"reason", "retention period expired"}, {"basis", r.subjects_basis}});
  for (const auto& p : r.kept_legal_hold)
    kept.push_back({{"subject_id", p.subject_id}, {"last_activity", audit::format_time_us(p.last_activity_us)},
                    {"reason", "legal hold"}});
  return {{"dry_run", r.dry_run},
          {"run_at", audit::format_time_us(r.run_at_us)},
          {"purged", purged},
          {"kept", kept},
          {"touchpoints_deleted", r.touchpoints_deleted},
          {"orders_deleted", r.orders_deleted},
          {"bases", {{"subjects", r.subjects_basis}, {"touchpoints", r.touchpoints_basis}, {"orders", r.orders_basis}}}};
}

}  // namespace custos::service
