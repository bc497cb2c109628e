// Oracles for dho2::mlp, for both output losses (softmax cross-entropy and squared reconstruction
// error): loss and gradient against forward-mode automatic differentiation of an independent
// naive forward pass, the R-operator Hessian-vector product against the full Hessian from nested
// (second-order) forward-mode autodiff and against finite differences, the linear autoencoder's
// Hessian against its closed form, float against double, and the layer-spec parser's error
// messages.
#include <dho2/models/mlp.hpp>
#include <dho2/models/softmax_regression.hpp>
#include <dho2/testing/hvp_checker.hpp>
#include <dho2/testing/random_batch.hpp>

#include <doctest/doctest.h>
#include <unsupported/Eigen/AutoDiff>

#include <cmath>
#include <string>
#include <thread>
#include <vector>

namespace {

using inner_ad = Eigen::AutoDiffScalar<Eigen::VectorXd>;
using inner_vector = Eigen::Matrix<inner_ad, Eigen::Dynamic, 1>;
using outer_ad = Eigen::AutoDiffScalar<inner_vector>;

double value_of(double z) { return z; }
double value_of(const inner_ad& z) { return z.value(); }
double value_of(const outer_ad& z) { return z.value().value(); }

// The loss of an MLP written directly from its definition, one sample and one neuron at a time,
// for any scalar type T (double or an autodiff scalar). Shares no code with dho2::mlp.
// Cross-entropy: −log softmax(z)[label]; reconstruction: ½ Σᵢ (zᵢ − inputᵢ)² (labels unused).
template <class T>
T reference_loss(const std::vector<dho2::index>& layers, dho2::activation act, double l2,
                 const std::vector<T>& x, const Eigen::MatrixXd& inputs,
                 const Eigen::VectorXi& labels,
                 dho2::mlp_loss kind = dho2::mlp_loss::softmax_cross_entropy) {
  using std::exp;
  using std::log;
  using std::tanh;
  const std::size_t depth = layers.size() - 1;
  T total(0.0);
  for (dho2::index j = 0; j < inputs.cols(); ++j) {
    std::vector<T> current;
    for (dho2::index k = 0; k < inputs.rows(); ++k) current.push_back(T(inputs(k, j)));
    std::size_t offset = 0;
    for (std::size_t l = 0; l < depth; ++l) {
      const auto in = static_cast<std::size_t>(layers[l]);
      const auto out = static_cast<std::size_t>(layers[l + 1]);
      std::vector<T> next;
      for (std::size_t i = 0; i < out; ++i) {
        T z = x[offset + out * in + i];
        for (std::size_t k = 0; k < in; ++k) z = z + x[offset + i + out * k] * current[k];
        if (l + 1 < depth) {
          if (act == dho2::activation::tanh) {
            z = tanh(z);
          } else if (!(value_of(z) > 0.0)) {
            z = T(0.0);
          }
        }
        next.push_back(z);
      }
      current = next;
      offset += out * in + out;
    }
    if (kind == dho2::mlp_loss::softmax_cross_entropy) {
      T sum(0.0);
      for (const T& z : current) sum = sum + exp(z);
      total = total + log(sum) - current[static_cast<std::size_t>(labels(j))];
    } else {
      for (std::size_t i = 0; i < current.size(); ++i) {
        const T r = current[i] - T(inputs(static_cast<dho2::index>(i), j));
        total = total + T(0.5) * r * r;
      }
    }
  }
  T loss = total / T(static_cast<double>(inputs.cols()));
  std::size_t offset = 0;
  for (std::size_t l = 0; l < depth; ++l) {
    const auto in = static_cast<std::size_t>(layers[l]);
    const auto out = static_cast<std::size_t>(layers[l + 1]);
    for (std::size_t i = 0; i < out * in; ++i) {
      loss = loss + T(0.5 * l2) * x[offset + i] * x[offset + i];
    }
    offset += out * in + out;
  }
  return loss;
}

struct reference_derivatives {
  double loss = 0.0;
  Eigen::VectorXd gradient;
  Eigen::MatrixXd hessian;
};

// Gradient by first-order forward-mode autodiff; Hessian by forward-over-forward autodiff (each
// outer derivative is itself an autodiff scalar carrying n inner derivatives).
reference_derivatives autodiff_reference(
    const std::vector<dho2::index>& layers, dho2::activation act, double l2,
    const Eigen::VectorXd& x, const Eigen::MatrixXd& inputs, const Eigen::VectorXi& labels,
    dho2::mlp_loss kind = dho2::mlp_loss::softmax_cross_entropy) {
  const dho2::index n = x.size();
  const int dims = static_cast<int>(n);
  reference_derivatives result;
  std::vector<inner_ad> first;
  for (dho2::index i = 0; i < n; ++i) first.emplace_back(x(i), dims, static_cast<int>(i));
  const inner_ad loss1 = reference_loss(layers, act, l2, first, inputs, labels, kind);
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
  const outer_ad loss2 = reference_loss(layers, act, l2, second, inputs, labels, kind);
  result.hessian.resize(n, n);
  for (dho2::index i = 0; i < n; ++i) {
    const Eigen::VectorXd& row = loss2.derivatives()(i).derivatives();
    REQUIRE_MESSAGE(row.size() == n, "nested autodiff lost the second-order derivatives of " << i);
    result.hessian.row(i) = row.transpose();
  }
  return result;
}

Eigen::VectorXd random_vector(dho2::index n, std::uint64_t seed, double scale = 1.0) {
  dho2::detail::xoshiro256 rng(seed);
  Eigen::VectorXd v(n);
  for (dho2::index i = 0; i < n; ++i) v(i) = scale * rng.normal();
  return v;
}

double relative_error(const Eigen::MatrixXd& actual, const Eigen::MatrixXd& expected) {
  return (actual - expected).norm() / std::max(expected.norm(), 1e-300);
}

std::string name(dho2::activation act) { return act == dho2::activation::relu ? "relu" : "tanh"; }

// A small net per output loss: a 5-4-3 classifier and a 5-4-5 autoencoder.
struct loss_case {
  dho2::mlp_loss loss;
  std::vector<dho2::index> layers;
};
const std::vector<loss_case>& loss_cases() {
  static const std::vector<loss_case> cases{
      {dho2::mlp_loss::softmax_cross_entropy, {5, 4, 3}},
      {dho2::mlp_loss::squared_error_reconstruction, {5, 4, 5}}};
  return cases;
}

}  // namespace

