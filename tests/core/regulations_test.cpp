// Statutory deadlines, table by table, each case written from the text it
// cites. The shipped policies/regulations.yaml and calendars.yaml are under
// test: the controller's zone there is Europe/Berlin, and eu-gdpr counts on
// the Berlin calendar (de-be).
#include <gtest/gtest.h>

#include <date/date.h>

#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "custos/audit/audit_log.h"
#include "custos/dsr/dsr.h"
#include "custos/dsr/regulations.h"
#include "custos/error.h"
#include "custos/util/calendar.h"
#include "test_support.h"

namespace custos {
namespace {

namespace fs = std::filesystem;
using testing::code_of;

std::int64_t at(const std::string& rfc3339) { return *audit::parse_time_us(rfc3339); }
std::string iso(std::int64_t us) { return audit::format_time_us(us); }

const fs::path kPolicies = fs::path(CUSTOS_SOURCE_DIR) / "policies";

const dsr::Regulations& shipped() {
  static const auto regs = dsr::Regulations::load(kPolicies / "regulations.yaml");
  return *regs;
}

// The local (Berlin) date a due instant falls on.
std::string due_date(std::int64_t us) { return shipped().calendar().local_date(us); }

std::int32_t day_of(const std::string& ymd) {
  const date::year_month_day d{date::year{std::stoi(ymd.substr(0, 4))}, date::month{static_cast<unsigned>(std::stoi(ymd.substr(5, 2)))},
                               date::day{static_cast<unsigned>(std::stoi(ymd.substr(8, 2)))}};
  return static_cast<std::int32_t>(date::sys_days(d).time_since_epoch().count());
}

struct DsrCase {
  const char* cite;
  std::string regime, type, received;
  std::string due;                    // local date in the controller's zone
  std::optional<std::string> extended;
};

void check(const std::vector<DsrCase>& cases) {
  const auto& regs = shipped();
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(c.cite) + " | " + c.regime + " " + c.type + " received " + c.received);
    const auto& rules = regs.require_dsr(c.regime);
    EXPECT_EQ(due_date(regs.due(rules, c.type, at(c.received))), c.due);
    if (c.extended) {
      const auto ext = regs.extended_due(rules, c.type, at(c.received), 1);
      ASSERT_TRUE(ext.has_value());
      EXPECT_EQ(due_date(*ext), *c.extended);
    }
  }
}

// ------------------------------------------------------------------ EU GDPR

TEST(Regulations, GdprMonthEndsAndTheEndOfPeriodRoll) {
  check({
      // Art. 12(3) "within one month"; Reg. 1182/71 Art. 3(2)(c): same date of the next month.
      {"GDPR 12(3); 1182/71 3(2)(c)", "eu-gdpr", "access", "2026-09-30T08:00:00Z", "2026-10-30"},
      // 3(2)(c): no such date -> the month's last day (28 Feb 2026 is a Saturday ->
      // 3(4): the next working day, Monday 2 March).
      {"1182/71 3(2)(c), 3(4)", "eu-gdpr", "access", "2026-01-31T10:00:00Z", "2026-03-02"},
      // ... and in a leap year the 29th, a Tuesday: no roll.
      {"1182/71 3(2)(c)", "eu-gdpr", "access", "2028-01-31T10:00:00Z", "2028-02-29"},
      // 3(4): last day a Saturday -> Monday.
      {"1182/71 3(4)", "eu-gdpr", "access", "2026-02-14T10:00:00Z", "2026-03-16"},
      // 3(4) over public holidays of the controller's state (Berlin): Good Friday
      // 3 April 2026, then the weekend, then Easter Monday -> Tuesday 7 April.
      {"1182/71 3(4); Berlin FTG", "eu-gdpr", "erasure", "2026-03-03T10:00:00Z", "2026-04-07"},
      // Easter Monday itself.
      {"1182/71 3(4); Berlin FTG", "eu-gdpr", "access", "2026-03-06T10:00:00Z", "2026-04-07"},
      // Berlin's own holiday, International Women's Day (8 March 2027, a Monday).
      {"1182/71 3(4); Berlin FTG 1(1)", "eu-gdpr", "access", "2027-02-08T10:00:00Z", "2027-03-09"},
      // Receipt at 23:30 UTC on 31 March is 1 April in Berlin: one month is
      // 1 May (Tag der Arbeit, a Friday) -> Monday 4 May.
      {"1182/71 3(1), 3(4)", "eu-gdpr", "access", "2026-03-31T23:30:00Z", "2026-05-04"},
      // The last day is the Sunday clocks go back (25 Oct 2026) -> Monday.
      {"1182/71 3(4)", "eu-gdpr", "access", "2026-09-25T10:00:00Z", "2026-10-26"},
  });
}

TEST(Regulations, GdprExtensionIsReceiptPlusThreeMonthsThenRolled) {
  check({
      // Art. 12(3): "extended by two further months" -> receipt + 3 months.
      // 31 Jan: first due 28 Feb (Sat) -> 2 Mar; extended 30 April (Thu), not
      // 2 Mar + 2 months (2 May) nor 28 Feb + 2 months (28 April).
      {"GDPR 12(3); 1182/71 3(2)(c)", "eu-gdpr", "access", "2026-01-31T10:00:00Z", "2026-03-02", "2026-04-30"},
      // 30 Nov 2025 + 3 months = 28 Feb 2026 (no 30th; a Saturday) -> Monday 2 March.
      {"GDPR 12(3); 1182/71 3(2)(c), 3(4)", "eu-gdpr", "access", "2025-11-30T10:00:00Z", "2025-12-30", "2026-03-02"},
      // 31 Dec + 3 months = 31 March 2027 (Wed).
      {"GDPR 12(3)", "eu-gdpr", "access", "2026-12-31T10:00:00Z", "2027-02-01", "2027-03-31"},
  });
  const auto& rules = shipped().require_dsr("eu-gdpr");
  EXPECT_FALSE(shipped().extended_due(rules, "access", at("2026-01-31T10:00:00Z"), 2).has_value());  // once only
}

TEST(Regulations, GdprEndsAtTheEndOfTheLocalDayAcrossDst) {
  const auto& regs = shipped();
  const auto& rules = regs.require_dsr("gdpr");  // the old name is an alias
  EXPECT_EQ(rules.key, "eu-gdpr");
  // 15 April 2026 ends at 24:00 CEST = 22:00 UTC; 26 October 2026 at 24:00 CET = 23:00 UTC.
  EXPECT_EQ(iso(regs.due(rules, "access", at("2026-03-15T09:00:00Z"))), "2026-04-15T21:59:59.999999Z");
  EXPECT_EQ(iso(regs.due(rules, "access", at("2026-09-25T10:00:00Z"))), "2026-10-26T22:59:59.999999Z");
}

