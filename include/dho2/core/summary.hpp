/// @file
/// `dho2::summary`: what happened in a run (Ceres style): counts, times, curvature estimates and
/// a termination type that says whether the iterate is usable; `brief_report()` and
/// `full_report()` print it.
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/core/detail/report_text.hpp>
#include <dho2/core/types.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
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
  /// A non-finite value was met with `nonfinite_policy::stop`, or more consecutive steps than
  /// `options::max_consecutive_skips` were skipped (the run diverged). The iterate is still
  /// usable: it is the last finite one, since no state is ever updated with a non-finite value.
  numerical_failure,
  /// A signal (SIGINT, SIGTERM) asked the run to stop (`dho2::stop_on_signal`): every rank
  /// finished the step it was taking; the iterate is the one after that step.
  interrupted,
};

/// Name of a termination type ("completed", …).
[[nodiscard]] inline std::string_view to_string(termination_type t) noexcept {
  switch (t) {
    case termination_type::running: return "running";
    case termination_type::completed: return "completed";
    case termination_type::stopped_by_callback: return "stopped_by_callback";
    case termination_type::numerical_failure: return "numerical_failure";
    case termination_type::interrupted: return "interrupted";
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
  /// Wall seconds of the estimate.
  double seconds = 0.0;
  /// Wall seconds of its Hessian-vector products.
  double hvp_seconds = 0.0;
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
  /// The part of `communication_seconds` spent inside curvature estimates this rank took part in
  /// (the Lanczos reductions, and the collectives of sharded HVPs); the rest is the steps' own
  /// (`step_communication_seconds()`).
  double estimate_communication_seconds = 0.0;
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

  /// Seconds of the steps' own transport calls: `communication_seconds` less
  /// `estimate_communication_seconds`.
  [[nodiscard]] double step_communication_seconds() const noexcept {
    return std::max(0.0, communication_seconds - estimate_communication_seconds);
  }

  /// Seconds of the run outside the split of this rank's time (`gradient_seconds`,
  /// `hvp_seconds`, `estimate_other_seconds`, `update_seconds`, `communication_seconds`): the
  /// callbacks' time and the loop's own; 0 if the split exceeds `total_seconds`.
  [[nodiscard]] double other_seconds() const noexcept {
    return std::max(0.0, total_seconds - gradient_seconds - hvp_seconds - estimate_other_seconds -
                             update_seconds - communication_seconds);
  }

  /// One line (no newline) like Ceres' `Solver::Summary::BriefReport()`: the termination and its
  /// message, steps, epochs, the last epoch's mean loss, curvature estimates and ADMM rounds when
  /// there were any, and the wall time, e.g. "completed (all 3 epochs done): 1407 steps (0
  /// skipped) in 3 epoch(s), final loss 0.3012, 3 curvature estimate(s) (0 failed), 42.17 s".
  [[nodiscard]] std::string brief_report() const {
    std::string out(to_string(termination));
    if (!message.empty()) out += " (" + message + ")";
    out += ": " + std::to_string(steps) + " steps (" + std::to_string(skipped_steps()) +
           " skipped) in " + std::to_string(epochs) + " epoch(s)";
    if (!std::isnan(final_loss)) out += ", final loss " + detail::general_text(final_loss);
    if (curvature_estimates > 0) {
      out += ", " + std::to_string(curvature_estimates) + " curvature estimate(s) (" +
             std::to_string(failed_estimates) + " failed)";
    }
    if (!admm_rounds.empty()) out += ", " + std::to_string(admm_rounds.size()) + " ADMM round(s)";
    out += ", " + detail::fixed_text(total_seconds, 2) + " s";
    return out;
  }

  /// A block of lines (each ending in '\n', labels in a 17-column margin) like Ceres'
  /// `Solver::Summary::FullReport()`:
  ///  - `termination`: the termination type and message;
  ///  - `steps`: steps taken, epochs, step calls, skipped steps (and why), the last epoch's mean
  ///    loss;
  ///  - `curvature`: estimates (failed), HVPs and their source; the last estimate's step, pairs
  ///    kept, λ_max and the smallest retained Ritz value, base-step scale and seconds; its
  ///    staleness, late and skipped estimates when there were any;
  ///  - `ADMM` (mode A): rounds and the last one's residuals and penalty;
  ///  - `time`: the wall time and its split (gradient, HVP, Lanczos other, update,
  ///    communication, other = `other_seconds()`), and the seconds of estimates beside training
  ///    when there were any;
  ///  - `memory`: this rank's curvature and optimizer state bytes.
  [[nodiscard]] std::string full_report() const {
    using detail::append_report_line;
    using detail::fixed_text;
    using detail::general_text;
    const auto str = [](auto v) { return std::to_string(v); };
    std::string out;
    std::string line(to_string(termination));
    if (!message.empty()) line += " (" + message + ")";
    append_report_line(out, "termination", line);

    line = str(steps) + " in " + str(epochs) + " epoch(s), " + str(iterations) + " step call(s); " +
           str(skipped_steps()) + " skipped";
    if (skipped_steps() > 0) {
      line += " (" + str(skipped_nonfinite_loss) + " non-finite loss, " +
              str(skipped_nonfinite_gradient) + " non-finite gradient)";
    }
    if (!std::isnan(final_loss)) line += "; last epoch's mean loss " + general_text(final_loss);
    append_report_line(out, "steps", line);

    append_report_line(out, "curvature",
                       str(curvature_estimates) + " estimate(s) (" + str(failed_estimates) +
                           " failed), " + str(hvps) + " HVPs from " + std::string(to_string(hvp)));
    if (!estimates.empty()) {
      const estimate_report& e = estimates.back();
      const index pairs = e.eigenvalues.size();
      line = "last before step " + str(e.step) + ": " + str(e.retained) +
             " pairs kept, lambda_max " + general_text(pairs > 0 ? e.eigenvalues(0) : 0.0, 4);
      if (pairs > 0)
        line += ", lambda_" + str(pairs) + " " + general_text(e.eigenvalues(pairs - 1), 4);
      line += ", scale " + general_text(e.scale, 3) + ", " + fixed_text(e.seconds, 2) + " s";
      append_report_line(out, "", line);
    }
    if (max_staleness > 0 || late_estimates > 0 || skipped_estimates > 0) {
      append_report_line(out, "",
                         "staleness up to " + str(max_staleness) + " step(s); " +
                             str(late_estimates) + " late, " + str(skipped_estimates) +
                             " skipped estimate(s)");
    }
    if (!admm_rounds.empty()) {
      const admm_round& a = admm_rounds.back();
      append_report_line(out, "ADMM",
                         str(admm_rounds.size()) + " round(s); the last after step " + str(a.step) +
                             ": primal residual " + general_text(a.primal_residual, 4) +
                             ", dual residual " + general_text(a.dual_residual, 4) + ", rho " +
                             general_text(a.rho));
    }
    append_report_line(
        out, "time",
        "wall " + fixed_text(total_seconds, 2) + " s = gradient " +
            fixed_text(gradient_seconds, 2) + " + HVP " + fixed_text(hvp_seconds, 2) +
            " + Lanczos other " + fixed_text(estimate_other_seconds, 2) + " + update " +
            fixed_text(update_seconds, 2) + " + communication " +
            fixed_text(communication_seconds, 2) +
            (estimate_communication_seconds > 0.0
                 ? " (estimates " + fixed_text(estimate_communication_seconds, 2) + ")"
                 : std::string()) +
            " + other " + fixed_text(other_seconds(), 2));
    if (offloaded_estimate_seconds > 0.0) {
      append_report_line(
          out, "", "estimates beside training " + fixed_text(offloaded_estimate_seconds, 2) + " s");
    }
    append_report_line(out, "memory",
                       "curvature " + detail::mib_text(curvature_bytes) + ", optimizer state " +
                           detail::mib_text(optimizer_state_bytes) + " (this rank)");
    return out;
  }
};

}  // namespace dho2
