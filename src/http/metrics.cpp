#include "metrics.h"

#include <locale>
#include <sstream>

namespace custos::http {

std::string metric_label(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

std::string metric_double(double v) {
  std::ostringstream os;
  os.imbue(std::locale::classic());
  os.precision(9);
  os << v;
  return os.str();
}

void RequestMetrics::observe(const std::string& route, const std::string& method, int status, double seconds) {
  util::MutexLock lock(mu_);
  ++requests_[{route, method, status}];
  Histogram& h = durations_[route];
  for (std::size_t i = 0; i < kBuckets.size(); ++i)
    if (seconds <= kBuckets[i]) ++h.buckets[i];
  ++h.count;
  h.sum += seconds;
}

void RequestMetrics::render(std::ostream& os) const {
  util::MutexLock lock(mu_);
  os << "# HELP custos_http_requests_total HTTP requests by route template, method and status.\n"
        "# TYPE custos_http_requests_total counter\n";
  for (const auto& [key, n] : requests_) {
    const auto& [route, method, status] = key;
    os << "custos_http_requests_total{route=\"" << metric_label(route) << "\",method=\"" << method
       << "\",status=\"" << status << "\"} " << n << "\n";
  }
  os << "# HELP custos_http_request_duration_seconds Time from request receipt to response, by route template.\n"
        "# TYPE custos_http_request_duration_seconds histogram\n";
  for (const auto& [route, h] : durations_) {
    const std::string r = metric_label(route);
    for (std::size_t i = 0; i < kBuckets.size(); ++i)
      os << "custos_http_request_duration_seconds_bucket{route=\"" << r << "\",le=\"" << metric_double(kBuckets[i])
         << "\"} " << h.buckets[i] << "\n";
    os << "custos_http_request_duration_seconds_bucket{route=\"" << r << "\",le=\"+Inf\"} " << h.count << "\n";
    os << "custos_http_request_duration_seconds_sum{route=\"" << r << "\"} " << metric_double(h.sum) << "\n";
    os << "custos_http_request_duration_seconds_count{route=\"" << r << "\"} " << h.count << "\n";
  }
}

}  // namespace custos::http
