// What the momentum base optimizers (heavy_ball, nesterov) share: the state, a momentum buffer
// m, and the checks of their learning rate and momentum.
#pragma once

#include <dho2/detail/internal_header_check.hpp>

#include <dho2/core/types.hpp>
#include <dho2/detail/validate.hpp>

#include <cstddef>
#include <string>
#include <string_view>

namespace dho2::detail {

template <model_scalar S>
struct momentum_state {
  /// Momentum buffer, one entry per parameter.
  vector<S> m;
  /// Bytes held by the state.
  [[nodiscard]] std::size_t bytes() const noexcept {
    return static_cast<std::size_t>(m.size()) * sizeof(S);
  }
  // A zero buffer for n parameters.
  [[nodiscard]] static momentum_state zero(index n) { return {vector<S>::Zero(n)}; }
};

// Throws invalid_options naming `<optimizer>::learning_rate` unless finite and > 0, or
// `<optimizer>::momentum` unless in [0, 1).
inline void validate_momentum(std::string_view optimizer, double learning_rate, double momentum) {
  const std::string prefix(optimizer);
  require_finite_positive(prefix + "::learning_rate", learning_rate);
  require_unit_interval(prefix + "::momentum", momentum);
}

}  // namespace dho2::detail
