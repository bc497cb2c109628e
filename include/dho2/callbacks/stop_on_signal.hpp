/// @file
/// `dho2::signal_guard` and `dho2::stop_on_signal`: a run that ends cleanly on SIGINT or SIGTERM.
///
/// A batch scheduler sends SIGTERM some time before it kills a job, and a user at a terminal
/// presses Ctrl-C. With a `signal_guard` alive and a `stop_on_signal` among the callbacks,
/// `optimize` finishes the step it is taking, every rank agrees on the stop (a signal seen by one
/// rank stops all of them at the same step), the callbacks' `on_stop` hooks run (a checkpointing
/// callback saves there) and the summary's termination is `termination_type::interrupted`. A
/// second signal ends the process at once, with the signal's default action.
///
/// @code
///   dho2::signal_guard guard;  // SIGINT and SIGTERM, for the guard's lifetime
///   dho2::summary s = opt.optimize(model, x, batches, epochs, dho2::stop_on_signal{});
///   if (s.termination == dho2::termination_type::interrupted) { ... }
/// @endcode
///
/// POSIX only (`sigaction`). One guard per process at a time; the handler only stores the signal
/// number in a lock-free atomic, which every rank thread of the process reads.
#pragma once

#include <dho2/callbacks/events.hpp>
#include <dho2/core/summary.hpp>
#include <dho2/core/types.hpp>

#include <signal.h>

#include <atomic>
#include <csignal>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace dho2 {

/// Installs handlers for a set of signals (SIGINT and SIGTERM by default) for its lifetime and
/// records the first one received (`received()`); the destructor restores the previous handlers.
/// A second signal while the first is recorded restores the default action and re-raises it,
/// ending the process at once (a user who presses Ctrl-C twice means it).
class signal_guard {
 public:
  /// Installs the handlers and clears `received()`.
  /// @throws std::logic_error if another guard is alive; std::runtime_error if `sigaction`
  ///   fails (naming the signal).
  explicit signal_guard(std::initializer_list<int> signals = {SIGINT, SIGTERM}) {
    if (active_.exchange(true)) {
      throw std::logic_error("dho2::signal_guard: another guard is alive in this process");
    }
    received_.store(0);
    for (const int sig : signals) {
      struct sigaction action {};
      action.sa_handler = &signal_guard::handle;
      sigemptyset(&action.sa_mask);
      action.sa_flags = SA_RESTART;
      struct sigaction previous {};
      if (::sigaction(sig, &action, &previous) != 0) {
        const int err = errno;
        restore();
        active_.store(false);
        throw std::runtime_error("dho2::signal_guard: cannot handle signal " + name(sig) + ": " +
                                 std::strerror(err));
      }
      saved_.push_back({sig, previous});
    }
  }
  signal_guard(const signal_guard&) = delete;
  signal_guard& operator=(const signal_guard&) = delete;
  /// Restores the handlers the guard replaced.
  ~signal_guard() {
    restore();
    active_.store(false);
  }

  /// The first signal received while a guard was alive (0 when none).
  [[nodiscard]] static int received() noexcept { return received_.load(); }

  /// "SIGINT", "SIGTERM", … for the usual signals; "signal N" otherwise.
  [[nodiscard]] static std::string name(int sig) {
    switch (sig) {
      case SIGINT: return "SIGINT";
      case SIGTERM: return "SIGTERM";
      case SIGHUP: return "SIGHUP";
      case SIGQUIT: return "SIGQUIT";
      case SIGUSR1: return "SIGUSR1";
      case SIGUSR2: return "SIGUSR2";
      default: return "signal " + std::to_string(sig);
    }
  }

 private:
  static_assert(std::atomic<int>::is_always_lock_free,
                "dho2::signal_guard needs a lock-free std::atomic<int> (async-signal safety)");

  struct saved_action {
    int sig;
    struct sigaction previous;
  };

  static void handle(int sig) noexcept {
    int none = 0;
    if (received_.compare_exchange_strong(none, sig)) return;
    struct sigaction fallback {};
    fallback.sa_handler = SIG_DFL;
    sigemptyset(&fallback.sa_mask);
    ::sigaction(sig, &fallback, nullptr);
    ::raise(sig);
  }

  void restore() noexcept {
    for (auto it = saved_.rbegin(); it != saved_.rend(); ++it) {
      ::sigaction(it->sig, &it->previous, nullptr);
    }
    saved_.clear();
  }

  static inline std::atomic<int> received_{0};
  static inline std::atomic<bool> active_{false};
  std::vector<saved_action> saved_;
};

/// A callback that asks the run to stop after the step in which a signal arrived (one recorded
/// by the process's `signal_guard`), and says why: termination `interrupted`, message
/// "interrupted by SIGTERM". Without a live guard it never stops the run.
struct stop_on_signal {
  /// When set, the stop waits for a step at which `ready()` is true — say
  /// `[&opt] { return !opt.estimate_in_flight(); }`, so that a checkpoint can be saved at the stop
  /// (`optimizer::save_checkpoint` cannot while an estimate is in flight). It must answer alike
  /// on every rank at a step.
  std::function<bool()> ready{};

  /// Stops when the guard has recorded a signal (and `ready`, if set, agrees).
  template <model_scalar S>
  bool on_step(const step_info<S>& /*info*/) const {
    return signal_guard::received() != 0 && (!ready || ready());
  }

  /// `interrupted` with the signal's name, once a signal arrived.
  [[nodiscard]] std::optional<stop_cause> stop_reason() const {
    const int sig = signal_guard::received();
    if (sig == 0) return std::nullopt;
    return stop_cause{termination_type::interrupted, "interrupted by " + signal_guard::name(sig)};
  }
};

}  // namespace dho2
