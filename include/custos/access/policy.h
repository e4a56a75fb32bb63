// custos/access/policy.h — roles, purposes and field visibility from policies/.
//
// A Policy is immutable once loaded; reloading builds a new one and swaps a
// shared_ptr, so a request sees one consistent policy from start to end.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "custos/records/schema.h"

namespace custos::access {

enum class Visibility { none, masked, plain };

// The operation classes a role can be granted.
// records.erase: crypto-shredding outside a data-subject request (irreversible,
// so not part of records.write).
inline const std::vector<std::string> kOperations = {"records.read", "records.write", "records.erase", "consent",
                                                     "dsr",          "breach",        "audit",         "keys",
                                                     "admin",        "analytics"};

struct Purpose {
  std::string name;
  std::string description;
  std::string lawful_basis;
  bool marketing = false;
  bool sale_or_share = false;
  // May read a subject restricted under GDPR Art. 18 (purposes.yaml; when no
  // purpose says, dsr_fulfilment, legal_claims and audit).
  bool allowed_when_restricted = false;
  std::vector<std::string> channels;
  std::vector<std::string> required_for;  // operations allowed only under this purpose (or another listing them)
};

struct Role {
  std::string name;
  std::set<std::string> operations;
  std::map<std::string, Visibility> visibility;  // by data category
  std::set<std::string> purposes;
  // Purposes it may record a consent grant for (capture_consent); never one
  // it may declare. Withdrawals need only the consent operation.
  std::set<std::string> capture_consent;
};

// How data-subject requests are worked (roles.yaml, section `dsr`).
struct DsrWorkflow {
  // Four eyes: completing an erasure request takes two principals. The first
  // one's "completed" moves it to awaiting_approval; only another principal
  // may then complete it (fulfilment runs then). Default off.
  bool erasure_second_approver = false;
  // An erasure that a legal hold blocks ends completed_with_exceptions (the
  // default: everything not held is done, the report says what was kept and
  // why) or, with `deny`, denied with the legal basis as its reason.
  bool deny_erasure_under_hold = false;
};

class Policy {
 public:
  // Loads roles.yaml and purposes.yaml from `dir`, checked against `schema`
  // (unknown categories, operations or purposes are errors). Throws
  // Error(invalid_argument) naming the file and the entry.
  static std::shared_ptr<const Policy> load(const std::filesystem::path& dir, const records::Schema& schema);

  const Role* role(std::string_view name) const;
  const Purpose* purpose(std::string_view name) const;
  const std::map<std::string, Role, std::less<>>& roles() const { return roles_; }
  const std::map<std::string, Purpose, std::less<>>& purposes() const { return purposes_; }

  Visibility visibility(const Role& role, const records::FieldSpec& field) const;

  // The purposes an operation (e.g. "breach.notify_list") may only be done
  // under, from the purposes' `required_for` lists; nullptr when any purpose
  // the role may declare will do. Sensitive operations have a default the
  // files can override (breach.notify_list: breach_notification).
  const std::set<std::string>* purposes_required_for(std::string_view operation) const;

  const DsrWorkflow& dsr_workflow() const { return dsr_workflow_; }

 private:
  DsrWorkflow dsr_workflow_;
  std::map<std::string, Role, std::less<>> roles_;
  std::map<std::string, Purpose, std::less<>> purposes_;
  std::map<std::string, std::set<std::string>, std::less<>> operation_purposes_;
};

// The schema's masking rule applied to a value: "j***@example.com",
// "***-***-1234", "1990", "J.", "***".
std::string mask_value(const records::FieldSpec& field, std::string_view value);

}  // namespace custos::access
