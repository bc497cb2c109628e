/// @file
/// The `schedule` concept: who estimates curvature, and when (DESIGN §2.6).
///
/// A type `C` models `schedule` when, on a `const C&` named `c`:
///  1. `c.estimate_before(step, warmup, refresh_every)` with `dho2::index` arguments returns
///     whether an estimate starts before the 0-based step `step`, given the options' warm-up W
///     and refresh period T (convertible to `bool`);
///  2. `C::placement` is a `static constexpr dho2::curvature_placement`: where the estimate
///     runs — `inline_estimate` (every rank pauses and joins it), `background_thread` (a second
///     thread of this process, on a snapshot), or `dedicated_ranks` (a group of curvature ranks,
///     on a snapshot the trainers send);
///  3. `c.staleness()` returns s ≥ 0: the curvature estimated on the snapshot of step t is put in
///     use before step t + s, exactly (the trainer waits for it if needed; but see the optional
///     late policy below), so runs are deterministic for a fixed seed and s; s = 0 makes any
///     placement equivalent to inline;
///  4. `c.curvature_ranks()` returns the number c of dedicated curvature ranks (used only with
///     `dedicated_ranks`; the last c ranks of the transport's group).
///
/// Optional: `c.late_policy()` returning a `dho2::late_estimate_policy` — what the trainers do
/// when an estimate made elsewhere (a background thread, the curvature ranks) is not ready at
/// step t + s: `wait` for it (the default when absent: deterministic), or `keep_previous`: go on
/// with the curvature in use and put the estimate in use before the first later step at which
/// it has arrived (training never stalls for curvature; the staleness it had is reported, and
/// runs are deterministic only while no estimate is late).
///
/// Semantic requirements: pure functions of their arguments (every rank agrees). s must be
/// smaller than T, so at most one estimate is in flight (checked at the first step).
/// Shipped models: `synchronous_schedule`, `background_schedule`, `split_schedule`.
#pragma once

#include <dho2/core/types.hpp>

#include <concepts>

namespace dho2 {

/// Where curvature estimates run.
enum class curvature_placement {
  /// Every rank pauses and takes part (the reference's behaviour).
  inline_estimate,
  /// A second thread of this process estimates on a snapshot while training goes on.
  background_thread,
  /// Dedicated curvature ranks estimate on a snapshot while the other ranks train.
  dedicated_ranks,
};

/// What trainers do when an estimate made on a snapshot is not ready when it is due (see the
/// file comment and `late_policy_of`).
enum class late_estimate_policy {
  /// Wait until it arrives: runs are deterministic for a fixed seed and staleness.
  wait,
  /// Go on with the curvature in use; adopt the estimate at the first step it is ready.
  keep_previous,
};

/// Decides who estimates curvature, and when (see the file comment).
template <class C>
concept schedule = std::copy_constructible<C> && requires(const C& c, index step) {
  { c.estimate_before(step, step, step) } -> std::convertible_to<bool>;
  { C::placement } -> std::convertible_to<curvature_placement>;
  { c.staleness() } -> std::convertible_to<index>;
  { c.curvature_ranks() } -> std::convertible_to<int>;
};

/// `c.late_policy()` when the schedule has one, else `late_estimate_policy::wait`.
template <schedule C>
[[nodiscard]] constexpr late_estimate_policy late_policy_of(const C& c) noexcept {
  if constexpr (requires { c.late_policy(); }) {
    return c.late_policy();
  } else {
    return late_estimate_policy::wait;
  }
}

/// True when `step` is W − 1 + jT for some j ≥ 0: the reference's estimate indices, which the
/// shipped schedules share.
[[nodiscard]] constexpr bool reference_estimate_step(index step, index warmup,
                                                     index refresh_every) noexcept {
  const index first = warmup - 1;
  return step >= first && (step - first) % refresh_every == 0;
}

}  // namespace dho2
