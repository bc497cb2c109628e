// dho2::torch_module_model (include/dho2/torch/module_model.hpp), double precision. Oracles:
//  - dho2::mlp with the same weights (an independent implementation: backpropagation and
//    Pearlmutter's R-operator by hand) for the loss, the gradient and the Hessian-vector product
//    of a LibTorch MLP, tanh and ReLU;
//  - a dense Hessian assembled column by column from the adapter's products against the closed
//    form of logistic regression, H = (1/B) Σⱼ pⱼ(1 − pⱼ) āⱼ āⱼᵀ;
//  - central finite differences (dho2::testing::check_gradient / check_hvp) for the MLP and the
//    LeNet CNN;
//  - mode S at P = 1, 2, 3 in-process ranks against P = 1, and a P = 1 torch run against the
//    same run of dho2::mlp; a checkpoint resumed bit for bit; two threads at once against one.
// LibTorch runs with one intra-op thread (main below), so that results are reproducible bit for
// bit between calls and threads.
#define DOCTEST_CONFIG_IMPLEMENT
#include "unit/distributed_fixture.hpp"
#include <dho2/checkpoint/directory.hpp>
#include <dho2/dho2.hpp>
#include <dho2/schedule/background.hpp>
#include <dho2/testing/hvp_checker.hpp>
#include <dho2/torch.hpp>
#include <dho2/transport/inproc.hpp>

#include <doctest/doctest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

// glog, which LibTorch includes, defines CHECK as well (aborting on failure): use doctest's.
#undef CHECK
#define CHECK(...) DOCTEST_CHECK(__VA_ARGS__)

