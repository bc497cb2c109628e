/// @file
/// `dho2::background_schedule`: one process; curvature is estimated by a second thread on a
/// snapshot while training goes on (DESIGN §2.6).
#pragma once

#include <dho2/concepts/schedule.hpp>
#include <dho2/detail/validate.hpp>

namespace dho2 {

/// At the reference's steps t = W − 1 + jT, the parameters and the curvature batch are copied and
/// a second thread runs the estimator on them; the result is put in use before step
/// t + `max_staleness` exactly (waiting for the thread if it is not done), so a run is
/// deterministic for a fixed seed. Until then the previous curvature stays in use.
/// `max_staleness` = 0 is the synchronous schedule. One process only (one rank); the model's
/// const member functions must be safe to call from two threads at once, as
/// `dho2::differentiable_model` requires, and the model must outlive the run.
struct background_schedule {
  /// Steps between the snapshot and the use of its curvature (s ≥ 0, s < T).
  index max_staleness = 4;

  /// Estimates run on a second thread.
  static constexpr curvature_placement placement = curvature_placement::background_thread;
  /// Throws `dho2::invalid_options` if max_staleness < 0.
  void validate() const {
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
  /// No dedicated ranks.
  [[nodiscard]] constexpr int curvature_ranks() const noexcept { return 0; }
};

static_assert(schedule<background_schedule>);

}  // namespace dho2
