// What the momentum base optimizers (heavy_ball, nesterov) share: the state, a momentum buffer
// m, the checks of their learning rate and momentum, and their step kernel.
#pragma once

#include <dho2/detail/internal_header_check.hpp>

#include <dho2/core/detail/blocks.hpp>
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

// The step kernel of a momentum base: on each block of entries [begin, begin + g.size()),
// m ← μm + g, then delta ← write(m, g, μ, −η) — one pass. `write(mb, gb, mu, neg_lr, out)`
// assigns the block's Δx to `out`.
template <model_scalar S, class Write>
[[nodiscard]] auto momentum_kernel(momentum_state<S>& st, double momentum, double learning_rate,
                                   Write write) {
  return [&m = st.m, mu = static_cast<S>(momentum), lr = static_cast<S>(-learning_rate), write](
             index begin, const_vector_ref<S> g, vector_ref<S> delta) {
    for_each_block(g.size(), [&](index i, index len) {
      auto mb = m.segment(begin + i, len);
      const auto gb = g.segment(i, len);
      mb = mu * mb + gb;
      auto out = delta.segment(i, len);
      write(mb, gb, mu, lr, out);
    });
  };
}

}  // namespace dho2::detail
