// custos/util/calendar.h — statutory periods in the controller's time zone.
//
// A Period is months, calendar days, business days or hours. Periods in
// months follow EU Regulation 1182/71 Art. 3(2)(c): the period ends on the
// same date of the last month, or on that month's last day where it has no
// such date; day-based periods end at the last instant of their last local
// day. Hours are exact elapsed time (so 72 h across a DST change is 72 h).
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>

namespace custos::util {

struct Period {
  int months = 0;
  int days = 0;
  int business_days = 0;
  int hours = 0;
  bool empty() const { return months == 0 && days == 0 && business_days == 0 && hours == 0; }
  std::string describe() const;
};

class Calendar {
 public:
  // Throws Error(invalid_argument) for an unknown IANA zone.
  explicit Calendar(const std::string& time_zone, std::set<std::string> holidays = {});

  // The deadline for a period starting at `start_us` (Unix microseconds).
  std::int64_t deadline(std::int64_t start_us, const Period& period) const;

  bool is_business_day(int year, unsigned month, unsigned day) const;
  // The local calendar date of an instant, "YYYY-MM-DD".
  std::string local_date(std::int64_t unix_us) const;
  // RFC 3339 with the zone's offset at that instant.
  std::string local_time(std::int64_t unix_us) const;
  const std::string& time_zone() const { return zone_name_; }

 private:
  std::string zone_name_;
  const void* zone_;  // date::time_zone (kept out of this header)
  std::set<std::string> holidays_;
};

}  // namespace custos::util
