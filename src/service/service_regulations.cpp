// The statutory rules, rendered for officers (custos regulations show|due).
#include <algorithm>

#include "custos/audit/audit_log.h"
#include "custos/dsr/dsr.h"
#include "custos/error.h"
#include "custos/service/regulations_view.h"
#include "custos/util/text.h"

namespace custos::service {
namespace {

using Json = nlohmann::json;

Json calendar_json(const util::HolidayCalendar& c) { return {{"key", c.key()}, {"name", c.name()}}; }

const char* end_name(util::EndRule e) {
  switch (e) {
    case util::EndRule::next_working_day: return "next_working_day";
    case util::EndRule::reg_1182_71: return "reg_1182_71";
    case util::EndRule::as_counted: break;
  }
  return "as_counted";
}

Json clock_json(const std::string& rule, const dsr::Clock& c) {
  Json j = {{"rule", rule}, {"period", c.period.describe()}, {"source", c.source.citation}, {"checked", c.source.checked}};
  if (!c.note.empty()) j["when"] = c.note;
  return j;
}

Json recipient_json(const dsr::Recipient& r) {
  Json j = {{"recipient", r.key}, {"name", r.name}, {"source", r.source.citation}, {"checked", r.source.checked}};
  j["period"] = r.within ? Json(r.within->describe()) : Json(nullptr);
  if (!r.timing.empty()) j["timing"] = r.timing;
  if (r.anchor == dsr::Recipient::Anchor::after_recipient) j["counted_from"] = "notice to " + r.after;
  else if (r.anchor == dsr::Recipient::Anchor::end_of_year) j["counted_from"] = "end of the calendar year of discovery";
  else j["counted_from"] = "discovery";
  Json cond = Json::array();
  const std::string whose = r.residents_of.empty() ? "affected" : r.residents_of == "*" ? "residents of one region" : "residents of " + r.residents_of;
  if (r.high_risk_only) cond.push_back("likely high risk");
  if (r.residents_over) cond.push_back("more than " + std::to_string(*r.residents_over) + " " + whose);
  if (r.residents_at_least) cond.push_back("at least " + std::to_string(*r.residents_at_least) + " " + whose);
  if (r.residents_under) cond.push_back("fewer than " + std::to_string(*r.residents_under) + " " + whose);
  j["conditions"] = cond;
  return j;
}

std::string names(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& x : v) out += (out.empty() ? "" : ", ") + x;
  return out;
}

[[noreturn]] void unknown_regime(const dsr::Regulations& regs, std::string_view regime) {
  std::vector<std::string> all;
  for (const auto& [k, v] : regs.dsr_regimes()) all.push_back(k);
  for (const auto& [k, v] : regs.breach_regimes())
    if (std::find(all.begin(), all.end(), k) == all.end()) all.push_back(k);
  std::sort(all.begin(), all.end());
  throw Error(ErrorCode::invalid_field,
              "field 'regime': unknown regime '" + util::printable_prefix(regime, 32) + "'; valid: " + names(all));
}

}  // namespace