TEST_CASE("mlp: loss and gradient equal forward-mode autodiff of a naive forward pass") {
  const auto batch = dho2::testing::random_batch<double>(5, 3, 7, 11);
  for (const auto& [kind, layers] : loss_cases()) {
    for (const auto act : {dho2::activation::tanh, dho2::activation::relu}) {
      const dho2::mlp<double> model(layers, act, 0.05, kind);
      const Eigen::VectorXd x = model.initialize(3) + random_vector(model.num_parameters(), 4, 0.1);
      const auto reference =
          autodiff_reference(layers, act, 0.05, x, batch.inputs, batch.labels, kind);
      Eigen::VectorXd gradient(model.num_parameters());
      const double loss = model.loss_and_gradient(x, batch, gradient);
      INFO("activation ", name(act), ", loss ", dho2::to_string(kind));
      CHECK_MESSAGE(std::abs(loss - reference.loss) <= 1e-12 * std::abs(reference.loss),
                    "expected loss ", reference.loss, ", got ", loss);
      CHECK_MESSAGE(std::abs(model.loss(x, batch) - loss) <= 1e-14 * std::abs(loss),
                    "loss() must equal the loss returned by loss_and_gradient()");
      const double error = relative_error(gradient, reference.gradient);
      CHECK_MESSAGE(error < 1e-12, "gradient differs from autodiff by relative ", error,
                    " (expected < 1e-12)");
    }
  }
}

