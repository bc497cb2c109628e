/// @file
/// `dho2::synchronous_admm`: mode S — synchronous sharded data parallelism. Every step is
/// synchronised, so the parameters are the consensus after every step.
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/concepts/admm_solver.hpp>
#include <dho2/detail/finite.hpp>

#include <Eigen/Core>

#include <array>
#include <cmath>
#include <cstddef>
#include <span>

namespace dho2 {

/// Mode S. Per step, on P ranks each holding the full model and its slice of the batch:
///  1. each rank computes the gradient g_q of its slice (weight w_q, its sample count) and a
///     **reduce-scatter** of w_q·g_q gives rank p the weighted sum on its shard only;
///  2. one small **all-reduce** agrees on the global loss, on whether any rank saw a non-finite
///     value (all take or skip the step), on the gradient's norm when clipping, and sums the
///     shards' projections Vᵀg onto the curvature basis — so W = Σ w_q and c = Vᵀg arrive
///     together, and 1/W is applied inside the update's own pass over the shard;
///  3. rank p runs the FOSI step on its shard with its shard of the curvature (the projection
///     Vᵀb of the base step summed by a second small all-reduce);
///  4. an **all-gather** of x[I_p] gives every rank the new parameters.
/// Four collectives (three before the first estimate, or without curvature), plus the stop vote
/// when a callback can stop the run at a step. Reduce-scatter plus all-gather move the bytes of
/// one all-reduce, and the optimizer state (base state, velocity, V) lives only in shards:
/// memory per rank ≈ 2n + state/P. On one process it is the plain FOSI step.
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
    if (ctx.distributed()) return distributed_step(ctx, local);
    vector<S>& grad = ctx.gradient();
    ctx.set_loss(local.weight > 0.0 ? (local.weight * local.loss) / local.weight : local.loss);
    if (!std::isfinite(local.loss)) {
      return ctx.reject(step_status::skipped_nonfinite_loss, stop_timing::now);
    }
    if (!detail::all_finite(grad)) {
      return ctx.reject(step_status::skipped_nonfinite_gradient, stop_timing::now);
    }
    ctx.timed_update([&] { ctx.update(grad); });
    ctx.count_step();
    return step_status::taken;
  }

 private:
  // Steps 1–4 of the class comment over P > 1 ranks.
  template <class Context>
  static step_status distributed_step(Context& ctx, const weighted_loss& local) {
    using S = typename Context::scalar_type;
    vector<S>& grad = ctx.gradient();
    vector<S>& shard = ctx.shard_gradient();
    auto& t = ctx.transport();
    const auto n = static_cast<std::size_t>(ctx.size());
    const auto m = static_cast<std::size_t>(shard.size());
    step_status status = step_status::taken;
    ctx.timed_update([&] {
      // Σ_q w_q g_q[I_p]: the weighting is this rank's one pass over all n entries.
      if (local.weight != 1.0) grad *= static_cast<S>(local.weight);
      ctx.communicate([&] {
        t.reduce_scatter_sum(std::span<const S>(grad.data(), n), std::span<S>(shard.data(), m),
                             ctx.offsets());
      });
      // [w·loss, w, loss not finite, gradient sum not finite, ‖Σ w g‖² (clipping), Vᵀ Σ w g].
      const Eigen::VectorXd partial = ctx.partial_projection(shard);
      Eigen::VectorXd agreed(5 + partial.size());
      agreed(0) = local.weight * local.loss;
      agreed(1) = local.weight;
      agreed(2) = std::isfinite(local.loss) ? 0.0 : 1.0;
      agreed(3) = detail::all_finite(shard) ? 0.0 : 1.0;
      agreed(4) = ctx.clips_gradient() ? shard.template cast<double>().squaredNorm() : 0.0;
      agreed.tail(partial.size()) = partial;
      ctx.communicate([&] {
        t.all_reduce_sum(std::span<double>(agreed.data(), static_cast<std::size_t>(agreed.size())));
      });
      const double total = agreed(1);
      ctx.set_loss(total > 0.0 ? agreed(0) / total : local.loss);
      if (agreed(2) != 0.0) {
        status = ctx.reject(step_status::skipped_nonfinite_loss, stop_timing::now);
        return;
      }
      if (agreed(3) != 0.0) {
        status = ctx.reject(step_status::skipped_nonfinite_gradient, stop_timing::now);
        return;
      }
      // The global mean gradient is (Σ w g)/W; an empty batch (W = 0) has a zero gradient.
      double gain = total > 0.0 ? 1.0 / total : 0.0;
      if (ctx.clips_gradient()) gain *= ctx.clip_factor(agreed(4) * gain * gain);
      const Eigen::VectorXd c = gain * agreed.tail(partial.size());
      ctx.update_projected(shard, static_cast<S>(gain), c);
      // The new x[I_p]; every rank needs the whole vector.
      ctx.communicate([&] {
        t.all_gather(std::span<const S>(ctx.new_shard().data(), m), std::span<S>(ctx.x().data(), n),
                     ctx.offsets());
      });
    });
    if (status != step_status::taken) return status;
    ctx.count_step();
    return step_status::taken;
  }
};

static_assert(admm_solver<synchronous_admm>);

}  // namespace dho2
