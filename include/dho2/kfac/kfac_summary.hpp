/// @file
/// `dho2::kfac_summary`: counters, times and memory of a `dho2::kfac` run on one rank, for
/// benchmarks to report; `brief_report()` and `full_report()` print it.
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/core/detail/report_text.hpp>
#include <dho2/core/types.hpp>

#include <algorithm>
#include <cstddef>
#include <string>

namespace dho2 {

/// Counts, times and memory of a `kfac` run on this rank. The five `*_seconds` times other than
/// `total_seconds` split this rank's step time without overlap.
struct kfac_summary {
  /// Step calls so far (taken + skipped).
  index iterations = 0;
  /// Steps that updated the parameters.
  index steps = 0;
  /// Steps skipped because the global loss, gradient or factor statistics were not finite (no
  /// state changed).
  index skipped_nonfinite = 0;
  /// Factor (moving-average) updates.
  index factor_updates = 0;
  /// Inverse refreshes (each inverts every layer's two damped factors, spread over the ranks).
  index inverse_updates = 0;
  /// Damped factors this rank inverted (two per owned layer and refresh).
  index factors_inverted = 0;
  /// Damped factors whose Cholesky factorisation failed; the previous inverse stayed in use.
  index failed_inversions = 0;
  /// Seconds in loss, gradient and signal evaluations.
  double gradient_seconds = 0.0;
  /// Seconds forming the local factor statistics and the moving averages.
  double factor_seconds = 0.0;
  /// Seconds inverting this rank's damped factors.
  double inverse_seconds = 0.0;
  /// Seconds preconditioning, clipping and updating the parameters.
  double update_seconds = 0.0;
  /// Seconds inside transport calls (0 on one process), waiting for peers included.
  double communication_seconds = 0.0;
  /// Wall seconds inside `step`.
  double total_seconds = 0.0;
  /// Bytes this rank passed into collectives (payload of all-reduces and all-gathers).
  std::size_t communicated_bytes = 0;
  /// Bytes of optimizer state on this rank: factors A, G and their inverses (double, every
  /// layer on every rank), the velocity (when μ > 0) and the working buffers.
  std::size_t optimizer_state_bytes = 0;
  /// Of `optimizer_state_bytes`, the bytes of the factors Aₗ, Gₗ and their damped inverses:
  /// 2·Σₗ ((sₗ + 1)² + sₗ₊₁²) doubles.
  std::size_t curvature_bytes = 0;
  /// KL-clipping scale ν of the last taken step (1 without clipping).
  double last_kl_scale = 1.0;

  /// Seconds inside `step` outside its split (`gradient_seconds`, `factor_seconds`,
  /// `inverse_seconds`, `update_seconds`, `communication_seconds`); 0 if the split exceeds
  /// `total_seconds`.
  [[nodiscard]] double other_seconds() const noexcept {
    return std::max(0.0, total_seconds - gradient_seconds - factor_seconds - inverse_seconds -
                             update_seconds - communication_seconds);
  }

  /// One line (no newline): steps, factor updates, inverse refreshes, failed inversions, the last
  /// KL scale and the seconds in `step`, e.g. "K-FAC: 1407 steps (0 skipped), 1407 factor
  /// updates, 141 inverse refreshes (0 failed inversions), last KL scale 0.0514, 61.20 s in
  /// step". The run's termination is in the `dho2::summary` that `kfac::optimize` returns (see
  /// its `brief_report()`).
  [[nodiscard]] std::string brief_report() const {
    return "K-FAC: " + std::to_string(steps) + " steps (" + std::to_string(skipped_nonfinite) +
           " skipped), " + std::to_string(factor_updates) + " factor updates, " +
           std::to_string(inverse_updates) + " inverse refreshes (" +
           std::to_string(failed_inversions) + " failed inversions), last KL scale " +
           detail::general_text(last_kl_scale, 3) + ", " + detail::fixed_text(total_seconds, 2) +
           " s in step";
  }

  /// A block of lines (each ending in '\n', labels in a 17-column margin, as
  /// `dho2::summary::full_report()`):
  ///  - `steps`: steps taken, step calls, steps skipped for non-finite values;
  ///  - `curvature`: factor updates, inverse refreshes, factors this rank inverted and failed
  ///    inversions, the last KL scale;
  ///  - `time`: the seconds in `step` and their split (gradient, factors, inverses, update,
  ///    communication, other = `other_seconds()`);
  ///  - `memory`: this rank's factor and inverse bytes, optimizer state bytes and bytes passed
  ///    into collectives.
  [[nodiscard]] std::string full_report() const {
    using detail::append_report_line;
    using detail::fixed_text;
    const auto str = [](auto v) { return std::to_string(v); };
    std::string out;
    append_report_line(out, "steps",
                       str(steps) + " in " + str(iterations) + " step call(s); " +
                           str(skipped_nonfinite) + " skipped (non-finite)");
    append_report_line(out, "curvature",
                       "K-FAC: " + str(factor_updates) + " factor updates, " +
                           str(inverse_updates) + " inverse refreshes (" + str(factors_inverted) +
                           " factors inverted on this rank, " + str(failed_inversions) +
                           " failed), last KL scale " + detail::general_text(last_kl_scale, 3));
    append_report_line(
        out, "time",
        "in step " + fixed_text(total_seconds, 2) + " s = gradient " +
            fixed_text(gradient_seconds, 2) + " + factors " + fixed_text(factor_seconds, 2) +
            " + inverses " + fixed_text(inverse_seconds, 2) + " + update " +
            fixed_text(update_seconds, 2) + " + communication " +
            fixed_text(communication_seconds, 2) + " + other " + fixed_text(other_seconds(), 2));
    append_report_line(out, "memory",
                       "factors and inverses " + detail::mib_text(curvature_bytes) +
                           " of optimizer state " + detail::mib_text(optimizer_state_bytes) +
                           " (this rank); " + detail::mib_text(communicated_bytes) +
                           " passed into collectives");
    return out;
  }
};

}  // namespace dho2