// Reg. 1182/71 Art. 3(5): "Any period of two days or more shall include at
// least two working days." Counted from the day after the start (Art. 3(1))
// to the last day after the Art. 3(4) roll; where that holds fewer than two
// working days the period ends at the end of the second. Each date below was
// worked out by hand from a 2026 calendar and the calendar's holidays.
TEST(Regulations, EuPeriodsOfTwoDaysOrMoreIncludeTwoWorkingDays) {
  const auto& regs = shipped();
  const auto& zone = regs.calendar();  // Europe/Berlin
  struct Case {
    const char* why;
    const char* calendar;
    std::string received;
    util::Period period;
    std::string roll_only;  // EndRule::next_working_day (Art. 3(4) alone)
    std::string due;        // EndRule::reg_1182_71 (3(4) and 3(5))
  } cases[] = {
      // Fri 27 Nov + 2 days: Sat 28, Sun 29 -> 3(4): Mon 30. One working day
      // (Mon 30) -> 3(5): the second, Tue 1 Dec.
      {"weekend", "de-be", "2026-11-27T10:00:00Z", {.days = 2}, "2026-11-30", "2026-12-01"},
      // Thu 2 Apr + 3 days: Karfreitag 3, Sat 4, Easter Sunday 5 -> 3(4): Mon 6
      // is Ostermontag -> Tue 7. One working day -> 3(5): Wed 8 April.
      {"Easter", "de-be", "2026-04-02T10:00:00Z", {.days = 3}, "2026-04-07", "2026-04-08"},
      // Thu 24 Dec + 2 days: 1. Weihnachtstag Fri 25, Sat 26 (2. Weihnachtstag)
      // -> 3(4): Sun 27 -> Mon 28. One working day -> Tue 29 December.
      {"Christmas", "de-be", "2026-12-24T10:00:00Z", {.days = 2}, "2026-12-28", "2026-12-29"},
      // Wed 23 Dec + 2 days: Thu 24 (a working day in Berlin), Fri 25 -> 3(4):
      // Mon 28. Two working days (Thu 24, Mon 28): 3(5) holds, no extension.
      {"holds already", "de-be", "2026-12-23T10:00:00Z", {.days = 2}, "2026-12-28", "2026-12-28"},
      // Mon 30 Nov + 2 days: Tue 1, Wed 2 Dec, both working days.
      {"weekdays", "de-be", "2026-11-30T10:00:00Z", {.days = 2}, "2026-12-02", "2026-12-02"},
      // One day is not "two days or more": Fri 27 Nov + 1 = Sat 28 -> Mon 30 only.
      {"one day", "de-be", "2026-11-27T10:00:00Z", {.days = 1}, "2026-11-30", "2026-11-30"},
      // Business days are working days by definition: 1 from Fri 27 Nov = Mon 30.
      {"business days", "de-be", "2026-11-27T10:00:00Z", {.business_days = 1}, "2026-11-30", "2026-11-30"},
      // England and Wales: Fri 28 Aug + 2: Sat 29, Sun 30 -> 3(4): Mon 31 is the
      // Summer bank holiday -> Tue 1 Sep. One working day -> Wed 2 September.
      {"UK bank holiday", "uk-ew", "2026-08-28T10:00:00Z", {.days = 2}, "2026-09-01", "2026-09-02"},
      // A month is never short of working days: 2 Apr + 1 month = Sat 2 May ->
      // 3(4): Mon 4 May, and 3(5) changes nothing.
      {"one month", "de-be", "2026-04-02T10:00:00Z", {.months = 1}, "2026-05-04", "2026-05-04"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(c.why) + " received " + c.received);
    const auto& cal = regs.require_calendar(c.calendar);
    EXPECT_EQ(zone.local_date(zone.deadline(at(c.received), c.period, cal, util::EndRule::next_working_day)), c.roll_only);
    EXPECT_EQ(zone.local_date(zone.deadline(at(c.received), c.period, cal, util::EndRule::reg_1182_71)), c.due);
  }
  // Across the end of summer time: Fri 23 Oct + 2: Sat 24, Sun 25 (clocks go
  // back) -> Mon 26 -> 3(5): Tue 27 Oct, ending at 24:00 CET = 23:00 UTC.
  EXPECT_EQ(iso(zone.deadline(at("2026-10-23T10:00:00Z"), {.days = 2}, regs.require_calendar("de-be"),
                              util::EndRule::reg_1182_71)),
            "2026-10-27T22:59:59.999999Z");
  // Exact durations are not periods of days: 72 h from Friday 10:00 UTC is Monday 10:00 UTC.
  EXPECT_EQ(iso(zone.deadline(at("2026-11-27T10:00:00Z"), {.hours = 72}, regs.require_calendar("de-be"),
                              util::EndRule::reg_1182_71)),
            "2026-11-30T10:00:00.000000Z");
  // The EU and UK regimes count by the whole regulation.
  EXPECT_EQ(regs.require_dsr("eu-gdpr").end, util::EndRule::reg_1182_71);
  EXPECT_EQ(regs.require_dsr("uk-gdpr").end, util::EndRule::reg_1182_71);
}

// `end: reg_1182_71` in a rule file reaches the due dates of its regime.
TEST(Regulations, ARuleFileNamesTheArticle3_5EndRule) {
  testing::TempDir dir;
  fs::copy_file(kPolicies / "calendars.yaml", dir.path() / "calendars.yaml");
  std::ofstream(dir.path() / "regulations.yaml") << R"yaml(version: 2
controller: {name: "Test", timezone: Europe/Berlin}
dsr:
  eu-two-days:
    name: "two days"
    calendar: de-be
    end: reg_1182_71
    respond: {days: 2, source: "Reg. 1182/71 Art. 3(5)", checked: 2026-11-30}
)yaml";
  const auto regs = dsr::Regulations::load(dir.path() / "regulations.yaml");
  const auto& rules = regs->require_dsr("eu-two-days");
  // As in the table above: Fri 27 Nov + 2 days -> Tue 1 Dec.
  EXPECT_EQ(regs->calendar().local_date(regs->due(rules, "access", at("2026-11-27T10:00:00Z"))), "2026-12-01");
}

