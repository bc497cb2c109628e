/// @file
/// Derivative checkers for any model (in the spirit of Ceres' `GradientChecker`):
/// `dho2::testing::check_gradient` compares a model's gradient with central finite differences of
/// its loss, and `dho2::testing::check_hvp` compares its Hessian-vector product with central
/// finite differences of its gradient (`dho2::finite_difference_hvp`) and checks its symmetry.
/// Both probe along seeded random directions and return a `derivative_check_report`.
///
/// Typical use in a test:
/// ```
/// const auto report = dho2::testing::check_hvp(model, x, batch, /*probes=*/5, /*seed=*/1);
/// CHECK_MESSAGE(report.ok(1e-6), report.max_relative_error);
/// ```
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/concepts/differentiable_model.hpp>
#include <dho2/concepts/hvp_model.hpp>
#include <dho2/core/types.hpp>
#include <dho2/curvature/finite_difference_hvp.hpp>
#include <dho2/detail/random.hpp>

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <limits>

namespace dho2::testing {

/// What `check_gradient` and `check_hvp` measured, maximised over the probes.
struct derivative_check_report {
  /// Largest relative error between the model's derivative and the finite-difference one:
  /// |a − b| / max(|a|, |b|) for directional derivatives (`check_gradient`), ‖a − b‖ / max(‖a‖,
  /// ‖b‖) for Hessian-vector products (`check_hvp`); 0 when both are exactly 0.
  double max_relative_error = 0.0;
  /// Largest absolute error |a − b| (or ‖a − b‖), for points where the derivative vanishes and a
  /// relative error is meaningless.
  double max_absolute_error = 0.0;
  /// `check_hvp` only (0 for `check_gradient`): the largest |uᵀ(Hv) − vᵀ(Hu)| / max(‖u‖‖Hv‖,
  /// ‖v‖‖Hu‖) over pairs of random directions, with H·v the model's own product. Exact
  /// products are symmetric to round-off; this does not involve finite differences.
  double symmetry_error = 0.0;
  /// Number of random directions probed.
  int probes = 0;
  /// False if any loss, gradient or product evaluated was NaN or infinite.
  bool finite = true;

  /// True when every value was finite and both `max_relative_error` and `symmetry_error` are at
  /// most `tol`.
  [[nodiscard]] bool ok(double tol) const noexcept {
    return finite && max_relative_error <= tol && symmetry_error <= tol;
  }
};

}  // namespace dho2::testing

namespace dho2::detail {
template <model_scalar S>
void checker_fill_normal(xoshiro256& rng, vector<S>& u) {
  for (index i = 0; i < u.size(); ++i) u(i) = static_cast<S>(rng.normal());
}

inline double checker_relative_error(double difference, double a, double b) {
  const double scale = std::max(a, b);
  return scale > 0.0 ? difference / scale : (difference > 0.0 ? 1.0 : 0.0);
}

template <differentiable_model M>
model_scalar_t<M> checker_loss(const M& model, const_vector_ref<model_scalar_t<M>> x,
                               const model_batch_t<M>& batch, vector<model_scalar_t<M>>& scratch) {
  if constexpr (requires {
                  { model.loss(x, batch) } -> std::convertible_to<model_scalar_t<M>>;
                }) {
    static_cast<void>(scratch);
    return static_cast<model_scalar_t<M>>(model.loss(x, batch));
  } else {
    return static_cast<model_scalar_t<M>>(model.loss_and_gradient(x, batch, scratch));
  }
}
}  // namespace dho2::detail

