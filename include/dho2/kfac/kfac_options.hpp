/// @file
/// `dho2::kfac_options`: the options of `dho2::kfac` (K-FAC for `dho2::mlp`), with `validate()`;
/// and `dho2::kfac_damping`, how the damping is split between the Kronecker factors.
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/core/types.hpp>
#include <dho2/detail/validate.hpp>

#include <optional>

namespace dho2 {

/// How `kfac` splits the Tikhonov damping γ between the two Kronecker factors of a layer.
enum class kfac_damping {
  /// Martens & Grosse §6.3: (A + π√γ I) ⊗ (G + (√γ/π) I) with the trace norm
  /// π = √((tr A / dim A) / (tr G / dim G)) (π = 1 when a trace is 0 or not finite).
  trace_norm,
  /// (A + √γ I) ⊗ (G + √γ I).
  plain,
};

/// Options of `dho2::kfac` (checked by `validate()` in the constructor, and checked to be
/// identical on all ranks at the first step).
struct kfac_options {
  /// Learning rate η > 0 of the update Δx = −η u (see `kfac`).
  double learning_rate = 0.1;
  /// Heavy-ball momentum μ ∈ [0, 1): u ← μu + ν·F̂⁻¹∇f (μ = 0: no velocity is kept).
  double momentum = 0.0;
  /// Tikhonov damping γ > 0 of the Fisher blocks, split between the factors per `damping_form`.
  double damping = 1e-3;
  /// How γ is split between A and G.
  kfac_damping damping_form = kfac_damping::trace_norm;
  /// Decay ε ∈ [0, 1) of the factors' exponential moving averages A ← εA + (1 − ε)Â (the first
  /// update sets A = Â).
  double factor_decay = 0.95;
  /// Factors are updated at the 0-based steps t with t mod factor_every = 0 (>= 1).
  index factor_every = 1;
  /// The damped factors are inverted at the 0-based steps t with t mod inverse_every = 0 (T_inv,
  /// >= 1), after that step's factor update.
  index inverse_every = 10;
  /// KL clipping κ > 0 (Ba et al. 2017): the preconditioned gradient is scaled by
  /// ν = min(1, √(κ / (η² Σₗ ⟨Pₗ, ∇W̄ₗ⟩))); `std::nullopt` disables it (ν = 1).
  std::optional<double> kl_clip = 1e-3;
  /// The run (`optimize`) stops with `termination_type::numerical_failure` once this many
  /// consecutive steps were skipped for a non-finite value (a diverged run); 0 = no bound.
  index max_consecutive_skips = 20;

  /// Throws `dho2::invalid_options` ("kfac_options.<field> = <value>. Violated constraint: ...")
  /// naming the first field out of range.
  void validate() const {
    detail::require_finite_positive("kfac_options.learning_rate", learning_rate);
    detail::require_unit_interval("kfac_options.momentum", momentum);
    detail::require_finite_positive("kfac_options.damping", damping);
    detail::require(damping_form == kfac_damping::trace_norm || damping_form == kfac_damping::plain,
                    "kfac_options.damping_form", static_cast<int>(damping_form),
                    "trace_norm or plain");
    detail::require_unit_interval("kfac_options.factor_decay", factor_decay);
    detail::require(factor_every >= 1, "kfac_options.factor_every", factor_every, ">= 1");
    detail::require(inverse_every >= 1, "kfac_options.inverse_every", inverse_every, ">= 1");
    if (kl_clip) detail::require_finite_positive("kfac_options.kl_clip", *kl_clip);
    detail::require(max_consecutive_skips >= 0, "kfac_options.max_consecutive_skips",
                    max_consecutive_skips, ">= 0");
  }
};

}  // namespace dho2
