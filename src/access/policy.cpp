#include "custos/access/policy.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>

#include "custos/error.h"
#include "custos/util/files.h"
#include "custos/util/text.h"

namespace custos::access {
namespace fs = std::filesystem;
namespace {

YAML::Node load_yaml(const fs::path& file) {
  std::string text;
  try {
    text = util::read_text_file(file);
  } catch (const Error&) {
    throw Error(ErrorCode::invalid_argument, "cannot read policy file " + file.string());
  }
  try {
    return YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw Error(ErrorCode::invalid_argument,
                "policy file " + file.string() + ": invalid YAML at line " + std::to_string(e.mark.line + 1));
  }
}

Visibility parse_visibility(const std::string& v, const std::string& where) {
  if (v == "plain") return Visibility::plain;
  if (v == "masked") return Visibility::masked;
  if (v == "none") return Visibility::none;
  throw Error(ErrorCode::invalid_argument, where + ": visibility must be plain, masked or none");
}

// Operations that only one purpose justifies unless purposes.yaml says otherwise.
const std::vector<std::pair<std::string, std::string>> kDefaultOperationPurposes = {
    {"breach.notify_list", "breach_notification"},
    {"dsr.export", "dsr_fulfilment"},
};

}  // namespace

std::shared_ptr<const Policy> Policy::load(const fs::path& dir, const records::Schema& schema) {
  auto policy = std::make_shared<Policy>();
  const fs::path purposes_file = dir / "purposes.yaml";
  const fs::path roles_file = dir / "roles.yaml";
  try {
    const YAML::Node purposes = load_yaml(purposes_file)["purposes"];
    if (!purposes || !purposes.IsMap())
      throw Error(ErrorCode::invalid_argument, purposes_file.string() + ": expected a 'purposes' map");
    for (const auto& kv : purposes) {
      Purpose p;
      p.name = kv.first.as<std::string>();
      const YAML::Node& n = kv.second;
      if (n["description"]) p.description = n["description"].as<std::string>();
      if (n["lawful_basis"]) p.lawful_basis = n["lawful_basis"].as<std::string>();
      if (n["marketing"]) p.marketing = n["marketing"].as<bool>();
      if (n["sale_or_share"]) p.sale_or_share = n["sale_or_share"].as<bool>();
      if (n["allowed_when_restricted"]) p.allowed_when_restricted = n["allowed_when_restricted"].as<bool>();
      if (n["channels"]) p.channels = n["channels"].as<std::vector<std::string>>();
      if (n["required_for"])
        for (const auto& op : n["required_for"].as<std::vector<std::string>>()) {
          if (op.empty() || op.size() > 64 || op.find('.') == std::string::npos ||
              op.find_first_not_of("abcdefghijklmnopqrstuvwxyz_.") != std::string::npos)
            throw Error(ErrorCode::invalid_argument, purposes_file.string() + ": purpose '" + p.name +
                                                         "': 'required_for' needs operation names like breach.notify_list");
          policy->operation_purposes_[op].insert(p.name);
          p.required_for.push_back(op);
        }
      policy->purposes_.emplace(p.name, std::move(p));
    }
    // Restriction (Art. 18): a file that marks no purpose gets the defaults.
    if (std::none_of(policy->purposes_.begin(), policy->purposes_.end(),
                     [](const auto& kv) { return kv.second.allowed_when_restricted; }))
      for (const char* name : {"dsr_fulfilment", "legal_claims", "audit"})
        if (auto it = policy->purposes_.find(name); it != policy->purposes_.end()) it->second.allowed_when_restricted = true;
    // Defaults for sensitive operations the files say nothing about.
    for (const auto& [op, purpose] : kDefaultOperationPurposes)
      if (!policy->operation_purposes_.count(op) && policy->purposes_.count(purpose))
        policy->operation_purposes_[op].insert(purpose);
    const std::vector<std::string> categories = schema.categories();
    const YAML::Node roles = load_yaml(roles_file)["roles"];
    if (!roles || !roles.IsMap())
      throw Error(ErrorCode::invalid_argument, roles_file.string() + ": expected a 'roles' map");
    for (const auto& kv : roles) {
      Role r;
      r.name = kv.first.as<std::string>();
      const std::string where = roles_file.string() + ": role '" + r.name + "'";
      const YAML::Node& n = kv.second;
      if (!n.IsMap()) throw Error(ErrorCode::invalid_argument, where + ": expected a map");
      if (n["operations"])
        for (const auto& op : n["operations"].as<std::vector<std::string>>()) {
          if (std::find(kOperations.begin(), kOperations.end(), op) == kOperations.end())
            throw Error(ErrorCode::invalid_argument, where + ": unknown operation '" + op + "'");
          r.operations.insert(op);
        }
      if (n["visibility"])
        for (const auto& v : n["visibility"]) {
          const std::string cat = v.first.as<std::string>();
          if (std::find(categories.begin(), categories.end(), cat) == categories.end())
            throw Error(ErrorCode::invalid_argument, where + ": unknown data category '" + cat + "'");
          r.visibility[cat] = parse_visibility(v.second.as<std::string>(), where);
        }
      if (n["purposes"])
        for (const auto& p : n["purposes"].as<std::vector<std::string>>()) {
          if (!policy->purposes_.count(p))
            throw Error(ErrorCode::invalid_argument, where + ": unknown purpose '" + p + "'");
          r.purposes.insert(p);
        }
      if (n["capture_consent"])
        for (const auto& p : n["capture_consent"].as<std::vector<std::string>>()) {
          if (!policy->purposes_.count(p))
            throw Error(ErrorCode::invalid_argument, where + ": capture_consent: unknown purpose '" + p + "'");
          // Capture is separated from use: a role that may declare a purpose
          // reaches its consent only through evidence someone else relays.
          if (r.purposes.count(p))
            throw Error(ErrorCode::invalid_argument, where + ": capture_consent: '" + p +
                                                         "' is also among its purposes; a role may not capture"
                                                         " consent for a purpose it uses");
          r.capture_consent.insert(p);
        }
      policy->roles_.emplace(r.name, std::move(r));
    }
    if (const YAML::Node dsr = load_yaml(roles_file)["dsr"]) {
      if (!dsr.IsMap()) throw Error(ErrorCode::invalid_argument, roles_file.string() + ": 'dsr' must be a map");
      for (const auto& kv : dsr) {
        const std::string key = kv.first.as<std::string>();
        if (key == "erasure_second_approver") {
          if (!YAML::convert<bool>::decode(kv.second, policy->dsr_workflow_.erasure_second_approver))
            throw Error(ErrorCode::invalid_argument, roles_file.string() + ": dsr.erasure_second_approver: true or false");
        } else if (key == "erasure_under_hold") {
          const std::string v = kv.second.as<std::string>();
          if (v != "complete_with_exceptions" && v != "deny")
            throw Error(ErrorCode::invalid_argument,
                        roles_file.string() + ": dsr.erasure_under_hold: use complete_with_exceptions or deny");
          policy->dsr_workflow_.deny_erasure_under_hold = v == "deny";
        } else {
          throw Error(ErrorCode::invalid_argument, roles_file.string() + ": dsr: unknown setting '" +
                                                       util::printable_prefix(key) + "'");
        }
      }
    }
  } catch (const YAML::Exception& e) {
    throw Error(ErrorCode::invalid_argument, "policy files in " + dir.string() + ": bad value at line " +
                                                 std::to_string(e.mark.line + 1));
  }
  if (policy->roles_.empty()) throw Error(ErrorCode::invalid_argument, roles_file.string() + ": no roles defined");
  return policy;
}

const Role* Policy::role(std::string_view name) const {
  const auto it = roles_.find(name);
  return it == roles_.end() ? nullptr : &it->second;
}

const Purpose* Policy::purpose(std::string_view name) const {
  const auto it = purposes_.find(name);
  return it == purposes_.end() ? nullptr : &it->second;
}

const std::set<std::string>* Policy::purposes_required_for(std::string_view operation) const {
  const auto it = operation_purposes_.find(operation);
  return it == operation_purposes_.end() ? nullptr : &it->second;
}

Visibility Policy::visibility(const Role& role, const records::FieldSpec& field) const {
  const auto it = role.visibility.find(field.category);
  return it == role.visibility.end() ? Visibility::none : it->second;
}

namespace {

// The first UTF-8 character of `s` (whole, so masking never splits a code point).
std::string first_char(std::string_view s) {
  if (s.empty()) return "";
  const auto c = static_cast<unsigned char>(s[0]);
  const std::size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : 4;
  return std::string(s.substr(0, std::min(len, s.size())));
}

}  // namespace

std::string mask_value(const records::FieldSpec& field, std::string_view value) {
  if (field.mask == "email") {
    const auto at = value.rfind('@');
    if (at == std::string_view::npos || at == 0) return "***";
    return first_char(value) + "***" + std::string(value.substr(at));
  }
  if (field.mask == "phone_last4") {
    std::string digits;
    for (char c : value)
      if (c >= '0' && c <= '9') digits.push_back(c);
    if (digits.size() < 4) return "***";
    return "***-***-" + digits.substr(digits.size() - 4);
  }
  if (field.mask == "year_only") return value.size() >= 4 ? std::string(value.substr(0, 4)) : "***";
  if (field.mask == "initial") return value.empty() ? "***" : first_char(value) + ".";
  return "***";
}

}  // namespace custos::access
