/// @file
/// `dho2::time_budget`: a callback that stops a run once it has used a wall-clock budget.
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/callbacks/events.hpp>
#include <dho2/core/summary.hpp>
#include <dho2/core/types.hpp>
#include <dho2/detail/validate.hpp>

#include <chrono>
#include <cstdio>
#include <optional>
#include <string>

namespace dho2 {

/// A callback for `optimize` that asks to stop after the first step that ends with the run's
/// elapsed time (`step_info::elapsed_seconds`, counted from the start of this `optimize` call)
/// at or past the budget. The summary's termination is then `stopped_by_callback` with the
/// message "time budget of 3600 s used up after 3600.012 s"; the epoch cut short is not
/// counted, as for any stop at a step.
///
/// With several ranks each rank reads its own clock, and the stop is agreed through the stop
/// vote of `optimize` (see `dho2/callbacks/events.hpp`): the first step at which any rank's
/// budget is used up stops every rank, after that same step, so all ranks end with the same
/// parameters and step count (a rank whose own budget was not used up reports the generic
/// message "a callback asked to stop"). The `on_stop` hooks run there: a checkpointing callback
/// can save the state the run ends in, and a later run resumes it.
///
///     dho2::time_budget budget{std::chrono::hours(2)};
///     opt.optimize(model, x, batches, 1000, budget, dho2::progress_bar{});
class time_budget {
 public:
  /// Stops once `budget` of wall-clock time is used (0 stops after the first step).
  /// @throws dho2::invalid_options if the budget is negative or not finite.
  explicit time_budget(std::chrono::duration<double> budget) : seconds_(budget.count()) {
    detail::require_finite_nonnegative("time_budget seconds", seconds_);
  }

  /// The budget in seconds.
  [[nodiscard]] double budget_seconds() const noexcept { return seconds_; }
  /// Whether this rank's budget was used up in the last run.
  [[nodiscard]] bool used_up() const noexcept { return used_up_; }
  /// The 0-based step call after which it asked to stop, −1 if it did not.
  [[nodiscard]] index stopped_after_step() const noexcept { return step_; }

  /// Hook: forgets a previous run.
  void on_begin(const run_info& /*info*/) noexcept {
    used_up_ = false;
    step_ = -1;
    elapsed_ = 0.0;
  }

  /// Hook: returns true (stop) once the elapsed time reaches the budget.
  template <model_scalar S>
  bool on_step(const step_info<S>& info) {
    if (used_up_) return true;
    if (!(info.elapsed_seconds >= seconds_)) return false;
    used_up_ = true;
    step_ = info.iteration;
    elapsed_ = info.elapsed_seconds;
    return true;
  }

  /// The summary's termination and message once the budget is used up.
  [[nodiscard]] std::optional<stop_cause> stop_reason() const {
    if (!used_up_) return std::nullopt;
    char buf[96];
    std::snprintf(buf, sizeof buf, "time budget of %.6g s used up after %.3f s", seconds_,
                  elapsed_);
    return stop_cause{termination_type::stopped_by_callback, buf};
  }

 private:
  double seconds_;
  bool used_up_ = false;
  index step_ = -1;
  double elapsed_ = 0.0;
};

}  // namespace dho2