// ------------------------------------------------------------------ UK GDPR

TEST(Regulations, UkGdprRollsOverEnglishBankHolidays) {
  check({
      // UK GDPR 12(3); ICO: a last day on a bank holiday moves to the next working day.
      // 31 Aug 2026 is the Summer bank holiday (last Monday of August).
      {"UK GDPR 12(3); BFDA 1971 Sch. 1", "uk-gdpr", "access", "2026-07-31T10:00:00Z", "2026-09-01"},
      // Christmas 2027 is a Saturday: substitute days Mon 27 and Tue 28 (Boxing Day on Sunday).
      {"UK GDPR 12(3); BFDA 1971 s.1(1)", "uk-gdpr", "access", "2027-11-27T10:00:00Z", "2027-12-29"},
      // The 2022 spring bank holiday moved to Thu 2 June, plus Fri 3 June (Platinum Jubilee).
      {"UK GDPR 12(3); proclamation 2021", "uk-gdpr", "access", "2022-05-02T10:00:00Z", "2022-06-06"},
      // Extension: receipt + 3 months (31 May 2026 is a Sunday... receipt 28 Feb + 3 = 28 May, a Thursday).
      {"UK GDPR 12(3)", "uk-gdpr", "access", "2026-02-28T10:00:00Z", "2026-03-30", "2026-05-28"},
  });
}

// --------------------------------------------------- California and US states

TEST(Regulations, CcpaBusinessDaysCountUsFederalHolidays) {
  const auto& regs = shipped();
  const auto& ccpa = regs.require_dsr("ccpa");
  EXPECT_EQ(ccpa.key, "us-ca");
  struct Case {
    const char* cite;
    std::string received, confirm_by;
  } cases[] = {
      // 11 CCR 7021(a): confirm within 10 business days. Thanksgiving (26 Nov
      // 2026) is skipped: Fri 20 Nov -> Mon 7 Dec.
      {"11 CCR 7021(a); 5 U.S.C. 6103", "2026-11-20T10:00:00Z", "2026-12-07"},
      // 3 October is a working day in the US; Columbus Day (13 Oct 2025) is not.
      {"11 CCR 7021(a); 5 U.S.C. 6103", "2025-10-02T10:00:00Z", "2025-10-17"},
      // Across the year end: Christmas (Fri 25 Dec 2026) and New Year (Fri 1 Jan 2027).
      {"11 CCR 7021(a); 5 U.S.C. 6103", "2026-12-22T10:00:00Z", "2027-01-07"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(c.cite) + " " + c.received);
    EXPECT_EQ(due_date(*regs.confirm_by(ccpa, at(c.received))), c.confirm_by);
  }
  check({
      // 11 CCR 7021(b): 45 calendar days, counted as calendar days (no roll):
      // 22 Oct + 45 = Sunday 6 Dec 2026, and the due date stays there.
      {"11 CCR 7021(b)", "us-ca", "access", "2026-10-22T10:00:00Z", "2026-12-06", "2027-01-20"},
      // 11 CCR 7026(f): opt-outs within 15 business days (Thanksgiving skipped).
      {"11 CCR 7026(f)", "us-ca", "opt_out_sale_share", "2026-11-20T10:00:00Z", "2026-12-14"},
      // Iowa 715D.4: 90 days, extendable by 45.
      {"Iowa Code 715D.4", "us-ia", "access", "2026-01-01T10:00:00Z", "2026-04-01", "2026-05-16"},
      // Florida 501.706: 45 days plus 15.
      {"Fla. Stat. 501.706", "us-fl", "access", "2026-01-01T10:00:00Z", "2026-02-15", "2026-03-02"},
      // Virginia 59.1-577(B)(1): 45 + 45, from receipt.
      {"Va. Code 59.1-577(B)(1)", "virginia", "access", "2026-03-01T10:00:00Z", "2026-04-15", "2026-05-30"},
  });
  // An opt-out has no extension (7026(f) has none).
  EXPECT_FALSE(regs.extended_due(ccpa, "opt_out_sale_share", at("2026-11-20T10:00:00Z"), 1).has_value());
}

TEST(Regulations, EveryUsComprehensiveStateLawInForceIsARegime) {
  for (const char* state : {"us-ca", "us-co", "us-ct", "us-ut", "us-va", "us-tx", "us-or", "us-mt", "us-de", "us-ia",
                            "us-ne", "us-nh", "us-nj", "us-tn", "us-mn", "us-md", "us-in", "us-ky", "us-ri", "us-fl"}) {
    const auto* rules = shipped().dsr(state);
    ASSERT_NE(rules, nullptr) << state;
    EXPECT_FALSE(rules->respond.source.citation.empty()) << state;
    EXPECT_EQ(rules->respond.source.checked.size(), 10u) << state;
    ASSERT_TRUE(rules->extend.has_value()) << state;
  }
}

// Each remaining state law's clocks, table by table from its statute: respond
// within 45 days of receipt, extend once by 45 (counted from receipt: 90 in
// all), answer an appeal within the window its appeal section gives. All
// count calendar days with no roll. Received Thu 15 Jan 2026: + 45 days =
// Sun 1 March (16 days to 31 Jan, 28 in February, 1); + 90 = Wed 15 April;
// + 60 = Mon 16 March.
TEST(Regulations, EachUsStateLawsPeriodsFromItsStatute) {
  const auto& regs = shipped();
  struct Case {
    const char* cite;
    const char* regime;
    int appeal_days;  // 0: the law gives no appeal window
  } cases[] = {
      {"C.R.S. 6-1-1306(2), (3)(b)", "us-co", 45},      {"Conn. Gen. Stat. 42-518(c)(1), (d)", "us-ct", 60},
      {"Utah Code 13-61-203(4); no appeal", "us-ut", 0}, {"Tex. Bus. & Com. Code 541.052(b), 541.053(c)", "us-tx", 60},
      {"ORS 646A.576(2), (6)", "us-or", 45},             {"MCA 30-14-2808(2), (6)", "us-mt", 60},
      {"6 Del. C. 12D-104(c)(1), (d)", "us-de", 60},    {"Neb. Rev. Stat. 87-1109(1), (3)", "us-ne", 60},
      {"RSA 507-H:4(III), (IV)", "us-nh", 60},          {"N.J.S.A. 56:8-166.7(a), appeal", "us-nj", 45},
      {"Tenn. Code 47-18-3203(c), (e)", "us-tn", 60},   {"Minn. Stat. 325M.14 subd. 1, 3", "us-mn", 45},
      {"Md. Code Com. Law 14-4705(c), (e)", "us-md", 60}, {"IC 24-15-3-3, 3-4", "us-in", 60},
      {"KRS 367.3613, 367.3615", "us-ky", 60},          {"Va. Code 59.1-577(B)(1), (C)", "us-va", 60},
  };
  const auto received = at("2026-01-15T18:00:00Z");
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(c.cite) + " " + c.regime);
    const auto& rules = regs.require_dsr(c.regime);
    EXPECT_EQ(rules.end, util::EndRule::as_counted);
    EXPECT_EQ(due_date(regs.due(rules, "access", received)), "2026-03-01");
    ASSERT_TRUE(regs.extended_due(rules, "access", received, 1).has_value());
    EXPECT_EQ(due_date(*regs.extended_due(rules, "access", received, 1)), "2026-04-15");
    EXPECT_FALSE(regs.extended_due(rules, "access", received, 2).has_value());  // once
    if (c.appeal_days == 0) {
      EXPECT_FALSE(rules.appeal.has_value());
      continue;
    }
    ASSERT_TRUE(rules.appeal.has_value());
    EXPECT_EQ(due_date(regs.calendar().deadline(received, rules.appeal->period, *rules.calendar, rules.end)),
              c.appeal_days == 45 ? "2026-03-01" : "2026-03-16");
  }
}

