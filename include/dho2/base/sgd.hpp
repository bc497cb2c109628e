/// @file
/// `dho2::sgd`: plain stochastic gradient descent as a FOSI base optimizer.
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/concepts/base_optimizer.hpp>
#include <dho2/detail/agreement.hpp>
#include <dho2/detail/validate.hpp>

#include <cstddef>
#include <string>

namespace dho2 {

/// Plain SGD: Δx = −η·g. Stateless; the template to copy when writing a base optimizer.
struct sgd {
  /// Learning rate η (> 0).
  double learning_rate = 0.01;

  /// Run state: none.
  template <model_scalar S>
  struct state {
    /// Bytes held by the state (0).
    [[nodiscard]] std::size_t bytes() const noexcept { return 0; }
    /// Calls f(name, field) on each field (none): what a checkpoint saves and restores.
    template <class F>
    void visit_fields(F&& /*f*/) {}
  };

  /// The hyper-parameters as text, "sgd" then each as name=value (what the ranks of a job
  /// must share; `dho2::optimizer` checks it at its first step).
  [[nodiscard]] std::string identity() const {
    return std::string("sgd") + " learning_rate=" + detail::exact_text(learning_rate);
  }
  /// Throws `dho2::invalid_options` if `learning_rate` is not finite and positive.
  void validate() const { detail::require_finite_positive("sgd::learning_rate", learning_rate); }

  /// A fresh (empty) state for `n` parameters.
  template <model_scalar S>
  [[nodiscard]] state<S> init(index /*n*/) const {
    return {};
  }

  /// Starts a step: returns its step kernel (the `base_optimizer` concept's optional
  /// `begin_step`), delta = −η·g on any block of entries.
  template <model_scalar S>
  [[nodiscard]] auto begin_step(state<S>& /*st*/) const {
    return [lr = static_cast<S>(-learning_rate)](index /*begin*/, const_vector_ref<S> g,
                                                 vector_ref<S> delta) { delta = lr * g; };
  }

  /// delta = −η·g.
  template <model_scalar S>
  void step(state<S>& st, const_vector_ref<S> g, vector_ref<S> delta) const {
    begin_step(st)(0, g, delta);
  }
};

static_assert(base_optimizer<sgd, float> && base_optimizer<sgd, double>);
static_assert(detail::has_step_kernel<sgd, float> && detail::has_step_kernel<sgd, double>);

}  // namespace dho2
