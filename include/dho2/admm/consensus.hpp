/// @file
/// `dho2::consensus_admm`: mode A — consensus ADMM in scaled form (Boyd et al., "Distributed
/// Optimization and Statistical Learning via the Alternating Direction Method of Multipliers",
/// 2011, §7.1), with FOSI as the local solver.
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/concepts/admm_solver.hpp>
#include <dho2/detail/finite.hpp>
#include <dho2/detail/validate.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace dho2 {

/// Consensus ADMM for min Σₚ fₚ(xₚ) subject to xₚ = z, with penalty ρ and scaled duals uₚ.
/// A round is:
///  - **local**: from the consensus point z, τ FOSI steps on
///    fₚ(x) + (ρ/2)‖x − z + uₚ‖² (gradient gₚ + ρ(x − z + uₚ)); the proximal term adds ρ to every
///    Hessian eigenvalue, so the Newton part inverts |λᵢ + ρ|;
///  - **consensus**: z ← mean over ranks of (xₚ + uₚ) — one all-reduce of n values per round
///    instead of a reduce-scatter and an all-gather per step;
///  - **dual**: uₚ ← uₚ + xₚ − z.
/// Each round reports the primal residual r = (Σₚ‖xₚ − z‖²)^{1/2} and the dual residual
/// s = ρ√P‖zₖ − zₖ₋₁‖. With `residual_balancing`, ρ is multiplied by `balance_factor` when
/// r > μs and divided by it when s > μr (Boyd §3.4.1); the scaled duals are rescaled by
/// ρ_old/ρ_new.
///
/// fₚ is the mean loss over rank p's slice of the batch; ranks are averaged with equal weight.
/// Each rank keeps full local state and whole eigenvectors; curvature is estimated at z. Because
/// each round starts from z, a round with τ = 1 and ρ = 0 is one mode-S step whenever the step
/// is linear in the gradient (SGD, heavy ball or Nesterov bases, with or without the Newton
/// part) and the slices have equal sizes. A non-finite value on one rank is agreed at the next
/// round: then every rank stops at the last consensus point.
struct consensus_admm {
  /// Each rank keeps a whole local state.
  static constexpr bool shards_state = false;

  /// Initial penalty ρ (≥ 0).
  double rho = 1.0;
  /// τ: local steps per round (≥ 1).
  index tau = 8;
  /// Adapt ρ by residual balancing.
  bool residual_balancing = false;
  /// μ of residual balancing (> 1).
  double balance_mu = 10.0;
  /// Factor by which ρ grows or shrinks (> 1).
  double balance_factor = 2.0;

  /// The run state of one rank.
  template <model_scalar S>
  struct state {
    /// Consensus point z of the last round (n).
    vector<S> consensus_point;
    /// Scaled dual uₚ (n).
    vector<S> dual;
    /// Current penalty ρ.
    double rho = 0.0;
    /// Local steps taken so far.
    std::int64_t local_steps = 0;
    /// 1 when this rank met a non-finite value under `nonfinite_policy::stop`: agreed at the
    /// next round.
    std::uint8_t pending_stop = 0;
    /// Checkpoint fields.
    template <class F>
    void visit_fields(F&& f) {
      f("consensus_point", consensus_point);
      f("dual", dual);
      f("rho", rho);
      f("local_steps", local_steps);
      f("pending_stop", pending_stop);
    }
    /// Bytes held.
    [[nodiscard]] std::size_t bytes() const noexcept {
      return static_cast<std::size_t>(consensus_point.size() + dual.size()) * sizeof(S);
    }
  };

  /// Throws `dho2::invalid_options` for bad fields.
  void validate() const {
    detail::require_finite_nonnegative("consensus_admm::rho", rho);
    detail::require(tau >= 1, "consensus_admm::tau", tau, ">= 1");
    detail::require(std::isfinite(balance_mu) && balance_mu > 1.0, "consensus_admm::balance_mu",
                    balance_mu, "finite and > 1");
    detail::require(std::isfinite(balance_factor) && balance_factor > 1.0,
                    "consensus_admm::balance_factor", balance_factor, "finite and > 1");
  }

  /// What a resumed run must share with the run that saved its checkpoint.
  [[nodiscard]] std::string identity() const { return "consensus_admm tau=" + std::to_string(tau); }

  /// z = x, u = 0, ρ = `rho`.
  template <model_scalar S>
  [[nodiscard]] state<S> init(const_vector_ref<S> x) const {
    state<S> st;
    st.consensus_point = x;
    st.dual = vector<S>::Zero(x.size());
    st.rho = rho;
    return st;
  }