TEST_CASE("mlp: R-operator HVP equals the nested-autodiff Hessian, column by column") {
  const auto batch = dho2::testing::random_batch<double>(5, 3, 7, 12);
  for (const auto& [kind, layers] : loss_cases()) {
    for (const auto act : {dho2::activation::tanh, dho2::activation::relu}) {
      const dho2::mlp<double> model(layers, act, 0.05, kind);
      const dho2::index n = model.num_parameters();
      const Eigen::VectorXd x = model.initialize(5) + random_vector(n, 6, 0.1);
      const auto reference =
          autodiff_reference(layers, act, 0.05, x, batch.inputs, batch.labels, kind);
      INFO("activation ", name(act), ", loss ", dho2::to_string(kind));
      CHECK_MESSAGE((reference.hessian - reference.hessian.transpose()).norm() <=
                        1e-12 * reference.hessian.norm(),
                    "the autodiff Hessian should be symmetric");
      Eigen::MatrixXd from_products(n, n);
      Eigen::VectorXd hv(n);
      for (dho2::index i = 0; i < n; ++i) {
        model.hessian_vector_product(x, batch, Eigen::VectorXd::Unit(n, i), hv);
        from_products.col(i) = hv;
      }
      const double error = relative_error(from_products, reference.hessian);
      CHECK_MESSAGE(error < 1e-6, "Hessian assembled from HVPs differs from nested autodiff by ",
                    error, " (expected < 1e-6)");
      const Eigen::VectorXd v = random_vector(n, 7);
      model.hessian_vector_product(x, batch, v, hv);
      const double product_error = relative_error(hv, reference.hessian * v);
      CHECK_MESSAGE(product_error < 1e-6, "H v differs from the autodiff Hessian times v by ",
                    product_error);
    }
  }
}

TEST_CASE("mlp: a linear autoencoder's Hessian is the closed form (Ā Āᵀ/B) ⊗ I + λ on W") {
  // One weight layer, no hidden activation: f = (1/(2B)) ‖[W b] Ā − X‖² + (λ/2)‖W‖² with
  // Ā = [X; 1ᵀ]. Its Hessian with respect to vec([W b]) (column-major, which is the model's layout
  // of W followed by b) is (Ā Āᵀ / B) ⊗ I_s + λ diag(1 on W, 0 on b): constant in the parameters.
  const dho2::index s = 4;
  const dho2::index b = 9;
  const double l2 = 0.3;
  const dho2::mlp<double> model({s, s}, dho2::activation::relu, l2,
                                dho2::mlp_loss::squared_error_reconstruction);
  const auto batch = dho2::testing::random_batch<double>(s, 2, b, 31);
  const dho2::index n = model.num_parameters();
  REQUIRE(n == s * (s + 1));
  Eigen::MatrixXd abar(s + 1, b);
  abar.topRows(s) = batch.inputs;
  abar.row(s).setOnes();
  const Eigen::MatrixXd a = abar * abar.transpose() / static_cast<double>(b);
  Eigen::MatrixXd expected = Eigen::MatrixXd::Zero(n, n);
  for (dho2::index i = 0; i < s + 1; ++i) {
    for (dho2::index j = 0; j < s + 1; ++j) {
      expected.block(i * s, j * s, s, s) = a(i, j) * Eigen::MatrixXd::Identity(s, s);
    }
  }
  expected.topLeftCorner(s * s, s * s).diagonal().array() += l2;
  for (const std::uint64_t seed : {41U, 42U}) {
    const Eigen::VectorXd x = random_vector(n, seed);
    Eigen::MatrixXd from_products(n, n);
    Eigen::VectorXd hv(n);
    for (dho2::index i = 0; i < n; ++i) {
      model.hessian_vector_product(x, batch, Eigen::VectorXd::Unit(n, i), hv);
      from_products.col(i) = hv;
    }
    const double error = relative_error(from_products, expected);
    CHECK_MESSAGE(error < 1e-13, "Hessian from HVPs differs from (Ā Āᵀ/B) ⊗ I + λ by ", error,
                  " at parameter seed ", seed, " (expected < 1e-13)");
    // The gradient is H x − (X Āᵀ/B) in vec form (the residual is linear in the parameters).
    Eigen::VectorXd g(n);
    const double loss = model.loss_and_gradient(x, batch, g);
    const Eigen::Map<const Eigen::MatrixXd> wb(x.data(), s, s + 1);
    const Eigen::MatrixXd residual = wb * abar - batch.inputs;
    Eigen::MatrixXd grad = residual * abar.transpose() / static_cast<double>(b);
    grad.leftCols(s) += l2 * wb.leftCols(s);
    const double expected_loss = 0.5 * residual.squaredNorm() / static_cast<double>(b) +
                                 0.5 * l2 * wb.leftCols(s).squaredNorm();
    CHECK_MESSAGE(std::abs(loss - expected_loss) <= 1e-13 * expected_loss, "loss ", loss,
                  ", expected (1/(2B))‖[W b]Ā − X‖² + (λ/2)‖W‖² = ", expected_loss);
    CHECK_MESSAGE(relative_error(g, grad.reshaped()) < 1e-13,
                  "gradient differs from (([W b]Ā − X) Āᵀ)/B + λ[W 0]");
  }
}

