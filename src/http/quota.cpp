#include "quota.h"

#include <algorithm>
#include <cmath>

#include "problem.h"

namespace custos::http {
namespace {

[[noreturn]] void too_many(const std::string& what, long retry_after_s) {
  throw HttpProblem(429, "rate_limited", what + "; retry after " + std::to_string(retry_after_s) + " s",
                    {{"Retry-After", std::to_string(retry_after_s)}});
}

}  // namespace

std::shared_ptr<void> PrincipalQuotas::release_later(State* state, int State::*counter) {
  return std::shared_ptr<void>(static_cast<void*>(state), [this, counter](void* p) {
    util::MutexLock lock(mu_);
    --(static_cast<State*>(p)->*counter);
  });
}

PrincipalQuotas::PrincipalQuotas(QuotaLimits limits, Clock clock)
    : limits_(std::move(limits)),
      clock_(std::move(clock)),
      refill_time_(limits_.rate > 0 ? std::max(1.0, limits_.burst) / limits_.rate : 0.0) {}

// Three steps from the least recently used end per call: up to three
// expired entries go for each new one, so the table shrinks faster than it
// grows once a flood stops. An entry with something in flight is passed
// over (moved to the back: it is in use).
void PrincipalQuotas::drop_expired(Time now) {
  for (int step = 0; step < 3 && !recency_.empty(); ++step) {
    const auto it = states_.find(*recency_.front());
    const State& s = it->second;
    if (s.inflight > 0 || s.streams > 0) {
      recency_.splice(recency_.end(), recency_, recency_.begin());
      continue;
    }
    if (now - s.used < refill_time_) return;
    recency_.pop_front();
    states_.erase(it);
  }
}

PrincipalQuotas::State& PrincipalQuotas::state_for(const std::string& key, Time now) {
  drop_expired(now);
  auto it = states_.find(key);
  if (it == states_.end()) {
    static const std::string kOverflow("\0overflow", 9);  // no real key holds a NUL
    const bool full = limits_.max_keys > 0 && states_.size() >= limits_.max_keys;
    it = full ? states_.find(kOverflow) : states_.end();
    if (it == states_.end()) {
      it = states_.try_emplace(full ? kOverflow : key).first;
      it->second.recent = recency_.insert(recency_.end(), &it->first);
    }
  }
  recency_.splice(recency_.end(), recency_, it->second.recent);
  it->second.used = now;
  return it->second;
}

std::shared_ptr<void> PrincipalQuotas::admit(const std::string& principal) {
  util::MutexLock lock(mu_);
  const auto now = clock_();
  State& s = state_for(principal, now);
  if (limits_.rate > 0) {
    if (s.fresh) {
      s.tokens = std::max(1.0, limits_.burst);
      s.fresh = false;
    } else {
      const double elapsed = std::chrono::duration<double>(now - s.refilled).count();
      s.tokens = std::min(std::max(1.0, limits_.burst), s.tokens + elapsed * limits_.rate);
    }
    s.refilled = now;
    if (s.tokens < 1.0)
      too_many("request rate above " + std::to_string(static_cast<long>(limits_.rate)) + "/s for this " + limits_.per,
               std::max(1L, static_cast<long>(std::ceil((1.0 - s.tokens) / limits_.rate))));
  }
  if (limits_.max_inflight > 0 && s.inflight >= limits_.max_inflight)
    too_many("more than " + std::to_string(limits_.max_inflight) + " requests in flight for this " + limits_.per, 1);
  if (limits_.rate > 0) s.tokens -= 1.0;
  ++s.inflight;
  return release_later(&s, &State::inflight);
}

std::shared_ptr<void> PrincipalQuotas::admit_stream(const std::string& principal) {
  util::MutexLock lock(mu_);
  State& s = state_for(principal, clock_());
  if (limits_.max_streams > 0 && s.streams >= limits_.max_streams)
    too_many("more than " + std::to_string(limits_.max_streams) + " campaign streams at once for this principal", 1);
  ++s.streams;
  return release_later(&s, &State::streams);
}

}  // namespace custos::http
