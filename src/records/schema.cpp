#include "custos/records/schema.h"

#include <yaml-cpp/yaml.h>

#include <set>

#include "custos/error.h"
#include "custos/util/files.h"
#include "custos/util/text.h"
#include "normalise.h"

namespace custos::records {
namespace {

FieldType parse_type(const std::string& t, const std::string& where) {
  if (t == "string") return FieldType::string;
  if (t == "email") return FieldType::email;
  if (t == "phone") return FieldType::phone;
  if (t == "date") return FieldType::date;
  if (t == "address") return FieldType::address;
  if (t == "enum") return FieldType::enumeration;
  throw Error(ErrorCode::invalid_argument, where + ": unknown type '" + t + "'");
}

const std::set<std::string> kCategories = {"identity", "contact", "descriptive", "qualitative", "quantitative"};
const std::set<std::string> kMasks = {"email", "phone_last4", "year_only", "initial", "redact"};

[[noreturn]] void bad_field(const FieldSpec& f, const std::string& why) {
  throw Error(ErrorCode::invalid_field, "field '" + f.name + "': " + why);
}

}  // namespace

Schema Schema::load(const std::filesystem::path& file) {
  std::string text;
  try {
    text = util::read_text_file(file);
  } catch (const Error&) {
    throw Error(ErrorCode::invalid_argument, "cannot read schema file " + file.string());
  }
  return parse(text, file.string());
}

Schema Schema::parse(const std::string& yaml_text, const std::string& source) {
  Schema schema;
  try {
    const YAML::Node root = YAML::Load(yaml_text);
    if (!root.IsMap() || !root["fields"] || !root["fields"].IsSequence())
      throw Error(ErrorCode::invalid_argument, source + ": expected a map with a 'fields' list");
    if (root["version"]) schema.version_ = root["version"].as<std::uint32_t>();
    if (root["default_region"]) schema.default_region_ = root["default_region"].as<std::string>();
    if (root["max_value_bytes"]) schema.max_value_bytes_ = root["max_value_bytes"].as<std::size_t>();
    for (const YAML::Node& n : root["fields"]) {
      FieldSpec f;
      if (!n["name"]) throw Error(ErrorCode::invalid_argument, source + ": a field has no name");
      f.name = n["name"].as<std::string>();
      const std::string where = source + ": field '" + f.name + "'";
      if (f.name.empty() || f.name.size() > 64 ||
          f.name.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_") != std::string::npos)
        throw Error(ErrorCode::invalid_argument, where + ": names are lower-case letters, digits and _");
      f.category = n["category"] ? n["category"].as<std::string>() : "";
      if (!kCategories.count(f.category))
        throw Error(ErrorCode::invalid_argument, where + ": unknown category '" + f.category + "'");
      f.type = parse_type(n["type"] ? n["type"].as<std::string>() : "string", where);
      if (n["max_length"]) f.max_length = n["max_length"].as<std::size_t>();
      if (n["searchable"]) f.searchable = n["searchable"].as<bool>();
      if (n["mask"]) f.mask = n["mask"].as<std::string>();
      if (!kMasks.count(f.mask)) throw Error(ErrorCode::invalid_argument, where + ": unknown mask '" + f.mask + "'");
      if (n["retention"]) f.retention = n["retention"].as<std::string>();
      if (n["values"]) f.values = n["values"].as<std::vector<std::string>>();
      if (n["channels"]) {
        if (!n["channels"].IsSequence())
          throw Error(ErrorCode::invalid_argument, where + ": 'channels' must be a list of channel names");
        f.channels = n["channels"].as<std::vector<std::string>>();
        for (const auto& c : f.channels)
          if (c.empty() || c.size() > 32 || c.find_first_not_of("abcdefghijklmnopqrstuvwxyz_") != std::string::npos)
            throw Error(ErrorCode::invalid_argument, where + ": a channel is a lower-case name");
      }
      if (f.type == FieldType::enumeration && f.values.empty())
        throw Error(ErrorCode::invalid_argument, where + ": an enum needs 'values'");
      if (schema.by_name_.count(f.name)) throw Error(ErrorCode::invalid_argument, where + ": defined twice");
      schema.by_name_.emplace(f.name, schema.fields_.size());
      schema.fields_.push_back(std::move(f));
    }
  } catch (const YAML::Exception& e) {
    throw Error(ErrorCode::invalid_argument, source + ": invalid YAML at line " + std::to_string(e.mark.line + 1));
  }
  return schema;
}

const FieldSpec* Schema::find(std::string_view name) const {
  const auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &fields_[it->second];
}

const FieldSpec& Schema::require(std::string_view name) const {
  const FieldSpec* f = find(name);
  if (f == nullptr) {
    // Field names come from callers; keep the echo short and printable.
    throw Error(ErrorCode::invalid_field, "unknown field '" + util::printable_prefix(name) + "'");
  }
  return *f;
}

std::vector<std::string> Schema::categories() const { return {kCategories.begin(), kCategories.end()}; }

std::string Schema::validate(const FieldSpec& f, std::string_view value) const {
  if (value.size() > max_value_bytes_)
    bad_field(f, "value is larger than " + std::to_string(max_value_bytes_ / 1024) + " KiB");
  if (f.max_length != 0 && value.size() > f.max_length)
    bad_field(f, "value is longer than " + std::to_string(f.max_length) + " bytes");
  if (!is_valid_utf8(value)) bad_field(f, "value is not valid UTF-8");
  switch (f.type) {
    case FieldType::string:
    case FieldType::address: {
      std::string v = trim(value);
      if (v.empty()) bad_field(f, "value is empty");
      return v;
    }
    case FieldType::email: {
      if (!normalise_email(value)) bad_field(f, "not a valid email address");
      return trim(value);
    }
    case FieldType::phone: {
      auto e164 = normalise_phone(value, default_region_);
      if (!e164) bad_field(f, "not a valid phone number (region " + default_region_ + ")");
      return *e164;
    }
    case FieldType::date: {
      if (!is_valid_date(value)) bad_field(f, "not a valid date (expected YYYY-MM-DD)");
      return std::string(value);
    }
    case FieldType::enumeration: {
      for (const auto& allowed : f.values)
        if (allowed == value) return std::string(value);
      bad_field(f, "not one of the allowed values");
    }
  }
  bad_field(f, "unsupported type");
}

std::string Schema::normalise_for_index(const FieldSpec& f, std::string_view value) const {
  switch (f.type) {
    case FieldType::email: {
      auto v = normalise_email(value);
      if (!v) bad_field(f, "not a valid email address");
      return *v;
    }
    case FieldType::phone: {
      auto v = normalise_phone(value, default_region_);
      if (!v) bad_field(f, "not a valid phone number");
      return *v;
    }
    default:
      return trim(value);
  }
}

}  // namespace custos::records
