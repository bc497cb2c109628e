/// @file
/// `dho2::summary`: what happened in a run (Ceres style): counts, times, curvature estimates and
/// a termination type that says whether the iterate is usable.
#pragma once

#include <dho2/core/types.hpp>

#include <Eigen/Core>

#include <cstddef>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

namespace dho2 {

/// Why a run ended.
enum class termination_type {
  /// Still running (the summary of an optimizer between steps).
  running,
  /// All requested epochs or steps were done.
  completed,
  /// A callback asked to stop (for example a target metric was reached).
  stopped_by_callback,
  /// A non-finite value was met with `nonfinite_policy::stop`. The iterate is still usable: it is
  /// the last finite one, since no state is ever updated with a non-finite value.
  numerical_failure,
};

/// Name of a termination type ("completed", …).
[[nodiscard]] inline std::string_view to_string(termination_type t) noexcept {
  switch (t) {
    case termination_type::running: return "running";
    case termination_type::completed: return "completed";
    case termination_type::stopped_by_callback: return "stopped_by_callback";
    case termination_type::numerical_failure: return "numerical_failure";
  }
  return "unknown";
}

/// Which Hessian-vector product the curvature estimates used.
enum class hvp_source {
  /// No estimate has run.
  none,
  /// The model's exact product (it is a `dho2::hvp_model`).
  model,
  /// Central finite differences of gradients.
  finite_difference,
};

/// Name of an HVP source ("model", "finite_difference", "none").
[[nodiscard]] inline std::string_view to_string(hvp_source s) noexcept {
  switch (s) {
    case hvp_source::none: return "none";
    case hvp_source::model: return "model";
    case hvp_source::finite_difference: return "finite_difference";
  }
  return "unknown";
}

/// One curvature estimate, as seen by the optimizer.
struct estimate_report {
  /// 0-based step index before which the estimate ran.
  index step = 0;
  /// Ritz values returned by the estimator (largest first, then smallest).
  Eigen::VectorXd eigenvalues;
  /// Ritz residual norms, one per eigenvalue.
  Eigen::VectorXd residuals;
  /// Pairs kept after the eigenvalue floor (the size of the Newton subspace).
  index retained = 0;
  /// Estimator iterations (Lanczos steps).
  index iterations = 0;
  /// Hessian-vector products used.
  index hvps = 0;
  /// The Krylov space was exhausted early.
  bool breakdown = false;
  /// A Hessian-vector product was not finite: the previous curvature stayed in use.
  bool failed = false;
  /// Steps between the snapshot the estimate used and the step before which it was put in use
  /// (0 for inline estimates).
  index staleness = 0;
  /// Base-step scale s = clip(λ_max/λ_min over the top pairs, 1, c) in force after the estimate.
  double scale = 1.0;
  /// Wall seconds of the estimate, and of its Hessian-vector products.
  double seconds = 0.0, hvp_seconds = 0.0;
};

/// One consensus round of mode A (consensus ADMM).
struct admm_round {
  /// 0-based round.
  index round = 0;
  /// 0-based step call after which the round ran.
  index step = 0;
  /// Primal residual (Σₚ‖xₚ − z‖²)^{1/2}.
  double primal_residual = 0.0;
  /// Dual residual ρ√P‖zₖ − zₖ₋₁‖.
  double dual_residual = 0.0;
  /// Penalty ρ in force during the round.
  double rho = 0.0;
};

/// Counts and times of a run.
struct summary {
  /// Why the run ended (`running` between steps).
  termination_type termination = termination_type::running;
  /// A human-readable sentence about the termination.
  std::string message;
  /// Step calls so far (taken + skipped); the schedule counts these.
  index iterations = 0;
  /// Steps that updated the parameters.
  index steps = 0;
  /// Steps skipped because the loss was not finite.
  index skipped_nonfinite_loss = 0;
  /// Steps skipped because the gradient was not finite.
  index skipped_nonfinite_gradient = 0;
  /// Curvature estimates run (including failed ones).
  index curvature_estimates = 0;
  /// Estimates that failed (non-finite HVP) and left the previous curvature in use.
  index failed_estimates = 0;
  /// Hessian-vector products computed.
  index hvps = 0;
  /// Largest staleness of any estimate put in use (see `estimate_report::staleness`).
  index max_staleness = 0;
  /// Estimates not ready at their step t + s under `late_estimate_policy::keep_previous`: the
  /// curvature in use stayed until they arrived (their `estimate_report::staleness` says when).
  index late_estimates = 0;
  /// Estimates due while a late one was still in flight, and so not started (keep_previous).
  index skipped_estimates = 0;
  /// Which HVP the estimates used.
  hvp_source hvp = hvp_source::none;
  /// Completed epochs (set by `optimize`).
  index epochs = 0;
  /// Mean training loss of the last completed epoch (set by `optimize`), NaN if none.
  double final_loss = std::numeric_limits<double>::quiet_NaN();
  /// Seconds in loss and gradient evaluations.
  double gradient_seconds = 0.0;
  /// Seconds in Hessian-vector products of estimates this rank took part in (their transport
  /// calls excluded: those are in `communication_seconds`).
  double hvp_seconds = 0.0;
  /// Seconds in those estimates other than HVPs and transport calls (orthogonalisation,
  /// tridiagonal solve).
  double estimate_other_seconds = 0.0;
  /// Seconds in parameter updates (projections, base step), transport calls excluded.
  double update_seconds = 0.0;
  /// Seconds inside this rank's transport calls (0 on one process), waiting for peers included.
  /// With `gradient_seconds`, `hvp_seconds`, `estimate_other_seconds` and `update_seconds` it
  /// splits this rank's time without overlap.
  double communication_seconds = 0.0;
  /// Wall seconds of estimates that ran beside training — on a background thread or on the
  /// curvature ranks of the split schedule — and so are not part of this rank's time split.
  double offloaded_estimate_seconds = 0.0;
  /// Wall seconds of the run.
  double total_seconds = 0.0;
  /// Peak bytes of curvature state on this rank (Krylov basis during an estimate, or the
  /// eigenvectors, whichever was larger), measured from the buffers allocated.
  std::size_t curvature_bytes = 0;
  /// Bytes of optimizer state on this rank (base state, Newton velocity, eigenvectors excluded).
  std::size_t optimizer_state_bytes = 0;
  /// Every curvature estimate in order.
  std::vector<estimate_report> estimates;
  /// Mode A: every consensus round in order (empty in mode S).
  std::vector<admm_round> admm_rounds;

  /// Steps skipped for any reason.
  [[nodiscard]] index skipped_steps() const noexcept {
    return skipped_nonfinite_loss + skipped_nonfinite_gradient;
  }
};

}  // namespace dho2
