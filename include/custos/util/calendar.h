// custos/util/calendar.h — statutory periods in the controller's time zone,
// and public-holiday calendars computed by rule.
//
// A Period is months, calendar days, business days or hours. Periods in
// months follow EU Regulation 1182/71 Art. 3(2)(c): the period ends on the
// same date of the last month, or on that month's last day where it has no
// such date; day-based periods end at the last instant of their last local
// day. Hours are exact elapsed time (so 72 h across a DST change is 72 h).
// Where a rule says so (EndRule::next_working_day, Reg. 1182/71 Art. 3(4)),
// a period whose last day is a weekend day or public holiday of the named
// HolidayCalendar ends at the end of the next working day instead;
// EndRule::reg_1182_71 adds Art. 3(5) (two working days at least).
//
// Dates are valid from 1970-01-01 to 2100-12-31; a start outside that range
// is refused with Error(invalid_field). Holiday calendars are computed for
// every year of that range (and the year either side, for observed days that
// cross a year end), never listed up to a date.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace custos::util {

inline constexpr int kFirstYear = 1970;
inline constexpr int kLastYear = 2100;

struct Period {
  int months = 0;
  int days = 0;
  int business_days = 0;
  int hours = 0;
  bool empty() const { return months == 0 && days == 0 && business_days == 0 && hours == 0; }
  // Same unit only (a period is one unit): 1 month + 2 months = 3 months.
  // Throws Error(invalid_argument) for mixed units.
  Period plus(const Period& other) const;
  // "1 month(s)", "15 business day(s)", ...
  std::string describe() const;
};

// How a period ends when its last day is not a working day.
enum class EndRule {
  as_counted,        // calendar days as the statute counts them (US state laws)
  next_working_day,  // Reg. 1182/71 Art. 3(4) and the like: roll forward
  // Reg. 1182/71 as a whole, for EU (and UK) periods: the Art. 3(4) roll,
  // and Art. 3(5): a period of two days or more includes at least two
  // working days (counted from the day after the start to the last day),
  // else it ends at the end of the second. Periods in business days
  // (working days by definition) and in hours (exact, Art. 3(4) excludes
  // them) are not extended.
  reg_1182_71,
};

// When a holiday falling on a weekend is observed on a weekday.
enum class Observed {
  none,
  us_federal,         // Saturday -> Friday before, Sunday -> Monday after (5 U.S.C. 6103(b))
  substitute,         // a weekend day (Saturday or Sunday by default) -> the next working day not already a holiday (UK, IE)
  sunday_to_monday,   // Sunday -> Monday (Cal. Gov. Code 6700, Canada)
  sunday_to_saturday  // Sunday -> Saturday before (NL King's Day)
};

// One public holiday, given as a rule that holds for any year.
struct HolidayRule {
  enum class Kind {
    fixed,           // month/day every year
    nth_weekday,     // the nth (1..5, or -1 = last) `weekday` of `month`
    easter,          // Easter Sunday (Gregorian) + easter_offset days
    weekday_before,  // the last `weekday` strictly before month/day (Victoria Day, Buß- und Bettag)
  };
  std::string name;
  Kind kind = Kind::fixed;
  unsigned month = 0, day = 0;
  int nth = 0;
  unsigned weekday = 0;  // 0 = Sunday .. 6 = Saturday
  int easter_offset = 0;
  int plus_days = 0;  // nth_weekday / weekday_before: days after the date found (day after Thanksgiving)
  // nth_weekday only: if month/or_day falls on or_weekday, that date instead
  // (Ireland's St Brigid's Day: first Monday of February, or 1 February if a Friday).
  std::optional<std::pair<unsigned, unsigned>> or_date_if_weekday;  // {day, weekday}
  Observed observed = Observed::none;
  int from_year = kFirstYear - 1, to_year = kLastYear + 1;  // inclusive
  std::vector<int> except_years;  // years a proclamation moved it (the new date is an `extra` day)
};

