// custos/dsr/regulations.h — statutory deadlines from policies/regulations.yaml,
// counted on the holiday calendars of policies/calendars.yaml.
//
// Regimes are data: adding a US state law is an edit of the YAML file, not
// of this code. One vocabulary serves data-subject requests and breaches
// (`eu-gdpr`, `uk-gdpr`, `us-ca`, `us-<state>`, `br-lgpd`, `ca-pipeda`,
// `ch-nfadp`); the old names (`gdpr`, `ccpa`, `california`, ...) are aliases.
// Every rule names its source (citation and the date it was last checked).
//
// A loaded Regulations is immutable and safe for concurrent use; reloading
// builds a new one (the old stays in force if the new files are refused).
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "custos/util/calendar.h"

namespace custos::dsr {

// Where a rule comes from.
struct Source {
  std::string citation;  // e.g. "GDPR Art. 12(3)"
  std::string checked;   // YYYY-MM-DD the rule was last compared with its source
};

// One statutory period with its source.
struct Clock {
  util::Period period;
  Source source;
  std::string note;  // conditions (e.g. when an extension is allowed)
};

struct DsrRules {
  std::string key, name;
  std::vector<std::string> aliases;
  const util::HolidayCalendar* calendar = nullptr;  // business days and the end-of-period roll
  util::EndRule end = util::EndRule::as_counted;
  Clock respond;
  std::optional<Clock> extend;  // counted from receipt: receipt + respond + extend, then rolled
  int max_extensions = 0;
  std::optional<Clock> confirm_receipt;  // acknowledge the request within
  std::optional<Clock> appeal;           // answer an appeal of a refusal within
  std::map<std::string, Clock, std::less<>> by_type;  // request types with their own clock (opt-outs)
};

// Who must be told of a breach, by when, and when at all.
struct Recipient {
  enum class Anchor {
    discovery,           // from discovery (or notification by a processor)
    after_recipient,     // from the notice to `after` (its due date until it is sent)
    end_of_year,         // from the end of the calendar year of discovery (HIPAA log)
  };
  std::string key, name;
  std::optional<util::Period> within;  // nullopt: no fixed period (`timing` says how soon)
  std::string timing;                  // "without undue delay", "as soon as feasible", ...
  Anchor anchor = Anchor::discovery;
  std::string after;
  Source source;
  // Each condition that is set must hold for the notice to be required.
  bool high_risk_only = false;
  std::optional<std::int64_t> residents_over, residents_at_least, residents_under;
  std::string residents_of;  // "" every affected person; "CA" residents of a region; "*" of any one region
};

struct BreachRules {
  std::string key, name;
  std::vector<std::string> aliases;
  const util::HolidayCalendar* calendar = nullptr;
  util::EndRule end = util::EndRule::as_counted;
  std::vector<Recipient> recipients;
  const Recipient* recipient(std::string_view key) const;
};

// The format of regulations.yaml this release reads: `version: 2` at the
// top. A file without `version` is the previous release's format (1: a
// `holidays` list, regimes without calendars or sources, no calendars.yaml):
// Regulations::load refuses it with an error naming `custos policy upgrade`,
// which runs upgrade_regulations().
inline constexpr int kRegulationsVersion = 2;

struct RegulationsUpgrade {
  int from_version = 0, to_version = 0;
  bool changed = false;             // false: the file was already current
  std::filesystem::path backup;     // the old file, kept beside the new one
  bool calendars_added = false;     // calendars.yaml copied from the shipped policies
  std::string eu_calendar;          // the calendar eu-gdpr counts on after the upgrade
  std::vector<std::string> notes;   // what the operator should review (no personal data)
};

// Upgrades <policy_dir>/regulations.yaml to kRegulationsVersion from the
// files in `shipped_dir` (regulations.yaml, calendars.yaml): the new file is
// the shipped one with the old file's controller (name, time zone); eu-gdpr
// counts on the shipped calendar whose holidays equal the old `holidays`
// list in every year it lists (else the shipped default, with a note). The
// rules are the shipped, statute-sourced ones: each old rule whose period
// differs is named in `notes`. calendars.yaml is copied in if missing. The
// result is loaded before it replaces anything (nothing half-applied); the
// old file is kept as regulations.yaml.v1. Running it on a current file
// changes nothing. Throws Error(invalid_argument) for a file in neither
// format or a version newer than this release reads.
RegulationsUpgrade upgrade_regulations(const std::filesystem::path& policy_dir,
                                       const std::filesystem::path& shipped_dir);

// A cheap look at regulations.yaml's text, for a process that may never
// need the rules (a `custos` command): true if a line at the top level reads
// `version: <kRegulationsVersion>` (a comment may follow), so the file is not
// one that Regulations::load refuses for its format alone. False means only
// "load it to find out": the previous release's format, a newer version, or
// a spelling this look does not read (flow style, a quoted number).
bool declares_current_version(std::string_view yaml_text);

class Regulations {
 public:
  // Reads `file` and calendars.yaml beside it. Throws Error(invalid_argument)
  // naming the file and entry for anything that does not parse, a rule
  // without source or checked date, an unknown calendar, or a file in the
  // previous release's format (no `version`: run `custos policy upgrade`).
  static std::shared_ptr<const Regulations> load(const std::filesystem::path& file);

