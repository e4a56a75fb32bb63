// Per-principal quotas: concurrent requests, a request rate (token bucket)
// and campaign-stream slots. One principal over its limits gets 429 with
// Retry-After; other principals are unaffected, because every limit is
// counted per principal, never from one global pool.
//
// Thread safety: safe for concurrent use.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
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
  // shares one last bucket, so memory stays bounded. Entries expire (see
  // PrincipalQuotas), so the table is full only while keys keep coming
  // faster than buckets refill: a flood of new addresses throttles itself
  // while it lasts, and everyone gets a bucket of their own once it stops.
  std::size_t max_keys = 0;
};

// A key's entry expires once nothing of it is in flight and it has been
// idle as long as its bucket takes to refill from empty (burst / rate): it
// is then no different from a key never seen, so dropping it changes no
// answer. Expired entries are dropped a few at a time as requests come in
// (least recently used first), so each request costs O(1).
class PrincipalQuotas {
 public:
  // What the token buckets read the time from (tests step it by hand).
  using Clock = std::function<std::chrono::steady_clock::time_point()>;

  explicit PrincipalQuotas(QuotaLimits limits, Clock clock = std::chrono::steady_clock::now);

  // Admits one request of `principal`, or throws HttpProblem(429,
  // "rate_limited") with a Retry-After header. The returned ticket holds
  // the in-flight slot until the last copy is destroyed.
  std::shared_ptr<void> admit(const std::string& principal);
  // The same for a campaign stream slot.
  std::shared_ptr<void> admit_stream(const std::string& principal);

  const QuotaLimits& limits() const { return limits_; }

 private:
  using Time = std::chrono::steady_clock::time_point;
  using Recency = std::list<const std::string*>;  // keys of states_, least recently used first
  struct State {
    int inflight = 0;
    int streams = 0;
    double tokens = 0;
    Time refilled{};
    bool fresh = true;
    Time used{};               // last admitted or refused
    Recency::iterator recent;  // its place in recency_
  };
  std::shared_ptr<void> release_later(State* state, int State::*counter);

  const QuotaLimits limits_;
  const Clock clock_;
  const std::chrono::duration<double> refill_time_;  // an empty bucket's time to refill
  util::Mutex mu_;
  // The entry of `key` (created if need be, or the shared last one when the
  // table is full), marked used at `now`.
  State& state_for(const std::string& key, Time now) CUSTOS_REQUIRES(mu_);
  void drop_expired(Time now) CUSTOS_REQUIRES(mu_);

  // Bounded by the token table (principals are authenticated before they
  // get here) or by limits_.max_keys. An entry is erased only with nothing
  // in flight, so the State* of a ticket stays valid while it lives.
  std::unordered_map<std::string, State> states_ CUSTOS_GUARDED_BY(mu_);
  Recency recency_ CUSTOS_GUARDED_BY(mu_);
};

}  // namespace custos::http
