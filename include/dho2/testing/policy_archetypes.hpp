/// @file
/// `dho2::testing::schedule_archetype` and `dho2::testing::admm_solver_archetype`: the smallest
/// schedule and consensus policy that meet their concepts — templates to copy when writing one,
/// and proof that the optimizer asks nothing beyond what the concepts document.
#pragma once

#include <dho2/concepts/admm_solver.hpp>
#include <dho2/concepts/schedule.hpp>
#include <dho2/core/step_status.hpp>
#include <dho2/core/types.hpp>

#include <cmath>
#include <cstddef>
#include <optional>

namespace dho2::testing {

/// A schedule with only the required members: one inline estimate before step W − 1, none
/// after (so curvature is estimated once and kept).
struct schedule_archetype {
  /// No run state beyond whether the estimate ran.
  struct state {
    /// Whether the one estimate ran.
    bool done = false;
  };
  /// Estimates inline before step W − 1.
  template <class Context>
  void before_step(state& st, Context& ctx) const {
    if (!st.done && ctx.step() == ctx.warmup() - 1) {
      ctx.estimate_now();
      st.done = true;
    }
  }
  /// Nothing to finish.
  template <class Host>
  void finish(state& /*st*/, Host& /*host*/) const {}
  /// Nothing is ever in flight.
  [[nodiscard]] std::optional<estimate_in_flight> in_flight(const state& /*st*/) const {
    return std::nullopt;
  }
};
DHO2_REQUIRE_SCHEDULE(schedule_archetype);

/// A consensus policy with only the required members, for one rank: every rank keeps the whole
/// state and steps on its own gradient (no communication), skipping non-finite steps.
struct admm_solver_archetype {
  /// Each rank keeps the whole state.
  static constexpr bool shards_state = false;
  /// No state.
  template <model_scalar S>
  struct state {
    /// Bytes held.
    [[nodiscard]] std::size_t bytes() const noexcept { return 0; }
  };
  /// The (empty) state.
  template <model_scalar S>
  [[nodiscard]] state<S> init(const_vector_ref<S> /*x*/) const {
    return {};
  }
  /// The local FOSI step.
  template <model_scalar S, class Context>
  step_status step(state<S>& /*st*/, Context& ctx) const {
    const weighted_loss local = ctx.loss_and_gradient();
    ctx.set_loss(local.loss);
    if (!std::isfinite(local.loss)) {
      return ctx.reject(step_status::skipped_nonfinite_loss, stop_timing::now);
    }
    if (!ctx.gradient().allFinite()) {
      return ctx.reject(step_status::skipped_nonfinite_gradient, stop_timing::now);
    }
    ctx.timed_update([&] { ctx.update(ctx.gradient()); });
    ctx.count_step();
    return step_status::taken;
  }
};
DHO2_REQUIRE_ADMM_SOLVER(admm_solver_archetype);

}  // namespace dho2::testing
