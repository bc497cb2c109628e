/// @file
/// `dho2::heavy_ball`: SGD with Polyak (heavy-ball) momentum as a FOSI base optimizer.
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/base/detail/momentum_state.hpp>
#include <dho2/concepts/base_optimizer.hpp>
#include <dho2/detail/agreement.hpp>

namespace dho2 {

/// Heavy-ball momentum (the PyTorch `SGD(momentum=μ)` form):
/// \f[ m \leftarrow \mu m + g, \qquad \Delta x = -\eta\, m. \f]
struct heavy_ball {
  /// Learning rate η (> 0).
  double learning_rate = 0.01;
  /// Momentum μ in [0, 1).
  double momentum = 0.9;

  /// Run state: the momentum buffer m.
  template <model_scalar S>
  using state = detail::momentum_state<S>;

  /// The hyper-parameters as text, "heavy_ball" then each as name=value (what the ranks of a job
  /// must share; `dho2::optimizer` checks it at its first step).
  [[nodiscard]] std::string identity() const {
    return std::string("heavy_ball") + " learning_rate=" + detail::exact_text(learning_rate) +
           " momentum=" + detail::exact_text(momentum);
  }
  /// Throws `dho2::invalid_options` for a bad learning rate or momentum.
  void validate() const { detail::validate_momentum("heavy_ball", learning_rate, momentum); }

  /// A zero momentum buffer for `n` parameters.
  template <model_scalar S>
  [[nodiscard]] state<S> init(index n) const {
    return state<S>::zero(n);
  }

  /// Starts a step: returns its step kernel (the `base_optimizer` concept's optional
  /// `begin_step`), m ← μm + g and delta = −ηm on entries [begin, begin + g.size()), one pass.
  template <model_scalar S>
  [[nodiscard]] auto begin_step(state<S>& st) const {
    return detail::momentum_kernel(st, momentum, learning_rate,
                                   [](const auto& mb, const auto& /*gb*/, S /*mu*/, S neg_lr,
                                      auto& out) { out = neg_lr * mb; });
  }

  /// m ← μm + g; delta = −ηm.
  template <model_scalar S>
  void step(state<S>& st, const_vector_ref<S> g, vector_ref<S> delta) const {
    begin_step(st)(0, g, delta);
  }
};

static_assert(base_optimizer<heavy_ball, float> && base_optimizer<heavy_ball, double>);
static_assert(detail::has_step_kernel<heavy_ball, float> &&
              detail::has_step_kernel<heavy_ball, double>);

}  // namespace dho2