namespace dho2::testing {

/// Checks `model.loss_and_gradient` at `x` on `batch` against central finite differences of the
/// loss along `probes` random directions u (standard normal entries drawn from `seed`):
///
///     a = ∇f(x)ᵀu,   b = (f(x + h u) − f(x − h u)) / (2h),   h = ∛ε_S · max(1, ‖x‖) / ‖u‖.
///
/// Uses `model.loss(x, batch)` when the model has it, `loss_and_gradient` otherwise. Expect
/// relative errors around 1e-9 in double and 1e-3 to 1e-2 in float for smooth models; choose `x`
/// where the gradient does not vanish (at a minimiser use `max_absolute_error`). In float, steps
/// across ReLU kinks can spoil the differences (see `dho2::finite_difference_hvp`).
template <differentiable_model M>
[[nodiscard]] derivative_check_report check_gradient(const M& model,
                                                     const_vector_ref<model_scalar_t<M>> x,
                                                     const model_batch_t<M>& batch, int probes,
                                                     std::uint64_t seed) {
  using S = model_scalar_t<M>;
  const index n = x.size();
  derivative_check_report report;
  report.probes = probes;
  vector<S> gradient(n);
  vector<S> scratch(n);
  vector<S> u(n);
  vector<S> point(n);
  const S loss = static_cast<S>(model.loss_and_gradient(x, batch, gradient));
  report.finite = std::isfinite(loss) && gradient.allFinite();
  detail::xoshiro256 rng(seed);
  for (int p = 0; p < probes; ++p) {
    detail::checker_fill_normal(rng, u);
    const S h = finite_difference_step<S>(x, u);
    point = x + h * u;
    const S loss_plus = detail::checker_loss(model, point, batch, scratch);
    point = x - h * u;
    const S loss_minus = detail::checker_loss(model, point, batch, scratch);
    report.finite = report.finite && std::isfinite(loss_plus) && std::isfinite(loss_minus);
    const double analytic = gradient.template cast<double>().dot(u.template cast<double>());
    const double numeric = (static_cast<double>(loss_plus) - static_cast<double>(loss_minus)) /
                           (2.0 * static_cast<double>(h));
    const double difference = std::abs(analytic - numeric);
    report.max_absolute_error = std::max(report.max_absolute_error, difference);
    report.max_relative_error =
        std::max(report.max_relative_error,
                 detail::checker_relative_error(difference, std::abs(analytic), std::abs(numeric)));
  }
  if (!report.finite) report.max_relative_error = std::numeric_limits<double>::infinity();
  return report;
}

/// Checks `model.hessian_vector_product` at `x` on `batch` along `probes` pairs of random
/// directions (u, v) drawn from `seed`:
///  - accuracy: H v against `dho2::finite_difference_hvp` (central differences of gradients,
///    h = ∛ε_S · max(1, ‖x‖) / ‖v‖), relative error ‖Hv − FD‖ / max(‖Hv‖, ‖FD‖);
///  - symmetry: |uᵀ(Hv) − vᵀ(Hu)| / max(‖u‖‖Hv‖, ‖v‖‖Hu‖) with the model's own products.
///
/// Costs per probe two model products and two gradients. A product scaled by a wrong factor is
/// caught by the accuracy check; a non-symmetric one by the symmetry check. Expect about 1e-9
/// (accuracy) and 1e-15 (symmetry) in double, 1e-4 and 1e-7 in float, for smooth models; in
/// float, ReLU networks defeat the finite differences (see `dho2::finite_difference_hvp`).
template <hvp_model M>
[[nodiscard]] derivative_check_report check_hvp(const M& model,
                                                const_vector_ref<model_scalar_t<M>> x,
                                                const model_batch_t<M>& batch, int probes,
                                                std::uint64_t seed) {
  using S = model_scalar_t<M>;
  const index n = x.size();
  derivative_check_report report;
  report.probes = probes;
  vector<S> u(n);
  vector<S> v(n);
  vector<S> hu(n);
  vector<S> hv(n);
  vector<S> reference(n);
  detail::xoshiro256 rng(seed);
  for (int p = 0; p < probes; ++p) {
    detail::checker_fill_normal(rng, v);
    detail::checker_fill_normal(rng, u);
    model.hessian_vector_product(x, batch, v, hv);
    model.hessian_vector_product(x, batch, u, hu);
    finite_difference_hvp(model, x, batch, v, reference);
    if (!hv.allFinite() || !hu.allFinite() || !reference.allFinite()) {
      report.finite = false;
      continue;
    }
    const vector<double> hv_d = hv.template cast<double>();
    const vector<double> hu_d = hu.template cast<double>();
    const vector<double> u_d = u.template cast<double>();
    const vector<double> v_d = v.template cast<double>();
    const double difference = (hv_d - reference.template cast<double>()).norm();
    report.max_absolute_error = std::max(report.max_absolute_error, difference);
    report.max_relative_error =
        std::max(report.max_relative_error,
                 detail::checker_relative_error(difference, hv_d.norm(),
                                                reference.template cast<double>().norm()));
    const double asymmetry = std::abs(u_d.dot(hv_d) - v_d.dot(hu_d));
    report.symmetry_error = std::max(
        report.symmetry_error, detail::checker_relative_error(asymmetry, u_d.norm() * hv_d.norm(),
                                                              v_d.norm() * hu_d.norm()));
  }
  if (!report.finite) report.max_relative_error = std::numeric_limits<double>::infinity();
  return report;
}

}  // namespace dho2::testing
