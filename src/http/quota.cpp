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

PrincipalQuotas::State& PrincipalQuotas::state_for(const std::string& key) {
  if (limits_.max_keys > 0 && states_.size() >= limits_.max_keys) {
    const auto it = states_.find(key);
    if (it != states_.end()) return it->second;
    return states_[std::string("\0overflow", 9)];  // no real key holds a NUL
  }
  return states_[key];
}

std::shared_ptr<void> PrincipalQuotas::admit(const std::string& principal) {
  util::MutexLock lock(mu_);
  State& s = state_for(principal);
  if (limits_.rate > 0) {
    const auto now = std::chrono::steady_clock::now();
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
  State& s = state_for(principal);
  if (limits_.max_streams > 0 && s.streams >= limits_.max_streams)
    too_many("more than " + std::to_string(limits_.max_streams) + " campaign streams at once for this principal", 1);
  ++s.streams;
  return release_later(&s, &State::streams);
}

}  // namespace custos::http