// -------------------------------------------------- Brazil, Canada, Switzerland

TEST(Regulations, LgpdPipedaAndNfadpRollOnTheirOwnCalendars) {
  check({
      // LGPD Art. 19 II: 15 days; 20 Nov 2026 (Consciência Negra, Lei 14.759/2023)
      // -> Lei 9.784/1999 Art. 66 §1: next business day, Monday 23 Nov.
      {"LGPD 19 II; Lei 14.759/2023", "br-lgpd", "access", "2026-11-05T12:00:00Z", "2026-11-23"},
      // Before 2024 the 20th was a working day.
      {"LGPD 19 II", "br-lgpd", "access", "2023-11-05T12:00:00Z", "2023-11-20"},
      // PIPEDA s.8(3): 30 days; 1 July (Canada Day) -> Interpretation Act s.26: 2 July.
      {"PIPEDA 8(3); Interpretation Act 26", "ca-pipeda", "access", "2026-06-01T12:00:00Z", "2026-07-02",
       "2026-07-31"},
      // nFADP Art. 25(7): 30 days; 1 Aug 2026 is a Saturday and the national day -> Monday 3 Aug.
      {"FADP 25(7); CO 78", "ch-nfadp", "access", "2026-07-02T12:00:00Z", "2026-08-03"},
      // 1 Jan 2027 (Fri), Berchtoldstag 2 Jan (Sat), Sunday -> Monday 4 Jan.
      {"FADP 25(7); Bern Ruhetage", "ch-nfadp", "access", "2026-12-02T12:00:00Z", "2027-01-04"},
  });
}

// ---------------------------------------------------------------- calendars

TEST(Calendars, EasterRelativeHolidaysAcrossYears) {
  // Easter Sundays from an independent table (python-dateutil easter()).
  const std::pair<int, const char*> easter[] = {{1970, "1970-03-29"}, {2000, "2000-04-23"}, {2008, "2008-03-23"},
                                                {2011, "2011-04-24"}, {2019, "2019-04-21"}, {2024, "2024-03-31"},
                                                {2025, "2025-04-20"}, {2026, "2026-04-05"}, {2027, "2027-03-28"},
                                                {2038, "2038-04-25"}, {2100, "2100-03-28"}};
  const auto& de = shipped().require_calendar("de-be");
  const auto& uk = shipped().require_calendar("uk-ew");
  const auto& br = shipped().require_calendar("br");
  for (const auto& [year, sunday] : easter) {
    SCOPED_TRACE(sunday);
    const std::int32_t e = day_of(sunday);
    EXPECT_EQ(util::easter_sunday(year), e);
    EXPECT_FALSE(de.is_working_day(e - 2));   // Karfreitag
    EXPECT_FALSE(de.is_working_day(e + 1));   // Ostermontag
    EXPECT_FALSE(de.is_working_day(e + 39));  // Christi Himmelfahrt
    EXPECT_FALSE(de.is_working_day(e + 50));  // Pfingstmontag
    EXPECT_TRUE(de.is_working_day(e + 2));    // the Tuesday after
    EXPECT_FALSE(uk.is_working_day(e - 2));   // Good Friday
    EXPECT_FALSE(uk.is_working_day(e + 1));   // Easter Monday
    EXPECT_FALSE(br.is_working_day(e - 2));   // Sexta-feira Santa
    // Easter Monday is no holiday in Brazil, unless it is 21 April (Tiradentes, as in 2025).
    EXPECT_EQ(br.is_working_day(e + 1), e + 1 != day_of(std::to_string(year) + "-04-21"));
  }
}

TEST(Calendars, AFridaySaturdayWeekendAcrossTheWholeRange) {
  // A substitute holiday on the weekend moves to the next working day of
  // this calendar's week (Sunday), not of a Saturday-Sunday one.
  util::HolidayRule day{.name = "National Day", .month = 12, .day = 5, .observed = util::Observed::substitute};
  const util::HolidayCalendar cal("fri-sat", "Friday-Saturday", {day}, {}, {5, 6});
  for (const char* friday : {"1970-01-02", "2026-12-04", "2100-12-31"}) {
    SCOPED_TRACE(friday);
    const std::int32_t f = day_of(friday);
    EXPECT_FALSE(cal.is_working_day(f));
    EXPECT_FALSE(cal.is_working_day(f + 1));  // Saturday
    EXPECT_TRUE(cal.is_working_day(f - 1));  // Thursday
  }
  // 5 December 2026 is a Saturday: observed on Sunday the 6th, a working day elsewhere.
  EXPECT_FALSE(cal.is_working_day(day_of("2026-12-05")));
  EXPECT_FALSE(cal.is_working_day(day_of("2026-12-06")));
  EXPECT_TRUE(cal.is_working_day(day_of("2026-12-07")));
  EXPECT_TRUE(cal.is_working_day(day_of("2026-12-03")));
  // 5 December 2027 is a Sunday, a working day here: no substitute.
  EXPECT_FALSE(cal.is_working_day(day_of("2027-12-05")));
  EXPECT_TRUE(cal.is_working_day(day_of("2027-12-06")));
  EXPECT_EQ(code_of([] { util::HolidayCalendar("bad", "Bad", {}, {}, {0, 7}); }), ErrorCode::invalid_argument);
}

