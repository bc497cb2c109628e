/// @file
/// `dho2::adam`: Adam (Kingma & Ba, 2015) with bias correction as a FOSI base optimizer.
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/concepts/base_optimizer.hpp>
#include <dho2/core/detail/blocks.hpp>
#include <dho2/detail/agreement.hpp>
#include <dho2/detail/validate.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

namespace dho2 {

/// Adam with bias correction. With step count t (starting at 1):
/// \f[ m \leftarrow \beta_1 m + (1-\beta_1) g,\quad v \leftarrow \beta_2 v + (1-\beta_2) g^2,\quad
///     \Delta x = -\eta\,\frac{m/(1-\beta_1^t)}{\sqrt{v/(1-\beta_2^t)} + \epsilon}. \f]
/// Evaluated in the equivalent form Δx = −η_t m / (√v + ε_t) with
/// η_t = η√(1−β₂ᵗ)/(1−β₁ᵗ) and ε_t = ε√(1−β₂ᵗ), so one pass needs no per-element division by
/// the corrections. FOSI's default clip for Adam is 1 (`default_clip`), as in the reference.
struct adam {
  /// Learning rate η (> 0).
  double learning_rate = 1e-3;
  /// First-moment decay β₁ in [0, 1).
  double beta1 = 0.9;
  /// Second-moment decay β₂ in [0, 1).
  double beta2 = 0.999;
  /// ε (> 0) added to √v̂.
  double epsilon = 1e-8;

  /// FOSI's scaling clip c for Adam.
  static constexpr double default_clip = 1.0;

  /// Run state: moments m, v and the step count t.
  template <model_scalar S>
  struct state {
    /// First moment, one entry per parameter.
    vector<S> m;
    /// Second moment, one entry per parameter.
    vector<S> v;
    /// Steps taken so far.
    std::int64_t t = 0;
    /// Bytes held by the state.
    [[nodiscard]] std::size_t bytes() const noexcept {
      return static_cast<std::size_t>(m.size() + v.size()) * sizeof(S);
    }
    /// Calls f(name, field) on each field (m, v, t): what a checkpoint saves and restores.
    template <class F>
    void visit_fields(F&& f) {
      f("m", m);
      f("v", v);
      f("t", t);
    }
  };

  /// The hyper-parameters as text, "adam" then each as name=value (what the ranks of a job
  /// must share; `dho2::optimizer` checks it at its first step).
  [[nodiscard]] std::string identity() const {
    return std::string("adam") + " learning_rate=" + detail::exact_text(learning_rate) +
           " beta1=" + detail::exact_text(beta1) + " beta2=" + detail::exact_text(beta2) +
           " epsilon=" + detail::exact_text(epsilon);
  }
  /// Throws `dho2::invalid_options` for bad hyper-parameters.
  void validate() const {
    detail::require_finite_positive("adam::learning_rate", learning_rate);
    detail::require_unit_interval("adam::beta1", beta1);
    detail::require_unit_interval("adam::beta2", beta2);
    detail::require_finite_positive("adam::epsilon", epsilon);
  }

  /// Zero moments for `n` parameters.
  template <model_scalar S>
  [[nodiscard]] state<S> init(index n) const {
    return {vector<S>::Zero(n), vector<S>::Zero(n), 0};
  }

  /// Starts a bias-corrected Adam step: advances t and returns its step kernel (the
  /// `base_optimizer` concept's optional `begin_step`), which updates m, v and writes Δx on
  /// entries [begin, begin + g.size()) in one pass, block by block.
  template <model_scalar S>
  [[nodiscard]] auto begin_step(state<S>& st) const {
    ++st.t;
    const double t = static_cast<double>(st.t);
    const double c1 = 1.0 - std::pow(beta1, t);
    const double c2 = std::sqrt(1.0 - std::pow(beta2, t));
    const auto b1 = static_cast<S>(beta1);
    const auto b2 = static_cast<S>(beta2);
    const auto lr_t = static_cast<S>(learning_rate * c2 / c1);
    const auto eps_t = static_cast<S>(epsilon * c2);
    const auto one_minus_b1 = static_cast<S>(1.0 - beta1);  // in double: 1 − 0.999f is inexact
    const auto one_minus_b2 = static_cast<S>(1.0 - beta2);
    return [&m = st.m, &v = st.v, b1, b2, lr_t, eps_t, one_minus_b1, one_minus_b2](
               index begin, const_vector_ref<S> g, vector_ref<S> delta) {
      detail::for_each_block(g.size(), [&](index i, index len) {
        auto mb = m.segment(begin + i, len).array();
        auto vb = v.segment(begin + i, len).array();
        const auto gb = g.segment(i, len).array();
        mb = b1 * mb + one_minus_b1 * gb;
        vb = b2 * vb + one_minus_b2 * gb.square();
        delta.segment(i, len).array() = -lr_t * mb / (vb.sqrt() + eps_t);
      });
    };
  }

  /// One bias-corrected Adam step (see the class doc).
  template <model_scalar S>
  void step(state<S>& st, const_vector_ref<S> g, vector_ref<S> delta) const {
    begin_step(st)(0, g, delta);
  }
};

static_assert(base_optimizer<adam, float> && base_optimizer<adam, double>);
static_assert(detail::has_step_kernel<adam, float> && detail::has_step_kernel<adam, double>);

}  // namespace dho2
