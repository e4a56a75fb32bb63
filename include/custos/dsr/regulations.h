// custos/dsr/regulations.h — statutory deadlines from policies/regulations.yaml.
//
// Regimes are data: adding a US state law is an edit of the YAML file, not
// of this code.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "custos/util/calendar.h"

namespace custos::dsr {

struct DsrRules {
  std::string key, name;
  util::Period respond, extend;
  int max_extensions = 1;
  std::optional<util::Period> confirm_receipt;  // acknowledge the request within
  std::optional<util::Period> opt_out;          // opt-out of sale/share honoured within
};

struct BreachRules {
  std::string key, name;
  std::optional<util::Period> authority;
  std::optional<util::Period> subjects;
  bool subjects_without_undue_delay = false;
  int authority_threshold_residents = 0;  // notify the regulator above this many residents
};

class Regulations {
 public:
  // Throws Error(invalid_argument) naming the file and entry.
  static std::shared_ptr<const Regulations> load(const std::filesystem::path& file);

  const util::Calendar& calendar() const { return *calendar_; }
  const std::string& controller() const { return controller_; }
  const DsrRules* dsr(std::string_view regime) const;
  const BreachRules* breach(std::string_view regime) const;
  const std::map<std::string, DsrRules, std::less<>>& dsr_regimes() const { return dsr_; }
  const std::map<std::string, BreachRules, std::less<>>& breach_regimes() const { return breach_; }

 private:
  std::unique_ptr<util::Calendar> calendar_;
  std::string controller_;
  std::map<std::string, DsrRules, std::less<>> dsr_;
  std::map<std::string, BreachRules, std::less<>> breach_;
};

}  // namespace custos::dsr