TEST(Calendars, UsFederalRulesAndObservedDays1970To2100) {
  const auto& us = shipped().require_calendar("us-federal");
  struct Case {
    const char* cite;
    const char* day;
    bool working;
  } cases[] = {
      {"6103(a) Thanksgiving, 4th Thu Nov", "2026-11-26", false},
      {"6103(a) Thanksgiving in 2100", "2100-11-25", false},
      {"6103(a) Juneteenth from 2021; 6103(b) Sat -> Fri", "2021-06-18", false},
      {"Juneteenth did not exist in 2020", "2020-06-19", true},
      {"6103(b): 4 July 2020 on a Saturday -> Friday 3 July", "2020-07-03", false},
      {"6103(b): 25 Dec 2022 on a Sunday -> Monday 26", "2022-12-26", false},
      {"6103(b): 1 Jan 2022 on a Saturday -> Friday 31 Dec 2021", "2021-12-31", false},
      {"6103(a) MLK Day from 1986: 3rd Monday of January", "1986-01-20", false},
      {"no MLK Day in 1985", "1985-01-21", true},
      {"6103(a) 1971-1977: Veterans Day on the 4th Monday of October", "1975-10-27", false},
      {"... and 11 November a working day then", "1975-11-11", true},
      {"German Unity Day is a US working day", "2025-10-03", true},
  };
  for (const auto& c : cases) EXPECT_EQ(us.is_working_day(day_of(c.day)), c.working) << c.cite << " " << c.day;
  // Canada: Victoria Day is the Monday before 25 May (18 May 2026; 24 May 2021).
  const auto& ca = shipped().require_calendar("ca-federal");
  EXPECT_FALSE(ca.is_working_day(day_of("2026-05-18")));
  EXPECT_FALSE(ca.is_working_day(day_of("2021-05-24")));
  EXPECT_TRUE(ca.is_working_day(day_of("2020-09-30")));  // Truth and Reconciliation from 2021
  EXPECT_FALSE(ca.is_working_day(day_of("2021-09-30")));
  // Ireland: St Brigid's Day is 1 Feb when that is a Friday (2030), else the first Monday.
  const auto& ie = shipped().require_calendar("ie");
  EXPECT_FALSE(ie.is_working_day(day_of("2030-02-01")));
  EXPECT_TRUE(ie.is_working_day(day_of("2030-02-04")));
  EXPECT_FALSE(ie.is_working_day(day_of("2026-02-02")));
  // The Netherlands: King's Day on a Sunday moves to the Saturday before (2025: 26 April).
  const auto& nl = shipped().require_calendar("nl");
  EXPECT_FALSE(nl.is_working_day(day_of("2026-04-27")));
  // France: no 8 May holiday between 1975 and 1981.
  const auto& fr = shipped().require_calendar("fr");
  EXPECT_TRUE(fr.is_working_day(day_of("1980-05-08")));
  EXPECT_FALSE(fr.is_working_day(day_of("2026-05-08")));
}

// Reg. 1182/71 Art. 3(4) (and the like rules) over a holiday of each shipped
// calendar that the regime tables above do not already cover (de-be, uk-ew,
// br, ca-federal and ch-be are there). Weekdays worked out by hand from
// 1 January 2026 (a Thursday) and 1 January 2028 (a Saturday).
TEST(Calendars, TheEndOfPeriodRollOverEachShippedCalendarsHolidays) {
  const auto& regs = shipped();
  const auto& zone = regs.calendar();
  struct Case {
    const char* calendar;
    std::string received;
    util::Period period;
    std::string due;
    const char* why;
  } cases[] = {
      {"de", "2028-09-03T10:00:00Z", {.months = 1}, "2028-10-04", "3 Oct 2028, Tag der Deutschen Einheit, a Tuesday"},
      {"de", "2027-02-08T10:00:00Z", {.months = 1}, "2027-03-08", "8 March is Berlin's holiday, not Germany's"},
      {"de-be", "2027-02-08T10:00:00Z", {.months = 1}, "2027-03-09", "... and rolls in Berlin"},
      {"fr", "2026-06-14T10:00:00Z", {.months = 1}, "2026-07-15", "14 July 2026, Fête nationale, a Tuesday"},
      {"ie", "2026-02-17T10:00:00Z", {.months = 1}, "2026-03-18", "17 March 2026, St Patrick's Day, a Tuesday"},
      {"nl", "2026-03-27T10:00:00Z", {.months = 1}, "2026-04-28", "27 April 2026, Koningsdag, a Monday"},
      {"us-federal", "2026-05-20T10:00:00Z", {.days = 30}, "2026-06-22", "19 June 2026, Juneteenth, a Friday"},
      {"us-ca", "2026-03-01T10:00:00Z", {.days = 30}, "2026-04-01", "31 March 2026, Cesar Chavez Day, a Tuesday"},
      {"us-federal", "2026-03-01T10:00:00Z", {.days = 30}, "2026-03-31", "... a federal working day"},
      {"us-ca", "2026-10-28T10:00:00Z", {.days = 30}, "2026-11-30", "27 Nov 2026, the day after Thanksgiving"},
  };
  for (const auto& c : cases)
    EXPECT_EQ(zone.local_date(zone.deadline(at(c.received), c.period, regs.require_calendar(c.calendar),
                                            util::EndRule::next_working_day)),
              c.due)
        << c.calendar << ": " << c.why;
}

