/// @file
/// `dho2::diloco`: DiLoCo (Douillard et al., "DiLoCo: Distributed Low-Communication Training of
/// Language Models", 2023) as a consensus policy — Local SGD whose rounds are the steps of an
/// outer optimizer (Nesterov momentum) on the averaged outer gradient.
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/admm/detail/parameter_average.hpp>
#include <dho2/concepts/admm_solver.hpp>
#include <dho2/detail/agreement.hpp>
#include <dho2/detail/validate.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

namespace dho2 {

/// DiLoCo. Every rank starts a round from the global parameters x_g and takes τ local steps of
/// its inner optimizer — the base optimizer (the paper's inner AdamW is `adam`) through the FOSI
/// update, with the rank's own base state and Newton velocity, kept from round to round — on its
/// own slice of each batch, reaching xₚ. Then, in one all-reduce of n + 2 values (the
/// parameters, a stop flag and the squared drift for the primal residual):
///  - outer gradient: Δ = (1/P) Σₚ (x_g − xₚ) = x_g − x̄;
///  - outer step, Nesterov momentum with learning rate η = `outer_learning_rate` and momentum
///    μ = `outer_momentum` (as PyTorch's SGD with `nesterov=True`, the paper's outer optimizer):
///    v ← μ v + Δ, x_g ← x_g − η (Δ + μ v); with `nesterov = false`, heavy ball: x_g ← x_g − η v;
///  - every rank restarts from x ← x_g.
/// The paper's defaults are η = 0.7, μ = 0.9 (and τ = 500 for language models; 8 here, as for
/// the other consensus policies). With η = 1 and μ = 0 the outer step is x_g ← x̄: DiLoCo is then
/// `local_sgd` (to round-off: x_g − (x_g − x̄) need not be x̄ bit for bit). The outer step is
/// computed identically on every rank from the bit-identical all-reduce, so x_g and v agree on
/// every rank without further communication.
///
/// Ranks are averaged with equal weight. Each round is appended to `summary::admm_rounds` with
/// the primal residual (Σₚ‖xₚ − x̄‖²)^{1/2} (to the precision of S); its penalty and dual
/// residual are 0.
///
/// Curvature (FOSI): every rank keeps the whole state and whole eigenvectors; curvature is
/// estimated at x_g (`curvature_point`), the point every rank restarted from, so the collective
/// estimate is the Hessian of the global objective there, the same on every rank. The inner
/// steps use it while the local iterates drift up to τ − 1 steps away from x_g; the outer step
/// itself does not use curvature (it is a first-order step on the outer gradient, whose gain on
/// a steady Δ is η/(1 − μ) — 7 at the defaults — on top of the inner Newton steps). With
/// `options::use_curvature = false` the inner step is the base step, bit for bit.
///
/// A non-finite loss or gradient on one rank skips its step (or, under `nonfinite_policy::stop`,
/// is agreed at the next round: every rank then stops at x_g before the round).
struct diloco {
  /// Each rank keeps a whole local state.
  static constexpr bool shards_state = false;

  /// τ: inner steps per round (≥ 1).
  index tau = 8;
  /// η: outer learning rate (finite and > 0).
  double outer_learning_rate = 0.7;
  /// μ: outer momentum (0 ≤ μ < 1).
  double outer_momentum = 0.9;
  /// Nesterov momentum (the paper's); false: heavy ball.
  bool nesterov = true;

  /// The run state of one rank.
  template <model_scalar S>
  struct state {
    /// x_g: the global parameters (n), where every rank restarted at the last round.
    vector<S> consensus_point;
    /// v: the outer momentum buffer (n).
    vector<S> outer_velocity;
    /// Inner steps taken so far.
    std::int64_t local_steps = 0;
    /// 1 when this rank met a non-finite value under `nonfinite_policy::stop`: agreed at the
    /// next round.
    std::uint8_t pending_stop = 0;
    /// Checkpoint fields.
    template <class F>
    void visit_fields(F&& f) {
      f("consensus_point", consensus_point);
      f("outer_velocity", outer_velocity);
      f("local_steps", local_steps);
      f("pending_stop", pending_stop);
    }
    /// Bytes held.
    [[nodiscard]] std::size_t bytes() const noexcept {
      return static_cast<std::size_t>(consensus_point.size() + outer_velocity.size()) * sizeof(S);
    }
  };

  /// Throws `dho2::invalid_options` naming the field (`diloco::tau`, `diloco::outer_learning_rate`
  /// or `diloco::outer_momentum`) for a bad value.
  void validate() const {
    detail::require(tau >= 1, "diloco::tau", tau, ">= 1");
    detail::require_finite_positive("diloco::outer_learning_rate", outer_learning_rate);
    detail::require_unit_interval("diloco::outer_momentum", outer_momentum);
  }

  /// What every rank, and a resumed run, must share: τ and the outer optimizer, exactly (ranks
  /// with different outer steps would drift apart without noticing).
  [[nodiscard]] std::string identity() const {
    return "diloco tau=" + std::to_string(tau) +
           " outer_learning_rate=" + detail::exact_text(outer_learning_rate) +
           " outer_momentum=" + detail::exact_text(outer_momentum) +
           " nesterov=" + (nesterov ? "1" : "0");
  }

  /// x_g = x, v = 0.
  template <model_scalar S>
  [[nodiscard]] state<S> init(const_vector_ref<S> x) const {
    state<S> st;
    st.consensus_point = x;
    st.outer_velocity = vector<S>::Zero(x.size());
    return st;
  }

  /// Curvature is estimated at x_g (see the class comment).
  template <model_scalar S>
  [[nodiscard]] const_vector_ref<S> curvature_point(const state<S>& st,
                                                    const_vector_ref<S> /*x*/) const {
    return st.consensus_point;
  }

  /// An inner step on this rank's gradient; every τ steps, the outer step.
  template <model_scalar S, class Context>
  step_status step(state<S>& st, Context& ctx) const {
    const step_status status = detail::local_step<S>(ctx, st.pending_stop);
    if (++st.local_steps % tau == 0) round(st, ctx);
    return ctx.stopped() ? step_status::stopped : status;
  }

 private:
  // Δ = x_g − x̄; v ← μv + Δ; x_g ← x_g − η(Δ + μv) (Nesterov) or x_g − ηv; x ← x_g.
  template <model_scalar S, class Context>
  void round(state<S>& st, Context& ctx) const {
    const detail::average_result<S> avg =
        detail::average_parameters<S>(ctx, st.consensus_point, st.pending_stop);
    if (!avg.stop) {
      const vector<S> delta = st.consensus_point - avg.mean;
      const auto lr = static_cast<S>(outer_learning_rate);
      const auto mu = static_cast<S>(outer_momentum);
      st.outer_velocity = mu * st.outer_velocity + delta;
      if (nesterov) {
        st.consensus_point -= lr * (delta + mu * st.outer_velocity);
      } else {
        st.consensus_point -= lr * st.outer_velocity;
      }
    }
    ctx.x() = st.consensus_point;
    detail::book_round(ctx, avg.primal);
    if (avg.stop) ctx.stop("a peer met a non-finite value; parameters are the last global ones");
  }
};

static_assert(admm_solver<diloco>);

}  // namespace dho2
