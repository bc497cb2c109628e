/// @file
/// `dho2::synchronous_schedule`: every rank pauses and joins the estimate (the reference's
/// behaviour).
#pragma once

#include <dho2/concepts/schedule.hpp>

namespace dho2 {

/// Estimates before the 0-based steps W − 1, W − 1 + T, W − 1 + 2T, … (the reference's indices),
/// on the current parameters, and the step itself already uses the new curvature.
struct synchronous_schedule {
  /// Every rank takes part in the estimate.
  static constexpr curvature_placement placement = curvature_placement::inline_estimate;
  /// True when `step` is W − 1 + jT for some j ≥ 0.
  [[nodiscard]] constexpr bool estimate_before(index step, index warmup,
                                               index refresh_every) const noexcept {
    return reference_estimate_step(step, warmup, refresh_every);
  }
  /// The estimate is used at once.
  [[nodiscard]] constexpr index staleness() const noexcept { return 0; }
  /// No dedicated ranks.
  [[nodiscard]] constexpr int curvature_ranks() const noexcept { return 0; }
};

static_assert(schedule<synchronous_schedule>);

}  // namespace dho2
