// Per-principal quotas: concurrent requests, a request rate (token bucket)
// and campaign-stream slots. One principal over its limits gets 429 with
// Retry-After; other principals are unaffected, because every limit is
// counted per principal, never from one global pool.
//
// Thread safety: safe for concurrent use.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>

#include "custos/util/mutex.h"

namespace custos::http {

struct QuotaLimits {
  int max_inflight = 64;  // concurrent requests per principal (0: unlimited)
  double rate = 2000;     // requests per second per principal (0: unlimited)
  double burst = 4000;    // token-bucket depth
  int max_streams = 2;    // campaign fetches streaming at once per principal (0: unlimited)
  // What a key names, for the 429's detail ("principal", "client address").
  std::string per = "principal";
  // Distinct keys kept (0: unbounded). Keys that are not authenticated (a
  // client address) are unbounded in number: past this many, every new one
  // shares one last bucket, so memory stays bounded and a flood of new
  // addresses throttles itself rather than everyone else.
  std::size_t max_keys = 0;
};

class PrincipalQuotas {
 public:
  explicit PrincipalQuotas(QuotaLimits limits) : limits_(limits) {}

  // Admits one request of `principal`, or throws HttpProblem(429,
  // "rate_limited") with a Retry-After header. The returned ticket holds
  // the in-flight slot until the last copy is destroyed.
  std::shared_ptr<void> admit(const std::string& principal);
  // The same for a campaign stream slot.
  std::shared_ptr<void> admit_stream(const std::string& principal);

  const QuotaLimits& limits() const { return limits_; }

 private:
  struct State {
    int inflight = 0;
    int streams = 0;
    double tokens = 0;
    std::chrono::steady_clock::time_point refilled{};
    bool fresh = true;
  };
  std::shared_ptr<void> release_later(State* state, int State::*counter);

  const QuotaLimits limits_;
  util::Mutex mu_;
  State& state_for(const std::string& key) CUSTOS_REQUIRES(mu_);

  // Bounded by the token table (principals are authenticated before they
  // get here) or by limits_.max_keys. Entries are never erased: State*
  // stays valid.
  std::unordered_map<std::string, State> states_ CUSTOS_GUARDED_BY(mu_);
};

}  // namespace custos::http
