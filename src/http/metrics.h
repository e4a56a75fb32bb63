// Request metrics for /metrics: counts by route template, method and
// status, and a latency histogram per route. Labels are route templates,
// never raw paths, so no id or query value reaches a label.
//
// Thread safety: safe for concurrent use.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <ostream>
#include <string>
#include <tuple>

#include "custos/util/mutex.h"

namespace custos::http {

class RequestMetrics {
 public:
  void observe(const std::string& route, const std::string& method, int status, double seconds);
  // Prometheus text exposition (format 0.0.4).
  void render(std::ostream& os) const;

 private:
  static constexpr std::array<double, 12> kBuckets = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                      0.1,   0.25,   0.5,   1.0,  2.5,   5.0};
  struct Histogram {
    std::array<std::uint64_t, kBuckets.size()> buckets{};
    std::uint64_t count = 0;
    double sum = 0;
  };
  mutable util::Mutex mu_;
  std::map<std::tuple<std::string, std::string, int>, std::uint64_t> requests_ CUSTOS_GUARDED_BY(mu_);
  std::map<std::string, Histogram> durations_ CUSTOS_GUARDED_BY(mu_);
};

// Prometheus label escaping, and doubles in the C locale.
std::string metric_label(const std::string& v);
std::string metric_double(double v);

}  // namespace custos::http
