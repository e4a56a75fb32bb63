// custos/records/rfm.h — RFM scores, customer lifetime value and segments.
//
// Computed from the orders table alone (pseudonymous subject ids, amounts,
// times): nothing personal is decrypted. The result is materialised in
// `rfm_scores` so a campaign can filter by segment with an index join.
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "custos/store/store.h"

namespace custos::records {

struct SegmentRule {
  std::string name;
  int r_min = 1, r_max = 5, f_min = 1, f_max = 5, m_min = 1, m_max = 5;
  bool matches(int r, int f, int m) const {
    return r >= r_min && r <= r_max && f >= f_min && f <= f_max && m >= m_min && m <= m_max;
  }
};

struct RfmPolicy {
  int window_days = 365;
  double expected_lifespan_years = 3;
  std::int64_t acquisition_cost_minor = 0;
  std::int64_t retention_cost_minor = 0;
  std::vector<SegmentRule> segments;
  // Throws Error(invalid_argument) naming the file and entry.
  static RfmPolicy load(const std::filesystem::path& file);
  bool has_segment(std::string_view name) const;
};

struct RfmInput {
  std::vector<std::uint8_t> subject_id;
  std::int64_t last_order_us = 0;
  std::int64_t orders = 0;
  std::int64_t total_minor = 0;
};

struct RfmScore {
  int r = 0, f = 0, m = 0;
  std::string segment;
  double clv_minor = 0;
  double equity_minor = 0;
};

// Pure scoring: quintiles by rank (ties share the better score), then
// segment and CLV. Exposed for tests on hand-computed data.
std::vector<RfmScore> score_rfm(const std::vector<RfmInput>& inputs, const RfmPolicy& policy, std::int64_t now_us);

struct RfmSummary {
  std::int64_t subjects_scored = 0;
  std::int64_t orders_considered = 0;
  std::map<std::string, std::int64_t> segment_sizes;
  std::map<int, std::int64_t> r_distribution, f_distribution, m_distribution;
  double average_clv_minor = 0;
  double total_equity_minor = 0;
  std::int64_t computed_us = 0;
};

// Recomputes every active subject's score from its orders in the window and
// replaces `rfm_scores` in one transaction.
RfmSummary refresh_rfm(store::Store& store, const RfmPolicy& policy, std::int64_t now_us);

// Customer lifetime value per currency, by the same rule as each subject's
// (their order total in the window, per year, times the expected lifespan),
// averaged over the active subjects who paid in that currency: amounts in
// different currencies are never added together. In currency order.
struct CurrencyClv {
  std::string currency;
  std::int64_t customers = 0;
  std::int64_t orders = 0;
  std::int64_t revenue_minor = 0;
  double average_clv_minor = 0;
};
std::vector<CurrencyClv> clv_by_currency(store::Transaction& tx, const RfmPolicy& policy, std::int64_t now_us);

}  // namespace custos::records