namespace {

namespace fs = std::filesystem;
using Eigen::MatrixXd;
using Eigen::VectorXd;

// ---- A LibTorch MLP and its dho2::mlp twin
// --------------------------------------------------------

// Linear, activation, ..., Linear in double: the architecture of dho2::mlp(widths, hidden).
torch::nn::Sequential torch_mlp(const std::vector<dho2::index>& widths, dho2::activation hidden) {
  torch::nn::Sequential net;
  for (std::size_t l = 0; l + 1 < widths.size(); ++l) {
    net->push_back(torch::nn::Linear(widths[l], widths[l + 1]));
    if (l + 2 < widths.size()) {
      if (hidden == dho2::activation::tanh) {
        net->push_back(torch::nn::Tanh());
      } else {
        net->push_back(torch::nn::ReLU());
      }
    }
  }
  net->to(torch::kFloat64);
  return net;
}

using mlp_model =
    dho2::torch_module_model<double, torch::nn::Sequential, dho2::torch_cross_entropy>;

mlp_model make_mlp_model(const std::vector<dho2::index>& widths, dho2::activation hidden) {
  return mlp_model([widths, hidden] { return torch_mlp(widths, hidden); },
                   dho2::torch_cross_entropy{{widths.front()}},
                   {.name = hidden == dho2::activation::tanh ? "mlp-tanh" : "mlp-relu"});
}

// dho2::mlp stores Wₗ column-major (entry (i, k) at i + sₗ·k), LibTorch's Linear row-major
// (i·sₗ₋₁ + k); biases agree. to_torch maps a dho2::mlp vector to the torch layout.
VectorXd to_torch(const VectorXd& d, const std::vector<dho2::index>& widths) {
  VectorXd t(d.size());
  dho2::index offset = 0;
  for (std::size_t l = 0; l + 1 < widths.size(); ++l) {
    const dho2::index rows = widths[l + 1];
    const dho2::index cols = widths[l];
    for (dho2::index i = 0; i < rows; ++i) {
      for (dho2::index k = 0; k < cols; ++k) t(offset + i * cols + k) = d(offset + i + rows * k);
    }
    offset += rows * cols;
    t.segment(offset, rows) = d.segment(offset, rows);
    offset += rows;
  }
  return t;
}

VectorXd from_torch(const VectorXd& t, const std::vector<dho2::index>& widths) {
  VectorXd d(t.size());
  dho2::index offset = 0;
  for (std::size_t l = 0; l + 1 < widths.size(); ++l) {
    const dho2::index rows = widths[l + 1];
    const dho2::index cols = widths[l];
    for (dho2::index i = 0; i < rows; ++i) {
      for (dho2::index k = 0; k < cols; ++k) d(offset + i + rows * k) = t(offset + i * cols + k);
    }
    offset += rows * cols;
    d.segment(offset, rows) = t.segment(offset, rows);
    offset += rows;
  }
  return d;
}

double relative_difference(const VectorXd& a, const VectorXd& b) {
  const double scale = std::max(a.norm(), b.norm());
  return scale > 0.0 ? (a - b).norm() / scale : 0.0;
}

bool bitwise_equal(const VectorXd& a, const VectorXd& b) {
  return a.size() == b.size() && (a.array() == b.array()).all();
}

VectorXd normal_vector(dho2::index n, std::uint64_t seed) {
  dho2::detail::xoshiro256 rng(seed);
  VectorXd v(n);
  for (dho2::index i = 0; i < n; ++i) v(i) = rng.normal();
  return v;
}

// The loss, gradient and products along `directions` of a model at x on a batch.
struct evaluation {
  double loss = 0.0;
  VectorXd gradient;
  std::vector<VectorXd> products;
};

template <class Model>
evaluation evaluate(const Model& model, const VectorXd& x,
                    const dho2::classification_batch<double>& batch,
                    const std::vector<VectorXd>& directions) {
  evaluation e;
  e.gradient.resize(x.size());
  e.loss = model.loss_and_gradient(x, batch, e.gradient);
  for (const VectorXd& v : directions) {
    VectorXd hv(x.size());
    model.hessian_vector_product(x, batch, v, hv);
    e.products.push_back(std::move(hv));
  }
  return e;
}

const std::vector<dho2::index> widths{6, 5, 4, 3};

dho2::classification_batch<double> teacher_batch(dho2::index size, std::uint64_t seed) {
  const auto sets = dho2::make_teacher_classification<double>(size, 1, widths.front(), 3, seed);
  return {sets.train.inputs, sets.train.labels};
}

void check_against_mlp(dho2::activation hidden) {
  const mlp_model model = make_mlp_model(widths, hidden);
  const dho2::mlp<double> reference(widths, hidden);
  REQUIRE(model.num_parameters() == reference.num_parameters());
  const VectorXd xd = reference.initialize(5);
  const VectorXd xt = to_torch(xd, widths);
  const auto batch = teacher_batch(37, 11);
  std::vector<VectorXd> dirs_d;
  std::vector<VectorXd> dirs_t;
  for (std::uint64_t s = 0; s < 3; ++s) {
    dirs_d.push_back(normal_vector(xd.size(), 100 + s));
    dirs_t.push_back(to_torch(dirs_d.back(), widths));
  }
  const evaluation t = evaluate(model, xt, batch, dirs_t);
  const evaluation d = evaluate(reference, xd, batch, dirs_d);
  INFO("expected: the torch MLP's loss equals dho2::mlp's (", d.loss, "), got ", t.loss);
  CHECK(std::abs(t.loss - d.loss) <= 1e-12 * std::abs(d.loss));
  const double g_error = relative_difference(from_torch(t.gradient, widths), d.gradient);
  INFO("expected: gradient equal to dho2::mlp's to 1e-12 relative, got ", g_error);
  CHECK(g_error <= 1e-12);
  for (std::size_t k = 0; k < dirs_d.size(); ++k) {
    const double h_error = relative_difference(from_torch(t.products[k], widths), d.products[k]);
    INFO("expected: H v (direction ", k,
         ") equal to dho2::mlp's R-operator product to 1e-12 "
         "relative, got ",
         h_error);
    CHECK(h_error <= 1e-12);
  }
}

// ---- Logistic regression: a closed-form Hessian
// ---------------------------------------------------

struct logistic_impl : torch::nn::Cloneable<logistic_impl> {
  explicit logistic_impl(dho2::index features_) : features(features_) { reset(); }
  void reset() override {
    w = register_parameter("w", torch::zeros({features}, torch::kFloat64));
    b = register_parameter("b", torch::zeros({1}, torch::kFloat64));
  }
  torch::Tensor forward(const torch::Tensor& a) { return a.matmul(w) + b; }
  dho2::index features;
  torch::Tensor w;
  torch::Tensor b;
};
class logistic : public torch::nn::ModuleHolder<logistic_impl> {
 public:
  using torch::nn::ModuleHolder<logistic_impl>::ModuleHolder;
};

// Mean binary cross-entropy on logits, label = class 1 of a two-class batch.
struct logistic_loss {
  torch::Tensor operator()(logistic& m, const dho2::classification_batch<double>& batch) const {
    const torch::Tensor z = m->forward(dho2::torch_inputs(batch, {batch.inputs.rows()}));
    const torch::Tensor y = dho2::torch_labels(batch).to(torch::kFloat64);
    return torch::nn::functional::binary_cross_entropy_with_logits(z, y);
  }
};

// ---- Mode S, schedules and checkpoints with the torch MLP
// ------------------------------------------

// A tanh MLP whose weights are stored in × out (row-major), i.e. exactly dho2::mlp's layout (Wₗ
// out × in, column-major): the same parameter vector, so that FOSI's Lanczos start vector (drawn
// in parameter coordinates) is the same and the optimizer runs can be compared to round-off.
struct column_mlp_impl : torch::nn::Cloneable<column_mlp_impl> {
  explicit column_mlp_impl(std::vector<dho2::index> widths_) : widths(std::move(widths_)) {
    reset();
  }
  void reset() override {
    weights.clear();
    biases.clear();
    for (std::size_t l = 0; l + 1 < widths.size(); ++l) {
      weights.push_back(register_parameter(
          "w" + std::to_string(l), torch::zeros({widths[l], widths[l + 1]}, torch::kFloat64)));
      biases.push_back(register_parameter("b" + std::to_string(l),
                                          torch::zeros({widths[l + 1]}, torch::kFloat64)));
    }
  }
  torch::Tensor forward(torch::Tensor h) {
    for (std::size_t l = 0; l < weights.size(); ++l) {
      h = h.matmul(weights[l]) + biases[l];
      if (l + 1 < weights.size()) h = torch::tanh(h);
    }
    return h;
  }
  std::vector<dho2::index> widths;
  std::vector<torch::Tensor> weights;
  std::vector<torch::Tensor> biases;
};
class column_mlp : public torch::nn::ModuleHolder<column_mlp_impl> {
 public:
  using torch::nn::ModuleHolder<column_mlp_impl>::ModuleHolder;
};

const std::vector<dho2::index> mode_s_widths{6, 5, 3};

using column_model = dho2::torch_module_model<double, column_mlp, dho2::torch_cross_entropy>;

struct torch_problem {
  column_model model{column_mlp(mode_s_widths), dho2::torch_cross_entropy{{6}}, {.name = "tanh"}};
  dho2::mlp<double> reference{mode_s_widths, dho2::activation::tanh};
  dho2::train_test_sets<double> data = dho2::make_teacher_classification<double>(400, 10, 6, 3, 5);
  VectorXd x0_d = reference.initialize(9);
  VectorXd x0 = x0_d;  // the same layout
};

constexpr int mode_s_steps = 12;
constexpr dho2::index mode_s_batch = 29;  // uneven slices for P = 2, 3

template <class Policies, class Model>
VectorXd train(const Model& model, VectorXd x, const dho2::classification_set<double>& data,
               Policies policies, int steps, int rank = 0, int ranks = 1) {
  dho2::optimizer<double, Policies> opt(dho2_test::fosi_test_options(), std::move(policies));
  dho2::shuffling_batcher<double> batches(data, mode_s_batch, 17);
  dho2_test::train_steps(opt, model, x, batches, steps, rank, ranks);
  INFO("expected: curvature estimated during the run, got ", opt.get_summary().curvature_estimates,
       " estimates");
  CHECK(opt.get_summary().curvature_estimates >= 2);
  return x;
}

fs::path test_root() {
  return fs::temp_directory_path() / ("dho2_torch_test_" + std::to_string(::getpid()));
}

}  // namespace

