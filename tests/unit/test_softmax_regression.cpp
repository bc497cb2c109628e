// Oracles for dho2::softmax_regression: loss and gradient against forward-mode automatic
// differentiation of the textbook formula, the exact Hessian-vector product against the Hessian
// from nested (second-order) autodiff and against finite differences, float against double.
#include <dho2/models/softmax_regression.hpp>
#include <dho2/testing/hvp_checker.hpp>
#include <dho2/testing/random_batch.hpp>

#include <Eigen/Eigenvalues>
#include <doctest/doctest.h>
#include <unsupported/Eigen/AutoDiff>

#include <cmath>
#include <vector>

namespace {

using inner_ad = Eigen::AutoDiffScalar<Eigen::VectorXd>;
using inner_vector = Eigen::Matrix<inner_ad, Eigen::Dynamic, 1>;
using outer_ad = Eigen::AutoDiffScalar<inner_vector>;

// (1/B) Σⱼ [log Σₖ exp(zₖⱼ) − z_{yⱼ j}] + (λ/2)‖W‖², zₖⱼ = Σᵢ W[k + C·i] xᵢⱼ + b[k], written
// one coefficient at a time for any scalar T. Shares no code with dho2::softmax_regression.
template <class T>
T reference_loss(dho2::index classes, double l2, const std::vector<T>& x,
                 const Eigen::MatrixXd& inputs, const Eigen::VectorXi& labels) {
  using std::exp;
  using std::log;
  const auto c = static_cast<std::size_t>(classes);
  const auto f = static_cast<std::size_t>(inputs.rows());
  T total(0.0);
  for (dho2::index j = 0; j < inputs.cols(); ++j) {
    T sum(0.0);
    T label_logit(0.0);
    for (std::size_t k = 0; k < c; ++k) {
      T z = x[c * f + k];
      for (std::size_t i = 0; i < f; ++i) {
        z = z + x[k + c * i] * T(inputs(static_cast<dho2::index>(i), j));
      }
      sum = sum + exp(z);
      if (static_cast<int>(k) == labels(j)) label_logit = z;
    }
    total = total + log(sum) - label_logit;
  }
  T loss = total / T(static_cast<double>(inputs.cols()));
  for (std::size_t i = 0; i < c * f; ++i) loss = loss + T(0.5 * l2) * x[i] * x[i];
  return loss;
}

struct reference_derivatives {
  double loss = 0.0;
  Eigen::VectorXd gradient;
  Eigen::MatrixXd hessian;
};

// First-order forward-mode autodiff for the gradient; forward-over-forward for the Hessian.
reference_derivatives autodiff_reference(dho2::index classes, double l2, const Eigen::VectorXd& x,
                                         const Eigen::MatrixXd& inputs,
                                         const Eigen::VectorXi& labels) {
  const dho2::index n = x.size();
  const int dims = static_cast<int>(n);
  reference_derivatives result;
  std::vector<inner_ad> first;
  for (dho2::index i = 0; i < n; ++i) first.emplace_back(x(i), dims, static_cast<int>(i));
  const inner_ad loss1 = reference_loss(classes, l2, first, inputs, labels);
  result.loss = loss1.value();
  result.gradient = loss1.derivatives();
  std::vector<outer_ad> second;
  for (dho2::index i = 0; i < n; ++i) {
    inner_vector direction(n);
    for (dho2::index k = 0; k < n; ++k) {
      direction(k) = inner_ad(k == i ? 1.0 : 0.0, Eigen::VectorXd::Zero(n));
    }
    second.emplace_back(inner_ad(x(i), dims, static_cast<int>(i)), direction);
  }
  const outer_ad loss2 = reference_loss(classes, l2, second, inputs, labels);
  result.hessian.resize(n, n);
  for (dho2::index i = 0; i < n; ++i) {
    const Eigen::VectorXd& row = loss2.derivatives()(i).derivatives();
    REQUIRE_MESSAGE(row.size() == n, "nested autodiff lost the second derivatives of " << i);
    result.hessian.row(i) = row.transpose();
  }
  return result;
}

Eigen::VectorXd random_vector(dho2::index n, std::uint64_t seed) {
  dho2::detail::xoshiro256 rng(seed);
  Eigen::VectorXd v(n);
  for (dho2::index i = 0; i < n; ++i) v(i) = rng.normal();
  return v;
}

double relative_error(const Eigen::MatrixXd& actual, const Eigen::MatrixXd& expected) {
  return (actual - expected).norm() / std::max(expected.norm(), 1e-300);
}

}  // namespace