TEST_CASE("mlp: gradient and HVP agree with finite differences (check_gradient, check_hvp)") {
  const auto batch = dho2::testing::random_batch<double>(5, 3, 7, 13);
  for (const auto& [kind, layers] : loss_cases()) {
    for (const auto act : {dho2::activation::tanh, dho2::activation::relu}) {
      const dho2::mlp<double> model(layers, act, 0.01, kind);
      const Eigen::VectorXd x = model.initialize(8);
      INFO("activation ", name(act), ", loss ", dho2::to_string(kind));
      const auto gradient_report = dho2::testing::check_gradient(model, x, batch, 6, 21);
      CHECK_MESSAGE(gradient_report.ok(1e-6), "gradient vs finite differences: relative error ",
                    gradient_report.max_relative_error, " (expected < 1e-6)");
      const auto hvp_report = dho2::testing::check_hvp(model, x, batch, 6, 22);
      CHECK_MESSAGE(hvp_report.ok(1e-6), "HVP vs finite differences: relative error ",
                    hvp_report.max_relative_error, ", symmetry error ", hvp_report.symmetry_error,
                    " (expected both < 1e-6)");
    }
  }
}

TEST_CASE("mlp: float HVP and gradient are within 1e-3 of the double ones") {
  const auto batch_d = dho2::testing::random_batch<double>(12, 4, 32, 14);
  dho2::classification_batch<float> batch_f{batch_d.inputs.cast<float>(), batch_d.labels};
  for (const auto kind :
       {dho2::mlp_loss::softmax_cross_entropy, dho2::mlp_loss::squared_error_reconstruction}) {
    const std::vector<dho2::index> layers{12, 10, 8,
                                          kind == dho2::mlp_loss::softmax_cross_entropy ? 4 : 12};
    for (const auto act : {dho2::activation::tanh, dho2::activation::relu}) {
      const dho2::mlp<double> model_d(layers, act, 1e-3, kind);
      const dho2::mlp<float> model_f(layers, act, 1e-3, kind);
      const dho2::index n = model_d.num_parameters();
      const Eigen::VectorXd x = model_d.initialize(9);
      const Eigen::VectorXd v = random_vector(n, 10);
      const Eigen::VectorXf x_f = x.cast<float>();
      const Eigen::VectorXf v_f = v.cast<float>();
      CHECK_MESSAGE((model_f.initialize(9) - x_f).norm() == 0.0f,
                    "initialize(seed) must give the same draws in float and double");
      Eigen::VectorXd hv_d(n);
      Eigen::VectorXf hv_f(n);
      Eigen::VectorXd g_d(n);
      Eigen::VectorXf g_f(n);
      model_d.hessian_vector_product(x, batch_d, v, hv_d);
      model_f.hessian_vector_product(x_f, batch_f, v_f, hv_f);
      static_cast<void>(model_d.loss_and_gradient(x, batch_d, g_d));
      static_cast<void>(model_f.loss_and_gradient(x_f, batch_f, g_f));
      INFO("activation ", name(act), ", loss ", dho2::to_string(kind));
      const double hvp_error = relative_error(hv_f.cast<double>(), hv_d);
      CHECK_MESSAGE(hvp_error < 1e-3, "float HVP differs from double by ", hvp_error);
      const double gradient_error = relative_error(g_f.cast<double>(), g_d);
      CHECK_MESSAGE(gradient_error < 1e-3, "float gradient differs from double by ",
                    gradient_error);
      // Finite differences in float use steps of ~5e-3·‖x‖, which move many ReLU pre-activations
      // across the kink and make the difference quotient meaningless; only tanh is smooth enough.
      if (act == dho2::activation::tanh) {
        const auto report = dho2::testing::check_hvp(model_f, x_f, batch_f, 3, 23);
        CHECK_MESSAGE(report.ok(1e-3),
                      "float HVP vs finite differences: ", report.max_relative_error, ", symmetry ",
                      report.symmetry_error);
      }
    }
  }
}