TEST_CASE("torch: gradient and HVP of a tanh MLP equal dho2::mlp's with the same weights") {
  check_against_mlp(dho2::activation::tanh);
}

TEST_CASE("torch: gradient and HVP of a ReLU MLP equal dho2::mlp's with the same weights") {
  check_against_mlp(dho2::activation::relu);
}

TEST_CASE("torch: the dense Hessian from exact HVPs equals logistic regression's closed form") {
  const dho2::index features = 4;
  const auto make = [features] { return logistic(features); };
  const dho2::torch_module_model<double, logistic, logistic_loss> model(make, logistic_loss{});
  REQUIRE(model.num_parameters() == features + 1);
  const auto sets = dho2::make_teacher_classification<double>(50, 1, features, 2, 3);
  const dho2::classification_batch<double> batch{sets.train.inputs, sets.train.labels};
  const VectorXd x = 0.5 * normal_vector(features + 1, 7);
  const dho2::index n = model.num_parameters();
  MatrixXd h(n, n);
  VectorXd column(n);
  for (dho2::index j = 0; j < n; ++j) {
    model.hessian_vector_product(x, batch, VectorXd::Unit(n, j), column);
    h.col(j) = column;
  }
  // Closed form: z = aᵀw + b, p = σ(z); ∇ = (1/B) Σ (p − y) ā; H = (1/B) Σ p(1 − p) ā āᵀ.
  const dho2::index size = batch.size();
  MatrixXd expected = MatrixXd::Zero(n, n);
  VectorXd gradient = VectorXd::Zero(n);
  for (dho2::index j = 0; j < size; ++j) {
    VectorXd a(n);
    a << batch.inputs.col(j), 1.0;
    const double p = 1.0 / (1.0 + std::exp(-a.dot(x)));
    expected += p * (1.0 - p) * a * a.transpose();
    gradient += (p - static_cast<double>(batch.labels(j))) * a;
  }
  expected /= static_cast<double>(size);
  gradient /= static_cast<double>(size);
  const double error = (h - expected).norm() / expected.norm();
  INFO("expected: Hessian equal to the closed form to 1e-12 relative, got ", error);
  CHECK(error <= 1e-12);
  VectorXd g(n);
  static_cast<void>(model.loss_and_gradient(x, batch, g));
  const double g_error = relative_difference(g, gradient);
  INFO("expected: gradient equal to the closed form to 1e-12 relative, got ", g_error);
  CHECK(g_error <= 1e-12);
}