Json regulations_show(const dsr::Regulations& regs, std::string_view regime) {
  if (regime.empty()) {
    Json dsr = Json::array(), breach = Json::array(), calendars = Json::array();
    for (const auto& [k, r] : regs.dsr_regimes()) dsr.push_back({{"regime", k}, {"name", r.name}, {"aliases", r.aliases}});
    for (const auto& [k, r] : regs.breach_regimes()) breach.push_back({{"regime", k}, {"name", r.name}, {"aliases", r.aliases}});
    for (const auto& [k, c] : regs.calendars()) calendars.push_back(calendar_json(c));
    return {{"controller", regs.controller()}, {"time_zone", regs.calendar().time_zone()},
            {"dsr", dsr}, {"breach", breach}, {"calendars", calendars}};
  }
  const dsr::DsrRules* d = regs.dsr(regime);
  const dsr::BreachRules* b = regs.breach(regime);
  if (d == nullptr && b == nullptr) unknown_regime(regs, regime);
  Json out = {{"regime", d ? d->key : b->key}, {"time_zone", regs.calendar().time_zone()}};
  if (d) {
    Json rules = Json::array();
    rules.push_back(clock_json("respond", d->respond));
    if (d->extend) {
      Json j = clock_json("extend", *d->extend);
      j["max_extensions"] = d->max_extensions;
      j["counted_from"] = "receipt (respond + extend)";
      rules.push_back(j);
    }
    if (d->confirm_receipt) rules.push_back(clock_json("confirm_receipt", *d->confirm_receipt));
    if (d->appeal) rules.push_back(clock_json("appeal", *d->appeal));
    for (const auto& [type, c] : d->by_type) rules.push_back(clock_json("respond:" + type, c));
    out["dsr"] = {{"name", d->name}, {"aliases", d->aliases}, {"calendar", calendar_json(*d->calendar)},
                  {"end", end_name(d->end)}, {"rules", rules}};
  }
  if (b) {
    Json recipients = Json::array();
    for (const auto& r : b->recipients) recipients.push_back(recipient_json(r));
    out["breach"] = {{"name", b->name}, {"aliases", b->aliases}, {"calendar", calendar_json(*b->calendar)},
                     {"end", end_name(b->end)}, {"recipients", recipients}};
  }
  return out;
}

Json regulations_due(const dsr::Regulations& regs, std::string_view regime, std::string_view type,
                     std::string_view received_at) {
  const auto received = audit::parse_time_us(received_at);
  if (!received) throw Error(ErrorCode::invalid_field, "field 'received_at': expected an RFC 3339 time");
  regs.calendar().check_in_range(*received, "received_at");
  const auto when = [&](std::int64_t us) {
    return Json{{"at", audit::format_time_us(us)}, {"date", regs.calendar().local_date(us)}};
  };
  if (type == "breach") {
    const dsr::BreachRules& b = regs.require_breach(regime, "regime");
    Json clocks = Json::array();
    for (const auto& r : b.recipients) {
      Json j = recipient_json(r);
      if (r.anchor == dsr::Recipient::Anchor::after_recipient) {
        j["due"] = nullptr;  // depends on when the earlier notice is sent
      } else if (const auto due = regs.breach_due(b, r, *received)) {
        j["due"] = when(*due);
      } else {
        j["due"] = nullptr;
      }
      clocks.push_back(j);
    }
    return {{"regime", b.key}, {"type", "breach"}, {"discovered_at", audit::format_time_us(*received)},
            {"time_zone", regs.calendar().time_zone()}, {"clocks", clocks}};
  }
  const dsr::DsrRules& d = regs.require_dsr(regime, "regime");
  if (std::find(dsr::kTypes.begin(), dsr::kTypes.end(), type) == dsr::kTypes.end())
    throw Error(ErrorCode::invalid_field, "field 'type': unknown type '" + util::printable_prefix(type, 32) +
                                              "'; valid: " + names(dsr::kTypes) + ", breach");
  const auto it = d.by_type.find(type);
  const dsr::Clock& clock = it == d.by_type.end() ? d.respond : it->second;
  Json out = {{"regime", d.key},
              {"type", std::string(type)},
              {"received_at", audit::format_time_us(*received)},
              {"time_zone", regs.calendar().time_zone()},
              {"calendar", d.calendar->key()},
              {"due", when(regs.due(d, type, *received))},
              {"rule", clock_json(it == d.by_type.end() ? "respond" : "respond:" + std::string(type), clock)}};
  if (const auto ext = regs.extended_due(d, type, *received, 1)) {
    out["extended_due"] = when(*ext);
    out["extension"] = clock_json("extend", *d.extend);
  }
  if (const auto confirm = regs.confirm_by(d, *received)) {
    out["confirm_receipt_by"] = when(*confirm);
    out["confirm_receipt_rule"] = clock_json("confirm_receipt", *d.confirm_receipt);
  }
  if (d.appeal) out["appeal"] = clock_json("appeal", *d.appeal);
  return out;
}

}  // namespace custos::service
