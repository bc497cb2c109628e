/// @file
/// `dho2::kfac_summary`: counters, times and memory of a `dho2::kfac` run on one rank, for
/// benchmarks to report.
#pragma once

#include <dho2/core/types.hpp>

#include <cstddef>

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
};

}  // namespace dho2