// A due date that the rule says is a working day never falls on a day off of
// the regime's calendar: every receipt day from 1970 to 2100, every regime.
TEST(Calendars, PropertyARolledOrBusinessDayDueDateIsAWorkingDay) {
  const auto& regs = shipped();
  const auto& zone = regs.calendar();
  std::size_t checked = 0;
  for (const auto& [key, rules] : regs.dsr_regimes()) {
    const bool rolls = rules.end != util::EndRule::as_counted;
    const bool reg_1182_71 = rules.end == util::EndRule::reg_1182_71;
    std::vector<std::string> types = {"access"};
    for (const auto& [type, clock] : rules.by_type) types.push_back(type);
    for (std::int32_t day = day_of("1970-01-01"); day <= day_of("2100-12-31"); day += 3) {
      const std::int64_t received = (std::int64_t{day} * 86400 + 12 * 3600) * 1000000;
      for (const auto& type : types) {
        const auto it = rules.by_type.find(type);
        const bool business = (it != rules.by_type.end() ? it->second.period : rules.respond.period).business_days > 0;
        if (!rolls && !business) continue;
        const std::int32_t due = day_of(zone.local_date(regs.due(rules, type, received)));
        ASSERT_TRUE(rules.calendar->is_working_day(due)) << key << " " << type << " due " << zone.local_date(regs.due(rules, type, received));
        if (reg_1182_71 && !business) {  // Art. 3(5): at least two working days in the period
          int working = 0;
          for (std::int32_t d = day + 1; d <= due; ++d) working += rules.calendar->is_working_day(d) ? 1 : 0;
          ASSERT_GE(working, 2) << key << " " << type << " received " << zone.local_date(received);
        }
        ++checked;
      }
      if (const auto ext = regs.extended_due(rules, "access", received, 1); ext && rolls) {
        ASSERT_TRUE(rules.calendar->is_working_day(day_of(zone.local_date(*ext)))) << key << " extended";
      }
      if (const auto confirm = regs.confirm_by(rules, received); confirm && rules.confirm_receipt->period.business_days) {
        ASSERT_TRUE(rules.calendar->is_working_day(day_of(zone.local_date(*confirm)))) << key << " confirm";
      }
    }
  }
  EXPECT_GT(checked, 50000u);  // the loop really ran
}

// ---------------------------------------------------------------- bad input

TEST(Regulations, UnknownNamesAreRefusedWithTheValidOnes) {
  const auto& regs = shipped();
  try {
    regs.require_dsr("atlantis");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_field);
    const std::string what = e.what();
    EXPECT_NE(what.find("eu-gdpr"), std::string::npos) << what;
    EXPECT_NE(what.find("us-ca"), std::string::npos) << what;
    EXPECT_NE(what.find("ch-nfadp"), std::string::npos) << what;
  }
  EXPECT_EQ(code_of([&] { regs.require_breach("mars"); }), ErrorCode::invalid_field);
  EXPECT_EQ(code_of([&] { regs.require_calendar("atlantis"); }), ErrorCode::invalid_field);
}

TEST(Regulations, DatesBefore1970OrAfter2100AreRefused) {
  const auto& regs = shipped();
  const auto& gdpr = regs.require_dsr("eu-gdpr");
  EXPECT_EQ(code_of([&] { regs.due(gdpr, "access", at("1969-12-31T12:00:00Z")); }), ErrorCode::invalid_field);
  EXPECT_EQ(code_of([&] { regs.due(gdpr, "access", at("2101-01-01T12:00:00Z")); }), ErrorCode::invalid_field);
  EXPECT_EQ(code_of([&] { regs.due(gdpr, "access", std::numeric_limits<std::int64_t>::max() / 2); }), ErrorCode::invalid_field);
  // The edges themselves are fine: 31 Dec 2100 + 1 month = 31 Jan 2101.
  EXPECT_EQ(due_date(regs.due(gdpr, "access", at("2100-12-31T12:00:00Z"))), "2101-01-31");
  EXPECT_EQ(due_date(regs.due(gdpr, "access", at("1970-01-01T00:00:00Z"))), "1970-02-02");  // 1 Feb 1970: Sunday
}

// A broken rule file is refused with its name, whatever is wrong with it.
TEST(Regulations, BrokenRuleFilesAreRefused) {
  testing::TempDir dir;
  const auto copy = [&](const std::string& regulations, const std::string& calendars) {
    std::ofstream(dir.path() / "regulations.yaml") << regulations;
    std::ofstream(dir.path() / "calendars.yaml") << calendars;
    return code_of([&] { dsr::Regulations::load(dir.path() / "regulations.yaml"); });
  };
  std::ifstream r(kPolicies / "regulations.yaml"), c(kPolicies / "calendars.yaml");
  const std::string regs((std::istreambuf_iterator<char>(r)), std::istreambuf_iterator<char>());
  const std::string cals((std::istreambuf_iterator<char>(c)), std::istreambuf_iterator<char>());
  EXPECT_EQ(copy(regs, cals), ErrorCode::internal);  // code_of's "nothing thrown": the shipped files load
  std::string unknown_calendar = regs;
  unknown_calendar.replace(unknown_calendar.find("calendar: uk-ew"), 15, "calendar: xx-yy");
  EXPECT_EQ(copy(unknown_calendar, cals), ErrorCode::invalid_argument);
  EXPECT_EQ(copy(regs + "\n  : [unbalanced\n", cals), ErrorCode::invalid_argument);
  std::string no_source = regs;
  const std::string source = ", source: \"11 CCR 7021(a)\"";
  ASSERT_NE(no_source.find(source), std::string::npos);
  no_source.replace(no_source.find(source), source.size(), "");
  EXPECT_EQ(copy(no_source, cals), ErrorCode::invalid_argument);
  EXPECT_EQ(copy(regs, "calendars: {de-be: {name: x, source: y, checked: 2026-11-30, holidays: [{name: z, date: \"13-40\"}]}}"),
            ErrorCode::invalid_argument);
}

}  // namespace
}  // namespace custos

