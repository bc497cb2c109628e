/// @file
/// `dho2::consensus_admm`: mode A (DESIGN §2.5) — consensus ADMM in scaled form (Boyd et al.,
/// "Distributed Optimization and Statistical Learning via the Alternating Direction Method of
/// Multipliers", 2011, §7.1), with FOSI as the local solver.
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/concepts/admm_solver.hpp>
#include <dho2/detail/validate.hpp>

#include <cmath>

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
/// r > μs and divided by it when s > μr (Boyd §3.4.1).
///
/// fₚ is the mean loss over rank p's slice of the batch; ranks are averaged with equal weight.
/// Because each round starts from z, a round with τ = 1 and ρ = 0 is one mode-S step whenever
/// the step is linear in the gradient (SGD, heavy ball or Nesterov bases, with or without the
/// Newton part) and the slices have equal sizes.
struct consensus_admm {
  /// Mode A.
  static constexpr bool consensus = true;
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

  /// Throws `dho2::invalid_options` for bad fields.
  void validate() const {
    detail::require_finite_nonnegative("consensus_admm::rho", rho);
    detail::require(tau >= 1, "consensus_admm::tau", tau, ">= 1");
    detail::require(std::isfinite(balance_mu) && balance_mu > 1.0, "consensus_admm::balance_mu",
                    balance_mu, "finite and > 1");
    detail::require(std::isfinite(balance_factor) && balance_factor > 1.0,
                    "consensus_admm::balance_factor", balance_factor, "finite and > 1");
  }
  /// The initial ρ.
  [[nodiscard]] double penalty() const noexcept { return rho; }
  /// τ.
  [[nodiscard]] index local_steps() const noexcept { return tau; }
  /// Residual balancing (when enabled), else `current`.
  [[nodiscard]] double rebalance(double primal, double dual, double current) const noexcept {
    if (!residual_balancing) return current;
    if (primal > balance_mu * dual) return current * balance_factor;
    if (dual > balance_mu * primal) return current / balance_factor;
    return current;
  }
};

static_assert(admm_solver<consensus_admm>);

}  // namespace dho2
