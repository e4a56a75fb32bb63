#include "custos/retention/retention.h"

#include <yaml-cpp/yaml.h>

#include "custos/error.h"
#include "custos/records/storage.h"

namespace custos::retention {
namespace {

constexpr std::int64_t kDayUs = 86400LL * 1000000;

Rule parse_rule(const YAML::Node& n) {
  Rule r;
  if (!n) return r;
  if (n["keep"] && n["keep"]["years"]) r.years = n["keep"]["years"].as<int>();
  if (n["keep"] && n["keep"]["days"]) r.days = n["keep"]["days"].as<int>();
  if (n["basis"]) r.basis = n["basis"].as<std::string>();
  return r;
}

}  // namespace

std::int64_t Rule::period_us() const { return (std::int64_t{years} * 365 + (years / 4) + days) * kDayUs; }

Policy Policy::load(const std::filesystem::path& file) {
  try {
    const YAML::Node root = YAML::LoadFile(file.string());
    Policy p;
    p.subjects = parse_rule(root["data_categories"]["relationship"]);
    p.touchpoints = parse_rule(root["records"]["touchpoints"]);
    p.orders = parse_rule(root["records"]["orders"]);
    return p;
  } catch (const YAML::Exception& e) {
    throw Error(ErrorCode::invalid_argument, file.string() + ": invalid at line " + std::to_string(e.mark.line + 1));
  }
}

Report run(store::Store& store, records::Records& records, audit::AuditLog& audit, const audit::Actor& actor,
           const Policy& policy, std::int64_t now_us, bool dry_run) {
  Report report;
  report.dry_run = dry_run;
  report.run_at_us = now_us;
  report.subjects_basis = policy.subjects.basis;
  report.touchpoints_basis = policy.touchpoints.basis;
  report.orders_basis = policy.orders.basis;
  std::vector<std::pair<records::SubjectId, std::int64_t>> expired;
  {
    auto tx = store.begin(store::TxMode::read);
    if (policy.subjects.period_us() > 0) {
      const std::int64_t cutoff = now_us - policy.subjects.period_us();
      records::for_each_inactive_subject(*tx, cutoff, [&](const records::Inactive& s) {
        if (s.legal_hold) {
          report.kept_legal_hold.push_back({records::to_hex(s.id), s.last_activity_us});
        } else {
          expired.emplace_back(s.id, s.last_activity_us);
          report.purged.push_back({records::to_hex(s.id), s.last_activity_us});
        }
      });
    }
    if (policy.touchpoints.period_us() > 0)
      report.touchpoints_deleted = records::count_touchpoints_before(*tx, now_us - policy.touchpoints.period_us());
    if (policy.orders.period_us() > 0)
      report.orders_deleted = records::count_orders_before(*tx, now_us - policy.orders.period_us());
  }
  if (dry_run) {
    audit.append_now(actor, {"retention.dry_run", "", {}, {}, true, "",
                             "would_purge=" + std::to_string(report.purged.size())});
    return report;
  }
  for (const auto& [id, last] : expired) records.erase(actor, id, false);
  {
    auto tx = store.begin(store::TxMode::write);
    if (policy.touchpoints.period_us() > 0)
      records::delete_touchpoints_before(*tx, now_us - policy.touchpoints.period_us());
    if (policy.orders.period_us() > 0) records::delete_orders_before(*tx, now_us - policy.orders.period_us());
    audit.append(*tx, actor, {"retention.run", "", {}, {}, true, "",
                              "purged=" + std::to_string(report.purged.size()) +
                                  " touchpoints_deleted=" + std::to_string(report.touchpoints_deleted) +
                                  " orders_deleted=" + std::to_string(report.orders_deleted)});
    tx->commit();
  }
  records.checkpoint_wal();
  return report;
}

}  // namespace custos::retention