TEST_CASE("torch: gradient and HVP agree with finite differences (tanh MLP, LeNet CNN)") {
  const mlp_model mlp = make_mlp_model(widths, dho2::activation::tanh);
  const VectorXd x =
      to_torch(dho2::mlp<double>(widths, dho2::activation::tanh).initialize(5), widths);
  const auto batch = teacher_batch(37, 11);
  const auto g = dho2::testing::check_gradient(mlp, x, batch, 4, 1);
  const auto h = dho2::testing::check_hvp(mlp, x, batch, 4, 1);
  INFO("MLP: gradient rel. error ", g.max_relative_error, ", HVP rel. error ", h.max_relative_error,
       ", symmetry ", h.symmetry_error, " (expected <= 1e-8)");
  CHECK(g.finite);
  CHECK(h.finite);
  CHECK(g.max_relative_error <= 1e-8);
  CHECK(h.max_relative_error <= 1e-8);
  CHECK(h.symmetry_error <= 1e-12);

  torch::manual_seed(3);
  using cnn_model = dho2::torch_module_model<double, dho2::torch_lenet, dho2::torch_cross_entropy>;
  const cnn_model cnn(dho2::torch_lenet(10, torch::kFloat64),
                      dho2::torch_cross_entropy{{1, 28, 28}}, {.name = "lenet"});
  REQUIRE(cnn.num_parameters() == 46730);
  CHECK(cnn.parameter_blocks().size() == 8);
  const auto images = dho2::make_teacher_classification<double>(
      6, 1, 784, 10, 2, {.inputs = dho2::input_distribution::unit_uniform});
  const dho2::classification_batch<double> image_batch{images.train.inputs, images.train.labels};
  const VectorXd y = cnn.initial_point();
  const auto cg = dho2::testing::check_gradient(cnn, y, image_batch, 3, 2);
  const auto ch = dho2::testing::check_hvp(cnn, y, image_batch, 3, 2);
  INFO("LeNet: gradient rel. error ", cg.max_relative_error, ", HVP rel. error ",
       ch.max_relative_error, ", symmetry ", ch.symmetry_error,
       " (expected <= 1e-8; the steps of ~1e-5 cross no ReLU or max-pool kink at this point)");
  CHECK(cg.finite);
  CHECK(ch.finite);
  CHECK(cg.max_relative_error <= 1e-8);
  CHECK(ch.max_relative_error <= 1e-8);
  CHECK(ch.symmetry_error <= 1e-12);
}

