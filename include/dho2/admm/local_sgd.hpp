/// @file
/// `dho2::local_sgd`: Local SGD (periodic parameter averaging; Stich, "Local SGD Converges Fast
/// and Communicates Little", 2019; Lin et al., "Don't Use Large Mini-Batches, Use Local SGD",
/// 2020) as a consensus policy.
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/admm/detail/parameter_average.hpp>
#include <dho2/concepts/admm_solver.hpp>
#include <dho2/detail/validate.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

namespace dho2 {

/// Local SGD: every rank takes local steps of its own optimizer — the base optimizer (e.g. inner
/// Adam) through the FOSI update, with the rank's own base state and Newton velocity — on the
/// gradient of its own slice of each batch, and every τ steps the ranks' parameters are replaced
/// by their mean, x ← (1/P) Σₚ xₚ, in one all-reduce of n + 2 values (the parameters, a stop
/// flag and the squared drift for the primal residual). Nothing else is communicated between
/// rounds, so the traffic is that of one all-reduce per τ steps instead of one per step.
///
/// Ranks are averaged with equal weight (as `consensus_admm` does). Each round is appended to
/// `summary::admm_rounds` with the primal residual (Σₚ‖xₚ − x̄‖²)^{1/2}, computed from the drifts
/// ‖xₚ − z‖² from the last average z in the same all-reduce (to the precision of S); its penalty
/// and dual residual are 0. The base optimizers' states (Adam's moments) and the Newton velocity
/// stay local and are not averaged or reset at a round.
///
/// With τ = 1, an SGD base and equal slices it is synchronous data-parallel SGD (mode S) to
/// round-off: (1/P) Σₚ (x − η gₚ) = x − η ḡ; the same holds with the Newton part and any base
/// whose step is linear in the gradient (SGD, heavy ball, Nesterov), as for `consensus_admm`
/// with τ = 1 and ρ = 0.
///
/// Curvature (FOSI): every rank keeps the whole state and whole eigenvectors, and curvature is
/// estimated at the last average z (`curvature_point`), the one point all ranks share: the
/// collective estimate is then the Hessian of the global objective at z, the same on every rank.
/// Between rounds the local iterates drift from z, so the eigenpairs each rank uses are up to
/// τ − 1 local steps stale in position (on top of the schedule's own staleness); an estimate due
/// in the middle of a round is still taken at z, not at the rank's own parameters. With
/// `options::use_curvature = false` the local step is the base step, bit for bit.
///
/// A non-finite loss or gradient on one rank skips its step (or, under `nonfinite_policy::stop`,
/// is agreed at the next round: every rank then stops at the average z before that round).
struct local_sgd {
  /// Each rank keeps a whole local state.
  static constexpr bool shards_state = false;

  /// τ: local steps between two averages (≥ 1).
  index tau = 8;

  /// The run state of one rank.
  template <model_scalar S>
  struct state {
    /// z: the parameters of the last average (n), where every rank restarted.
    vector<S> consensus_point;
    /// Local steps taken so far.
    std::int64_t local_steps = 0;
    /// 1 when this rank met a non-finite value under `nonfinite_policy::stop`: agreed at the
    /// next round.
    std::uint8_t pending_stop = 0;
    /// Checkpoint fields.
    template <class F>
    void visit_fields(F&& f) {
      f("consensus_point", consensus_point);
      f("local_steps", local_steps);
      f("pending_stop", pending_stop);
    }
    /// Bytes held.
    [[nodiscard]] std::size_t bytes() const noexcept {
      return static_cast<std::size_t>(consensus_point.size()) * sizeof(S);
    }
  };

  /// Throws `dho2::invalid_options` ("local_sgd::tau = 0. Violated constraint: >= 1") for a bad
  /// τ.
  void validate() const { detail::require(tau >= 1, "local_sgd::tau", tau, ">= 1"); }

  /// What every rank, and a resumed run, must share: "local_sgd tau=τ".
  [[nodiscard]] std::string identity() const { return "local_sgd tau=" + std::to_string(tau); }

  /// z = x.
  template <model_scalar S>
  [[nodiscard]] state<S> init(const_vector_ref<S> x) const {
    state<S> st;
    st.consensus_point = x;
    return st;
  }

  /// Curvature is estimated at the last average z (see the class comment).
  template <model_scalar S>
  [[nodiscard]] const_vector_ref<S> curvature_point(const state<S>& st,
                                                    const_vector_ref<S> /*x*/) const {
    return st.consensus_point;
  }

  /// A local step on this rank's gradient; every τ steps, the average.
  template <model_scalar S, class Context>
  step_status step(state<S>& st, Context& ctx) const {
    const step_status status = detail::local_step<S>(ctx, st.pending_stop);
    if (++st.local_steps % tau == 0) round(st, ctx);
    return ctx.stopped() ? step_status::stopped : status;
  }

 private:
  // x ← z ← mean over ranks of x.
  template <model_scalar S, class Context>
  static void round(state<S>& st, Context& ctx) {
    detail::average_result<S> avg =
        detail::average_parameters<S>(ctx, st.consensus_point, st.pending_stop);
    if (!avg.stop) st.consensus_point = std::move(avg.mean);
    ctx.x() = st.consensus_point;
    detail::book_round(ctx, avg.primal);
    if (avg.stop) ctx.stop("a peer met a non-finite value; parameters are the last average");
  }
};

static_assert(admm_solver<local_sgd>);

}  // namespace dho2
