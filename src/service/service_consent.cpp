// The consent half of the façade: the ledger, double opt-in, GPC and
// do-not-sell, objection, and the consent check of marketing reads.
#include <algorithm>
#include <map>

#include <nlohmann/json.hpp>

#include "service_impl.h"

namespace custos::service {
namespace {

Json event_json(const consent::Event& e) {
  Json out = {{"id", e.id},
              {"purpose", e.purpose},
              {"channel", e.channel},
              {"event", e.event},
              {"status", e.status},
              {"at", audit::format_time_us(e.at_us)},
              {"recorded_at", audit::format_time_us(e.recorded_us)},
              {"source", e.source},
              {"lawful_basis", e.lawful_basis},
              {"notice_version", e.notice_version},
              {"recorded_by", e.principal},
              {"proof", Json::parse(e.proof, nullptr, false)}};
  out["expires_at"] = e.expires_us ? Json(audit::format_time_us(*e.expires_us)) : Json(nullptr);
  return out;
}

Json state_json(const std::vector<consent::State>& states) {
  Json out = Json::array();
  for (const auto& s : states) {
    Json j = {{"purpose", s.purpose}, {"channel", s.channel}, {"state", s.state},
              {"since", audit::format_time_us(s.since_us)}, {"event_id", s.event_id}};
    j["expires_at"] = s.expires_us ? Json(audit::format_time_us(*s.expires_us)) : Json(nullptr);
    out.push_back(std::move(j));
  }
  return out;
}

}  // namespace

Service::Impl::Channels Service::Impl::marketing_channels(const access::Policy& pol, const std::string& purpose_name,
                                                          const records::Subject& meta) {
  const access::Purpose* purpose = pol.purpose(purpose_name);
  if (purpose == nullptr || !purpose->marketing) return std::nullopt;
  if (meta.status != "active" || meta.restricted || meta.objected) return std::vector<std::string>{};
  return consented_channels(pol, purpose_name, meta.id);
}

Service::Impl::Channels Service::Impl::consented_channels(const access::Policy& pol, const std::string& purpose_name,
                                                          const records::SubjectId& id) {
  const access::Purpose* purpose = pol.purpose(purpose_name);
  if (purpose == nullptr || !purpose->marketing) return std::nullopt;
  std::vector<std::string> out;
  for (const auto& channel : purpose->channels)
    if (consent->has_active(id, purpose_name, channel)) out.push_back(channel);
  return out;
}

records::ReadSpec Service::Impl::for_channels(records::ReadSpec spec, const std::vector<std::string>& channels) const {
  const auto unreachable = [&](const std::string& name) {
    const records::FieldSpec* f = schema.find(name);
    if (f == nullptr || f->channels.empty()) return false;
    return std::none_of(f->channels.begin(), f->channels.end(), [&](const std::string& c) {
      return std::find(channels.begin(), channels.end(), c) != channels.end();
    });
  };
  std::erase_if(spec.fields, unreachable);
  std::erase_if(spec.masked, unreachable);
  return spec;
}

std::vector<std::optional<records::Subject>> Service::Impl::read_for_purpose(
    const audit::Actor& actor, const access::Policy& pol, const std::string& purpose,
    const std::vector<records::SubjectId>& ids, const records::ReadSpec& spec, const std::vector<Channels>* known) {
  const access::Purpose* p = pol.purpose(purpose);
  if (p == nullptr || !p->marketing) return records->read_many(actor, ids, spec);
  if (known != nullptr && known->size() != ids.size())
    throw Error(ErrorCode::internal, "read_for_purpose: one channel list per subject expected");
  // Subjects grouped by the channels their consent covers: a handful of
  // groups at most (subsets of the purpose's channels).
  std::map<std::vector<std::string>, std::vector<std::size_t>> groups;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const Channels covered = known != nullptr ? (*known)[i] : consented_channels(pol, purpose, ids[i]);
    groups[covered.value_or(std::vector<std::string>{})].push_back(i);
  }
  std::vector<std::optional<records::Subject>> out(ids.size());
  for (const auto& [channels, at] : groups) {
    std::vector<records::SubjectId> group;
    for (const std::size_t i : at) group.push_back(ids[i]);
    const auto read = records->read_many(actor, group, for_channels(spec, channels));
    for (std::size_t j = 0; j < at.size(); ++j) out[at[j]] = read[j];
  }
  return out;
}

