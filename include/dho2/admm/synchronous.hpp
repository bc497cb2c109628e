/// @file
/// `dho2::synchronous_admm`: mode S — synchronous sharded data parallelism. Every step is
/// synchronised, so the parameters are the consensus after every step.
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/concepts/admm_solver.hpp>
#include <dho2/detail/finite.hpp>

#include <array>
#include <cmath>
#include <cstddef>
#include <span>

namespace dho2 {

/// Mode S. Per step, on P ranks each holding the full model and its slice of the batch:
///  1. each rank computes the gradient of its slice, and one small all-reduce agrees on the
///     global loss and on whether any rank saw a non-finite value (all take or skip the step);
///  2. a **reduce-scatter** gives rank p the global mean gradient g[I_p] on its shard only;
///  3. rank p runs the FOSI step on its shard with its shard of the curvature (partial
///     projections summed by small all-reduces);
///  4. an **all-gather** of x[I_p] gives every rank the new parameters.
/// Reduce-scatter plus all-gather move the bytes of one all-reduce, and the optimizer state
/// (base state, velocity, V) lives only in shards: memory per rank ≈ 2n + state/P. On one
/// process it is the plain FOSI step.
struct synchronous_admm {
  /// Ranks share one state, in shards.
  static constexpr bool shards_state = true;

  /// Mode S keeps no state of its own.
  template <model_scalar S>
  struct state {
    /// Checkpoint fields: none.
    template <class F>
    void visit_fields(F&& /*f*/) {}
    /// Bytes held.
    [[nodiscard]] std::size_t bytes() const noexcept { return 0; }
  };

  /// The (empty) state.
  template <model_scalar S>
  [[nodiscard]] state<S> init(const_vector_ref<S> /*x*/) const {
    return {};
  }

  /// One synchronous step (see the class comment).
  template <model_scalar S, class Context>
  step_status step(state<S>& /*st*/, Context& ctx) const {
    const weighted_loss local = ctx.loss_and_gradient();
    vector<S>& grad = ctx.gradient();
    std::array<double, 4> agreed{local.weight * local.loss, local.weight,
                                 std::isfinite(local.loss) ? 0.0 : 1.0,
                                 detail::all_finite(grad) ? 0.0 : 1.0};
    auto& t = ctx.transport();
    if (ctx.distributed()) ctx.communicate([&] { t.all_reduce_sum(std::span<double>(agreed)); });
    ctx.set_loss(agreed[1] > 0.0 ? agreed[0] / agreed[1] : local.loss);
    if (agreed[2] != 0.0) return ctx.reject(step_status::skipped_nonfinite_loss, stop_timing::now);
    if (agreed[3] != 0.0) {
      return ctx.reject(step_status::skipped_nonfinite_gradient, stop_timing::now);
    }
    ctx.timed_update([&] {
      if (!ctx.distributed()) {
        ctx.update(grad);
        return;
      }
      // g[I_p] = Σ_q (w_q / W) g_q[I_p]: the global mean gradient, on this rank's shard only.
      grad *= static_cast<S>(local.weight / agreed[1]);
      vector<S>& shard = ctx.shard_gradient();
      const auto n = static_cast<std::size_t>(ctx.size());
      const auto m = static_cast<std::size_t>(shard.size());
      ctx.communicate([&] {
        t.reduce_scatter_sum(std::span<const S>(grad.data(), n), std::span<S>(shard.data(), m),
                             ctx.offsets());
      });
      ctx.update(shard);
      // The new x[I_p]; every rank needs the whole vector.
      ctx.communicate([&] {
        t.all_gather(std::span<const S>(ctx.new_shard().data(), m), std::span<S>(ctx.x().data(), n),
                     ctx.offsets());
      });
    });
    ctx.count_step();
    return step_status::taken;
  }
};

static_assert(admm_solver<synchronous_admm>);

}  // namespace dho2