  // The controller's time zone: date-based periods are counted in it.
  const util::Calendar& calendar() const { return *calendar_; }
  const std::string& controller() const { return controller_; }

  // By key or alias; nullptr if unknown.
  const DsrRules* dsr(std::string_view regime) const;
  const BreachRules* breach(std::string_view regime) const;
  const util::HolidayCalendar* holiday_calendar(std::string_view key) const;
  // As above, or Error(invalid_field) naming `field` and listing the valid names.
  const DsrRules& require_dsr(std::string_view regime, std::string_view field = "regime") const;
  const BreachRules& require_breach(std::string_view regime, std::string_view field = "regimes") const;
  const util::HolidayCalendar& require_calendar(std::string_view key, std::string_view field = "calendar") const;

  const std::map<std::string, DsrRules, std::less<>>& dsr_regimes() const { return dsr_; }
  const std::map<std::string, BreachRules, std::less<>>& breach_regimes() const { return breach_; }
  const std::map<std::string, util::HolidayCalendar, std::less<>>& calendars() const { return calendars_; }

  // Deadlines as each regime's law counts them. `type` is a request type
  // (dsr::kTypes); Error(invalid_field) for a start outside 1970..2100.
  std::int64_t due(const DsrRules& rules, std::string_view type, std::int64_t received_us) const;
  // The due date after `extensions` extensions, counted from receipt
  // (GDPR Art. 12(3): receipt + 3 months, then rolled); nullopt when the
  // regime or the type allows no such extension.
  std::optional<std::int64_t> extended_due(const DsrRules& rules, std::string_view type, std::int64_t received_us,
                                           int extensions) const;
  std::optional<std::int64_t> confirm_by(const DsrRules& rules, std::int64_t received_us) const;
  // A breach recipient's due instant; `anchor_us` is the start its anchor
  // names (discovery, the earlier notice, ...). nullopt: no fixed period.
  std::optional<std::int64_t> breach_due(const BreachRules& rules, const Recipient& r, std::int64_t anchor_us) const;

 private:
  std::unique_ptr<util::Calendar> calendar_;
  std::string controller_;
  std::map<std::string, util::HolidayCalendar, std::less<>> calendars_;
  std::map<std::string, DsrRules, std::less<>> dsr_;
  std::map<std::string, BreachRules, std::less<>> breach_;
  std::map<std::string, std::string, std::less<>> dsr_alias_, breach_alias_;
};

}  // namespace custos::dsr
