#include "custos/records/rfm.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <numeric>

#include "custos/error.h"
#include "custos/util/files.h"

namespace custos::records {
namespace {

constexpr std::int64_t kDayUs = 86400LL * 1000000;

void read_range(const YAML::Node& n, const char* key, int& lo, int& hi, const std::string& where) {
  if (!n[key]) return;
  const auto v = n[key].as<std::vector<int>>();
  if (v.size() != 2 || v[0] < 1 || v[1] > 5 || v[0] > v[1])
    throw Error(ErrorCode::invalid_argument, where + ": '" + key + "' must be [min, max] within 1-5");
  lo = v[0];
  hi = v[1];
}

// Quintile of each value: rank ascending, score = 1 + 5*rank/n; equal values
// share the higher score so ties never split across quintiles.
std::vector<int> quintiles(const std::vector<double>& values) {
  const std::size_t n = values.size();
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return values[a] < values[b]; });
  std::vector<int> out(n);
  std::size_t i = 0;
  while (i < n) {
    std::size_t j = i;
    while (j + 1 < n && values[order[j + 1]] == values[order[i]]) ++j;
    const int q = std::min<int>(5, 1 + static_cast<int>((5 * j) / n));
    for (std::size_t k = i; k <= j; ++k) out[order[k]] = q;
    i = j + 1;
  }
  return out;
}

}  // namespace

RfmPolicy RfmPolicy::load(const std::filesystem::path& file) {
  RfmPolicy p;
  try {
    const YAML::Node root = YAML::Load(util::read_text_file(file));
    if (root["window_days"]) p.window_days = root["window_days"].as<int>();
    if (p.window_days < 1) throw Error(ErrorCode::invalid_argument, file.string() + ": window_days must be positive");
    if (const auto clv = root["clv"]) {
      if (clv["expected_lifespan_years"]) p.expected_lifespan_years = clv["expected_lifespan_years"].as<double>();
      if (clv["acquisition_cost_minor"]) p.acquisition_cost_minor = clv["acquisition_cost_minor"].as<std::int64_t>();
      if (clv["retention_cost_minor"]) p.retention_cost_minor = clv["retention_cost_minor"].as<std::int64_t>();
    }
    for (const auto& n : root["segments"]) {
      SegmentRule r;
      r.name = n["name"].as<std::string>();
      const std::string where = file.string() + ": segment '" + r.name + "'";
      read_range(n, "r", r.r_min, r.r_max, where);
      read_range(n, "f", r.f_min, r.f_max, where);
      read_range(n, "m", r.m_min, r.m_max, where);
      p.segments.push_back(r);
    }
  } catch (const YAML::Exception& e) {
    throw Error(ErrorCode::invalid_argument, file.string() + ": invalid at line " + std::to_string(e.mark.line + 1));
  } catch (const Error& e) {
    if (e.code() == ErrorCode::not_found) throw Error(ErrorCode::invalid_argument, "cannot read " + file.string());
    throw;
  }
  return p;
}

bool RfmPolicy::has_segment(std::string_view name) const {
  return std::any_of(segments.begin(), segments.end(), [&](const SegmentRule& r) { return r.name == name; });
}

std::vector<RfmScore> score_rfm(const std::vector<RfmInput>& inputs, const RfmPolicy& policy, std::int64_t now_us) {
  std::vector<double> recency, frequency, monetary;
  for (const auto& in : inputs) {
    recency.push_back(-static_cast<double>(now_us - in.last_order_us));  // more recent = larger
    frequency.push_back(static_cast<double>(in.orders));
    monetary.push_back(static_cast<double>(in.total_minor));
  }
  const auto r = quintiles(recency), f = quintiles(frequency), m = quintiles(monetary);
  const double years = policy.window_days / 365.0;
  std::vector<RfmScore> out(inputs.size());
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    RfmScore& s = out[i];
    s.r = r[i];
    s.f = f[i];
    s.m = m[i];
    s.segment = "unsegmented";
    for (const auto& rule : policy.segments)
      if (rule.matches(s.r, s.f, s.m)) {
        s.segment = rule.name;
        break;
      }
    const double aov = static_cast<double>(inputs[i].total_minor) / static_cast<double>(inputs[i].orders);
    const double per_year = static_cast<double>(inputs[i].orders) / years;
    s.clv_minor = aov * per_year * policy.expected_lifespan_years;
    s.equity_minor = s.clv_minor - static_cast<double>(policy.acquisition_cost_minor) -
                     static_cast<double>(policy.retention_cost_minor) * policy.expected_lifespan_years;
  }
  return out;
}

RfmSummary refresh_rfm(store::Store& store, const RfmPolicy& policy, std::int64_t now_us) {
  RfmSummary summary;
  summary.computed_us = now_us;
  auto tx = store.begin(store::TxMode::write);
  std::vector<RfmInput> inputs;
  tx->exec("SELECT o.subject_id, max(o.at), count(*), sum(o.amount_minor) FROM orders o"
           " JOIN subjects s ON s.id = o.subject_id WHERE s.status = 'active' AND o.at >= ? AND o.at <= ?"
           " GROUP BY o.subject_id",
           {now_us - policy.window_days * kDayUs, now_us}, [&](const store::Row& row) {
             inputs.push_back({row.blob_copy(0), row.integer(1), row.integer(2), row.integer(3)});
           });
  const auto scores = score_rfm(inputs, policy, now_us);
  tx->exec("DELETE FROM rfm_scores");
  double clv_sum = 0;
  for (std::size_t i = 0; i < scores.size(); ++i) {
    const RfmScore& s = scores[i];
    tx->exec("INSERT INTO rfm_scores (subject_id, r, f, m, segment, clv_minor, computed_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
             {inputs[i].subject_id, s.r, s.f, s.m, s.segment, static_cast<std::int64_t>(s.clv_minor), now_us});
    ++summary.segment_sizes[s.segment];
    ++summary.r_distribution[s.r];
    ++summary.f_distribution[s.f];
    ++summary.m_distribution[s.m];
    clv_sum += s.clv_minor;
    summary.total_equity_minor += s.equity_minor;
    summary.orders_considered += inputs[i].orders;
  }
  tx->commit();
  summary.subjects_scored = static_cast<std::int64_t>(scores.size());
  summary.average_clv_minor = scores.empty() ? 0 : clv_sum / static_cast<double>(scores.size());
  for (const auto& rule : policy.segments) summary.segment_sizes.emplace(rule.name, 0);
  return summary;
}

std::vector<CurrencyClv> clv_by_currency(store::Transaction& tx, const RfmPolicy& policy, std::int64_t now_us) {
  const double years = policy.window_days / 365.0;
  const std::int64_t since = now_us - static_cast<std::int64_t>(policy.window_days) * 86'400'000'000LL;
  std::vector<CurrencyClv> out;
  tx.exec("SELECT o.currency, count(DISTINCT o.subject_id), count(*), sum(o.amount_minor) FROM orders o"
          " JOIN subjects s ON s.id = o.subject_id AND s.status = 'active' WHERE o.at >= ?"
          " GROUP BY o.currency ORDER BY o.currency",
          {since}, [&](const store::Row& r) {
            CurrencyClv c;
            c.currency = std::string(r.text(0));
            c.customers = r.integer(1);
            c.orders = r.integer(2);
            c.revenue_minor = r.integer(3);
            c.average_clv_minor = c.customers ? static_cast<double>(c.revenue_minor) /
                                                    static_cast<double>(c.customers) / years *
                                                    policy.expected_lifespan_years
                                              : 0.0;
            out.push_back(std::move(c));
          });
  return out;
}

}  // namespace custos::records
