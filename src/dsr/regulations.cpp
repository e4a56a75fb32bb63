#include "custos/dsr/regulations.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <functional>
#include <set>

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
  if (end == "reg_1182_71") return util::EndRule::reg_1182_71;
  refuse(where, "'end' must be as_counted, next_working_day or reg_1182_71");
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

// The file's format version; 1 for a file without `version` (the previous
// release wrote none).
int format_version(const YAML::Node& root, const std::string& where) {
  if (!root.IsMap()) refuse(where, "expected a map at the top");
  if (!root["version"]) return 1;
  if (!root["version"].IsScalar()) refuse(where, "'version' must be a number");
  try {
    return root["version"].as<int>();
  } catch (const YAML::Exception&) {
    refuse(where, "'version' must be a number");
  }
}

void require_current_version(const YAML::Node& root, const std::string& where) {
  const int v = format_version(root, where);
  if (v == kRegulationsVersion) return;
  if (v > kRegulationsVersion)
    refuse(where, "version " + std::to_string(v) + " is from a newer release (this one reads version " +
                      std::to_string(kRegulationsVersion) + ")");
  if (v == 1)
    refuse(where, "this file is in the previous release's format (no 'version'; a 'holidays' list, no calendars): "
                  "run `custos policy upgrade` to convert it (the old file is kept as regulations.yaml.v1)");
  refuse(where, "unknown version " + std::to_string(v) + " (this release reads version " +
                    std::to_string(kRegulationsVersion) + ")");
}

// A YAML double-quoted scalar.
std::string quoted(const std::string& value) {
  YAML::Emitter e;
  e << YAML::DoubleQuoted << value;
  return e.c_str();
}

// `text` with each line passed through `edit` in order (without its '\n');
// line breaks are kept as they were.
std::string rewrite_lines(const std::string& text, const std::function<void(std::string&)>& edit) {
  std::string out;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    std::string line = text.substr(pos, eol - pos);
    edit(line);
    out += line;
    if (eol < text.size()) out += '\n';
    pos = eol + 1;
  }
  return out;
}

// `text` with the value of `key` (at two spaces' indent) under the top-level
// `section` replaced; unchanged if there is no such line.
std::string replace_in_section(const std::string& text, const std::string& section, const std::string& key,
                               const std::string& value) {
  bool inside = false;
  return rewrite_lines(text, [&](std::string& line) {
    if (!line.empty() && line[0] != ' ' && line[0] != '#') inside = line == section + ":";
    if (inside && line.starts_with("  " + key + ":")) line = "  " + key + ": " + value;
  });
}

// `text` with the `calendar:` of regime `regime` (in every top-level section)
// set to `calendar`; a comment after the value is kept.
std::string replace_regime_calendar(const std::string& text, const std::string& regime, const std::string& calendar) {
  bool inside = false;
  return rewrite_lines(text, [&](std::string& line) {
    if (line.size() > 2 && line.starts_with("  ") && line[2] != ' ' && line[2] != '#') inside = line == "  " + regime + ":";
    else if (!line.empty() && line[0] != ' ' && line[0] != '#') inside = false;
    if (inside && line.starts_with("    calendar: ")) {
      const std::size_t value_end = line.find_first_of(" #", 14);
      line = "    calendar: " + calendar + (value_end == std::string::npos ? "" : line.substr(value_end));
    }
  });
}

