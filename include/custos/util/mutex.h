// A mutex the compiler can reason about. clang's -Wthread-safety checks, at
// compile time, that every member declared CUSTOS_GUARDED_BY(mu_) is touched
// only with mu_ held and that functions declared CUSTOS_REQUIRES(mu_) are
// called with it held. libstdc++'s std::mutex carries no such annotations,
// so the classes that hold locks use these thin wrappers instead (as LevelDB's
// port::Mutex and Abseil's Mutex do). With GCC the annotations expand to
// nothing and the wrappers cost what std::mutex and std::unique_lock cost.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>

#if defined(__clang__)
#define CUSTOS_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define CUSTOS_THREAD_ANNOTATION(x)
#endif

#define CUSTOS_CAPABILITY(x) CUSTOS_THREAD_ANNOTATION(capability(x))
#define CUSTOS_SCOPED_CAPABILITY CUSTOS_THREAD_ANNOTATION(scoped_lockable)
#define CUSTOS_GUARDED_BY(x) CUSTOS_THREAD_ANNOTATION(guarded_by(x))
#define CUSTOS_PT_GUARDED_BY(x) CUSTOS_THREAD_ANNOTATION(pt_guarded_by(x))
#define CUSTOS_ACQUIRED_BEFORE(...) CUSTOS_THREAD_ANNOTATION(acquired_before(__VA_ARGS__))
#define CUSTOS_REQUIRES(...) CUSTOS_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define CUSTOS_ACQUIRE(...) CUSTOS_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define CUSTOS_RELEASE(...) CUSTOS_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define CUSTOS_TRY_ACQUIRE(...) CUSTOS_THREAD_ANNOTATION(try_acquire_capability(__VA_ARGS__))
#define CUSTOS_EXCLUDES(...) CUSTOS_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#define CUSTOS_NO_THREAD_SAFETY_ANALYSIS CUSTOS_THREAD_ANNOTATION(no_thread_safety_analysis)

namespace custos::util {

class CUSTOS_CAPABILITY("mutex") Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void lock() CUSTOS_ACQUIRE() { mu_.lock(); }
  void unlock() CUSTOS_RELEASE() { mu_.unlock(); }
  bool try_lock() CUSTOS_TRY_ACQUIRE(true) { return mu_.try_lock(); }

 private:
  friend class MutexLock;
  std::mutex mu_;
};

// Holds `mu` from construction to destruction, like std::unique_lock; may
// let it go and take it again in between (unlock/lock), which the analysis
// follows. The condition variable below waits on it.
class CUSTOS_SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& mu) CUSTOS_ACQUIRE(mu) : lock_(mu.mu_) {}
  ~MutexLock() CUSTOS_RELEASE() = default;
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

  void unlock() CUSTOS_RELEASE() { lock_.unlock(); }
  void lock() CUSTOS_ACQUIRE() { lock_.lock(); }

 private:
  friend class CondVar;
  std::unique_lock<std::mutex> lock_;
};

// std::condition_variable over a MutexLock. The mutex is held again when a
// wait returns, so the analysis rightly treats waits as keeping it held.
class CondVar {
 public:
  void wait(MutexLock& lock) { cv_.wait(lock.lock_); }
  template <class Predicate>
  void wait(MutexLock& lock, Predicate ready) {
    cv_.wait(lock.lock_, std::move(ready));
  }
  template <class Rep, class Period, class Predicate>
  bool wait_for(MutexLock& lock, const std::chrono::duration<Rep, Period>& timeout, Predicate ready) {
    return cv_.wait_for(lock.lock_, timeout, std::move(ready));
  }
  template <class Clock, class Duration, class Predicate>
  bool wait_until(MutexLock& lock, const std::chrono::time_point<Clock, Duration>& deadline, Predicate ready) {
    return cv_.wait_until(lock.lock_, deadline, std::move(ready));
  }
  template <class Clock, class Duration>
  std::cv_status wait_until(MutexLock& lock, const std::chrono::time_point<Clock, Duration>& deadline) {
    return cv_.wait_until(lock.lock_, deadline);
  }
  template <class Rep, class Period>
  std::cv_status wait_for(MutexLock& lock, const std::chrono::duration<Rep, Period>& timeout) {
    return cv_.wait_for(lock.lock_, timeout);
  }
  void notify_one() noexcept { cv_.notify_one(); }
  void notify_all() noexcept { cv_.notify_all(); }

 private:
  std::condition_variable cv_;
};

}  // namespace custos::util