TEST_CASE("torch: torch_chunked_loss equals the loss of the whole batch") {
  const mlp_model mlp = make_mlp_model(widths, dho2::activation::tanh);
  const VectorXd x =
      to_torch(dho2::mlp<double>(widths, dho2::activation::tanh).initialize(5), widths);
  const auto batch = teacher_batch(37, 11);
  const double whole = mlp.loss(x, batch);
  for (const dho2::index chunk : {5, 36, 37, 128}) {
    const double chunked = dho2::torch_chunked_loss(mlp, x, batch, chunk);
    INFO("chunks of ", chunk, ": ", chunked, ", expected the whole batch's ", whole);
    CHECK(chunked == doctest::Approx(whole).epsilon(1e-13));
  }
  const dho2::classification_batch<double> empty{batch.inputs.leftCols(0), batch.labels.head(0)};
  CHECK(dho2::torch_chunked_loss(mlp, x, empty) == 0.0);
}

TEST_CASE("torch: layout, structure, initial point, prototype and factory agree") {
  torch::manual_seed(1);
  const torch::nn::Sequential prototype = torch_mlp(widths, dho2::activation::tanh);
  const dho2::torch_module_model<double, torch::nn::Sequential, dho2::torch_cross_entropy> cloned(
      prototype, dho2::torch_cross_entropy{{6}});
  CHECK(cloned.structure() ==
        "torch module 0.weight[5,6] 0.bias[5] 2.weight[4,5] 2.bias[4] 4.weight[3,4] 4.bias[3] "
        "double");
  CHECK((cloned.parameter_blocks() == std::vector<dho2::index>{30, 5, 20, 4, 12, 3}));
  const VectorXd x0 = cloned.read_parameters(prototype);
  INFO("expected: the initial point is the prototype's parameters");
  CHECK(bitwise_equal(cloned.initial_point(), x0));
  const VectorXd x = normal_vector(x0.size(), 4);
  torch::nn::Sequential copy = cloned.make_module(x);
  CHECK(bitwise_equal(cloned.read_parameters(copy), x));
  const mlp_model factory = make_mlp_model(widths, dho2::activation::tanh);
  const auto batch = teacher_batch(20, 2);
  const std::vector<VectorXd> dirs{normal_vector(x.size(), 8)};
  const evaluation a = evaluate(cloned, x, batch, dirs);
  const evaluation b = evaluate(factory, x, batch, dirs);
  CHECK(a.loss == b.loss);
  CHECK(bitwise_equal(a.gradient, b.gradient));
  CHECK(bitwise_equal(a.products[0], b.products[0]));
  const double loss_only = factory.loss(x, batch);
  CHECK(loss_only == a.loss);
}

TEST_CASE("torch: an empty batch contributes 0, and bad modules and losses are refused by name") {
  const mlp_model model = make_mlp_model(widths, dho2::activation::tanh);
  const VectorXd x = normal_vector(model.num_parameters(), 1);
  const dho2::classification_batch<double> empty{MatrixXd(6, 0), Eigen::VectorXi(0)};
  VectorXd g = VectorXd::Ones(x.size());
  CHECK(model.loss_and_gradient(x, empty, g) == 0.0);
  CHECK(g.isZero(0.0));
  CHECK(model.batch_size(empty) == 0);

  // A float module in a double model.
  const auto float_net = [] {
    torch::nn::Sequential net(torch::nn::Linear(6, 3));
    return net;
  };
  using float_in_double =
      dho2::torch_module_model<double, torch::nn::Sequential, dho2::torch_cross_entropy>;
  CHECK_THROWS_WITH_AS(float_in_double(float_net, dho2::torch_cross_entropy{{6}}),
                       doctest::Contains("parameter `0.weight` dtype = Float. Violated "
                                         "constraint: == Double"),
                       dho2::invalid_options);
  // A loss that is not one number.
  const auto per_sample = [](torch::nn::Sequential& m,
                             const dho2::classification_batch<double>& b) {
    return m->forward(dho2::torch_inputs(b, {6})).sum(1);
  };
  const dho2::torch_module_model<double, torch::nn::Sequential, decltype(per_sample)> bad(
      [] { return torch_mlp(widths, dho2::activation::tanh); }, per_sample);
  CHECK_THROWS_WITH_AS(static_cast<void>(bad.loss_and_gradient(x, teacher_batch(5, 1), g)),
                       doctest::Contains("one element: the mean loss over the batch"),
                       dho2::invalid_options);
}

