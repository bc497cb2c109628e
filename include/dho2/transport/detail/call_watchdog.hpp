// A thread that ends the process when a blocking call it watches has not returned within a
// deadline (mpi_transport::set_watchdog): the bound for MPI's blocking collectives, which have no
// deadline of their own. enter/leave are two relaxed atomic stores on the calling thread; the
// watchdog checks every period (deadline / 8, at most 100 ms). On expiry it writes one line to
// stderr and calls std::_Exit(exit_code): under mpirun the launcher then ends the job.
#pragma once

#include <dho2/detail/internal_header_check.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <stop_token>
#include <string>
#include <thread>

namespace dho2::detail {

class call_watchdog {
 public:
  static constexpr int exit_code = 70;  // EX_SOFTWARE

  // `where` prefixes the message ("mpi [rank 1, world size 4]").
  call_watchdog(std::chrono::milliseconds deadline, std::string where)
      : deadline_(deadline),
        where_(std::move(where)),
        thread_([this](std::stop_token s) { watch(s); }) {}
  call_watchdog(const call_watchdog&) = delete;
  call_watchdog& operator=(const call_watchdog&) = delete;
  ~call_watchdog() {
    thread_.request_stop();
    wake_.notify_all();
  }

  [[nodiscard]] std::chrono::milliseconds deadline() const noexcept { return deadline_; }

  void enter(const char* routine) noexcept {
    routine_.store(routine, std::memory_order_relaxed);
    since_.store(now(), std::memory_order_release);
  }
  void leave() noexcept { since_.store(0, std::memory_order_release); }

 private:
  static std::int64_t now() noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }

  void watch(const std::stop_token& stop) {
    const auto period = std::min<std::chrono::milliseconds>(
        std::chrono::milliseconds(100),
        std::max<std::chrono::milliseconds>(std::chrono::milliseconds(1), deadline_ / 8));
    const auto limit = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline_).count();
    std::unique_lock lock(mutex_);
    while (!stop.stop_requested()) {
      wake_.wait_for(lock, stop, period, [] { return false; });
      const std::int64_t since = since_.load(std::memory_order_acquire);
      if (since == 0 || now() - since <= limit) continue;
      const char* routine = routine_.load(std::memory_order_relaxed);
      std::fprintf(stderr,
                   "dho2: %s: %s did not complete within timeout = %.1f s: the peers did not take "
                   "part (ranks called collectives in different orders or with different "
                   "arguments, or a peer stopped or is stuck); ending this process (exit code %d) "
                   "so that the launcher ends the job\n",
                   where_.c_str(), routine != nullptr ? routine : "a call",
                   static_cast<double>(deadline_.count()) / 1000.0, exit_code);
      std::fflush(stderr);
      std::_Exit(exit_code);
    }
  }

  std::chrono::milliseconds deadline_;
  std::string where_;
  std::atomic<std::int64_t> since_{0};  // steady-clock ns when the watched call began; 0: none
  std::atomic<const char*> routine_{nullptr};
  std::mutex mutex_;
  std::condition_variable_any wake_;
  std::jthread thread_;  // last: started once the members above exist
};

// Marks a watched call for its scope (no-op without a watchdog).
class watched_call {
 public:
  watched_call(call_watchdog* w, const char* routine) noexcept : w_(w) {
    if (w_ != nullptr) w_->enter(routine);
  }
  watched_call(const watched_call&) = delete;
  watched_call& operator=(const watched_call&) = delete;
  ~watched_call() {
    if (w_ != nullptr) w_->leave();
  }

 private:
  call_watchdog* w_;
};

}  // namespace dho2::detail
