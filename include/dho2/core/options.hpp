/// @file
/// `dho2::options`: FOSI's hyper-parameters and guards (DESIGN §2.1–2.3), validated before use.
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/core/types.hpp>
#include <dho2/detail/validate.hpp>

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>

namespace dho2 {

/// How the velocity u of the Newton part accumulates g₁ (the gradient inside span(V)).
enum class momentum_kind {
  /// u ← β u + (1 − β) g₁ (the reference's default, an exponential moving average).
  ema,
  /// u ← g₁ + β u (heavy-ball form).
  heavy_ball,
  /// u = g₁ (no momentum).
  none,
};

/// What a step does when the loss, the gradient or a Hessian-vector product is not finite.
enum class nonfinite_policy {
  /// Skip the step (or keep the previous curvature), count it in the summary and go on.
  skip,
  /// Stop the run: the step reports `step_status::stopped`, the summary's termination is
  /// `numerical_failure`, and no state is updated with a non-finite value.
  stop,
};

/// Options of a FOSI run. Defaults follow the reference implementation (Sivan et al., 2024)
/// except the guards, which the reference lacks. `validate(n)` checks every field.
struct options {
  /// Use curvature at all. False gives the base optimizer alone (k and l are then ignored).
  bool use_curvature = true;
  /// k: number of largest Hessian eigenpairs in the Newton subspace.
  index k = 5;
  /// l: number of smallest (most negative) eigenpairs in the Newton subspace.
  index l = 0;
  /// m: Lanczos steps per estimate; 0 selects max(4(k + l), ⌈2 ln n⌉) capped at n.
  index lanczos_steps = 0;
  /// W: the first estimate runs before step W − 1 (0-based), so steps 0 … W − 2 are pure base
  /// steps.
  index warmup = 100;
  /// T: later estimates run before steps W − 1 + T, W − 1 + 2T, …
  index refresh_every = 100;
  /// α: scale of the Newton direction inside span(V).
  double alpha = 0.1;
  /// β: momentum of the Newton part's velocity.
  double momentum = 0.9;
  /// Form of the Newton part's momentum.
  momentum_kind momentum_form = momentum_kind::ema;
  /// c: clip of the base-step scale s = clip(λ_max/λ_min over the top k, 1, c); unset selects
  /// the base optimizer's default (1 for Adam, 3 otherwise).
  std::optional<double> clip{};
  /// Eigenpairs with |λ| < floor·max|λ| are dropped, not inverted (relative; in [0, 1)).
  double eigenvalue_floor = 1e-4;
  /// What to do with a non-finite loss, gradient or Hessian-vector product.
  nonfinite_policy on_nonfinite = nonfinite_policy::skip;
  /// Seed of the curvature estimator's RNG.
  std::uint64_t seed = 0x5eed;

  /// Throws `dho2::invalid_options` ("<field> = <value>. Violated constraint: …") for the first
  /// invalid field, given n parameters. Changes nothing.
  void validate(index n) const {
    using detail::require;
    require(n >= 1, "number of parameters n", n, ">= 1");
    require(k >= 0, "options.k", k, ">= 0");
    require(l >= 0, "options.l", l, ">= 0");
    if (use_curvature) {
      require(k + l >= 1, "options.k", k,
              "k + l >= 1 when use_curvature is true (l = " + std::to_string(l) + ")");
      require(k + l < n, "options.k", k,
              "k + l < n (l = " + std::to_string(l) + ", n = " + std::to_string(n) + ")");
      require(lanczos_steps == 0 || lanczos_steps >= k + l, "options.lanczos_steps", lanczos_steps,
              "0 (default) or >= k + l (k + l = " + std::to_string(k + l) + ")");
      require(lanczos_steps <= n, "options.lanczos_steps", lanczos_steps,
              "<= n (n = " + std::to_string(n) + ")");
    }
    require(lanczos_steps >= 0, "options.lanczos_steps", lanczos_steps, ">= 0");
    require(warmup >= 1, "options.warmup", warmup, ">= 1");
    require(refresh_every >= 1, "options.refresh_every", refresh_every, ">= 1");
    detail::require_finite_nonnegative("options.alpha", alpha);
    detail::require_unit_interval("options.momentum", momentum);
    if (clip) {
      require(std::isfinite(*clip) && *clip >= 1.0, "options.clip", *clip, "finite and >= 1");
    }
    detail::require_unit_interval("options.eigenvalue_floor", eigenvalue_floor);
  }
};

}  // namespace dho2