TEST_CASE("torch: two threads at once give the single-thread results bit for bit") {
  const mlp_model model = make_mlp_model(widths, dho2::activation::tanh);
  const auto batch_a = teacher_batch(64, 1);
  const auto batch_b = teacher_batch(48, 2);
  const VectorXd xa = normal_vector(model.num_parameters(), 10);
  const VectorXd xb = normal_vector(model.num_parameters(), 11);
  const std::vector<VectorXd> dirs{normal_vector(model.num_parameters(), 12)};
  const evaluation alone_a = evaluate(model, xa, batch_a, dirs);
  const evaluation alone_b = evaluate(model, xb, batch_b, dirs);
  constexpr int rounds = 200;
  std::vector<int> mismatches(2, 0);
  const auto worker = [&](int id) {
    const VectorXd& x = id == 0 ? xa : xb;
    const auto& batch = id == 0 ? batch_a : batch_b;
    const evaluation& alone = id == 0 ? alone_a : alone_b;
    for (int r = 0; r < rounds; ++r) {
      const evaluation e = evaluate(model, x, batch, dirs);
      if (e.loss != alone.loss || !bitwise_equal(e.gradient, alone.gradient) ||
          !bitwise_equal(e.products[0], alone.products[0])) {
        ++mismatches[static_cast<std::size_t>(id)];
      }
    }
  };
  std::thread first(worker, 0);
  std::thread second(worker, 1);
  first.join();
  second.join();
  INFO("expected: no call differs from the single-thread result; mismatches: ", mismatches[0],
       " and ", mismatches[1], " of ", rounds);
  CHECK(mismatches[0] == 0);
  CHECK(mismatches[1] == 0);
}

TEST_CASE("torch: mode S at P = 1, 2, 3 equals P = 1, and P = 1 equals dho2::mlp's run") {
  const torch_problem p;
  using single = dho2::default_policies;
  const VectorXd x1 =
      train(p.model, p.x0, p.data.train, single{.base = {.learning_rate = 0.01}}, mode_s_steps);
  const VectorXd x_mlp = train(p.reference, p.x0_d, p.data.train,
                               single{.base = {.learning_rate = 0.01}}, mode_s_steps);
  const double mlp_error = relative_difference(x1, x_mlp);
  INFO("expected: the torch run equals dho2::mlp's to 1e-10 relative, got ", mlp_error);
  CHECK(mlp_error <= 1e-10);
  CHECK(!bitwise_equal(x1, p.x0));

  using inproc = dho2::default_policies::with_transport<dho2::inproc_transport>;
  for (int ranks = 1; ranks <= 3; ++ranks) {
    const auto xs = dho2_test::on_inproc_ranks(ranks, [&](dho2::inproc_transport& t) {
      const int rank = t.rank();
      return train(p.model, p.x0, p.data.train,
                   inproc{.base = {.learning_rate = 0.01}, .transport = std::move(t)}, mode_s_steps,
                   rank, ranks);
    });
    for (int rank = 0; rank < ranks; ++rank) {
      INFO("P = ", ranks, ", rank ", rank);
      dho2_test::check_close(xs[static_cast<std::size_t>(rank)], x1, 1e-12, "max |x_P - x_single|");
    }
  }
}

TEST_CASE("torch: background curvature thread (staleness 2) equals dho2::mlp's run") {
  const torch_problem p;
  using background = dho2::default_policies::with_schedule<dho2::background_schedule>;
  const background policies{
      .base = {.learning_rate = 0.01},
      .schedule = {.max_staleness = 2, .on_late = dho2::late_estimate_policy::wait}};
  const VectorXd xt = train(p.model, p.x0, p.data.train, policies, mode_s_steps);
  const VectorXd xt2 = train(p.model, p.x0, p.data.train, policies, mode_s_steps);
  const VectorXd xd = train(p.reference, p.x0_d, p.data.train, policies, mode_s_steps);
  CHECK(bitwise_equal(xt, xt2));
  const double error = relative_difference(xt, xd);
  INFO("expected: equal to dho2::mlp's background run to 1e-10 relative, got ", error);
  CHECK(error <= 1e-10);
}

