#include "custos/util/calendar.h"

#include <date/date.h>
#include <date/tz.h>

#include <algorithm>

#include "custos/error.h"

namespace custos::util {
namespace {

using namespace std::chrono;
using Micros = sys_time<microseconds>;

const date::time_zone* zone_of(const void* z) { return static_cast<const date::time_zone*>(z); }

std::string iso(const date::year_month_day& ymd) { return date::format("%F", date::sys_days(ymd)); }

std::int32_t day_number(const date::year_month_day& ymd) {
  return static_cast<std::int32_t>(date::sys_days(ymd).time_since_epoch().count());
}
std::int32_t day_number(int y, unsigned m, unsigned d) {
  return day_number(date::year_month_day{date::year{y}, date::month{m}, date::day{d}});
}
date::year_month_day ymd_of(std::int32_t day) { return date::year_month_day{date::sys_days{date::days{day}}}; }
unsigned weekday_of(std::int32_t day) { return date::weekday{date::sys_days{date::days{day}}}.c_encoding(); }

// "YYYY-MM-DD" -> a valid date, or nullopt.
std::optional<date::year_month_day> parse_iso_date(const std::string& s) {
  if (s.size() != 10 || s[4] != '-' || s[7] != '-') return std::nullopt;
  for (std::size_t i : {0, 1, 2, 3, 5, 6, 8, 9})
    if (s[i] < '0' || s[i] > '9') return std::nullopt;
  const date::year_month_day ymd{date::year{std::stoi(s.substr(0, 4))}, date::month{static_cast<unsigned>(std::stoi(s.substr(5, 2)))},
                                 date::day{static_cast<unsigned>(std::stoi(s.substr(8, 2)))}};
  if (!ymd.ok()) return std::nullopt;
  return ymd;
}

// The year range the tables cover: a year either side of 1970..2100, for
// observed days that cross a year end and for periods that end in 2101.
constexpr int kTableFirstYear = kFirstYear - 1;
constexpr int kTableLastYear = kLastYear + 1;

// The date a rule gives in `year`, before any observed-day shift.
std::optional<std::int32_t> actual_date(const HolidayRule& r, int year) {
  using K = HolidayRule::Kind;
  switch (r.kind) {
    case K::fixed: return day_number(year, r.month, r.day);
    case K::easter: return easter_sunday(year) + r.easter_offset;
    case K::nth_weekday: {
      if (r.or_date_if_weekday) {
        const auto d = day_number(year, r.month, r.or_date_if_weekday->first);
        if (weekday_of(d) == r.or_date_if_weekday->second) return d;
      }
      const date::weekday wd{r.weekday};
      const date::year_month ym{date::year{year}, date::month{r.month}};
      if (r.nth < 0)
        return day_number(date::year_month_day{date::year_month_weekday_last{ym.year(), ym.month(), date::weekday_last{wd}}}) +
               r.plus_days;
      const date::year_month_weekday ymw{ym.year(), ym.month(), wd[static_cast<unsigned>(r.nth)]};
      if (!ymw.ok()) return std::nullopt;  // no fifth Monday this month
      return day_number(date::year_month_day{ymw}) + r.plus_days;
    }
    case K::weekday_before: {
      std::int32_t d = day_number(year, r.month, r.day) - 1;
      while (weekday_of(d) != r.weekday) --d;
      return d + r.plus_days;
    }
  }
  return std::nullopt;
}

}  // namespace

std::int32_t easter_sunday(int year) {
  // Anonymous Gregorian algorithm (Meeus/Jones/Butcher).
  const int a = year % 19, b = year / 100, c = year % 100, d = b / 4, e = b % 4;
  const int f = (b + 8) / 25, g = (b - f + 1) / 3, h = (19 * a + b - d - g + 15) % 30;
  const int i = c / 4, k = c % 4, l = (32 + 2 * e + 2 * i - h - k) % 7, m = (a + 11 * h + 22 * l) / 451;
  const int month = (h + l - 7 * m + 114) / 31, day = ((h + l - 7 * m + 114) % 31) + 1;
  return day_number(year, static_cast<unsigned>(month), static_cast<unsigned>(day));
}

Period Period::plus(const Period& o) const {
  const bool same = (months > 0) == (o.months > 0) && (days > 0) == (o.days > 0) &&
                    (business_days > 0) == (o.business_days > 0) && (hours > 0) == (o.hours > 0);
  if (!same) throw Error(ErrorCode::invalid_argument, "cannot add " + o.describe() + " to " + describe());
  return {months + o.months, days + o.days, business_days + o.business_days, hours + o.hours};
}

std::string Period::describe() const {
  if (months) return std::to_string(months) + " month(s)";
  if (business_days) return std::to_string(business_days) + " business day(s)";
  if (days) return std::to_string(days) + " day(s)";
  return std::to_string(hours) + " hour(s)";
}

HolidayCalendar::HolidayCalendar(std::string key, std::string name, std::vector<HolidayRule> rules,
                                 std::map<std::string, std::string> extra, std::set<unsigned> weekend)
    : key_(std::move(key)), name_(std::move(name)), rules_(std::move(rules)), extra_(std::move(extra)),
      weekend_(std::move(weekend)) {
  first_day_ = day_number(kTableFirstYear, 1, 1);
  // Every rule and date is checked here, so that a bad calendar is refused at
  // load; the table itself is built on first use (table()).
  for (const auto& r : rules_) {
    const bool valid = r.kind == HolidayRule::Kind::easter ||
                       (r.month >= 1 && r.month <= 12 &&
                        (r.kind != HolidayRule::Kind::fixed && r.kind != HolidayRule::Kind::weekday_before
                             ? r.weekday <= 6 && r.nth != 0 && r.nth >= -1 && r.nth <= 5
                             : r.day >= 1 && date::year_month_day{date::year{2000}, date::month{r.month}, date::day{r.day}}.ok()));
    if (!valid || r.weekday > 6 || r.from_year > r.to_year)
      throw Error(ErrorCode::invalid_argument, "calendar " + key_ + ": holiday '" + r.name + "' is not a valid rule");
  }
  for (const unsigned wd : weekend_)
    if (wd > 6) throw Error(ErrorCode::invalid_argument, "calendar " + key_ + ": weekend day " + std::to_string(wd) + " is not 0 (Sunday) .. 6");
  for (const auto& [date_text, what] : extra_)
    if (!parse_iso_date(date_text))
      throw Error(ErrorCode::invalid_argument, "calendar " + key_ + ": extra day '" + date_text + "' is not YYYY-MM-DD");
}

const HolidayCalendar::Table& HolidayCalendar::table() const {
  std::call_once(lazy_->once, [this] { build(lazy_->table); });
  return lazy_->table;
}

void HolidayCalendar::build(Table& t) const {
  const std::int32_t last_day = day_number(kTableLastYear, 12, 31);
  // Weekend days as bits (a std::set lookup per day was most of the build).
  unsigned weekend_bits = 0;
  for (const unsigned wd : weekend_) weekend_bits |= 1u << wd;
  const auto is_weekend = [&](std::int32_t d) { return (weekend_bits >> weekday_of(d)) & 1u; };
  t.closed.assign(static_cast<std::size_t>(last_day - first_day_ + 1), 0);
  const auto in_table = [&](std::int32_t d) { return d >= first_day_ && d <= last_day; };
  const auto mark = [&](std::int32_t d, const std::string& what) {
    if (!in_table(d)) return;
    t.closed[static_cast<std::size_t>(d - first_day_)] = 1;
    t.names.emplace(d, what);
  };
  for (const auto& [date_text, what] : extra_) mark(day_number(*parse_iso_date(date_text)), what);
  // Year by year: the actual dates first, then observed shifts in date order
  // so that a substitute day skips a holiday (or substitute) already there
  // (Christmas on Saturday -> Monday 27, Boxing Day on Sunday -> Tuesday 28).
  for (int year = kTableFirstYear; year <= kTableLastYear; ++year) {
    std::vector<std::pair<std::int32_t, const HolidayRule*>> actual;
    for (const auto& r : rules_) {
      if (year < r.from_year || year > r.to_year) continue;
      if (std::find(r.except_years.begin(), r.except_years.end(), year) != r.except_years.end()) continue;
      if (const auto d = actual_date(r, year)) actual.emplace_back(*d, &r);
    }
    std::sort(actual.begin(), actual.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    for (const auto& [d, r] : actual) mark(d, r->name);
    for (const auto& [d, r] : actual) {
      const unsigned wd = weekday_of(d);
      std::optional<std::int32_t> shifted;
      switch (r->observed) {
        case Observed::none: break;
        case Observed::us_federal:
          if (wd == 6) shifted = d - 1;
          if (wd == 0) shifted = d + 1;
          break;
        case Observed::sunday_to_monday:
          if (wd == 0) shifted = d + 1;
          break;
        case Observed::sunday_to_saturday:
          if (wd == 0) shifted = d - 1;
          break;
        case Observed::substitute:  // on this calendar's weekend, not Saturday-Sunday's
          if (is_weekend(d)) {
            std::int32_t s = d + 1;
            while (is_weekend(s) || (in_table(s) && t.closed[static_cast<std::size_t>(s - first_day_)])) ++s;
            shifted = s;
          }
          break;
      }
      if (shifted) mark(*shifted, r->name + " (observed)");
    }
  }
  // Each weekend weekday from its first date in the table, a week at a time.
  for (std::int32_t first = first_day_; first < first_day_ + 7; ++first)
    if (is_weekend(first))
      for (std::int32_t d = first; d <= last_day; d += 7) t.closed[static_cast<std::size_t>(d - first_day_)] = 1;
}

bool HolidayCalendar::is_working_day(std::int32_t day) const {
  const auto& closed = table().closed;
  if (day < first_day_ || day - first_day_ >= static_cast<std::int32_t>(closed.size())) return false;
  return closed[static_cast<std::size_t>(day - first_day_)] == 0;
}

bool HolidayCalendar::is_working_day(int year, unsigned month, unsigned day) const {
  return is_working_day(day_number(year, month, day));
}

std::vector<std::pair<std::string, std::string>> HolidayCalendar::holidays(int year) const {
  std::vector<std::pair<std::string, std::string>> out;
  const auto& names = table().names;
  for (auto it = names.lower_bound(day_number(year, 1, 1)); it != names.end() && it->first <= day_number(year, 12, 31); ++it)
    out.emplace_back(iso(ymd_of(it->first)), it->second);
  return out;
}

Calendar::Calendar(const std::string& time_zone, std::set<std::string> holidays)
    : zone_name_(time_zone), holidays_(std::move(holidays)) {
  try {
    zone_ = date::locate_zone(time_zone);
  } catch (const std::exception&) {
    throw Error(ErrorCode::invalid_argument, "unknown time zone '" + time_zone + "'");
  }
}

bool Calendar::is_business_day(int year, unsigned month, unsigned day) const {
  const date::year_month_day ymd{date::year{year}, date::month{month}, date::day{day}};
  const date::weekday wd{date::sys_days(ymd)};
  if (wd == date::Saturday || wd == date::Sunday) return false;
  return holidays_.count(iso(ymd)) == 0;
}

std::int32_t Calendar::local_day(std::int64_t unix_us) const {
  const auto local = zone_of(zone_)->to_local(Micros{microseconds{unix_us}});
  return static_cast<std::int32_t>(date::floor<date::days>(local).time_since_epoch().count());
}

std::int64_t Calendar::end_of_local_day(std::int32_t day) const {
  // One microsecond before the next local midnight (the earliest, should
  // midnight itself be skipped or repeated by a DST change).
  const date::local_time<microseconds> next_midnight{date::local_days{date::days{day}} + date::days{1}};
  const auto end = zone_of(zone_)->to_sys(next_midnight, date::choose::earliest) - microseconds{1};
  return end.time_since_epoch().count();
}

void Calendar::check_in_range(std::int64_t unix_us, std::string_view field) const {
  // Checked on the instant first so that date arithmetic cannot overflow.
  constexpr std::int64_t kMargin = 2LL * 86400 * 1000000;
  static const std::int64_t lo = std::int64_t{day_number(kFirstYear, 1, 1)} * 86400 * 1000000 - kMargin;
  static const std::int64_t hi = std::int64_t{day_number(kLastYear + 1, 1, 1)} * 86400 * 1000000 + kMargin;
  const int year = unix_us < lo || unix_us > hi ? 0 : static_cast<int>(ymd_of(local_day(unix_us)).year());
  if (year < kFirstYear || year > kLastYear)
    throw Error(ErrorCode::invalid_field, "field '" + std::string(field) + "': dates from " +
                                              std::to_string(kFirstYear) + " to " + std::to_string(kLastYear) +
                                              " only");
}

std::int64_t Calendar::deadline(std::int64_t start_us, const Period& p, const HolidayCalendar& cal, EndRule end) const {
  check_in_range(start_us, "start");
  if (p.hours) return start_us + std::int64_t{p.hours} * 3600 * 1000000;
  const std::int32_t start_day = local_day(start_us);
  std::int32_t day = start_day;
  if (p.months) {
    const auto ymd = ymd_of(day);
    date::year_month_day target = ymd + date::months{p.months};
    if (!target.ok()) target = date::year_month_day_last{target.year(), date::month_day_last{target.month()}};
    day = day_number(target);
  }
  day += p.days;
  for (int left = p.business_days; left > 0;)
    if (cal.is_working_day(++day)) --left;
  const std::int32_t counted_days = day - start_day;  // the period's length as expressed, before any roll
  if (end != EndRule::as_counted)
    while (!cal.is_working_day(day)) ++day;
  if (end == EndRule::reg_1182_71 && p.business_days == 0 && counted_days >= 2) {
    // Art. 3(5): at least two working days between the day after the start
    // and the last day; the roll above left the last day a working day.
    int working = 0;
    for (std::int32_t d = start_day + 1; d <= day && working < 2; ++d)
      if (cal.is_working_day(d)) ++working;
    while (working < 2)
      if (cal.is_working_day(++day)) ++working;
  }
  return end_of_local_day(day);
}

std::int64_t Calendar::deadline(std::int64_t start_us, const Period& p) const {
  if (p.hours) return start_us + std::int64_t{p.hours} * 3600 * 1000000;
  std::int32_t day = local_day(start_us);
  if (p.months) {
    date::year_month_day target = ymd_of(day) + date::months{p.months};
    if (!target.ok()) target = date::year_month_day_last{target.year(), date::month_day_last{target.month()}};
    day = day_number(target);
  }
  day += p.days;
  for (int left = p.business_days; left > 0;) {
    const auto ymd = ymd_of(++day);
    if (is_business_day(static_cast<int>(ymd.year()), static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day())))
      --left;
  }
  return end_of_local_day(day);
}

std::int64_t Calendar::end_of_local_year(std::int64_t unix_us) const {
  return end_of_local_day(day_number(static_cast<int>(ymd_of(local_day(unix_us)).year()), 12, 31));
}

std::string Calendar::local_date(std::int64_t unix_us) const { return iso(ymd_of(local_day(unix_us))); }

std::string Calendar::local_time(std::int64_t unix_us) const {
  const date::zoned_time<microseconds> zt{zone_of(zone_), Micros{microseconds{unix_us}}};
  std::string s = date::format("%FT%T%z", zt);
  // +0100 -> +01:00 (RFC 3339)
  if (s.size() >= 5) s.insert(s.end() - 2, ':');  // one char: GCC 12's -Wrestrict misfires on insert(pos, const char*)
  return s;
}

}  // namespace custos::util
