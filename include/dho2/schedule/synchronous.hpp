/// @file
/// `dho2::synchronous_schedule`: every rank pauses and joins the estimate (the reference's
/// behaviour).
#pragma once

#include <dho2/concepts/schedule.hpp>

namespace dho2 {

/// Estimates before the 0-based steps W − 1, W − 1 + T, W − 1 + 2T, … (the reference's indices),
/// on the current parameters, and the step itself already uses the new curvature.
struct synchronous_schedule {
  /// True when `step` is W − 1 + jT for some j ≥ 0.
  [[nodiscard]] constexpr bool estimate_before(index step, index warmup,
                                               index refresh_every) const noexcept {
    const index first = warmup - 1;
    return step >= first && (step - first) % refresh_every == 0;
  }
};

static_assert(schedule<synchronous_schedule>);

}  // namespace dho2
