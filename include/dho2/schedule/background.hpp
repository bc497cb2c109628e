/// @file
/// `dho2::background_schedule`: one process; curvature is estimated by a second thread on a
/// snapshot while training goes on (DESIGN §2.6).
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/concepts/schedule.hpp>
#include <dho2/detail/validate.hpp>

namespace dho2 {

/// At the reference's steps t = W − 1 + jT, the parameters and the curvature batch are copied and
/// a second thread runs the estimator on them; the result is put in use before step
/// t + `max_staleness` exactly (waiting for the thread if it is not done), so a run is
/// deterministic for a fixed seed. Until then the previous curvature stays in use. With
/// `on_late = keep_previous` training never waits for the thread: the estimate is put in use
/// at the first step at or after t + `max_staleness` at which it is done.
/// `max_staleness` = 0 is the synchronous schedule. One process only (one rank); the model's
/// const member functions must be safe to call from two threads at once, as
/// `dho2::differentiable_model` requires, and the model must outlive the run.
struct background_schedule {
  /// Steps between the snapshot and the use of its curvature (s ≥ 0, s < T).
  index max_staleness = 4;
  /// When the estimate is not ready at step t + s: wait for it (deterministic), or go on with
  /// the curvature in use and adopt it at the first later step it is ready (never stalls; the
  /// summary counts it in `late_estimates` and reports its staleness).
  late_estimate_policy on_late = late_estimate_policy::wait;

  /// Estimates run on a second thread.
  static constexpr curvature_placement placement = curvature_placement::background_thread;
  /// Throws `dho2::invalid_options` if max_staleness < 0.
  void validate() const {
    detail::require(
        on_late == late_estimate_policy::wait || on_late == late_estimate_policy::keep_previous,
        "background_schedule::on_late", static_cast<int>(on_late), "wait or keep_previous");
    detail::require(max_staleness >= 0, "background_schedule::max_staleness", max_staleness,
                    ">= 0");
  }
  /// True when `step` is W − 1 + jT for some j ≥ 0.
  [[nodiscard]] constexpr bool estimate_before(index step, index warmup,
                                               index refresh_every) const noexcept {
    return reference_estimate_step(step, warmup, refresh_every);
  }
  /// `max_staleness`.
  [[nodiscard]] constexpr index staleness() const noexcept { return max_staleness; }
  /// `on_late`.
  [[nodiscard]] constexpr late_estimate_policy late_policy() const noexcept { return on_late; }
  /// No dedicated ranks.
  [[nodiscard]] constexpr int curvature_ranks() const noexcept { return 0; }
};

static_assert(schedule<background_schedule>);

}  // namespace dho2