TEST_CASE("mlp: without hidden layers it is softmax_regression (same layout and values)") {
  const auto batch = dho2::testing::random_batch<double>(6, 4, 9, 15);
  const dho2::mlp<double> net({6, 4}, dho2::activation::relu, 0.2);
  const dho2::softmax_regression<double> regression(6, 4, 0.2);
  REQUIRE(net.num_parameters() == regression.num_parameters());
  CHECK(net.parameter_blocks() == regression.parameter_blocks());
  const dho2::index n = net.num_parameters();
  const Eigen::VectorXd x = random_vector(n, 16);
  const Eigen::VectorXd v = random_vector(n, 17);
  Eigen::VectorXd g_net(n);
  Eigen::VectorXd g_reg(n);
  const double loss_net = net.loss_and_gradient(x, batch, g_net);
  const double loss_reg = regression.loss_and_gradient(x, batch, g_reg);
  CHECK_MESSAGE(std::abs(loss_net - loss_reg) <= 1e-13, "losses ", loss_net, " vs ", loss_reg);
  CHECK_MESSAGE(relative_error(g_net, g_reg) < 1e-13, "gradients differ");
  Eigen::VectorXd hv_net(n);
  Eigen::VectorXd hv_reg(n);
  net.hessian_vector_product(x, batch, v, hv_net);
  regression.hessian_vector_product(x, batch, v, hv_reg);
  CHECK_MESSAGE(relative_error(hv_net, hv_reg) < 1e-13, "HVPs differ");
  CHECK(net.predict(x, batch.inputs) == regression.predict(x, batch.inputs));
}

TEST_CASE("mlp: parameter layout, blocks and initialisation") {
  const dho2::mlp<double> relu_net({30, 20, 5}, dho2::activation::relu, 0.0);
  CHECK(relu_net.num_parameters() == 20 * 30 + 20 + 5 * 20 + 5);
  CHECK(relu_net.num_layers() == 2);
  CHECK(relu_net.parameter_blocks() == std::vector<dho2::index>{600, 20, 100, 5});
  const Eigen::VectorXd x = relu_net.initialize(42);
  CHECK_MESSAGE((x - relu_net.initialize(42)).norm() == 0.0, "same seed, same parameters");
  CHECK_MESSAGE((x - relu_net.initialize(43)).norm() > 0.0, "different seeds, different draws");
  CHECK_MESSAGE(x.segment(600, 20).norm() == 0.0, "biases start at zero");
  CHECK_MESSAGE(x.segment(720, 5).norm() == 0.0, "biases start at zero");
  const double he_std = std::sqrt(x.head(600).squaredNorm() / 600.0);
  CHECK_MESSAGE(std::abs(he_std - std::sqrt(2.0 / 30.0)) < 0.1 * std::sqrt(2.0 / 30.0),
                "He std of layer 1 expected ", std::sqrt(2.0 / 30.0), ", got ", he_std);
  const dho2::mlp<double> tanh_net({30, 20, 5}, dho2::activation::tanh, 0.0);
  const Eigen::VectorXd y = tanh_net.initialize(42);
  const double bound = std::sqrt(6.0 / 50.0);
  CHECK_MESSAGE(y.head(600).cwiseAbs().maxCoeff() <= bound, "Glorot-uniform bound ", bound);
  CHECK_MESSAGE(y.head(600).cwiseAbs().maxCoeff() > 0.9 * bound, "Glorot draws fill the range");
}

