/// @file
/// `dho2::adamw`: Adam with decoupled weight decay (Loshchilov & Hutter, 2019) as a FOSI base
/// optimizer.
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/base/adam.hpp>
#include <dho2/concepts/base_optimizer.hpp>
#include <dho2/detail/agreement.hpp>
#include <dho2/detail/validate.hpp>

#include <string>

namespace dho2 {

/// AdamW: the Adam step of `dho2::adam` on the gradient, plus a weight decay applied to the
/// parameters directly rather than through the gradient:
/// \f[ \Delta x = -\eta\left(\frac{\hat m}{\sqrt{\hat v} + \epsilon} + \lambda x\right). \f]
///
/// The Adam part is `step(state, g, delta)` (exactly `dho2::adam`'s, same state); the decay is
/// `decay(x, delta)`, which adds −ηλx to a finished step (the optional `decay` member of the
/// `base_optimizer` concept). Inside FOSI the optimizer calls `decay` after the FOSI combination,
/// on the parameters before the step (this rank's shard in mode S, all n in mode A):
/// \f[ \Delta x = s\,(b - V V^\top b) - \alpha\, d - \eta\lambda x, \f]
/// with b the Adam step on g₂. How this meets the curvature:
///  - the estimate (Lanczos on Hessian-vector products of the model) sees the loss only, not
///    the decay, so V and the eigenvalues are those of the loss, as with any base;
///  - the decay is not split by V: it is neither projected off the subspace nor scaled by s nor
///    inverted by the Newton part, because decoupled decay is by definition not a gradient term:
///    every coordinate shrinks by the factor 1 − ηλ per step whatever the curvature, as in
///    AdamW, and before the first estimate (or with curvature off) the step is AdamW exactly.
///
/// With weight_decay = 0 `decay` does nothing, so the run is `dho2::adam`'s bit for bit.
/// An L2 term in the model's loss (coupled decay, seen by the curvature) is the alternative.
struct adamw {
  /// Learning rate η (> 0).
  double learning_rate = 1e-3;
  /// First-moment decay β₁ in [0, 1).
  double beta1 = 0.9;
  /// Second-moment decay β₂ in [0, 1).
  double beta2 = 0.999;
  /// ε (> 0) added to √v̂.
  double epsilon = 1e-8;
  /// Decoupled weight decay λ (>= 0): the step adds −ηλx.
  double weight_decay = 1e-2;

  /// FOSI's scaling clip c, as for Adam.
  static constexpr double default_clip = adam::default_clip;

  /// Run state: Adam's (moments m, v and the step count t).
  template <model_scalar S>
  using state = adam::state<S>;

  /// The Adam part of this policy: the same η, β₁, β₂ and ε.
  [[nodiscard]] adam adam_part() const noexcept { return {learning_rate, beta1, beta2, epsilon}; }

  /// The hyper-parameters as text, "adamw" then each as name=value (what the ranks of a job
  /// must share; `dho2::optimizer` checks it at its first step).
  [[nodiscard]] std::string identity() const {
    return std::string("adamw") + " learning_rate=" + detail::exact_text(learning_rate) +
           " beta1=" + detail::exact_text(beta1) + " beta2=" + detail::exact_text(beta2) +
           " epsilon=" + detail::exact_text(epsilon) +
           " weight_decay=" + detail::exact_text(weight_decay);
  }
  /// Throws `dho2::invalid_options` for bad hyper-parameters (fields named `adamw::…`).
  void validate() const {
    detail::require_finite_positive("adamw::learning_rate", learning_rate);
    detail::require_unit_interval("adamw::beta1", beta1);
    detail::require_unit_interval("adamw::beta2", beta2);
    detail::require_finite_positive("adamw::epsilon", epsilon);
    detail::require_finite_nonnegative("adamw::weight_decay", weight_decay);
  }

  /// Zero moments for `n` parameters.
  template <model_scalar S>
  [[nodiscard]] state<S> init(index n) const {
    return adam_part().template init<S>(n);
  }

  /// Starts the Adam step (the gradient part): `dho2::adam::begin_step`.
  template <model_scalar S>
  [[nodiscard]] auto begin_step(state<S>& st) const {
    return adam_part().begin_step(st);
  }

  /// The Adam step on `g` (the gradient part; see `dho2::adam::step`).
  template <model_scalar S>
  void step(state<S>& st, const_vector_ref<S> g, vector_ref<S> delta) const {
    adam_part().step(st, g, delta);
  }

  /// The decoupled decay: delta −= ηλ·x, with `x` the parameters before the step (same length
  /// as `delta`). Does nothing when λ = 0.
  template <model_scalar S>
  void decay(const_vector_ref<S> x, vector_ref<S> delta) const {
    if (weight_decay == 0.0) return;
    delta -= static_cast<S>(learning_rate * weight_decay) * x;
  }
};

static_assert(base_optimizer<adamw, float> && base_optimizer<adamw, double>);
static_assert(detail::has_step_kernel<adamw, float> && detail::has_step_kernel<adamw, double>);

}  // namespace dho2
