// custos/retention/retention.h — enforcing retention limits.
//
// policies/retention.yaml gives each record type and each retention class
// of personal data a period. A run crypto-shreds every subject whose last
// activity (latest update, touchpoint or order) is older than its class's
// period, skipping legal holds; deletes touchpoints and orders past their
// own periods; and reports what was purged and kept, and why. A dry run
// computes the same report and changes nothing.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "custos/audit/audit_log.h"
#include "custos/records/records.h"
#include "custos/store/store.h"

namespace custos::retention {

struct Rule {
  int years = 0;
  int days = 0;
  std::string basis;
  std::int64_t period_us() const;
};

struct Policy {
  Rule subjects;     // data_categories.relationship (the schema's retention class)
  Rule touchpoints;  // records.touchpoints
  Rule orders;       // records.orders
  // Throws Error(invalid_argument) naming the file.
  static Policy load(const std::filesystem::path& file);
};

struct Purged {
  std::string subject_id;
  std::int64_t last_activity_us = 0;
};

struct Report {
  bool dry_run = true;
  std::int64_t run_at_us = 0;
  std::vector<Purged> purged;
  std::vector<Purged> kept_legal_hold;
  std::int64_t touchpoints_deleted = 0;
  std::int64_t orders_deleted = 0;
  std::string subjects_basis, touchpoints_basis, orders_basis;
};

Report run(store::Store& store, records::Records& records, audit::AuditLog& audit, const audit::Actor& actor,
           const Policy& policy, std::int64_t now_us, bool dry_run);

}  // namespace custos::retention
