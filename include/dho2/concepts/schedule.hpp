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
///     use before step t + s, exactly (the trainer waits for it if needed), so runs are
///     deterministic for a fixed seed and s; s = 0 makes any placement equivalent to inline;
///  4. `c.curvature_ranks()` returns the number c of dedicated curvature ranks (used only with
///     `dedicated_ranks`; the last c ranks of the transport's group).
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

/// Decides who estimates curvature, and when (see the file comment).
template <class C>
concept schedule = std::copy_constructible<C> && requires(const C& c, index step) {
  { c.estimate_before(step, step, step) } -> std::convertible_to<bool>;
  { C::placement } -> std::convertible_to<curvature_placement>;
  { c.staleness() } -> std::convertible_to<index>;
  { c.curvature_ranks() } -> std::convertible_to<int>;
};

/// True when `step` is W − 1 + jT for some j ≥ 0: the reference's estimate indices, which the
/// shipped schedules share.
[[nodiscard]] constexpr bool reference_estimate_step(index step, index warmup,
                                                     index refresh_every) noexcept {
  const index first = warmup - 1;
  return step >= first && (step - first) % refresh_every == 0;
}

}  // namespace dho2
