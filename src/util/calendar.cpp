#include "custos/util/calendar.h"

#include <date/date.h>
#include <date/tz.h>

#include "custos/error.h"

namespace custos::util {
namespace {

using namespace std::chrono;
using Micros = sys_time<microseconds>;

const date::time_zone* zone_of(const void* z) { return static_cast<const date::time_zone*>(z); }

std::string iso(const date::year_month_day& ymd) { return date::format("%F", date::sys_days(ymd)); }

}  // namespace

std::string Period::describe() const {
  if (months) return std::to_string(months) + " month(s)";
  if (business_days) return std::to_string(business_days) + " business day(s)";
  if (days) return std::to_string(days) + " day(s)";
  return std::to_string(hours) + " hour(s)";
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

std::int64_t Calendar::deadline(std::int64_t start_us, const Period& p) const {
  const Micros start{microseconds{start_us}};
  if (p.hours) return start_us + std::int64_t{p.hours} * 3600 * 1000000;
  const auto* tz = zone_of(zone_);
  const auto local = tz->to_local(start);
  const auto local_day = date::floor<date::days>(local);
  date::year_month_day ymd{local_day};
  if (p.months) {
    date::year_month_day target = ymd + date::months{p.months};
    if (!target.ok()) target = date::year_month_day_last{target.year(), date::month_day_last{target.month()}};
    ymd = target;
  }
  if (p.days) ymd = date::year_month_day{date::sys_days(ymd) + date::days{p.days}};
  for (int left = p.business_days; left > 0;) {
    ymd = date::year_month_day{date::sys_days(ymd) + date::days{1}};
    if (is_business_day(static_cast<int>(ymd.year()), static_cast<unsigned>(ymd.month()),
                        static_cast<unsigned>(ymd.day())))
      --left;
  }
  // The end of that local day: one microsecond before the next local midnight.
  const date::local_time<microseconds> next_midnight{date::local_days(ymd) + date::days{1}};
  const auto end = tz->to_sys(next_midnight, date::choose::earliest) - microseconds{1};
  return end.time_since_epoch().count();
}

std::string Calendar::local_date(std::int64_t unix_us) const {
  const auto local = zone_of(zone_)->to_local(Micros{microseconds{unix_us}});
  return iso(date::year_month_day{date::floor<date::days>(local)});
}

std::string Calendar::local_time(std::int64_t unix_us) const {
  const date::zoned_time<microseconds> zt{zone_of(zone_), Micros{microseconds{unix_us}}};
  std::string s = date::format("%FT%T%z", zt);
  // +0100 -> +01:00 (RFC 3339)
  if (s.size() >= 5) s.insert(s.end() - 2, ':');  // one char: GCC 12's -Wrestrict misfires on insert(pos, const char*)
  return s;
}

}  // namespace custos::util
