// custos/records/schema.h — the personal-data schema, loaded from policies/schema.yaml.
//
// The schema decides which fields exist, how each is validated and
// normalised, which are searchable through a blind index, how each is
// masked, and which data category (and so which role visibility) it has.
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace custos::records {

enum class FieldType { string, email, phone, date, address, enumeration };

struct FieldSpec {
  std::string name;
  std::string category;  // identity | contact | descriptive | qualitative | quantitative
  FieldType type = FieldType::string;
  std::size_t max_length = 0;  // 0: the schema-wide max_value_bytes
  bool searchable = false;
  std::string mask = "redact";
  std::string retention;
  std::vector<std::string> values;  // for enum
  // The marketing channels this field reaches the subject on (e-mail for
  // `email`, sms and phone for `phone`, post for `postal_address`). Under a
  // marketing purpose such a field is shown only for a channel the subject's
  // consent to that purpose covers; empty: not bound to a channel.
  std::vector<std::string> channels;
};

class Schema {
 public:
  // Throws Error(invalid_argument) naming the file and entry on a bad schema.
  static Schema load(const std::filesystem::path& file);
  static Schema parse(const std::string& yaml_text, const std::string& source_name);

  std::uint32_t version() const { return version_; }
  const std::string& default_region() const { return default_region_; }
  std::size_t max_value_bytes() const { return max_value_bytes_; }
  const std::vector<FieldSpec>& fields() const { return fields_; }
  const FieldSpec* find(std::string_view name) const;
  // Throws Error(invalid_argument, "unknown field 'x'").
  const FieldSpec& require(std::string_view name) const;
  std::vector<std::string> categories() const;

  // Validates one value against its field and returns the stored form
  // (emails trimmed, phones in E.164, dates checked). Throws
  // Error(invalid_field) naming the field, never echoing the value.
  std::string validate(const FieldSpec& field, std::string_view value) const;

  // The normalised form a blind index is computed over (email lower-cased,
  // phone E.164). Throws Error(invalid_field) if the value cannot be normalised.
  std::string normalise_for_index(const FieldSpec& field, std::string_view value) const;

 private:
  std::uint32_t version_ = 1;
  std::string default_region_ = "US";
  std::size_t max_value_bytes_ = 65536;
  std::vector<FieldSpec> fields_;
  std::map<std::string, std::size_t, std::less<>> by_name_;
};

}  // namespace custos::records