  /// Curvature is estimated at the consensus point.
  template <model_scalar S>
  [[nodiscard]] const_vector_ref<S> curvature_point(const state<S>& st,
                                                    const_vector_ref<S> /*x*/) const {
    return st.consensus_point;
  }

  /// The proximal term adds ρ to every Hessian eigenvalue.
  template <model_scalar S>
  [[nodiscard]] double proximal_shift(const state<S>& st) const noexcept {
    return st.rho;
  }

  /// The new penalty after a round with residuals `primal` and `dual` (residual balancing, when
  /// enabled), else `current`.
  [[nodiscard]] double rebalance(double primal, double dual, double current) const noexcept {
    if (!residual_balancing) return current;
    if (primal > balance_mu * dual) return current * balance_factor;
    if (dual > balance_mu * primal) return current / balance_factor;
    return current;
  }

  /// A local FOSI step on fₚ(x) + (ρ/2)‖x − z + uₚ‖², then a consensus round every τ steps.
  template <model_scalar S, class Context>
  step_status step(state<S>& st, Context& ctx) const {
    const double loss = ctx.loss_and_gradient().loss;
    vector<S>& grad = ctx.gradient();
    vector_ref<S> x = ctx.x();
    step_status status = step_status::taken;
    ctx.set_loss(loss);
    ctx.timed_update([&] {
      if (st.pending_stop != 0) {
        status = step_status::stopped;
      } else if (!std::isfinite(loss)) {
        status = reject(st, ctx, step_status::skipped_nonfinite_loss);
      } else if (!detail::all_finite(grad)) {
        status = reject(st, ctx, step_status::skipped_nonfinite_gradient);
      } else {
        if (st.rho != 0.0) {
          grad.array() +=
              static_cast<S>(st.rho) * (x.array() - st.consensus_point.array() + st.dual.array());
        }
        ctx.update(grad);
        ctx.count_step();
      }
    });
    if (++st.local_steps % tau == 0) round(st, ctx);
    return ctx.stopped() ? step_status::stopped : status;
  }

 private:
  template <model_scalar S, class Context>
  static step_status reject(state<S>& st, Context& ctx, step_status why) {
    const step_status s = ctx.reject(why, stop_timing::next_round);
    if (s == step_status::stopped) st.pending_stop = 1;
    return s;
  }

  // z ← mean(x + u); u ← u + x − z; x ← z; residuals; optional rebalancing of ρ.
  template <model_scalar S, class Context>
  void round(state<S>& st, Context& ctx) const {
    const index n = ctx.size();
    vector_ref<S> x = ctx.x();
    auto& t = ctx.transport();
    const auto span_n1 = static_cast<std::size_t>(n + 1);
    vector<S> sum(n + 1);
    sum.head(n) = x + st.dual;
    sum(n) = st.pending_stop != 0 ? S{1} : S{0};
    if (ctx.distributed())
      ctx.communicate([&] { t.all_reduce_sum(std::span<S>(sum.data(), span_n1)); });
    const auto ranks = static_cast<double>(ctx.ranks());
    vector<S> z_new = sum.head(n) / static_cast<S>(ranks);
    double primal2 = (x - z_new).template cast<double>().squaredNorm();
    if (ctx.distributed())
      ctx.communicate([&] { t.all_reduce_sum(std::span<double>(&primal2, 1)); });
    summary& stats = ctx.stats();
    admm_round r;
    r.round = static_cast<index>(stats.admm_rounds.size());
    r.step = ctx.iteration();
    r.primal_residual = std::sqrt(primal2);
    r.dual_residual =
        st.rho * std::sqrt(ranks) * (z_new - st.consensus_point).template cast<double>().norm();
    r.rho = st.rho;
    st.dual += x - z_new;
    st.consensus_point = std::move(z_new);
    x = st.consensus_point;
    const double next = rebalance(r.primal_residual, r.dual_residual, st.rho);
    if (next != st.rho && next > 0.0 && std::isfinite(next)) {
      st.dual *= static_cast<S>(st.rho / next);
      st.rho = next;
      ctx.set_proximal_shift(next);
    }
    stats.admm_rounds.push_back(r);
    if (sum(n) != S{0}) {
      ctx.stop("a peer met a non-finite value; parameters are the last consensus");
      x = st.consensus_point;
    }
  }
};

static_assert(admm_solver<consensus_admm>);

}  // namespace dho2