TEST_CASE("mlp: predict, accuracy and chunked loss on a large batch") {
  const dho2::mlp<double> model({3, 4, 2}, dho2::activation::tanh, 0.0);
  const auto batch = dho2::testing::random_batch<double>(3, 2, 2500, 18);
  const Eigen::VectorXd x = model.initialize(19);
  const Eigen::VectorXi predicted = model.predict(x, batch.inputs);
  REQUIRE(predicted.size() == 2500);
  // Reference prediction: argmax of the naive forward pass per sample (loss of each class).
  int agree = 0;
  int correct = 0;
  std::vector<double> parameters(x.data(), x.data() + x.size());
  for (dho2::index j = 0; j < 2500; j += 97) {
    const Eigen::MatrixXd column = batch.inputs.col(j);
    const double loss0 = reference_loss<double>({3, 4, 2}, dho2::activation::tanh, 0.0, parameters,
                                                column, Eigen::VectorXi::Constant(1, 0));
    agree += (loss0 < std::log(2.0)) == (predicted(j) == 0) ? 1 : 0;
    ++correct;
  }
  CHECK_MESSAGE(agree == correct, "predict() disagrees with the reference argmax on ",
                correct - agree, " samples");
  const double expected_accuracy =
      static_cast<double>((predicted.array() == batch.labels.array()).count()) / 2500.0;
  CHECK(model.accuracy(x, batch) == doctest::Approx(expected_accuracy).epsilon(1e-15));
  Eigen::VectorXd g(model.num_parameters());
  const double full = model.loss_and_gradient(x, batch, g);
  CHECK_MESSAGE(std::abs(model.loss(x, batch) - full) < 1e-12,
                "chunked loss() must equal the one-shot loss");
}

TEST_CASE("mlp: numerically stable softmax and empty or mismatched batches") {
  const dho2::mlp<double> model({4, 3, 3}, dho2::activation::relu, 0.1);
  auto batch = dho2::testing::random_batch<double>(4, 3, 5, 20);
  Eigen::VectorXd x = model.initialize(21);
  batch.inputs *= 1e4;  // logits of order 1e4: exp overflows without the max shift
  Eigen::VectorXd g(model.num_parameters());
  const double loss = model.loss_and_gradient(x, batch, g);
  CHECK_MESSAGE(std::isfinite(loss), "loss must stay finite for huge logits, got ", loss);
  CHECK_MESSAGE(g.allFinite(), "gradient must stay finite for huge logits");

  dho2::classification_batch<double> empty{Eigen::MatrixXd(4, 0), Eigen::VectorXi(0)};
  const double decay_only = model.loss_and_gradient(x, empty, g);
  double expected = 0.0;
  for (dho2::index i = 0; i < 12; ++i) expected += 0.05 * x(i) * x(i);
  for (dho2::index i = 15; i < 24; ++i) expected += 0.05 * x(i) * x(i);
  CHECK_MESSAGE(std::abs(decay_only - expected) < 1e-14,
                "an empty batch leaves only the decay term ", expected, ", got ", decay_only);

  auto wrong_rows = dho2::testing::random_batch<double>(5, 3, 5, 22);
  CHECK_THROWS_WITH_AS(model.loss_and_gradient(x, wrong_rows, g),
                       "mlp: batch.inputs has 5 rows, the model expects 4 features",
                       dho2::data_error);
  auto wrong_label = dho2::testing::random_batch<double>(4, 3, 5, 23);
  wrong_label.labels(2) = 3;
  CHECK_THROWS_WITH_AS(model.hessian_vector_product(x, wrong_label, x, g),
                       "mlp: batch.labels(2) = 3 is outside [0, 3)", dho2::data_error);
}