namespace custos {
namespace {

// `custos regulations show|due`: officers' read of the rules, no vault needed.
struct RegulationsCli : ::testing::Test {
  testing::TempDir dir;
  testing::RunResult custos(std::vector<std::string> args) {
    args.insert(args.begin(), {CUSTOS_CLI_PATH, "--data-dir", (dir.path() / "none").string()});
    return testing::run(args);
  }
};

TEST_F(RegulationsCli, DuePrintsTheRolledDateWithItsSource) {
  // GDPR Art. 12(3); Reg. 1182/71 Art. 3(4): 31 Jan -> 28 Feb (Saturday) -> Monday 2 March.
  auto r = custos({"regulations", "due", "--regime", "gdpr", "--type", "access", "--received-at", "2026-01-31T10:00:00Z"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["regime"], "eu-gdpr");
  EXPECT_EQ(j["due"]["date"], "2026-03-02");
  EXPECT_EQ(j["extended_due"]["date"], "2026-04-30");
  EXPECT_NE(j["rule"]["source"].get<std::string>().find("12(3)"), std::string::npos);
  // A breach's clocks: Cal. Civ. Code 1798.82(a)(2), 30 days.
  r = custos({"regulations", "due", "--regime", "us-ca", "--type", "breach", "--received-at", "2026-03-02T10:00:00Z"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["clocks"][0]["recipient"], "individuals");
  EXPECT_EQ(j["clocks"][0]["due"]["date"], "2026-04-01");
}

TEST_F(RegulationsCli, ShowListsEveryRuleWithCitationAndCheckedDate) {
  auto r = custos({"regulations", "show", "uk-gdpr"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["dsr"]["calendar"]["key"], "uk-ew");
  for (const auto& rule : j["dsr"]["rules"]) {
    EXPECT_FALSE(rule["source"].get<std::string>().empty());
    EXPECT_EQ(rule["checked"].get<std::string>().size(), 10u);
  }
  EXPECT_EQ(j["breach"]["recipients"][0]["period"], "72 hour(s)");
  r = custos({"regulations", "show"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_GE(nlohmann::json::parse(r.out)["dsr"].size(), 24u);
}

TEST_F(RegulationsCli, BadInputExitsTwoNamingTheValidChoices) {
  auto r = custos({"regulations", "due", "--regime", "atlantis", "--type", "access", "--received-at", "2026-01-31T10:00:00Z"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("eu-gdpr"), std::string::npos) << r.err;
  r = custos({"regulations", "due", "--regime", "eu-gdpr", "--type", "teleport", "--received-at", "2026-01-31T10:00:00Z"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("opt_out_sale_share"), std::string::npos) << r.err;
  r = custos({"regulations", "due", "--regime", "eu-gdpr", "--type", "access", "--received-at", "1969-07-20T20:17:00Z"});
  EXPECT_EQ(r.exit_code, 2);
  r = custos({"regulations", "due", "--regime", "eu-gdpr", "--type", "access", "--received-at", "yesterday"});
  EXPECT_EQ(r.exit_code, 2);
  r = custos({"regulations", "show", "mars"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("ch-nfadp"), std::string::npos) << r.err;
  EXPECT_EQ(custos({"regulations", "due", "--regime", "eu-gdpr"}).exit_code, 2);  // usage
}

}  // namespace
}  // namespace custos

namespace custos {
namespace {

// A data directory from the previous release keeps its policies: its
// regulations.yaml is format 1 (tests/fixtures/policies-v1, the previous
// release 5d7a4d2's file) and it has no calendars.yaml.
const fs::path kPreviousRelease = fs::path(CUSTOS_SOURCE_DIR) / "tests" / "fixtures" / "policies-v1" / "regulations.yaml";

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::string replaced(std::string text, const std::string& from, const std::string& to) {
  const auto at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos) text.replace(at, from.size(), to);
  return text;
}

std::string load_error(const fs::path& file) {
  try {
    dsr::Regulations::load(file);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    return e.what();
  }
  return "";
}

TEST(PolicyUpgrade, ThePreviousReleasesFileIsRefusedNamingTheUpgrade) {
  testing::TempDir dir;
  fs::copy_file(kPreviousRelease, dir.path() / "regulations.yaml");
  std::string error = load_error(dir.path() / "regulations.yaml");
  EXPECT_NE(error.find("custos policy upgrade"), std::string::npos) << error;
  EXPECT_NE(error.find("regulations.yaml"), std::string::npos) << error;
  // Still refused, and for the same reason, once calendars.yaml is there.
  fs::copy_file(kPolicies / "calendars.yaml", dir.path() / "calendars.yaml");
  error = load_error(dir.path() / "regulations.yaml");
  EXPECT_NE(error.find("custos policy upgrade"), std::string::npos) << error;
  // A newer release's file is refused as such.
  std::ofstream(dir.path() / "regulations.yaml") << replaced(slurp(kPolicies / "regulations.yaml"), "version: 2", "version: 3");
  error = load_error(dir.path() / "regulations.yaml");
  EXPECT_NE(error.find("newer release"), std::string::npos) << error;
}

TEST(PolicyUpgrade, KeepsTheControllerAndTheOldHolidaysAndTheOldFile) {
  testing::TempDir dir;
  const std::string old_text =
      replaced(replaced(slurp(kPreviousRelease), "name: \"Example Retail Ltd\"", "name: \"Beispiel \\\"Handel\\\" AG\""),
               "timezone: Europe/Berlin", "timezone: Europe/Vienna");
  std::ofstream(dir.path() / "regulations.yaml") << old_text;
  const auto u = dsr::upgrade_regulations(dir.path(), kPolicies);
  EXPECT_TRUE(u.changed);
  EXPECT_EQ(u.from_version, 1);
  EXPECT_EQ(u.to_version, 2);
  EXPECT_TRUE(u.calendars_added);
  EXPECT_EQ(slurp(u.backup), old_text);  // kept byte for byte
  EXPECT_EQ(u.backup.filename(), "regulations.yaml.v1");
  EXPECT_TRUE(u.notes.empty()) << u.notes.front();  // the old shipped periods are the statutory ones
  // The old list (2026-2027: Neujahr, Karfreitag, Ostermontag, 1 May,
  // Himmelfahrt, Pfingstmontag, 3 October, 25/26 December) is Germany's
  // nationwide calendar, not Berlin's.
  EXPECT_EQ(u.eu_calendar, "de");
  const auto regs = dsr::Regulations::load(dir.path() / "regulations.yaml");
  EXPECT_EQ(regs->controller(), "Beispiel \"Handel\" AG");
  EXPECT_EQ(regs->calendar().time_zone(), "Europe/Vienna");
  const auto& gdpr = regs->require_dsr("gdpr");
  EXPECT_EQ(gdpr.calendar->key(), "de");
  EXPECT_EQ(regs->require_breach("gdpr").calendar->key(), "de");
  // 8 Feb 2027 + 1 month = Mon 8 March: a working day on the old list (it is
  // Berlin's Women's Day, where the shipped file would roll to the 9th).
  EXPECT_EQ(regs->calendar().local_date(regs->due(gdpr, "access", at("2027-02-08T10:00:00Z"))), "2027-03-08");
  // Every regime name of the old file still answers (aliases).
  for (const char* old_name : {"gdpr", "ccpa", "colorado", "virginia", "texas"}) EXPECT_NE(regs->dsr(old_name), nullptr) << old_name;
  for (const char* old_name : {"gdpr", "hipaa", "california", "colorado", "texas", "florida"})
    EXPECT_NE(regs->breach(old_name), nullptr) << old_name;
  // Again: nothing to do, nothing written.
  const auto again = dsr::upgrade_regulations(dir.path(), kPolicies);
  EXPECT_FALSE(again.changed);
  EXPECT_FALSE(fs::exists(dir.path() / "regulations.yaml.v1.2"));
}

TEST(PolicyUpgrade, NamesWhatTheOperatorMustReview) {
  testing::TempDir dir;
  // An edited period, and a holiday list that is no shipped calendar.
  std::ofstream(dir.path() / "regulations.yaml")
      << replaced(replaced(slurp(kPreviousRelease), "respond: {months: 1}", "respond: {months: 2}"), "  - 2026-10-03\n", "");
  const auto u = dsr::upgrade_regulations(dir.path(), kPolicies);
  ASSERT_EQ(u.notes.size(), 2u);
  EXPECT_NE(u.notes[0].find("matches no shipped calendar"), std::string::npos) << u.notes[0];
  EXPECT_EQ(u.eu_calendar, "de-be");  // the shipped default stays
  EXPECT_NE(u.notes[1].find("dsr.gdpr.respond was 2 month(s)"), std::string::npos) << u.notes[1];
}

TEST(PolicyUpgrade, AFailedUpgradeChangesNothing) {
  testing::TempDir dir;
  const std::string old_text = replaced(slurp(kPreviousRelease), "timezone: Europe/Berlin", "timezone: Mars/Olympus_Mons");
  std::ofstream(dir.path() / "regulations.yaml") << old_text;
  EXPECT_EQ(code_of([&] { dsr::upgrade_regulations(dir.path(), kPolicies); }), ErrorCode::invalid_argument);
  EXPECT_EQ(slurp(dir.path() / "regulations.yaml"), old_text);
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(dir.path())) left.push_back(e.path().filename().string());
  EXPECT_EQ(left, std::vector<std::string>{"regulations.yaml"});  // no calendars.yaml, backup or candidate
}

// End to end: a vault whose policies are the previous release's.
struct PolicyUpgradeCli : ::testing::Test {
  testing::TempDir dir;
  std::string data() const { return (dir.path() / "data").string(); }
  testing::RunResult custos(std::vector<std::string> args) {
    args.insert(args.begin(), {CUSTOS_CLI_PATH, "--data-dir", data()});
    return testing::run(args);
  }
};

TEST_F(PolicyUpgradeCli, AnOldVaultIsRefusedUntilUpgradedAndTheUpgradeIsAudited) {
  ASSERT_EQ(custos({"init", "--fast-kdf"}).exit_code, 0);
  const fs::path policies = fs::path(data()) / "policies";
  fs::copy_file(kPreviousRelease, policies / "regulations.yaml", fs::copy_options::overwrite_existing);
  fs::remove(policies / "calendars.yaml");
  auto r = custos({"token", "list"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("custos policy upgrade"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << r.err;  // one line
  r = custos({"policy", "upgrade"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["changed"], true);
  EXPECT_EQ(j["audited"], true);
  EXPECT_EQ(j["from_version"], 1);
  EXPECT_TRUE(fs::exists(policies / "calendars.yaml"));
  EXPECT_TRUE(fs::exists(policies / "regulations.yaml.v1"));
  r = custos({"token", "list"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = custos({"audit", "entries", "--operation", "policy.upgrade", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["entries"].size(), 1u) << r.out;
  // Once only: a current file is left alone and not audited again.
  r = custos({"policy", "upgrade"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["changed"], false);
  EXPECT_EQ(nlohmann::json::parse(custos({"audit", "entries", "--operation", "policy.upgrade", "--json"}).out)["entries"].size(), 1u);
}

TEST(PolicyUpgrade, TheQuickVersionLookReadsOnlyATopLevelCurrentVersion) {
  EXPECT_TRUE(dsr::declares_current_version(slurp(kPolicies / "regulations.yaml")));
  EXPECT_FALSE(dsr::declares_current_version(slurp(kPreviousRelease)));
  EXPECT_TRUE(dsr::declares_current_version("controller: {}\nversion: 2   # the format\r\n"));
  EXPECT_FALSE(dsr::declares_current_version("version: 3\n"));
  EXPECT_FALSE(dsr::declares_current_version("version: 22\n"));
  EXPECT_FALSE(dsr::declares_current_version("version:\n"));
  EXPECT_FALSE(dsr::declares_current_version("dsr:\n  version: 2\n"));  // not the top level
  EXPECT_FALSE(dsr::declares_current_version("{version: 2}"));  // flow style: left to the full load
  EXPECT_FALSE(dsr::declares_current_version(""));
}

// A `custos` command reads the rules only when it counts a deadline: one
// that does not still runs, the one that does is refused naming the file.
TEST_F(PolicyUpgradeCli, ACommandThatCountsNoDeadlineDoesNotReadTheRules) {
  ASSERT_EQ(custos({"init", "--fast-kdf"}).exit_code, 0);
  const fs::path file = fs::path(data()) / "policies" / "regulations.yaml";
  std::ofstream(file, std::ios::trunc) << replaced(slurp(kPolicies / "regulations.yaml"), "calendar: de-be", "calendar: xx-nowhere");
  auto r = custos({"token", "list"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = custos({"dsr", "create", "--type", "access", "--regime", "gdpr", "--email", "lazy@example.com"});
  EXPECT_EQ(r.exit_code, 2) << r.out;  // invalid argument
  EXPECT_NE(r.err.find("regulations.yaml"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("unknown calendar 'xx-nowhere'"), std::string::npos) << r.err;
  // The rules restored: the same command counts its deadline.
  fs::copy_file(kPolicies / "regulations.yaml", file, fs::copy_options::overwrite_existing);
  r = custos({"dsr", "create", "--type", "access", "--regime", "gdpr", "--email", "lazy@example.com"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST_F(PolicyUpgradeCli, WithoutAVaultNothingIsChanged) {
  fs::create_directories(dir.path() / "data" / "policies");
  fs::copy_file(kPreviousRelease, dir.path() / "data" / "policies" / "regulations.yaml");
  const auto r = custos({"policy", "upgrade"});
  EXPECT_EQ(r.exit_code, 3) << r.err;  // not found
  EXPECT_FALSE(fs::exists(dir.path() / "data" / "policies" / "calendars.yaml"));
  EXPECT_EQ(slurp(dir.path() / "data" / "policies" / "regulations.yaml"), slurp(kPreviousRelease));
}

}  // namespace
}  // namespace custos