// The previous release's period {months|days|business_days|hours: N}, or
// nullopt if `n` is not one.
std::optional<util::Period> old_period(const YAML::Node& n) {
  if (!n || !n.IsMap()) return std::nullopt;
  try {
    return parse_period(n, "", true);
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

// A note for each rule of the old file whose period differs from the one
// the upgraded file applies (the shipped, statute-sourced rule).
void compare_rules(const YAML::Node& old_root, const Regulations& now, std::vector<std::string>& notes) {
  const auto differs = [&](const std::string& what, const YAML::Node& old_node, const std::optional<util::Period>& next) {
    const auto before = old_period(old_node);
    if (!before) return;
    const std::string after = next ? next->describe() : std::string("no fixed period");
    if (before->describe() != after)
      notes.push_back(what + " was " + before->describe() + " in the old file; the upgraded file applies " + after +
                      " (its source is in regulations.yaml)");
  };
  if (old_root["dsr"] && old_root["dsr"].IsMap())
    for (const auto& kv : old_root["dsr"]) {
      const std::string key = kv.first.as<std::string>();
      const DsrRules* rules = now.dsr(key);
      if (rules == nullptr) {
        notes.push_back("dsr." + key + " has no regime in the upgraded file (`custos regulations show` lists them)");
        continue;
      }
      differs("dsr." + key + ".respond", kv.second["respond"], rules->respond.period);
      differs("dsr." + key + ".extend", kv.second["extend"],
              rules->extend ? std::optional(rules->extend->period) : std::nullopt);
      if (kv.second["opt_out"]) {
        const auto it = rules->by_type.find("opt_out_sale_share");
        differs("dsr." + key + ".opt_out", kv.second["opt_out"],
                it == rules->by_type.end() ? std::nullopt : std::optional(it->second.period));
      }
    }
  if (old_root["breach"] && old_root["breach"].IsMap())
    for (const auto& kv : old_root["breach"]) {
      const std::string key = kv.first.as<std::string>();
      const BreachRules* rules = now.breach(key);
      if (rules == nullptr) {
        notes.push_back("breach." + key + " has no regime in the upgraded file (`custos regulations show` lists them)");
        continue;
      }
      // The old `authority` is the regulator each law names (an attorney
      // general, HHS); the old `subjects` are the individuals.
      const Recipient* authority = rules->recipient("authority");
      for (const char* k : {"attorney_general", "hhs"})
        if (authority == nullptr) authority = rules->recipient(k);
      const Recipient* individuals = rules->recipient("individuals");
      differs("breach." + key + ".authority", kv.second["authority"], authority ? authority->within : std::nullopt);
      differs("breach." + key + ".subjects", kv.second["subjects"], individuals ? individuals->within : std::nullopt);
    }
}

// Whether an old file's holiday is "YYYY-MM-DD" with a year the calendars
// compute (the month and day are compared as text, never interpreted).
bool old_holiday_date(const std::string& d) {
  if (d.size() != 10 || d[4] != '-' || d[7] != '-') return false;
  for (const std::size_t i : {0, 1, 2, 3, 5, 6, 8, 9})
    if (d[i] < '0' || d[i] > '9') return false;
  const int year = std::stoi(d.substr(0, 4));  // four digits: cannot throw
  return year >= util::kFirstYear && year <= util::kLastYear;
}

// The shipped calendar whose holidays equal `listed` (each old_holiday_date)
// in every year the list covers; "" if none does.
std::string calendar_matching(const Regulations& regs, const std::set<std::string>& listed) {
  std::set<int> years;
  for (const auto& d : listed) years.insert(std::stoi(d.substr(0, 4)));
  for (const auto& [key, cal] : regs.calendars()) {
    std::set<std::string> theirs;
    for (const int y : years)
      for (const auto& holiday : cal.holidays(y)) theirs.insert(holiday.first);
    if (theirs == listed) return key;
  }
  return "";
}

RegulationsUpgrade upgrade_regulations_unchecked(const std::filesystem::path& policy_dir,
                                                const std::filesystem::path& shipped_dir);

}  // namespace

// An old file is the operator's own text: a value of the wrong shape (a map
// where a date was expected) is a refusal that names the file, not a
// yaml-cpp exception escaping to the CLI as an internal error.
RegulationsUpgrade upgrade_regulations(const std::filesystem::path& policy_dir, const std::filesystem::path& shipped_dir) {
  try {
    return upgrade_regulations_unchecked(policy_dir, shipped_dir);
  } catch (const YAML::Exception& e) {
    const std::string near = e.mark.is_null() ? "" : " near line " + std::to_string(e.mark.line + 1);
    refuse((policy_dir / "regulations.yaml").string(),
           "has a value of the wrong type" + near + "; fix it before upgrading");
  }
}

namespace {

RegulationsUpgrade upgrade_regulations_unchecked(const std::filesystem::path& policy_dir,
                                                const std::filesystem::path& shipped_dir) {
  namespace fs = std::filesystem;
  const fs::path file = policy_dir / "regulations.yaml";
  const std::string where = file.string();
  RegulationsUpgrade u;
  u.to_version = kRegulationsVersion;
  YAML::Node old_root;
  const std::string old_text = util::read_text_file(file);
  try {
    old_root = YAML::Load(old_text);
  } catch (const YAML::Exception& e) {
    refuse(where, "invalid at line " + std::to_string(e.mark.line + 1) + "; fix it before upgrading");
  }
  u.from_version = format_version(old_root, where);
  if (u.from_version == kRegulationsVersion) {
    (void)Regulations::load(file);  // current: it must still load
    return u;
  }
  if (u.from_version != 1) require_current_version(old_root, where);  // newer or unknown: refused with why

  // The shipped files are the new rules; the old file contributes what is
  // the operator's own: the controller, and which public holidays count.
  const auto shipped = Regulations::load(shipped_dir / "regulations.yaml");
  std::string next = util::read_text_file(shipped_dir / "regulations.yaml");
  if (const YAML::Node c = old_root["controller"]; c && c.IsMap()) {
    if (c["name"] && c["name"].IsScalar()) next = replace_in_section(next, "controller", "name", quoted(c["name"].as<std::string>()));
    if (c["timezone"] && c["timezone"].IsScalar())
      next = replace_in_section(next, "controller", "timezone", quoted(c["timezone"].as<std::string>()));
  }
  const DsrRules* eu = shipped->dsr("eu-gdpr");
  u.eu_calendar = eu ? eu->calendar->key() : "";
  if (const YAML::Node h = old_root["holidays"]; h && h.IsSequence() && h.size() > 0 && eu != nullptr) {
    std::set<std::string> listed;
    for (const auto& d : h) {
      // The old release refused anything else; a hand-edited file may hold it.
      const std::string date = d.as<std::string>();
      if (!old_holiday_date(date))
        refuse((policy_dir / "regulations.yaml").string(),
               "holidays: '" + util::printable_prefix(date, 32) + "' is not a date YYYY-MM-DD in " +
                   std::to_string(util::kFirstYear) + ".." + std::to_string(util::kLastYear) +
                   "; fix it before upgrading");
      listed.insert(date);
    }
    const std::string match = calendar_matching(*shipped, listed);
    if (match.empty()) {
      u.notes.push_back("the old 'holidays' list matches no shipped calendar: eu-gdpr counts on " + u.eu_calendar +
                        "; name your member state's calendar in regulations.yaml (calendars.yaml has them)");
    } else if (match != u.eu_calendar) {
      next = replace_regime_calendar(next, "eu-gdpr", match);
      u.eu_calendar = match;
    }
  }

  // Write beside the old file, load the result, then swap: a failure leaves
  // the old file (and no stray calendars.yaml) behind.
  const fs::path calendars = policy_dir / "calendars.yaml";
  const fs::path candidate = policy_dir / "regulations.yaml.upgrade";
  std::error_code ec;
  u.calendars_added = !fs::exists(calendars, ec);
  try {
    if (u.calendars_added) util::write_file_atomic(calendars, util::read_text_file(shipped_dir / "calendars.yaml"), 0644);
    util::write_file_atomic(candidate, next, 0644);
    const auto upgraded = Regulations::load(candidate);
    compare_rules(old_root, *upgraded, u.notes);
    u.backup = policy_dir / "regulations.yaml.v1";
    for (int i = 2; fs::exists(u.backup, ec); ++i) u.backup = policy_dir / ("regulations.yaml.v1." + std::to_string(i));
    util::write_file_atomic(u.backup, old_text, 0644);
    fs::rename(candidate, file);
  } catch (...) {
    fs::remove(candidate, ec);
    if (u.calendars_added) fs::remove(calendars, ec);
    throw;
  }
  u.changed = true;
  return u;
}

}  // namespace

const Recipient* BreachRules::recipient(std::string_view k) const {
  for (const auto& r : recipients)
    if (r.key == k) return &r;
  return nullptr;
}

bool declares_current_version(std::string_view yaml_text) {
  static constexpr std::string_view kKey = "version:";
  const std::string current = std::to_string(kRegulationsVersion);
  std::size_t at = 0;
  while (at < yaml_text.size()) {
    std::size_t end = yaml_text.find('\n', at);
    if (end == std::string_view::npos) end = yaml_text.size();
    std::string_view line = yaml_text.substr(at, end - at);
    at = end + 1;
    if (!line.starts_with(kKey)) continue;  // nested keys are indented
    line.remove_prefix(kKey.size());
    if (const auto hash = line.find('#'); hash != std::string_view::npos) line = line.substr(0, hash);
    const auto first = line.find_first_not_of(" \t\r");
    if (first == std::string_view::npos) return false;
    const auto last = line.find_last_not_of(" \t\r");
    return line.substr(first, last - first + 1) == current;
  }
  return false;
}

std::shared_ptr<const Regulations> Regulations::load(const std::filesystem::path& file) {
  auto r = std::make_shared<Regulations>();
  std::string src = file.string();
  try {
    const YAML::Node root = YAML::Load(util::read_text_file(file));
    // The format first: a previous release's file has no calendars.yaml
    // beside it, and "cannot read calendars.yaml" would not say what to do.
    require_current_version(root, src);
    const auto calendars_file = file.parent_path() / "calendars.yaml";
    src = calendars_file.string();
    load_calendars(calendars_file, r->calendars_);
    src = file.string();
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
