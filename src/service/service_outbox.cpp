// Downstream systems: the events a DSR completion or a consent change puts
// in the outbox (in the change's own transaction), their delivery state in
// the request's JSON and timeline, the systems' confirmations, and the
// operator's view of the queue and its dead letters.
#include <sodium.h>

#include <nlohmann/json.hpp>

#include "service_impl.h"

namespace custos::service {
namespace {

// The event name a DSR type is delivered as (systems.yaml `events`).
std::string event_for(const std::string& dsr_type) {
  if (dsr_type == "opt_out_sale_share") return "opt_out";
  if (dsr_type == "erasure" || dsr_type == "rectification" || dsr_type == "restriction" || dsr_type == "objection")
    return dsr_type;
  return "";
}

// The sender is a process, not a caller: its audit entries say so.
audit::Actor sender_actor() { return {"custosd:outbox", "system", "", "", ""}; }

Json body_of(const std::string& type, std::int64_t at_us, Json data) {
  return {{"type", type}, {"timestamp", audit::format_time_us(at_us)}, {"data", std::move(data)}};
}

}  // namespace

void Service::Impl::notify_outbox() {
  std::function<void()> listener;
  {
    util::MutexLock lock(outbox_listener_mu);
    listener = outbox_listener;
  }
  if (listener) listener();
}

void Service::Impl::enqueue_dsr_events(store::Transaction& tx, const dsr::Request& q, const Json& report,
                                       const std::string& changes) {
  const std::string event = event_for(q.type);
  if (event.empty()) return;
  const auto sys = current_systems();
  const std::int64_t now = audit->now_us();
  // Which subjects each event is about: an erasure's erased subjects, a
  // rectification's, restriction's or objection's covered ones.
  std::vector<std::string> subjects;
  if (q.type == "erasure") {
    if (report.contains("erased") && report["erased"].contains("subjects"))
      for (const auto& s : report["erased"]["subjects"]) subjects.push_back(s.get<std::string>());
  } else if (report.contains("subjects")) {
    for (const auto& s : report["subjects"]) subjects.push_back(s.get<std::string>());
  }
  Json corrections = changes.empty() ? Json() : Json::parse(changes, nullptr, false);
  for (const auto& system : sys->all()) {
    if (!system.receives(event)) continue;
    Json fields = Json::object();
    if (event == "rectification") {
      // Only the changed fields this system may receive; nothing to act on: no event.
      if (corrections.is_object() && corrections.contains("fields") && corrections["fields"].is_object())
        for (const auto& [name, value] : corrections["fields"].items())
          if (system.fields.count(name)) fields[name] = value;
      if (fields.empty()) continue;
    }
    for (const auto& sid : subjects) {
      Json data = {{"request_id", q.id}, {"subject_id", sid}, {"regime", q.regime}};
      if (event == "rectification") data["fields"] = fields;
      if (event == "erasure") {
        data["confirmation_required"] = system.confirmation_required;
        data["confirm"] = "POST /v1/dsr/" + q.id + "/confirmations";
      }
      outbox::NewEvent e{system.name, event, q.id, sid, body_of("dsr." + event, now, std::move(data)).dump(),
                         event == "erasure" && system.confirmation_required};
      outbox->enqueue(tx, e, now);
    }
  }
  if (corrections.is_object()) {
    // The corrections' plaintext: wipe the parsed copy's strings as far as we hold them.
    std::string dumped = corrections.dump();
    sodium_memzero(dumped.data(), dumped.size());
  }
}

void Service::Impl::enqueue_consent_events(store::Transaction& tx, const std::vector<consent::Event>& events) {
  if (events.empty()) return;
  const auto sys = current_systems();
  const std::int64_t now = audit->now_us();
  Json changes = Json::array();
  for (const auto& e : events)
    changes.push_back({{"purpose", e.purpose}, {"channel", e.channel}, {"event", e.event},
                       {"at", audit::format_time_us(e.at_us)}, {"source", e.source}});
  bool any = false;
  for (const auto& system : sys->all()) {
    if (!system.receives("consent")) continue;
    const Json data = {{"subject_id", events.front().subject_id}, {"changes", changes}};
    outbox->enqueue(tx, {system.name, "consent", "", events.front().subject_id, body_of("consent.changed", now, data).dump(), false},
                    now);
    any = true;
  }
  // Before the commit, but the sender's claim is a write transaction: it
  // waits for this one to end, so it sees the events (or, rolled back, none).
  if (any) notify_outbox();
}

Json Service::Impl::downstream_json(store::Transaction& tx, const std::string& request_id) {
  outbox::ListFilter f;
  f.request_id = request_id;
  f.limit = 1000;
  const auto events = outbox->list(tx, f);
  const auto confirmed = outbox->confirmations(tx, request_id);
  Json out = Json::array();
  for (const auto& e : events) {
    Json item = {{"event_id", e.id},           {"system", e.system},
                 {"event", e.type},            {"subject_id", e.subject_id},
                 {"delivery", e.status},       {"attempts", e.attempts},
                 {"confirmation_required", e.confirmation_required}};
    if (e.delivered_us) item["delivered_at"] = audit::format_time_us(*e.delivered_us);
    if (e.last_status) item["last_status"] = *e.last_status;
    if (!e.last_error.empty()) item["last_error"] = e.last_error;
    for (const auto& c : confirmed)
      if (c.system == e.system) item["confirmation"] = {{"at", audit::format_time_us(c.at_us)}, {"outcome", c.outcome}};
    out.push_back(item);
  }
  return out;
}

std::vector<std::string> Service::Impl::missing_confirmations(const std::string& request_id) {
  outbox::ListFilter f;
  f.request_id = request_id;
  f.limit = 1000;
  std::set<std::string> required;
  auto tx = store->begin(store::TxMode::read);
  for (const auto& e : outbox->list(*tx, f))
    if (e.confirmation_required) required.insert(e.system);
  for (const auto& c : outbox->confirmations(*tx, request_id)) required.erase(c.system);
  return {required.begin(), required.end()};
}

Json Service::dsr_confirm(const Caller& caller, std::string_view id_text, const Json& body) {
  const auto sys = impl_->current_systems();
  const outbox::System* system = sys->by_token(caller.principal.name);
  if (caller.principal.role != "downstream_system" || system == nullptr)
    impl_->deny(caller, "dsr.confirmation", ErrorCode::forbidden_role,
                "only a downstream system's own token (role downstream_system, named in systems.yaml) may confirm");
  only_keys(body, {"outcome", "note"});
  const std::string outcome = body.contains("outcome") ? required_string(body, "outcome", 16) : "done";
  if (outcome != "done" && outcome != "no_data")
    throw Error(ErrorCode::invalid_field, "field 'outcome': done or no_data");
  const std::string note = body.contains("note") ? required_string(body, "note", 500) : "";
  if (std::any_of(note.begin(), note.end(), [](unsigned char c) { return c < 0x20; }))
    throw Error(ErrorCode::invalid_field, "field 'note': no control characters");
  const std::string id(id_text);
  const auto q = impl_->dsr->get(id);  // not_found
  outbox::ListFilter f;
  f.request_id = id;
  f.system = system->name;
  f.limit = 1;
  if (impl_->outbox->list(f).empty())
    throw Error(ErrorCode::conflict, "no event of this request was sent to system '" + system->name + "'");
  const std::int64_t now = impl_->audit->now_us();
  {
    auto tx = impl_->store->begin(store::TxMode::write);
    impl_->outbox->confirm(*tx, {id, system->name, caller.principal.name, outcome, note, now});
    impl_->dsr->add_note(*tx, id, now, "system:" + system->name,
                         "confirmed by " + system->name + ": " + outcome + (note.empty() ? "" : " (" + note + ")"));
    audit::Event ev{"dsr.confirmation", q.subjects.size() == 1 ? records::to_hex(q.subjects[0]) : "", {}, {}, true, "",
                    "request=" + id + " system=" + system->name + " outcome=" + outcome};
    impl_->audit->append(*tx, impl_->actor(caller), ev);
    tx->commit();
  }
  std::string status = q.status;
  if (q.status == "awaiting_confirmation" && impl_->missing_confirmations(id).empty()) {
    // The last required confirmation completes the erasure, with the status
    // its fulfilment found.
    const Json report = q.report.empty() ? Json::object() : Json::parse(q.report, nullptr, false);
    const std::string final_status =
        report.is_object() && report.contains("exceptions") && !report["exceptions"].empty() ? "completed_with_exceptions"
                                                                                             : "completed";
    try {
      status = impl_->dsr
                   ->transition(impl_->actor(caller), *impl_->current_regulations(), id, final_status,
                                "every required downstream confirmation received", "")
                   .status;
    } catch (const Error& e) {
      if (e.code() != ErrorCode::conflict) throw;  // another confirmation completed it first
      status = impl_->dsr->get(id).status;
    }
  }
  return {{"request_id", id},
          {"system", system->name},
          {"outcome", outcome},
          {"confirmed_at", audit::format_time_us(now)},
          {"request_status", status}};
}

Json Service::outbox_list(const Caller& caller, const std::map<std::string, std::string>& query) {
  impl_->authorize(caller, *impl_->current_policy(), "admin", "outbox.list", false);
  outbox::ListFilter f;
  for (const auto& [key, value] : query) {
    if (key == "status") {
      if (value != "pending" && value != "delivered" && value != "dead" && value != "destroyed")
        throw Error(ErrorCode::invalid_argument, "parameter 'status': pending, delivered, dead or destroyed");
      f.status = value;
    } else if (key == "system") {
      f.system = value.substr(0, 64);
    } else if (key == "request") {
      f.request_id = value.substr(0, 64);
    } else if (key == "limit") {
      if (value.empty() || value.size() > 5 || value.find_first_not_of("0123456789") != std::string::npos || value == "0")
        throw Error(ErrorCode::invalid_argument, "parameter 'limit' must be 1-10000");
      f.limit = std::min<std::size_t>(10000, std::stoul(value));
    } else {
      throw Error(ErrorCode::invalid_argument, "unknown parameter '" + util::printable_prefix(key) + "'");
    }
  }
  Json list = Json::array();
  for (const auto& e : impl_->outbox->list(f)) {
    Json item = {{"id", e.id},          {"system", e.system},     {"event", e.type},
                 {"request_id", e.request_id}, {"subject_id", e.subject_id}, {"status", e.status},
                 {"attempts", e.attempts},     {"created_at", audit::format_time_us(e.created_us)}};
    if (e.status == "pending") item["next_attempt_at"] = audit::format_time_us(e.next_attempt_us);
    if (e.delivered_us) item["delivered_at"] = audit::format_time_us(*e.delivered_us);
    if (e.last_status) item["last_status"] = *e.last_status;
    if (!e.last_error.empty()) item["last_error"] = e.last_error;
    list.push_back(item);
  }
  return {{"events", list}, {"count", list.size()}};
}

Json Service::outbox_retry(const Caller& caller, std::string_view event_id) {
  impl_->authorize(caller, *impl_->current_policy(), "admin", "outbox.retry", false);
  outbox::EventInfo e;
  {
    auto tx = impl_->store->begin(store::TxMode::write);
    e = impl_->outbox->retry(*tx, std::string(event_id), impl_->audit->now_us());
    impl_->audit->append(*tx, impl_->actor(caller),
                         {"outbox.retry", e.subject_id, {}, {}, true, "", "event=" + e.id + " system=" + e.system});
    tx->commit();
  }
  impl_->notify_outbox();
  return {{"id", e.id}, {"system", e.system}, {"status", e.status}, {"attempts", e.attempts}};
}

Json Service::system_secret(const Caller& caller, std::string_view name) {
  impl_->authorize(caller, *impl_->current_policy(), "admin", "system.secret", false);
  const outbox::System* system = impl_->current_systems()->find(name);
  if (system == nullptr || system->url.empty())
    throw Error(ErrorCode::not_found, "no system '" + util::printable_prefix(name) + "' with a url in systems.yaml");
  const std::string secret = impl_->outbox->set_secret(system->name);
  impl_->audit->append_now(impl_->actor(caller), {"system.secret", "", {}, {}, true, "", "system=" + system->name});
  return {{"system", system->name}, {"secret", secret}};
}

std::vector<Service::OutboxDelivery> Service::outbox_claim(std::size_t limit, const outbox::RetryPolicy& policy) {
  const std::int64_t now = impl_->audit->now_us();
  auto claimed = impl_->outbox->claim(now, limit, policy);
  const auto sys = impl_->current_systems();
  std::vector<OutboxDelivery> out;
  const std::string timestamp = std::to_string(now / 1000000);
  for (auto& c : claimed) {
    const outbox::System* system = sys->find(c.info.system);
    if (system == nullptr || system->url.empty()) {
      outbox_record(c.info.id, 0, "system '" + c.info.system + "' has no url in systems.yaml", policy);
      continue;
    }
    try {
      const crypto::SecretKey key = impl_->outbox->secret(system->name);
      OutboxDelivery d{c.info.id, system->name, system->url, std::move(c.body), {}};
      d.headers = {{"webhook-id", d.id},
                   {"webhook-timestamp", timestamp},
                   {"webhook-signature", outbox::sign(key, d.id, timestamp, d.body)},
                   {"content-type", "application/json"}};
      out.push_back(std::move(d));
    } catch (const Error& e) {
      if (e.code() != ErrorCode::not_found) throw;
      outbox_record(c.info.id, 0, "no signing secret (custos system secret " + system->name + ")", policy);
    }
  }
  return out;
}

void Service::outbox_record(const std::string& id, int http_status, const std::string& error,
                            const outbox::RetryPolicy& policy) {
  const std::int64_t now = impl_->audit->now_us();
  auto tx = impl_->store->begin(store::TxMode::write);
  const auto e = impl_->outbox->record_attempt(*tx, id, http_status, error, now, policy);
  if (!e) return;  // recorded by another sender meanwhile
  const std::string answer = http_status > 0 ? "HTTP " + std::to_string(http_status) : error;
  if (e->status == "delivered") {
    if (!e->request_id.empty())
      impl_->dsr->add_note(*tx, e->request_id, now, "system:" + e->system,
                           e->type + " event delivered to " + e->system + " (" + answer + ", attempt " +
                               std::to_string(e->attempts) + ")");
    // A disclosure to a recipient: the subject's access log shows it.
    impl_->audit->append(*tx, sender_actor(),
                         {"outbox.delivered", e->subject_id, {}, {}, true, "",
                          "system=" + e->system + " event=" + e->type + " id=" + e->id});
  } else if (e->status == "dead") {
    if (!e->request_id.empty())
      impl_->dsr->add_note(*tx, e->request_id, now, "system:" + e->system,
                           e->type + " event to " + e->system + " is a dead letter (" + e->last_error + ")");
    impl_->audit->append(*tx, sender_actor(),
                         {"outbox.dead_letter", e->subject_id, {}, {}, true, "",
                          "system=" + e->system + " event=" + e->type + " id=" + e->id});
  }
  tx->commit();
}

std::optional<std::int64_t> Service::outbox_next_due_us() { return impl_->outbox->next_due(); }

std::int64_t Service::now_us() const { return impl_->audit->now_us(); }

void Service::set_outbox_listener(std::function<void()> listener) {
  util::MutexLock lock(impl_->outbox_listener_mu);
  impl_->outbox_listener = std::move(listener);
}

Service::OutboxCounts Service::outbox_counts() {
  return {impl_->outbox->count("pending"), impl_->outbox->count("delivered"), impl_->outbox->count("dead")};
}

}  // namespace custos::service
