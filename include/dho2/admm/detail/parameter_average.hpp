// What local_sgd and diloco share: the local step on the rank's own gradient, and the round that
// averages the ranks' parameters in one all-reduce of n + 2 values (the parameters, a stop flag
// and the squared drift from the last synchronisation point, for the primal residual).
#pragma once

#include <dho2/detail/internal_header_check.hpp>

#include <dho2/core/step_status.hpp>
#include <dho2/core/summary.hpp>
#include <dho2/core/types.hpp>
#include <dho2/detail/finite.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>

namespace dho2::detail {

// One local step of the rank's base optimizer (through the FOSI update) on its own gradient; a
// non-finite loss or gradient is rejected (under nonfinite_policy::stop the stop is agreed at the
// next round through `pending_stop`); a pending stop stops at once.
template <model_scalar S, class Context>
step_status local_step(Context& ctx, std::uint8_t& pending_stop) {
  const double loss = ctx.loss_and_gradient().loss;
  vector<S>& grad = ctx.gradient();
  step_status status = step_status::taken;
  ctx.set_loss(loss);
  ctx.timed_update([&] {
    if (pending_stop != 0) {
      status = step_status::stopped;
      return;
    }
    const bool loss_ok = std::isfinite(loss);
    if (!loss_ok || !all_finite(grad)) {
      status = ctx.reject(
          loss_ok ? step_status::skipped_nonfinite_gradient : step_status::skipped_nonfinite_loss,
          stop_timing::next_round);
      if (status == step_status::stopped) pending_stop = 1;
      return;
    }
    ctx.update(grad);
    ctx.count_step();
  });
  return status;
}

// The outcome of an averaging round.
template <model_scalar S>
struct average_result {
  vector<S> mean;       // x̄ = (1/P) Σₚ xₚ
  bool stop = false;    // some rank had a pending stop
  double primal = 0.0;  // (Σₚ‖xₚ − x̄‖²)^{1/2}
};

// x̄ over the working group, in one all-reduce of [x, pending_stop, ‖x − anchor‖²] (anchor: the
// last synchronisation point). Σₚ‖xₚ − x̄‖² = Σₚ‖xₚ − anchor‖² − P‖x̄ − anchor‖² (to the
// precision of S), so the residual needs no second collective.
template <model_scalar S, class Context>
average_result<S> average_parameters(Context& ctx, const vector<S>& anchor,
                                     std::uint8_t pending_stop) {
  const index n = ctx.size();
  vector_ref<S> x = ctx.x();
  vector<S> sum(n + 2);
  sum.head(n) = x;
  sum(n) = pending_stop != 0 ? S{1} : S{0};
  sum(n + 1) = static_cast<S>((x - anchor).template cast<double>().squaredNorm());
  if (ctx.distributed()) {
    ctx.communicate([&] {
      ctx.transport().all_reduce_sum(std::span<S>(sum.data(), static_cast<std::size_t>(n + 2)));
    });
  }
  const auto ranks = static_cast<double>(ctx.ranks());
  average_result<S> out;
  out.mean = sum.head(n) / static_cast<S>(ranks);
  out.stop = sum(n) != S{0};
  const double spread = static_cast<double>(sum(n + 1)) -
                        ranks * (out.mean - anchor).template cast<double>().squaredNorm();
  out.primal = std::sqrt(std::max(spread, 0.0));
  return out;
}

// Appends the round that ran after this step to the summary (no penalty, no dual residual).
template <class Context>
void book_round(Context& ctx, double primal) {
  summary& stats = ctx.stats();
  admm_round r;
  r.round = static_cast<index>(stats.admm_rounds.size());
  r.step = ctx.iteration();
  r.primal_residual = primal;
  stats.admm_rounds.push_back(r);
}

}  // namespace dho2::detail
