#include "custos/dsr/regulations.h"

#include <yaml-cpp/yaml.h>

#include "custos/error.h"
#include "custos/util/files.h"

namespace custos::dsr {
namespace {

util::Period parse_period(const YAML::Node& n, const std::string& where) {
  if (!n.IsMap()) throw Error(ErrorCode::invalid_argument, where + ": expected {months|days|business_days|hours: N}");
  util::Period p;
  if (n["months"]) p.months = n["months"].as<int>();
  if (n["days"]) p.days = n["days"].as<int>();
  if (n["business_days"]) p.business_days = n["business_days"].as<int>();
  if (n["hours"]) p.hours = n["hours"].as<int>();
  const int set = (p.months > 0) + (p.days > 0) + (p.business_days > 0) + (p.hours > 0);
  if (set != 1) throw Error(ErrorCode::invalid_argument, where + ": give exactly one positive unit");
  return p;
}

}  // namespace

std::shared_ptr<const Regulations> Regulations::load(const std::filesystem::path& file) {
  auto r = std::make_shared<Regulations>();
  const std::string src = file.string();
  try {
    const YAML::Node root = YAML::Load(util::read_text_file(file));
    const YAML::Node controller = root["controller"];
    r->controller_ = controller && controller["name"] ? controller["name"].as<std::string>() : "controller";
    const std::string zone = controller && controller["timezone"] ? controller["timezone"].as<std::string>() : "UTC";
    std::set<std::string> holidays;
    if (root["holidays"])
      for (const auto& h : root["holidays"]) holidays.insert(h.as<std::string>());
    r->calendar_ = std::make_unique<util::Calendar>(zone, std::move(holidays));
    if (root["dsr"])
      for (const auto& kv : root["dsr"]) {
        DsrRules d;
        d.key = kv.first.as<std::string>();
        const std::string where = src + ": dsr." + d.key;
        const YAML::Node& n = kv.second;
        d.name = n["name"] ? n["name"].as<std::string>() : d.key;
        if (!n["respond"]) throw Error(ErrorCode::invalid_argument, where + ": 'respond' is required");
        d.respond = parse_period(n["respond"], where + ".respond");
        if (n["extend"]) d.extend = parse_period(n["extend"], where + ".extend");
        d.max_extensions = n["max_extensions"] ? n["max_extensions"].as<int>() : (n["extend"] ? 1 : 0);
        if (n["confirm_receipt"]) d.confirm_receipt = parse_period(n["confirm_receipt"], where + ".confirm_receipt");
        if (n["opt_out"]) d.opt_out = parse_period(n["opt_out"], where + ".opt_out");
        r->dsr_.emplace(d.key, std::move(d));
      }
    if (root["breach"])
      for (const auto& kv : root["breach"]) {
        BreachRules b;
        b.key = kv.first.as<std::string>();
        const std::string where = src + ": breach." + b.key;
        const YAML::Node& n = kv.second;
        b.name = n["name"] ? n["name"].as<std::string>() : b.key;
        if (n["authority"]) b.authority = parse_period(n["authority"], where + ".authority");
        if (n["subjects"]) {
          if (n["subjects"].IsScalar() && n["subjects"].as<std::string>() == "without_undue_delay")
            b.subjects_without_undue_delay = true;
          else
            b.subjects = parse_period(n["subjects"], where + ".subjects");
        }
        if (n["authority_threshold_residents"]) b.authority_threshold_residents = n["authority_threshold_residents"].as<int>();
        r->breach_.emplace(b.key, std::move(b));
      }
  } catch (const YAML::Exception& e) {
    throw Error(ErrorCode::invalid_argument, src + ": invalid at line " + std::to_string(e.mark.line + 1));
  } catch (const Error& e) {
    if (e.code() == ErrorCode::not_found) throw Error(ErrorCode::invalid_argument, "cannot read " + src);
    throw;
  }
  return r;
}

const DsrRules* Regulations::dsr(std::string_view regime) const {
  const auto it = dsr_.find(regime);
  return it == dsr_.end() ? nullptr : &it->second;
}

const BreachRules* Regulations::breach(std::string_view regime) const {
  const auto it = breach_.find(regime);
  return it == breach_.end() ? nullptr : &it->second;
}

}  // namespace custos::dsr