// Capture is separated from use (roles.yaml capture_consent). A confirmed
// grant needs the recording role to list the purpose in capture_consent; any
// role with the consent operation may start a double opt-in (pending until a
// capturing role relays the subject's confirmation) and may always deny,
// withdraw, object or opt out (Art. 7(3)).
Json Service::record_consent(const Caller& caller, std::string_view id_text, const Json& body, bool gpc) {
  const auto pol = impl_->current_policy();
  const records::SubjectId id = records::parse_subject_id(id_text);
  const access::Role& role = impl_->authorize(caller, *pol, "consent", "consent.record", false, records::to_hex(id));
  only_keys(body, {"purpose", "channel", "event", "source", "lawful_basis", "notice_version", "at", "expires_at",
                   "double_opt_in", "proof"});
  const auto actor = impl_->actor(caller);
  const std::string event = required_string(body, "event", 32);
  const std::string source = body.contains("source") ? required_string(body, "source", 32) : "api";
  // Evidence a staff or CRM token cannot forge: an event with this source is
  // written only by the privacy page itself, in the data subject's session.
  if (source == "privacy_page")
    throw Error(ErrorCode::invalid_field,
                "field 'source': 'privacy_page' is recorded only by the privacy page, in the data subject's session");
  Json proof = body.contains("proof") ? body["proof"] : Json::object();
  if (!proof.is_object()) throw Error(ErrorCode::invalid_field, "field 'proof': expected an object");
  refuse_vault_proof_keys(proof, "proof");
  if (proof.dump().size() > 4096) throw Error(ErrorCode::invalid_field, "field 'proof': larger than 4 KiB");
  Json out = {{"subject_id", records::to_hex(id)}, {"events", Json::array()}};
  const auto now = impl_->audit->now_us();

  if (event == "opt_out_sale_share" || event == "objection") {
    proof["request"] = event;
    for (const auto& e : impl_->consent->withdraw_all(actor, *pol, id, event == "opt_out_sale_share", source,
                                                      proof.dump()))
      out["events"].push_back(event_json(e));
  } else {
    consent::EventInput in;
    in.purpose = required_string(body, "purpose", 64);
    in.channel = required_string(body, "channel", 16);
    in.event = event;
    in.source = source;
    if (body.contains("lawful_basis")) in.lawful_basis = required_string(body, "lawful_basis", 64);
    if (body.contains("notice_version")) in.notice_version = required_string(body, "notice_version", 128);
    in.at_us = parse_time_or_now(body, "at", now);
    if (body.contains("expires_at")) in.expires_us = parse_time_or_now(body, "expires_at", now);
    if (body.contains("double_opt_in")) {
      if (!body["double_opt_in"].is_boolean())
        throw Error(ErrorCode::invalid_field, "field 'double_opt_in': expected true or false");
      in.double_opt_in = body["double_opt_in"].get<bool>();
    }
    if (in.event == "granted") {
      // Refused before anything is written; an unknown purpose is left to the
      // ledger's own validation (invalid_field).
      if (!in.double_opt_in && pol->purpose(in.purpose) != nullptr && !role.capture_consent.count(in.purpose))
        impl_->deny(caller, "consent.record", ErrorCode::consent_capture_not_allowed,
                    "role '" + caller.principal.role + "' may not capture consent for '" + in.purpose +
                        "': record it with double_opt_in (confirmed by the subject) or through a role that lists it"
                        " in capture_consent",
                    records::to_hex(id));
      // The evidence this grant stands on, recorded with it (never personal values).
      proof["capture"] = in.double_opt_in ? "double_opt_in_pending" : "capture_consent";
      proof["captured_by_role"] = role.name;
    }
    in.proof = proof.dump();
    if (in.proof.size() > 4096) throw Error(ErrorCode::invalid_field, "field 'proof': larger than 4 KiB");
    const auto recorded = impl_->consent->record(actor, *pol, id, in);
    for (const auto& e : recorded.events) {
      out["events"].push_back(event_json(e));
      if (e.status == "confirmed" && e.event == "granted")
        out["receipt"] = Json::parse(impl_->consent->receipt_json(e, *pol, impl_->current_regulations()->controller()));
    }
    if (recorded.confirmation_token) {
      out["confirmation"] = {{"token", *recorded.confirmation_token},
                             {"expires_at", audit::format_time_us(*recorded.confirmation_expires_us)}};
    }
  }
  if (gpc) {
    const Json gpc_proof = {{"signal", "Sec-GPC: 1"}, {"received_at", audit::format_time_us(now)},
                            {"request_id", caller.request_id}};
    for (const auto& e : impl_->consent->withdraw_all(actor, *pol, id, true, "gpc", gpc_proof.dump()))
      out["events"].push_back(event_json(e));
  }
  out["current"] = state_json(impl_->consent->current(id));
  return out;
}

Json Service::get_consents(const Caller& caller, std::string_view id_text) {
  const auto pol = impl_->current_policy();
  const records::SubjectId id = records::parse_subject_id(id_text);
  const access::Role& role = impl_->authorize(caller, *pol, "consent", "consent.read", false, records::to_hex(id));
  const records::Subject meta = impl_->records->metadata(id);
  if (meta.status != "active")
    throw Error(ErrorCode::not_found, "subject " + records::to_hex(id) + " not found");
  Json history = Json::array();
  for (const auto& e : impl_->consent->history(id)) history.push_back(event_json(e));
  impl_->audit->append_now(impl_->actor(caller), {"consent.read", records::to_hex(id), {}, {}, true, "", ""});
  Json out = {{"subject_id", records::to_hex(id)},
              {"current", state_json(impl_->consent->current(id))},
              {"history", history},
              {"objected", meta.objected}};
  // An Art. 18 restriction is the compliance team's to know (roles that work
  // requests): a CRM module is refused the subject anyway, and need not
  // learn that they restricted processing.
  if (role.operations.count("dsr")) out["restricted"] = meta.restricted;
  return out;
}

Json Service::confirm_consent(const Caller& caller, const Json& body) {
  const auto pol = impl_->current_policy();
  const access::Role& role = impl_->authorize(caller, *pol, "consent", "consent.confirm", false);
  only_keys(body, {"token"});
  const std::string token = required_string(body, "token", 128);
  // The confirmation is the capture: it must be relayed by a role that may
  // capture the purpose (e.g. the preference page), never by the role that
  // uses it, or a pending grant would be evidence of nothing.
  std::string refused_subject;
  consent::Event e;
  try {
    e = impl_->consent->confirm(impl_->actor(caller), token, [&](const consent::Event& pending) {
      refused_subject = pending.subject_id;
      return role.capture_consent.count(pending.purpose) > 0;
    });
  } catch (const Error& err) {
    if (err.code() != ErrorCode::consent_capture_not_allowed) throw;
    impl_->deny(caller, "consent.confirm", err.code(), err.what(), refused_subject);
  }
  return {{"event", event_json(e)}, {"receipt", Json::parse(impl_->consent->receipt_json(e, *pol, impl_->current_regulations()->controller()))}};
}

}  // namespace custos::service
