/// @file
/// `dho2::split_schedule`: c dedicated curvature ranks estimate on snapshots while the other
/// ranks train (DESIGN §2.6).
#pragma once

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
/// round-off. Requires `optimizer::optimize` (it tells the curvature ranks which batch to use)
/// and mode S.
struct split_schedule {
  /// c: the number of dedicated curvature ranks (1 ≤ c < group size).
  int curvature_group = 1;
  /// Steps between the snapshot and the use of its curvature (s ≥ 0, s < T).
  index max_staleness = 4;

  /// Estimates run on dedicated ranks.
  static constexpr curvature_placement placement = curvature_placement::dedicated_ranks;
  /// Throws `dho2::invalid_options` for bad fields (the group size is checked at the first
  /// step).
  void validate() const {
    detail::require(curvature_group >= 1, "split_schedule::curvature_group", curvature_group,
                    ">= 1");
    detail::require(max_staleness >= 0, "split_schedule::max_staleness", max_staleness, ">= 0");
  }
  /// True when `step` is W − 1 + jT for some j ≥ 0.
  [[nodiscard]] constexpr bool estimate_before(index step, index warmup,
                                               index refresh_every) const noexcept {
    return reference_estimate_step(step, warmup, refresh_every);
  }
  /// `max_staleness`.
  [[nodiscard]] constexpr index staleness() const noexcept { return max_staleness; }
  /// `curvature_group`.
  [[nodiscard]] constexpr int curvature_ranks() const noexcept { return curvature_group; }
};

static_assert(schedule<split_schedule>);

}  // namespace dho2
