/// @file
/// `dho2::testing::without_step_kernel<Base>`: a base optimizer with its step kernel hidden, so
/// that `newton_subspace::step` takes the unfused update path for it. Used to check that a base's
/// fused and unfused FOSI updates agree (to round-off), and to measure what the fusion saves.
#pragma once

#include <dho2/concepts/base_optimizer.hpp>
#include <dho2/core/types.hpp>

namespace dho2::testing {

/// Forwards `state`, `init` and `step` to `Base` and nothing else: no `begin_step` (so no fused
/// update), no `learning_rate`, `decay`, `validate` or `default_clip`.
template <class Base>
struct without_step_kernel {
  /// The wrapped base (its hyper-parameters).
  Base base;
  /// The wrapped base's state.
  template <model_scalar S>
  using state = typename Base::template state<S>;
  /// The wrapped base's fresh state for `n` parameters.
  template <model_scalar S>
  [[nodiscard]] state<S> init(index n) const {
    return base.template init<S>(n);
  }
  /// The wrapped base's whole step.
  template <model_scalar S>
  void step(state<S>& st, const_vector_ref<S> g, vector_ref<S> delta) const {
    base.step(st, g, delta);
  }
};

}  // namespace dho2::testing