TEST_CASE("softmax_regression: loss, gradient and Hessian equal nested forward-mode autodiff") {
  const dho2::softmax_regression<double> model(5, 3, 0.07);
  const auto batch = dho2::testing::random_batch<double>(5, 3, 7, 31);
  const dho2::index n = model.num_parameters();
  const Eigen::VectorXd x = 0.5 * random_vector(n, 32);
  const auto reference = autodiff_reference(3, 0.07, x, batch.inputs, batch.labels);

  Eigen::VectorXd gradient(n);
  const double loss = model.loss_and_gradient(x, batch, gradient);
  CHECK_MESSAGE(std::abs(loss - reference.loss) <= 1e-12 * reference.loss, "expected loss ",
                reference.loss, ", got ", loss);
  CHECK_MESSAGE(model.loss(x, batch) == doctest::Approx(loss).epsilon(1e-15),
                "loss() must equal the loss returned by loss_and_gradient()");
  const double gradient_error = relative_error(gradient, reference.gradient);
  CHECK_MESSAGE(gradient_error < 1e-12, "gradient differs from autodiff by relative ",
                gradient_error, " (expected < 1e-12)");

  Eigen::MatrixXd from_products(n, n);
  Eigen::VectorXd hv(n);
  for (dho2::index i = 0; i < n; ++i) {
    model.hessian_vector_product(x, batch, Eigen::VectorXd::Unit(n, i), hv);
    from_products.col(i) = hv;
  }
  const double hessian_error = relative_error(from_products, reference.hessian);
  CHECK_MESSAGE(hessian_error < 1e-6,
                "Hessian assembled from HVPs differs from nested autodiff "
                "by ",
                hessian_error, " (expected < 1e-6)");
  const Eigen::VectorXd v = random_vector(n, 33);
  model.hessian_vector_product(x, batch, v, hv);
  CHECK_MESSAGE(relative_error(hv, reference.hessian * v) < 1e-6,
                "H v differs from the autodiff Hessian times v");
  const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eigen(reference.hessian);
  CHECK_MESSAGE(eigen.eigenvalues().minCoeff() > -1e-12,
                "the loss is convex: the reference Hessian must be positive semi-definite");
}

TEST_CASE("softmax_regression: gradient and HVP agree with finite differences") {
  const dho2::softmax_regression<double> model(6, 4, 0.01);
  const auto batch = dho2::testing::random_batch<double>(6, 4, 11, 34);
  const Eigen::VectorXd x = random_vector(model.num_parameters(), 35);
  const auto gradient_report = dho2::testing::check_gradient(model, x, batch, 6, 36);
  CHECK_MESSAGE(gradient_report.ok(1e-6), "gradient vs finite differences: relative error ",
                gradient_report.max_relative_error, " (expected < 1e-6)");
  const auto hvp_report = dho2::testing::check_hvp(model, x, batch, 6, 37);
  CHECK_MESSAGE(hvp_report.ok(1e-6), "HVP vs finite differences: relative error ",
                hvp_report.max_relative_error, ", symmetry ", hvp_report.symmetry_error,
                " (expected both < 1e-6)");
}

TEST_CASE("softmax_regression: float agrees with double within 1e-3") {
  const dho2::softmax_regression<double> model_d(8, 5, 1e-3);
  const dho2::softmax_regression<float> model_f(8, 5, 1e-3);
  const auto batch_d = dho2::testing::random_batch<double>(8, 5, 40, 38);
  const dho2::classification_batch<float> batch_f{batch_d.inputs.cast<float>(), batch_d.labels};
  const dho2::index n = model_d.num_parameters();
  const Eigen::VectorXd x = random_vector(n, 39);
  const Eigen::VectorXd v = random_vector(n, 40);
  Eigen::VectorXd g_d(n);
  Eigen::VectorXf g_f(n);
  Eigen::VectorXd hv_d(n);
  Eigen::VectorXf hv_f(n);
  const double loss_d = model_d.loss_and_gradient(x, batch_d, g_d);
  const float loss_f = model_f.loss_and_gradient(x.cast<float>(), batch_f, g_f);
  model_d.hessian_vector_product(x, batch_d, v, hv_d);
  model_f.hessian_vector_product(x.cast<float>(), batch_f, v.cast<float>(), hv_f);
  CHECK(static_cast<double>(loss_f) == doctest::Approx(loss_d).epsilon(1e-5));
  CHECK_MESSAGE(relative_error(g_f.cast<double>(), g_d) < 1e-3, "float gradient differs");
  CHECK_MESSAGE(relative_error(hv_f.cast<double>(), hv_d) < 1e-3, "float HVP differs");
  const auto report = dho2::testing::check_hvp(model_f, x.cast<float>(), batch_f, 3, 41);
  CHECK_MESSAGE(report.ok(1e-3), "float HVP vs finite differences: ", report.max_relative_error);
}

