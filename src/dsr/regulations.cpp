#include "custos/dsr/regulations.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>

#include "custos/dsr/dsr.h"
#include "custos/error.h"
#include "custos/util/files.h"
#include "custos/util/text.h"

namespace custos::dsr {
namespace {

[[noreturn]] void refuse(const std::string& where, const std::string& what) {
  throw Error(ErrorCode::invalid_argument, where + ": " + what);
}

bool is_iso_date(const std::string& s) {
  if (s.size() != 10 || s[4] != '-' || s[7] != '-') return false;
  for (std::size_t i = 0; i < s.size(); ++i)
    if (i != 4 && i != 7 && (s[i] < '0' || s[i] > '9')) return false;
  return true;
}

std::string text(const YAML::Node& n, const char* key, const std::string& where, bool required = true) {
  if (!n[key]) {
    if (required) refuse(where, std::string("'") + key + "' is required");
    return "";
  }
  if (!n[key].IsScalar()) refuse(where, std::string("'") + key + "' must be a string");
  return n[key].as<std::string>();
}

Source parse_source(const YAML::Node& n, const std::string& where) {
  Source s{text(n, "source", where), text(n, "checked", where)};
  if (!is_iso_date(s.checked)) refuse(where, "'checked' must be a date YYYY-MM-DD");
  return s;
}

// {months|days|business_days|hours: N}, exactly one; nullopt if none given
// and `optional`.
std::optional<util::Period> parse_period(const YAML::Node& n, const std::string& where, bool optional = false) {
  if (!n.IsMap()) refuse(where, "expected a map with one of months, days, business_days, hours");
  util::Period p;
  int set = 0;
  const auto unit = [&](const char* key, int& out) {
    if (!n[key]) return;
    out = n[key].as<int>();
    if (out <= 0 || out > 1200) refuse(where, std::string("'") + key + "' must be 1..1200");
    ++set;
  };
  unit("months", p.months);
  unit("days", p.days);
  unit("business_days", p.business_days);
  unit("hours", p.hours);
  if (set == 0 && optional) return std::nullopt;
  if (set != 1) refuse(where, "give exactly one of months, days, business_days, hours");
  return p;
}

Clock parse_clock(const YAML::Node& n, const std::string& where) {
  Clock c{*parse_period(n, where), parse_source(n, where), text(n, "when", where, false)};
  return c;
}

util::EndRule parse_end(const YAML::Node& n, const std::string& where) {
  const std::string end = n["end"] ? n["end"].as<std::string>() : "as_counted";
  if (end == "as_counted") return util::EndRule::as_counted;
  if (end == "next_working_day") return util::EndRule::next_working_day;
  refuse(where, "'end' must be as_counted or next_working_day");
}

unsigned parse_weekday(const std::string& s, const std::string& where) {
  static const char* kNames[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};
  for (unsigned i = 0; i < 7; ++i)
    if (s == kNames[i]) return i;
  refuse(where, "unknown weekday '" + util::printable_prefix(s, 16) + "' (sun, mon, ..., sat)");
}

std::pair<unsigned, unsigned> parse_month_day(const std::string& s, const std::string& where) {
  if (s.size() != 5 || s[2] != '-') refuse(where, "dates are written MM-DD");
  try {
    return {static_cast<unsigned>(std::stoi(s.substr(0, 2))), static_cast<unsigned>(std::stoi(s.substr(3, 2)))};
  } catch (const std::exception&) {
    refuse(where, "dates are written MM-DD");
  }
}

util::HolidayRule parse_holiday(const YAML::Node& n, const std::string& where) {
  using K = util::HolidayRule::Kind;
  util::HolidayRule r;
  r.name = text(n, "name", where);
  const std::string w = where + " '" + r.name + "'";
  if (n["date"]) {
    r.kind = K::fixed;
    std::tie(r.month, r.day) = parse_month_day(n["date"].as<std::string>(), w);
  } else if (n["easter"]) {
    r.kind = K::easter;
    r.easter_offset = n["easter"].as<int>();
  } else if (n["before"]) {
    r.kind = K::weekday_before;
    std::tie(r.month, r.day) = parse_month_day(n["before"].as<std::string>(), w);
    r.weekday = parse_weekday(text(n, "weekday", w), w);
  } else if (n["nth"]) {
    r.kind = K::nth_weekday;
    r.nth = n["nth"].as<std::string>() == "last" ? -1 : n["nth"].as<int>();
    r.weekday = parse_weekday(text(n, "weekday", w), w);
    r.month = n["month"] ? n["month"].as<unsigned>() : 0;
    if (n["or_date_if"]) {
      const auto [m, d] = parse_month_day(text(n["or_date_if"], "date", w), w);
      if (m != r.month) refuse(w, "'or_date_if' must be in the same month");
      r.or_date_if_weekday = std::make_pair(d, parse_weekday(text(n["or_date_if"], "weekday", w), w));
    }
  } else {
    refuse(w, "give one of date, easter, before, nth");
  }
  const std::string observed = n["observed"] ? n["observed"].as<std::string>() : "none";
  if (observed == "none") r.observed = util::Observed::none;
  else if (observed == "us_federal") r.observed = util::Observed::us_federal;
  else if (observed == "substitute") r.observed = util::Observed::substitute;
  else if (observed == "sunday_to_monday") r.observed = util::Observed::sunday_to_monday;
  else if (observed == "sunday_to_saturday") r.observed = util::Observed::sunday_to_saturday;
  else refuse(w, "'observed' must be none, us_federal, substitute, sunday_to_monday or sunday_to_saturday");
  if (n["plus_days"]) r.plus_days = n["plus_days"].as<int>();
  if (n["from"]) r.from_year = n["from"].as<int>();
  if (n["to"]) r.to_year = n["to"].as<int>();
  if (n["except"]) r.except_years = n["except"].as<std::vector<int>>();
  return r;
}

void load_calendars(const std::filesystem::path& file, std::map<std::string, util::HolidayCalendar, std::less<>>& out) {
  const std::string src = file.string();
  const YAML::Node root = YAML::Load(util::read_text_file(file));
  if (!root["calendars"] || !root["calendars"].IsMap()) refuse(src, "'calendars' must be a map");
  for (const auto& kv : root["calendars"]) {
    const std::string key = kv.first.as<std::string>();
    const std::string where = src + ": calendars." + key;
    const YAML::Node& n = kv.second;
    parse_source(n, where);
    std::vector<util::HolidayRule> rules;
    if (n["holidays"])
      for (const auto& h : n["holidays"]) rules.push_back(parse_holiday(h, where));
    std::map<std::string, std::string> extra;
    if (n["extra"])
      for (const auto& e : n["extra"]) extra[e.first.as<std::string>()] = e.second.as<std::string>();
    std::set<unsigned> weekend = {0, 6};
    if (n["weekend"]) {
      weekend.clear();
      for (const auto& d : n["weekend"]) weekend.insert(parse_weekday(d.as<std::string>(), where));
    }
    out.emplace(key, util::HolidayCalendar(key, text(n, "name", where), std::move(rules), std::move(extra), weekend));
  }
}

std::vector<std::string> parse_aliases(const YAML::Node& n) {
  return n["aliases"] ? n["aliases"].as<std::vector<std::string>>() : std::vector<std::string>{};
}

template <typename Map>
std::string names_of(const Map& m) {
  std::string out;
  for (const auto& [k, v] : m) out += (out.empty() ? "" : ", ") + k;
  return out;
}

template <typename Map, typename Alias>
auto find_in(const Map& m, const Alias& aliases, std::string_view key) -> decltype(&m.begin()->second) {
  if (const auto it = m.find(key); it != m.end()) return &it->second;
  if (const auto a = aliases.find(key); a != aliases.end()) return &m.find(a->second)->second;
  return nullptr;
}

}  // namespace

const Recipient* BreachRules::recipient(std::string_view k) const {
  for (const auto& r : recipients)
    if (r.key == k) return &r;
  return nullptr;
}

std::shared_ptr<const Regulations> Regulations::load(const std::filesystem::path& file) {
  auto r = std::make_shared<Regulations>();
  std::string src = file.string();
  try {
    const auto calendars_file = file.parent_path() / "calendars.yaml";
    src = calendars_file.string();
    load_calendars(calendars_file, r->calendars_);
    src = file.string();
    const YAML::Node root = YAML::Load(util::read_text_file(file));
    const YAML::Node controller = root["controller"];
    r->controller_ = controller && controller["name"] ? controller["name"].as<std::string>() : "controller";
    const std::string zone = controller && controller["timezone"] ? controller["timezone"].as<std::string>() : "UTC";
    r->calendar_ = std::make_unique<util::Calendar>(zone);
    const auto calendar_of = [&](const YAML::Node& n, const std::string& where) {
      const std::string key = text(n, "calendar", where);
      const auto* cal = r->holiday_calendar(key);
      if (cal == nullptr)
        refuse(where, "unknown calendar '" + util::printable_prefix(key, 32) + "' (calendars.yaml has " +
                          names_of(r->calendars_) + ")");
      return cal;
    };
    const auto add_aliases = [&](auto& alias_map, const auto& names, const std::string& key, const std::string& where) {
      for (const auto& a : names)
        if (!alias_map.emplace(a, key).second) refuse(where, "alias '" + a + "' is used twice");
    };
    if (root["dsr"])
      for (const auto& kv : root["dsr"]) {
        DsrRules d;
        d.key = kv.first.as<std::string>();
        const std::string where = src + ": dsr." + d.key;
        const YAML::Node& n = kv.second;
        d.name = text(n, "name", where);
        d.aliases = parse_aliases(n);
        d.calendar = calendar_of(n, where);
        d.end = parse_end(n, where);
        if (!n["respond"]) refuse(where, "'respond' is required");
        d.respond = parse_clock(n["respond"], where + ".respond");
        if (n["extend"]) {
          d.extend = parse_clock(n["extend"], where + ".extend");
          d.max_extensions = n["extend"]["max"] ? n["extend"]["max"].as<int>() : 1;
          try {
            d.respond.period.plus(d.extend->period);  // counted from receipt: the same unit
          } catch (const Error& e) {
            refuse(where + ".extend", e.what());
          }
        }
        if (n["confirm_receipt"]) d.confirm_receipt = parse_clock(n["confirm_receipt"], where + ".confirm_receipt");
        if (n["appeal"]) d.appeal = parse_clock(n["appeal"], where + ".appeal");
        if (n["types"])
          for (const auto& t : n["types"]) {
            const std::string type = t.first.as<std::string>();
            if (std::find(kTypes.begin(), kTypes.end(), type) == kTypes.end())
              refuse(where + ".types", "unknown request type '" + util::printable_prefix(type, 32) + "'");
            d.by_type.emplace(type, parse_clock(t.second, where + ".types." + type));
          }
        add_aliases(r->dsr_alias_, d.aliases, d.key, where);
        r->dsr_.emplace(d.key, std::move(d));
      }
    if (root["breach"])
      for (const auto& kv : root["breach"]) {
        BreachRules b;
        b.key = kv.first.as<std::string>();
        const std::string where = src + ": breach." + b.key;
        const YAML::Node& n = kv.second;
        b.name = text(n, "name", where);
        b.aliases = parse_aliases(n);
        b.calendar = calendar_of(n, where);
        b.end = parse_end(n, where);
        if (!n["notify"] || !n["notify"].IsMap()) refuse(where, "'notify' must map recipients to their clocks");
        for (const auto& rk : n["notify"]) {
          Recipient rc;
          rc.key = rk.first.as<std::string>();
          const std::string rw = where + ".notify." + rc.key;
          const YAML::Node& m = rk.second;
          rc.name = text(m, "name", rw);
          rc.within = parse_period(m, rw, true);
          rc.timing = text(m, "timing", rw, !rc.within.has_value());
          rc.source = parse_source(m, rw);
          const std::string anchor = m["anchor"] ? m["anchor"].as<std::string>() : "discovery";
          if (m["after"]) {
            rc.anchor = Recipient::Anchor::after_recipient;
            rc.after = m["after"].as<std::string>();
            if (b.recipient(rc.after) == nullptr) refuse(rw, "'after' names no earlier recipient of this regime");
          } else if (anchor == "end_of_year") {
            rc.anchor = Recipient::Anchor::end_of_year;
          } else if (anchor != "discovery") {
            refuse(rw, "'anchor' must be discovery or end_of_year (or give 'after')");
          }
          rc.high_risk_only = m["high_risk_only"] && m["high_risk_only"].as<bool>();
          if (m["residents_over"]) rc.residents_over = m["residents_over"].as<std::int64_t>();
          if (m["residents_at_least"]) rc.residents_at_least = m["residents_at_least"].as<std::int64_t>();
          if (m["residents_under"]) rc.residents_under = m["residents_under"].as<std::int64_t>();
          rc.residents_of = m["residents_of"] ? m["residents_of"].as<std::string>() : "";
          b.recipients.push_back(std::move(rc));
        }
        add_aliases(r->breach_alias_, b.aliases, b.key, where);
        r->breach_.emplace(b.key, std::move(b));
      }
    for (const auto& [alias, key] : r->dsr_alias_)
      if (r->dsr_.count(alias)) refuse(src, "alias '" + alias + "' is also a regime name");
    for (const auto& [alias, key] : r->breach_alias_)
      if (r->breach_.count(alias)) refuse(src, "alias '" + alias + "' is also a regime name");
  } catch (const YAML::Exception& e) {
    throw Error(ErrorCode::invalid_argument, src + ": invalid at line " + std::to_string(e.mark.line + 1));
  } catch (const Error& e) {
    if (e.code() == ErrorCode::not_found) throw Error(ErrorCode::invalid_argument, "cannot read " + src);
    throw;
  }
  return r;
}

const DsrRules* Regulations::dsr(std::string_view regime) const { return find_in(dsr_, dsr_alias_, regime); }
const BreachRules* Regulations::breach(std::string_view regime) const { return find_in(breach_, breach_alias_, regime); }

const util::HolidayCalendar* Regulations::holiday_calendar(std::string_view key) const {
  const auto it = calendars_.find(key);
  return it == calendars_.end() ? nullptr : &it->second;
}

const DsrRules& Regulations::require_dsr(std::string_view regime, std::string_view field) const {
  if (const auto* d = dsr(regime)) return *d;
  throw Error(ErrorCode::invalid_field, "field '" + std::string(field) + "': unknown regime '" +
                                            util::printable_prefix(regime, 32) + "'; valid: " + names_of(dsr_));
}

const BreachRules& Regulations::require_breach(std::string_view regime, std::string_view field) const {
  if (const auto* b = breach(regime)) return *b;
  throw Error(ErrorCode::invalid_field, "field '" + std::string(field) + "': unknown regime '" +
                                            util::printable_prefix(regime, 32) + "'; valid: " + names_of(breach_));
}

const util::HolidayCalendar& Regulations::require_calendar(std::string_view key, std::string_view field) const {
  if (const auto* c = holiday_calendar(key)) return *c;
  throw Error(ErrorCode::invalid_field, "field '" + std::string(field) + "': unknown calendar '" +
                                            util::printable_prefix(key, 32) + "'; valid: " + names_of(calendars_));
}

std::int64_t Regulations::due(const DsrRules& rules, std::string_view type, std::int64_t received_us) const {
  const auto it = rules.by_type.find(type);
  const Clock& clock = it == rules.by_type.end() ? rules.respond : it->second;
  return calendar_->deadline(received_us, clock.period, *rules.calendar, rules.end);
}

std::optional<std::int64_t> Regulations::extended_due(const DsrRules& rules, std::string_view type,
                                                      std::int64_t received_us, int extensions) const {
  if (!rules.extend || rules.by_type.count(type) || extensions < 1 || extensions > rules.max_extensions)
    return std::nullopt;
  util::Period total = rules.respond.period;
  for (int i = 0; i < extensions; ++i) total = total.plus(rules.extend->period);
  return calendar_->deadline(received_us, total, *rules.calendar, rules.end);
}

std::optional<std::int64_t> Regulations::confirm_by(const DsrRules& rules, std::int64_t received_us) const {
  if (!rules.confirm_receipt) return std::nullopt;
  return calendar_->deadline(received_us, rules.confirm_receipt->period, *rules.calendar, rules.end);
}

std::optional<std::int64_t> Regulations::breach_due(const BreachRules& rules, const Recipient& r,
                                                    std::int64_t anchor_us) const {
  if (!r.within) return std::nullopt;
  const std::int64_t start = r.anchor == Recipient::Anchor::end_of_year ? calendar_->end_of_local_year(anchor_us) : anchor_us;
  return calendar_->deadline(start, *r.within, *rules.calendar, rules.end);
}

}  // namespace custos::dsr
