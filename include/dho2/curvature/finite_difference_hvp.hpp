/// @file
/// `dho2::finite_difference_hvp`: a Hessian-vector product for any `differentiable_model`, from
/// central finite differences of its gradient. The curvature code falls back on it for models
/// without an exact `hessian_vector_product`, and `dho2::testing::check_hvp` uses it as the
/// reference for models that have one.
#pragma once

#include <dho2/concepts/differentiable_model.hpp>
#include <dho2/core/types.hpp>

#include <algorithm>
#include <cmath>
#include <limits>

namespace dho2 {

/// The step h used by `finite_difference_hvp` at x along v:
///
///     h = ∛ε_S · max(1, ‖x‖) / ‖v‖,
///
/// so that the perturbation h·v has norm ∛ε_S · max(1, ‖x‖), relative to the size of x. ∛ε
/// balances the O(h²) truncation error of a central difference against its O(ε/h) round-off
/// (ε_S is the machine epsilon of S: h·‖v‖ ≈ 6e-6 in double, 5e-3 in float, for ‖x‖ ≤ 1).
/// Returns 0 when v = 0.
template <model_scalar S>
[[nodiscard]] S finite_difference_step(const_vector_ref<S> x, const_vector_ref<S> v) {
  const S v_norm = v.norm();
  if (v_norm == S(0)) return S(0);
  return std::cbrt(std::numeric_limits<S>::epsilon()) * std::max(S(1), x.norm()) / v_norm;
}

/// Writes an approximation of H(x)·v into `hv` by central differences of the gradient,
///
///     H(x) v ≈ (∇f(x + h v) − ∇f(x − h v)) / (2h),   h = finite_difference_step(x, v),
///
/// where f is the mean loss of `model` over `batch`. The error is O(h²‖∇³f‖) + O(ε‖∇f‖/h): about
/// 1e-10 relative in double and 1e-4 in float for smooth models. A piecewise-linear activation
/// such as ReLU adds an O(1/h) error wherever x ± h v moves a pre-activation across the kink: rare
/// in double, but in float (h‖v‖ ≈ 5e-3·‖x‖) it often makes the result useless for ReLU networks,
/// so prefer an exact product there (`dho2::mlp` has one). Costs two gradient evaluations
/// and two n-vectors of workspace. Writes zeros when v = 0. `hv` must not alias `x` or `v`.
/// Thread safety is the model's.
template <differentiable_model M>
void finite_difference_hvp(const M& model, const_vector_ref<model_scalar_t<M>> x,
                           const model_batch_t<M>& batch, const_vector_ref<model_scalar_t<M>> v,
                           vector_ref<model_scalar_t<M>> hv) {
  using S = model_scalar_t<M>;
  eigen_assert(v.size() == x.size() && hv.size() == x.size());
  const S h = finite_difference_step<S>(x, v);
  if (h == S(0)) {
    hv.setZero();
    return;
  }
  vector<S> point = x + h * v;
  vector<S> gradient_minus(x.size());
  static_cast<void>(model.loss_and_gradient(point, batch, hv));
  point = x - h * v;
  static_cast<void>(model.loss_and_gradient(point, batch, gradient_minus));
  hv -= gradient_minus;
  hv *= S(1) / (S(2) * h);
}

}  // namespace dho2