TEST_CASE("torch: a checkpoint of a torch-model optimizer resumes bit for bit") {
  const torch_problem p;
  const fs::path dir = test_root() / "resume";
  fs::remove_all(dir);
  fs::create_directories(dir);
  constexpr int half = 7;
  const auto make = [] {
    return std::make_unique<dho2::optimizer<double>>(
        dho2_test::fosi_test_options(), dho2::default_policies{.base = {.learning_rate = 0.01}});
  };
  const auto run = [&](dho2::optimizer<double>& opt, VectorXd& x, int from, int to) {
    dho2::shuffling_batcher<double> batches(p.data.train, 24, 3);
    dho2::classification_batch<double> batch;
    for (int s = from; s < to; ++s) {
      batches.fill_batch(s, batch);
      opt.step(p.model, x, batch);
    }
  };
  VectorXd straight = p.x0;
  auto a = make();
  run(*a, straight, 0, 2 * half);
  VectorXd saved = p.x0;
  auto b = make();
  run(*b, saved, 0, half);
  b->save_checkpoint(dir, saved, {.epoch = 0, .batch = half});
  VectorXd resumed = VectorXd::Zero(p.x0.size());
  auto c = make();
  const dho2::data_position position = c->load_checkpoint(dir, resumed);
  CHECK(position.batch == half);
  run(*c, resumed, half, 2 * half);
  INFO("expected: an estimate before and after the save; got ",
       b->get_summary().curvature_estimates, " and ", c->get_summary().curvature_estimates);
  CHECK(b->get_summary().curvature_estimates >= 1);
  CHECK(c->get_summary().curvature_estimates > b->get_summary().curvature_estimates);
  INFO("expected: resumed parameters bit-identical to the straight run's; max |diff| = ",
       dho2_test::max_abs_diff(resumed, straight));
  CHECK(bitwise_equal(resumed, straight));
  std::error_code ec;
  fs::remove_all(test_root(), ec);
}

TEST_CASE("torch: float LeNet gradient and HVP agree with the double ones") {
  torch::manual_seed(5);
  const dho2::torch_lenet net64(10, torch::kFloat64);
  using cnn64 = dho2::torch_module_model<double, dho2::torch_lenet, dho2::torch_cross_entropy>;
  using cnn32 = dho2::torch_module_model<float, dho2::torch_lenet, dho2::torch_cross_entropy>;
  const cnn64 m64(net64, dho2::torch_cross_entropy{{1, 28, 28}});
  const cnn32 m32([] { return dho2::torch_lenet(10, torch::kFloat32); },
                  dho2::torch_cross_entropy{{1, 28, 28}});
  CHECK(m32.structure().ends_with(" float"));
  const auto images = dho2::make_teacher_classification<double>(
      16, 1, 784, 10, 4, {.inputs = dho2::input_distribution::unit_uniform});
  const dho2::classification_batch<double> b64{images.train.inputs, images.train.labels};
  const dho2::classification_batch<float> b32{images.train.inputs.cast<float>(),
                                              images.train.labels};
  const VectorXd x = m64.initial_point();
  const Eigen::VectorXf xf = x.cast<float>();
  const VectorXd v = normal_vector(x.size(), 3);
  const Eigen::VectorXf vf = v.cast<float>();
  VectorXd g(x.size());
  VectorXd hv(x.size());
  Eigen::VectorXf gf(x.size());
  Eigen::VectorXf hvf(x.size());
  const double loss = m64.loss_and_gradient(x, b64, g);
  const float lossf = m32.loss_and_gradient(xf, b32, gf);
  m64.hessian_vector_product(x, b64, v, hv);
  m32.hessian_vector_product(xf, b32, vf, hvf);
  CHECK(std::abs(static_cast<double>(lossf) - loss) <= 1e-5 * std::abs(loss));
  const double g_error = relative_difference(gf.cast<double>(), g);
  const double h_error = relative_difference(hvf.cast<double>(), hv);
  INFO("float vs double: gradient ", g_error, ", HVP ", h_error, " (expected <= 1e-4)");
  CHECK(g_error <= 1e-4);
  CHECK(h_error <= 1e-4);
}

int main(int argc, char** argv) {
  torch::set_num_threads(1);  // reproducible bit for bit (see the file comment)
  doctest::Context context(argc, argv);
  return context.run();
}