// The working days of one jurisdiction. Immutable; safe for concurrent use.
class HolidayCalendar {
 public:
  // `weekend` holds weekdays (0 = Sunday .. 6 = Saturday) that are never
  // working days; `extra` one-off days ("YYYY-MM-DD" -> name) proclaimed
  // outside any rule. Throws Error(invalid_argument) naming the rule.
  HolidayCalendar(std::string key, std::string name, std::vector<HolidayRule> rules,
                  std::map<std::string, std::string> extra, std::set<unsigned> weekend = {0, 6});

  const std::string& key() const { return key_; }
  const std::string& name() const { return name_; }
  const std::vector<HolidayRule>& rules() const { return rules_; }
  const std::map<std::string, std::string>& extra() const { return extra_; }
  const std::set<unsigned>& weekend() const { return weekend_; }

  // Days since 1970-01-01 (may be negative). False outside the computed range
  // (1969..2101), which no valid start reaches.
  bool is_working_day(std::int32_t day) const;
  bool is_working_day(int year, unsigned month, unsigned day) const;
  // Every holiday (observed dates included) of `year`, in date order:
  // {"YYYY-MM-DD", name}.
  std::vector<std::pair<std::string, std::string>> holidays(int year) const;

 private:
  std::string key_, name_;
  std::vector<HolidayRule> rules_;
  std::map<std::string, std::string> extra_;
  std::set<unsigned> weekend_;
  // Every day of the range, computed on first use rather than at load:
  // most processes (a CLI command, an import) never count a working day,
  // and the table takes longer to build than the rest of the policy to load.
  struct Table {
    std::vector<std::uint8_t> closed;  // 1 = not a working day; index 0 is first_day_
    std::multimap<std::int32_t, std::string> names;
  };
  struct LazyTable {
    std::once_flag once;
    Table table;
  };
  const Table& table() const;
  void build(Table& t) const;

  std::int32_t first_day_ = 0;
  std::unique_ptr<LazyTable> lazy_ = std::make_unique<LazyTable>();
};

// Easter Sunday of `year` (Gregorian computus), as days since 1970-01-01.
std::int32_t easter_sunday(int year);

// Statutory periods in one IANA time zone. Immutable; safe for concurrent use.
class Calendar {
 public:
  // Throws Error(invalid_argument) for an unknown IANA zone. `holidays`
  // ("YYYY-MM-DD") serve only the two-argument deadline() (kept for callers
  // that count business days against a fixed list).
  explicit Calendar(const std::string& time_zone, std::set<std::string> holidays = {});

  // The deadline for a period starting at `start_us` (Unix microseconds):
  // the day of the start is not counted (Reg. 1182/71 Art. 3(1)); business
  // days skip the non-working days of `holidays`; `end` says whether a last
  // day that is not a working day rolls forward. Hours are exact and never
  // roll. Throws Error(invalid_field) if the start's local date is before
  // 1970 or after 2100.
  std::int64_t deadline(std::int64_t start_us, const Period& period, const HolidayCalendar& holidays,
                        EndRule end) const;
  // As above with weekends and the fixed list given to the constructor, no roll.
  std::int64_t deadline(std::int64_t start_us, const Period& period) const;

  bool is_business_day(int year, unsigned month, unsigned day) const;
  // The local calendar date of an instant, "YYYY-MM-DD".
  std::string local_date(std::int64_t unix_us) const;
  // RFC 3339 with the zone's offset at that instant.
  std::string local_time(std::int64_t unix_us) const;
  const std::string& time_zone() const { return zone_name_; }
  // The last instant of 31 December of the local year of `unix_us`.
  std::int64_t end_of_local_year(std::int64_t unix_us) const;
  // Throws Error(invalid_field) naming `field` unless the local date of
  // `unix_us` lies in 1970..2100.
  void check_in_range(std::int64_t unix_us, std::string_view field) const;

 private:
  std::int64_t end_of_local_day(std::int32_t day) const;
  std::int32_t local_day(std::int64_t unix_us) const;

  std::string zone_name_;
  const void* zone_;  // date::time_zone (kept out of this header)
  std::set<std::string> holidays_;
};

}  // namespace custos::util
