// The derivative checkers must be able to fail: a model whose HVP is off by a factor, whose HVP
// is not symmetric, whose gradient is scaled or whose product is NaN is caught, while correct
// models pass. Also checks dho2::finite_difference_hvp and the model archetypes.
#include <dho2/curvature/finite_difference_hvp.hpp>
#include <dho2/models/quadratic.hpp>
#include <dho2/testing/hvp_checker.hpp>
#include <dho2/testing/model_archetype.hpp>
#include <dho2/testing/planted_spectrum.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <limits>

namespace {

// A quadratic whose gradient and HVP can be corrupted on purpose.
struct faulty_quadratic {
  using scalar_type = double;
  using batch_type = dho2::quadratic<double>::batch;

  dho2::quadratic<double> exact;
  double gradient_factor = 1.0;
  double hvp_factor = 1.0;
  double skew = 0.0;  // adds skew · K v, K skew-symmetric, so that uᵀ(Hv) ≠ vᵀ(Hu)
  bool nan_hvp = false;

  [[nodiscard]] dho2::index num_parameters() const { return exact.num_parameters(); }
  double loss_and_gradient(dho2::const_vector_ref<double> x, const batch_type& b,
                           dho2::vector_ref<double> g) const {
    const double loss = exact.loss_and_gradient(x, b, g);
    g *= gradient_factor;
    return loss;
  }
  void hessian_vector_product(dho2::const_vector_ref<double> x, const batch_type& b,
                              dho2::const_vector_ref<double> v, dho2::vector_ref<double> hv) const {
    exact.hessian_vector_product(x, b, v, hv);
    hv *= hvp_factor;
    if (skew != 0.0) {
      const dho2::index n = v.size();
      for (dho2::index i = 0; i + 1 < n; i += 2) {
        hv(i) += skew * v(i + 1);
        hv(i + 1) -= skew * v(i);
      }
    }
    if (nan_hvp) hv(0) = std::numeric_limits<double>::quiet_NaN();
  }
};

faulty_quadratic make_faulty() {
  return {dho2::quadratic<double>(dho2::testing::geometric(20, 5.0, 0.8), 3)};
}

}  // namespace

static_assert(dho2::hvp_model<faulty_quadratic>);

TEST_CASE("hvp_checker: a correct model passes both checks") {
  const auto model = make_faulty();
  const Eigen::VectorXd x = model.exact.initial_point();
  const auto gradient_report = dho2::testing::check_gradient(model, x, {}, 5, 1);
  CHECK_MESSAGE(gradient_report.ok(1e-8), "exact gradient should pass, relative error ",
                gradient_report.max_relative_error);
  CHECK(gradient_report.probes == 5);
  CHECK(gradient_report.symmetry_error == 0.0);
  const auto hvp_report = dho2::testing::check_hvp(model, x, {}, 5, 2);
  CHECK_MESSAGE(hvp_report.ok(1e-8), "exact HVP should pass, relative error ",
                hvp_report.max_relative_error, ", symmetry ", hvp_report.symmetry_error);
  CHECK(hvp_report.finite);
}

TEST_CASE("hvp_checker: check_hvp detects an HVP off by a factor") {
  auto model = make_faulty();
  model.hvp_factor = 1.5;
  const Eigen::VectorXd x = model.exact.initial_point();
  const auto report = dho2::testing::check_hvp(model, x, {}, 3, 4);
  CHECK_MESSAGE(!report.ok(1e-3), "a 1.5× HVP must fail the check");
  // ‖1.5 Hv − Hv‖ / max(‖1.5 Hv‖, ‖Hv‖) = 1/3 up to the finite-difference error.
  CHECK_MESSAGE(std::abs(report.max_relative_error - 1.0 / 3.0) < 1e-6,
                "expected relative error 1/3, got ", report.max_relative_error);
  CHECK_MESSAGE(report.symmetry_error < 1e-12, "a scaled symmetric product is still symmetric");
}

TEST_CASE("hvp_checker: check_hvp detects a non-symmetric product") {
  auto model = make_faulty();
  model.skew = 0.5;
  const auto report = dho2::testing::check_hvp(model, model.exact.initial_point(), {}, 3, 5);
  CHECK_MESSAGE(report.symmetry_error > 1e-2, "a skew part must show in the symmetry error, got ",
                report.symmetry_error);
  CHECK(!report.ok(1e-3));
}

TEST_CASE("hvp_checker: check_gradient detects a scaled gradient, NaN products fail") {
  auto model = make_faulty();
  model.gradient_factor = 1.01;
  const Eigen::VectorXd x = model.exact.initial_point();
  const auto report = dho2::testing::check_gradient(model, x, {}, 3, 6);
  CHECK_MESSAGE(!report.ok(1e-4), "a gradient 1% too large must fail at tol 1e-4, error ",
                report.max_relative_error);
  CHECK_MESSAGE(report.max_relative_error > 5e-3, "expected about 0.01/1.01, got ",
                report.max_relative_error);

  auto broken = make_faulty();
  broken.nan_hvp = true;
  const auto nan_report = dho2::testing::check_hvp(broken, x, {}, 2, 7);
  CHECK_MESSAGE(!nan_report.finite, "a NaN product must be reported as non-finite");
  CHECK_MESSAGE(!nan_report.ok(1.0), "a NaN product never passes, whatever the tolerance");
}

TEST_CASE("hvp_checker: finite_difference_hvp is exact on a quadratic up to round-off") {
  const dho2::quadratic<double> q(dho2::testing::geometric(15, 3.0, 0.7), 9);
  const Eigen::VectorXd x = q.initial_point();
  Eigen::VectorXd v = Eigen::VectorXd::LinSpaced(15, -1.0, 1.0);
  Eigen::VectorXd hv(15);
  dho2::finite_difference_hvp(q, x, {}, v, hv);
  const Eigen::VectorXd expected = q.hessian() * v;
  CHECK_MESSAGE((hv - expected).norm() <= 1e-9 * expected.norm(),
                "central differences of a linear gradient are exact up to round-off");
  const double h = dho2::finite_difference_step<double>(x, v);
  CHECK(h == doctest::Approx(std::cbrt(std::numeric_limits<double>::epsilon()) *
                             std::max(1.0, x.norm()) / v.norm()));
  v.setZero();
  hv.setConstant(7.0);
  dho2::finite_difference_hvp(q, x, {}, v, hv);
  CHECK_MESSAGE(hv.norm() == 0.0, "the product with v = 0 is 0");
}

TEST_CASE("hvp_checker: the model archetypes satisfy exactly their concepts and run") {
  static_assert(dho2::differentiable_model<dho2::testing::model_archetype>);
  static_assert(!dho2::hvp_model<dho2::testing::model_archetype>);
  static_assert(dho2::hvp_model<dho2::testing::hvp_model_archetype>);
  static_assert(dho2::hvp_model<dho2::testing::basic_hvp_model_archetype<float>>);
  const dho2::testing::hvp_model_archetype model(6);
  const Eigen::VectorXd x = Eigen::VectorXd::LinSpaced(6, 1.0, 6.0);
  CHECK(dho2::testing::check_gradient(model, x, {}, 3, 10).ok(1e-8));
  CHECK(dho2::testing::check_hvp(model, x, {}, 3, 11).ok(1e-8));
  const dho2::testing::model_archetype plain(6);
  Eigen::VectorXd hv(6);
  dho2::finite_difference_hvp(plain, x, {}, x, hv);
  CHECK_MESSAGE((hv - x).norm() <= 1e-9 * x.norm(), "H = I for ½‖x‖²");
}
