/// @file
/// `dho2::split_schedule`: c dedicated curvature ranks estimate on snapshots while the other
/// ranks train (DESIGN §2.6).
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/concepts/schedule.hpp>
#include <dho2/detail/validate.hpp>

namespace dho2 {

/// The last `curvature_group` ranks of the transport's group form a curvature group (their own
/// sub-group); the others train in mode S among themselves. At the reference's steps
/// t = W − 1 + jT the first trainer sends the parameters and the batch's position (epoch, batch)
/// to the curvature group, which rebuilds that global batch from its own copy of the data, runs
/// the distributed estimate on it (basis sharded over the c curvature ranks) and sends the
/// eigenpairs back, re-sharded to the trainers' partition: each curvature rank sends each trainer
/// only the columns they share, so no rank ever holds all of V. Trainers put the new curvature in
/// use before step t + `max_staleness`, exactly, so runs are deterministic for a fixed seed;
/// with `max_staleness` = 0 the result equals the synchronous schedule on the trainers to
/// round-off. With `on_late = keep_previous` a curvature group that is not done by then does
/// not stall the trainers: they go on with the eigenpairs in use, look again before every step
/// (the first trainer polls, `dho2::polling_transport`, and tells the others), and put the
/// estimate in use at the first step it has arrived; an estimate due meanwhile is skipped.
/// Between requests the curvature ranks wait by polling, so no transport timeout limits how
/// long trainers may train between estimates. Checkpoints: the trainers call
/// `optimizer::save_checkpoint`, the curvature ranks join from inside `optimize`. Requires
/// `optimizer::optimize` (it tells the curvature ranks which batch to use) and mode S.
struct split_schedule {
  /// c: the number of dedicated curvature ranks (1 ≤ c < group size).
  int curvature_group = 1;
  /// Steps between the snapshot and the use of its curvature (s ≥ 0, s < T).
  index max_staleness = 4;
  /// When the estimate is not ready at step t + s: wait for it (deterministic), or go on with
  /// the curvature in use and adopt it at the first later step it is ready (never stalls; the
  /// summary counts it in `late_estimates` and reports its staleness).
  late_estimate_policy on_late = late_estimate_policy::wait;

  /// Estimates run on dedicated ranks.
  static constexpr curvature_placement placement = curvature_placement::dedicated_ranks;
  /// Throws `dho2::invalid_options` for bad fields (the group size is checked at the first
  /// step).
  void validate() const {
    detail::require(curvature_group >= 1, "split_schedule::curvature_group", curvature_group,
                    ">= 1");
    detail::require(
        on_late == late_estimate_policy::wait || on_late == late_estimate_policy::keep_previous,
        "split_schedule::on_late", static_cast<int>(on_late), "wait or keep_previous");
    detail::require(max_staleness >= 0, "split_schedule::max_staleness", max_staleness, ">= 0");
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
  /// `curvature_group`.
  [[nodiscard]] constexpr int curvature_ranks() const noexcept { return curvature_group; }
};

static_assert(schedule<split_schedule>);

}  // namespace dho2