TEST_CASE("mlp: const member functions are thread-safe (identical results from two threads)") {
  const dho2::mlp<float> model({20, 16, 5}, dho2::activation::tanh, 1e-3);
  const auto batch = dho2::testing::random_batch<float>(20, 5, 64, 24);
  const Eigen::VectorXf x = model.initialize(25);
  const Eigen::VectorXf v = model.initialize(26);
  const dho2::index n = model.num_parameters();
  Eigen::VectorXf expected_g(n);
  Eigen::VectorXf expected_hv(n);
  static_cast<void>(model.loss_and_gradient(x, batch, expected_g));
  model.hessian_vector_product(x, batch, v, expected_hv);
  std::vector<int> mismatches(2, 0);
  auto work = [&](std::size_t t) {
    Eigen::VectorXf g(n);
    Eigen::VectorXf hv(n);
    for (int r = 0; r < 50; ++r) {
      static_cast<void>(model.loss_and_gradient(x, batch, g));
      model.hessian_vector_product(x, batch, v, hv);
      if (g != expected_g || hv != expected_hv) ++mismatches[t];
    }
  };
  std::thread first(work, 0);
  std::thread second(work, 1);
  first.join();
  second.join();
  CHECK_MESSAGE(mismatches[0] + mismatches[1] == 0,
                "concurrent calls must reproduce the single-thread results bit for bit");
}

TEST_CASE("mlp: parse_mlp_layers accepts specs and rejects malformed ones with one-line messages") {
  CHECK(dho2::parse_mlp_layers("784-256-256-10") == std::vector<dho2::index>{784, 256, 256, 10});
  CHECK(dho2::parse_mlp_layers("3-2") == std::vector<dho2::index>{3, 2});
  const auto message_of = [](const std::string& spec) {
    try {
      static_cast<void>(dho2::parse_mlp_layers(spec));
    } catch (const dho2::invalid_options& e) {
      return std::string(e.what());
    }
    return std::string("(no exception)");
  };
  CHECK(message_of("") ==
        "layers = \"\". Violated constraint: non-empty list of widths separated by '-', e.g. "
        "\"784-256-10\"");
  CHECK(message_of("784-abc-10") ==
        "layers = \"784-abc-10\". Violated constraint: every width is a decimal integer "
        "(\"abc\" is not); widths separated by '-', e.g. \"784-256-10\"");
  CHECK(message_of("784--10") ==
        "layers = \"784--10\". Violated constraint: every width is a decimal integer (\"\" is "
        "not); widths separated by '-', e.g. \"784-256-10\"");
  CHECK(message_of("784-10-") ==
        "layers = \"784-10-\". Violated constraint: every width is a decimal integer (\"\" is "
        "not); widths separated by '-', e.g. \"784-256-10\"");
  CHECK(message_of(" 784-10") ==
        "layers = \" 784-10\". Violated constraint: every width is a decimal integer (\" 784\" "
        "is not); widths separated by '-', e.g. \"784-256-10\"");
  CHECK(message_of("784") ==
        "layers = \"784\". Violated constraint: at least two layers (input and output), got 1");
  CHECK(message_of("784-0-10") ==
        "layers = \"784-0-10\". Violated constraint: every width is >= 1 (layer 1 has width 0)");
  CHECK(message_of("99999999999999999999-10") ==
        "layers = \"99999999999999999999-10\". Violated constraint: every width is at most 2^31 "
        "(\"99999999999999999999\" is too large)");
  for (const std::string spec : {"", "784-abc-10", "784", "784-0-10"}) {
    CHECK_MESSAGE(message_of(spec).find('\n') == std::string::npos, "one-line message");
  }
}

TEST_CASE("mlp: constructor rejects bad layers and l2 with the field and the constraint") {
  CHECK_THROWS_WITH_AS(dho2::mlp<double>({5}, dho2::activation::relu, 0.0),
                       "layers.size() = 1. Violated constraint: at least two layers (input and "
                       "output)",
                       dho2::invalid_options);
  CHECK_THROWS_WITH_AS(dho2::mlp<double>({5, 0, 3}, dho2::activation::relu, 0.0),
                       "layers[1] = 0. Violated constraint: >= 1", dho2::invalid_options);
  CHECK_THROWS_WITH_AS(dho2::mlp<float>({5, 3}, dho2::activation::tanh, -1.0),
                       "l2 = -1. Violated constraint: finite and >= 0", dho2::invalid_options);
}