TEST_CASE("softmax_regression: layout, start point, accuracy and input validation") {
  const dho2::softmax_regression<double> model(4, 3, 0.5);
  CHECK(model.num_parameters() == 15);
  CHECK(model.parameter_blocks() == std::vector<dho2::index>{12, 3});
  const Eigen::VectorXd zero = model.initial_point();
  CHECK_MESSAGE(zero.norm() == 0.0, "the start point is all zeros");
  const auto batch = dho2::testing::random_batch<double>(4, 3, 10, 42);
  CHECK_MESSAGE(model.loss(zero, batch) == doctest::Approx(std::log(3.0)).epsilon(1e-15),
                "at zero every class has probability 1/3: loss log 3");

  // Column-major W: entry (k, i) at k + 3 i. W = [I₃ | 0] scores class k by feature k.
  Eigen::VectorXd x = Eigen::VectorXd::Zero(15);
  for (dho2::index k = 0; k < 3; ++k) x(k + 3 * k) = 1.0;
  dho2::classification_batch<double> labelled;
  labelled.inputs.resize(4, 4);
  labelled.inputs << 5, 0, 0, 5,  //
      0, 5, 0, 0,                 //
      0, 0, 5, 0,                 //
      9, 9, 9, 9;
  labelled.labels.resize(4);
  labelled.labels << 0, 1, 2, 1;
  CHECK(model.predict(x, labelled.inputs) == Eigen::Vector4i(0, 1, 2, 0));
  CHECK_MESSAGE(model.accuracy(x, labelled) == 0.75, "three of four predictions are right");

  Eigen::VectorXd g(15);
  dho2::classification_batch<double> wrong{Eigen::MatrixXd::Zero(5, 2), Eigen::VectorXi::Zero(2)};
  CHECK_THROWS_WITH_AS(model.loss_and_gradient(x, wrong, g),
                       "softmax_regression: batch.inputs has 5 rows, the model expects 4 features",
                       dho2::data_error);
  dho2::classification_batch<double> short_labels{Eigen::MatrixXd::Zero(4, 2),
                                                  Eigen::VectorXi::Zero(1)};
  CHECK_THROWS_WITH_AS(static_cast<void>(model.loss(x, short_labels)),
                       "softmax_regression: batch has 2 samples but 1 labels", dho2::data_error);
  dho2::classification_batch<double> bad_label{Eigen::MatrixXd::Zero(4, 2),
                                               Eigen::VectorXi::Constant(2, -1)};
  CHECK_THROWS_WITH_AS(static_cast<void>(model.accuracy(x, bad_label)),
                       "softmax_regression: batch.labels(0) = -1 is outside [0, 3)",
                       dho2::data_error);
  CHECK_THROWS_WITH_AS(dho2::softmax_regression<double>(0, 3),
                       "features = 0. Violated constraint: features >= 1", dho2::invalid_options);
  CHECK_THROWS_WITH_AS(dho2::softmax_regression<double>(4, 1),
                       "classes = 1. Violated constraint: classes >= 2", dho2::invalid_options);
  CHECK_THROWS_WITH_AS(dho2::softmax_regression<float>(4, 3, -0.5),
                       "l2 = -0.5. Violated constraint: finite and >= 0", dho2::invalid_options);
}

TEST_CASE("softmax_regression: weight decay gives the exact λ-shifted curvature on no data") {
  const dho2::softmax_regression<double> model(3, 2, 0.25);
  const dho2::classification_batch<double> empty{Eigen::MatrixXd(3, 0), Eigen::VectorXi(0)};
  const Eigen::VectorXd x = random_vector(model.num_parameters(), 43);
  const Eigen::VectorXd v = random_vector(model.num_parameters(), 44);
  Eigen::VectorXd hv(model.num_parameters());
  model.hessian_vector_product(x, empty, v, hv);
  Eigen::VectorXd expected = 0.25 * v;
  expected.tail(2).setZero();  // the bias is not decayed
  CHECK_MESSAGE((hv - expected).norm() == 0.0, "on an empty batch H v = λ (V, 0)");
}