TEST_CASE("mlp: the reconstruction loss ignores labels, chunks its loss and has no accuracy") {
  const dho2::mlp<double> model({6, 3, 6}, dho2::activation::tanh, 0.01,
                                dho2::mlp_loss::squared_error_reconstruction);
  CHECK(model.output_loss() == dho2::mlp_loss::squared_error_reconstruction);
  CHECK_FALSE(model.is_classifier());
  CHECK(model.classes() == 6);
  const auto batch = dho2::testing::random_batch<double>(6, 2, 2500, 51);
  const Eigen::VectorXd x = model.initialize(52);
  const dho2::index n = model.num_parameters();
  Eigen::VectorXd g(n);
  const double full = model.loss_and_gradient(x, batch, g);
  CHECK_MESSAGE(std::abs(model.loss(x, batch) - full) < 1e-12 * full,
                "chunked loss() (chunks of 1024 samples) must equal the one-shot loss ", full);

  // Labels out of range, or missing altogether, change nothing.
  auto relabelled = batch;
  relabelled.labels.setConstant(1000);
  dho2::classification_batch<double> unlabelled{batch.inputs, Eigen::VectorXi(0)};
  Eigen::VectorXd g2(n);
  Eigen::VectorXd hv(n);
  Eigen::VectorXd hv2(n);
  const Eigen::VectorXd v = random_vector(n, 53);
  model.hessian_vector_product(x, batch, v, hv);
  for (const auto* other : {&relabelled, &unlabelled}) {
    CHECK(model.loss_and_gradient(x, *other, g2) == full);
    CHECK_MESSAGE((g2.array() == g.array()).all(), "labels must not change the gradient");
    model.hessian_vector_product(x, *other, v, hv2);
    CHECK_MESSAGE((hv2.array() == hv.array()).all(), "labels must not change the HVP");
  }

  const std::string no_classes =
      "mlp::output_loss() = squared_error_reconstruction. Violated constraint: mlp::accuracy "
      "needs mlp_loss::softmax_cross_entropy (an autoencoder has no classes; evaluate it with "
      "mlp::loss)";
  CHECK_THROWS_WITH_AS(static_cast<void>(model.accuracy(x, batch)), no_classes.c_str(),
                       dho2::invalid_options);
  CHECK_THROWS_AS(static_cast<void>(model.predict(x, batch.inputs)), dho2::invalid_options);
  const auto wrong_rows = dho2::testing::random_batch<double>(5, 2, 4, 54);
  CHECK_THROWS_WITH_AS(static_cast<void>(model.loss(x, wrong_rows)),
                       "mlp: batch.inputs has 5 rows, the model expects 6 features",
                       dho2::data_error);

  dho2::classification_batch<double> empty{Eigen::MatrixXd(6, 0), Eigen::VectorXi(0)};
  const double decay_only = model.loss_and_gradient(x, empty, g);
  const double expected = 0.005 * (x.head(18).squaredNorm() + x.segment(21, 18).squaredNorm());
  CHECK_MESSAGE(std::abs(decay_only - expected) < 1e-14,
                "an empty batch leaves only the decay term ", expected, ", got ", decay_only);
}

TEST_CASE("mlp: the reconstruction loss needs as many outputs as inputs") {
  CHECK_THROWS_WITH_AS(dho2::mlp<double>({5, 3, 4}, dho2::activation::relu, 0.0,
                                         dho2::mlp_loss::squared_error_reconstruction),
                       "layers.back() = 4. Violated constraint: == layers.front() (= 5) for "
                       "mlp_loss::squared_error_reconstruction (the output reconstructs the input)",
                       dho2::invalid_options);
  CHECK_THROWS_WITH_AS(
      dho2::mlp<double>({5, 5}, dho2::activation::relu, 0.0, static_cast<dho2::mlp_loss>(9)),
      "loss = 9. Violated constraint: softmax_cross_entropy or "
      "squared_error_reconstruction",
      dho2::invalid_options);
  CHECK(dho2::to_string(dho2::mlp_loss::softmax_cross_entropy) == "softmax_cross_entropy");
  const dho2::mlp<float> classifier({5, 3, 4});
  CHECK(classifier.output_loss() == dho2::mlp_loss::softmax_cross_entropy);
  CHECK(classifier.is_classifier());
}
