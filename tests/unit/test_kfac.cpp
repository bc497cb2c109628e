// K-FAC for dho2::mlp (include/dho2/kfac/kfac.hpp), classifier and autoencoder: the step against
// the dense Kronecker formula, the factors against their definition from per-sample quantities,
// P ranks against one, optimize() against a hand-written step loop (and a stop asked on one rank
// against P = 1), a training sanity check against SGD, and option validation.
#include "distributed_fixture.hpp"
#include <dho2/data/batcher.hpp>
#include <dho2/data/synthetic.hpp>
#include <dho2/kfac/kfac.hpp>
#include <dho2/models/mlp.hpp>
#include <dho2/transport/inproc.hpp>
#include <dho2/transport/single_process.hpp>

#include <Eigen/Core>
#include <Eigen/LU>
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace {

using Eigen::MatrixXd;
using Eigen::VectorXd;

// The first `count` samples of a set, as one batch.
dho2::classification_batch<double> head(const dho2::classification_set<double>& set, int count) {
  return {set.inputs.leftCols(count), set.labels.head(count)};
}

// Dense (A ⊗ G) built entry by entry: (A ⊗ G)(i·g + k, j·g + m) = A(i, j) G(k, m).
MatrixXd kron(const MatrixXd& a, const MatrixXd& g) {
  MatrixXd k(a.rows() * g.rows(), a.cols() * g.cols());
  for (Eigen::Index i = 0; i < a.rows(); ++i) {
    for (Eigen::Index j = 0; j < a.cols(); ++j) {
      for (Eigen::Index r = 0; r < g.rows(); ++r) {
        for (Eigen::Index c = 0; c < g.cols(); ++c) {
          k(i * g.rows() + r, j * g.cols() + c) = a(i, j) * g(r, c);
        }
      }
    }
  }
  return k;
}

// Per-sample layer inputs a_l (computed by hand, tanh hidden layers) and pre-activation gradients
// g_l (the bias gradient of the model's own gradient on a one-sample batch) of a tanh MLP.
struct per_sample {
  std::vector<MatrixXd> a;  // a[l]: s_l × B
  std::vector<MatrixXd> g;  // g[l]: s_{l+1} × B
};

per_sample brute_signals(const dho2::mlp<double>& model, const VectorXd& x,
                         const dho2::classification_batch<double>& batch) {
  const auto depth = static_cast<std::size_t>(model.num_layers());
  const auto& w = model.layers();
  per_sample out;
  out.a.resize(depth);
  out.g.resize(depth);
  for (std::size_t l = 0; l < depth; ++l) {
    out.a[l].resize(w[l], batch.size());
    out.g[l].resize(w[l + 1], batch.size());
  }
  VectorXd grad(model.num_parameters());
  for (Eigen::Index j = 0; j < batch.size(); ++j) {
    VectorXd a = batch.inputs.col(j);
    Eigen::Index offset = 0;
    std::vector<Eigen::Index> bias_at(depth);
    for (std::size_t l = 0; l < depth; ++l) {
      out.a[l].col(j) = a;
      const Eigen::Map<const MatrixXd> wl(x.data() + offset, w[l + 1], w[l]);
      bias_at[l] = offset + w[l + 1] * w[l];
      const VectorXd z = wl * a + x.segment(bias_at[l], w[l + 1]);
      a = z.array().tanh().matrix();
      offset = bias_at[l] + w[l + 1];
    }
    const dho2::classification_batch<double> one{batch.inputs.col(j), batch.labels.segment(j, 1)};
    static_cast<void>(model.loss_and_gradient(x, one, grad));
    for (std::size_t l = 0; l < depth; ++l) out.g[l].col(j) = grad.segment(bias_at[l], w[l + 1]);
  }
  return out;
}

// A_l = (1/B) Σ ā āᵀ with ā = [a; 1], and G_l = (1/B) Σ g gᵀ, sample by sample.
std::pair<std::vector<MatrixXd>, std::vector<MatrixXd>> brute_factors(const per_sample& s) {
  std::vector<MatrixXd> a_factors, g_factors;
  for (std::size_t l = 0; l < s.a.size(); ++l) {
    const Eigen::Index b = s.a[l].cols();
    MatrixXd a = MatrixXd::Zero(s.a[l].rows() + 1, s.a[l].rows() + 1);
    MatrixXd g = MatrixXd::Zero(s.g[l].rows(), s.g[l].rows());
    for (Eigen::Index j = 0; j < b; ++j) {
      VectorXd abar(s.a[l].rows() + 1);
      abar << s.a[l].col(j), 1.0;
      a += abar * abar.transpose();
      g += s.g[l].col(j) * s.g[l].col(j).transpose();
    }
    a_factors.push_back(a / static_cast<double>(b));
    g_factors.push_back(g / static_cast<double>(b));
  }
  return {a_factors, g_factors};
}

double max_abs(const MatrixXd& m) { return m.cwiseAbs().maxCoeff(); }

void check_matrix_close(const MatrixXd& got, const MatrixXd& expected, double tol,
                        const std::string& what) {
  REQUIRE(got.rows() == expected.rows());
  REQUIRE(got.cols() == expected.cols());
  const double diff = max_abs(got - expected);
  INFO(what, ": max |got - expected| = ", diff, ", expected < ", tol);
  CHECK(diff < tol);
}

}  // namespace

TEST_CASE("kfac: one-layer step equals the dense Kronecker-factored formula") {
  const dho2::mlp<double> model({4, 3}, dho2::activation::tanh, 1e-2);
  const auto data = dho2::make_teacher_classification<double>(40, 0, 4, 3, 11);
  const auto batch = head(data.train, 7);
  VectorXd x0 = model.initialize(5);
  x0.tail(3) << 0.3, -0.2, 0.1;  // non-zero biases

  // Oracle: softmax by hand; g_j = p_j − e_{y_j}; ∇W̄ = (1/B) Σ g āᵀ + λ[W 0].
  const Eigen::Map<const MatrixXd> w(x0.data(), 3, 4);
  const Eigen::Index b = batch.size();
  MatrixXd abar(5, b);
  abar.topRows(4) = batch.inputs;
  abar.row(4).setOnes();
  MatrixXd g(3, b);
  for (Eigen::Index j = 0; j < b; ++j) {
    const VectorXd z = w * batch.inputs.col(j) + x0.tail(3);
    VectorXd p = (z.array() - z.maxCoeff()).exp().matrix();
    p /= p.sum();
    p(batch.labels(j)) -= 1.0;
    g.col(j) = p;
  }
  const double inv_b = 1.0 / static_cast<double>(b);
  const MatrixXd a_factor = inv_b * abar * abar.transpose();
  const MatrixXd g_factor = inv_b * g * g.transpose();
  MatrixXd grad = inv_b * g * abar.transpose();
  grad.leftCols(4) += 1e-2 * w;

  const double lr = 0.3, gamma = 1e-2;
  for (const auto form : {dho2::kfac_damping::trace_norm, dho2::kfac_damping::plain}) {
    for (const std::optional<double> kl : {std::optional<double>{}, std::optional<double>{1e-4}}) {
      CAPTURE(static_cast<int>(form));
      CAPTURE(kl.has_value());
      const double pi = form == dho2::kfac_damping::plain
                            ? 1.0
                            : std::sqrt((a_factor.trace() / 5.0) / (g_factor.trace() / 3.0));
      const double gamma_a = pi * std::sqrt(gamma), gamma_g = std::sqrt(gamma) / pi;
      const MatrixXd k = kron(a_factor + gamma_a * MatrixXd::Identity(5, 5),
                              g_factor + gamma_g * MatrixXd::Identity(3, 3));
      const VectorXd vec_grad = grad.reshaped();
      const VectorXd precond = k.partialPivLu().solve(vec_grad);
      double nu = 1.0;
      if (kl) nu = std::min(1.0, std::sqrt(*kl / (lr * lr * precond.dot(vec_grad))));
      const VectorXd expected = -lr * nu * precond;

      dho2::kfac<double> opt({.learning_rate = lr,
                              .momentum = 0.0,
                              .damping = gamma,
                              .damping_form = form,
                              .factor_decay = 0.9,
                              .kl_clip = kl});
      VectorXd x = x0;
      REQUIRE(opt.step(model, x, batch) == dho2::step_status::taken);
      INFO(
          "expected x_new - x_old = -lr * nu * ((A + gamma_A I) kron (G + gamma_G I))^-1 "
          "vec(grad)");
      dho2_test::check_close(x - x0, expected, 1e-10, "max |dx - dx_dense|");
      INFO("expected gamma_A = ", gamma_a, ", got ", opt.damping_a(0), "; gamma_G = ", gamma_g,
           ", got ", opt.damping_g(0));
      CHECK(std::abs(opt.damping_a(0) - gamma_a) < 1e-14);
      CHECK(std::abs(opt.damping_g(0) - gamma_g) < 1e-14);
      if (kl) {
        INFO("the clip is active for this kl_clip: expected nu = ", nu, " < 1, got ",
             opt.summary().last_kl_scale);
        CHECK(nu < 1.0);
        CHECK(std::abs(opt.summary().last_kl_scale - nu) < 1e-12);
      }
    }
  }
}

TEST_CASE("kfac: one-layer reconstruction step equals the dense Kronecker-factored formula") {
  // A linear autoencoder z = W x + b with f = (1/(2B)) Σ ‖z_j − x_j‖² + (λ/2)‖W‖²: by hand,
  // g_j = z_j − x_j (the per-sample gradient wrt the pre-activation), A = (1/B) Σ ā āᵀ,
  // G = (1/B) Σ g gᵀ, ∇W̄ = (1/B) Σ g āᵀ + λ[W 0].
  const dho2::index s = 4;
  const double l2 = 1e-2;
  const dho2::mlp<double> model({s, s}, dho2::activation::relu, l2,
                                dho2::mlp_loss::squared_error_reconstruction);
  const auto data = dho2::make_teacher_classification<double>(40, 0, s, 3, 13);
  const auto batch = head(data.train, 9);
  VectorXd x0 = model.initialize(6);
  x0.tail(s) << 0.3, -0.2, 0.1, 0.05;
  const Eigen::Map<const MatrixXd> w(x0.data(), s, s);
  const Eigen::Index b = batch.size();
  MatrixXd abar(s + 1, b);
  abar.topRows(s) = batch.inputs;
  abar.row(s).setOnes();
  MatrixXd g(s, b);
  for (Eigen::Index j = 0; j < b; ++j) {
    g.col(j) = w * batch.inputs.col(j) + x0.tail(s) - batch.inputs.col(j);
  }
  const double inv_b = 1.0 / static_cast<double>(b);
  const MatrixXd a_factor = inv_b * abar * abar.transpose();
  const MatrixXd g_factor = inv_b * g * g.transpose();
  MatrixXd grad = inv_b * g * abar.transpose();
  grad.leftCols(s) += l2 * w;

  const double lr = 0.2, gamma = 1e-2;
  for (const std::optional<double> kl : {std::optional<double>{}, std::optional<double>{1e-4}}) {
    CAPTURE(kl.has_value());
    const double pi = std::sqrt((a_factor.trace() / static_cast<double>(s + 1)) /
                                (g_factor.trace() / static_cast<double>(s)));
    const double gamma_a = pi * std::sqrt(gamma), gamma_g = std::sqrt(gamma) / pi;
    const MatrixXd k = kron(a_factor + gamma_a * MatrixXd::Identity(s + 1, s + 1),
                            g_factor + gamma_g * MatrixXd::Identity(s, s));
    const VectorXd vec_grad = grad.reshaped();
    const VectorXd precond = k.partialPivLu().solve(vec_grad);
    double nu = 1.0;
    if (kl) nu = std::min(1.0, std::sqrt(*kl / (lr * lr * precond.dot(vec_grad))));
    dho2::kfac<double> opt(
        {.learning_rate = lr, .damping = gamma, .factor_decay = 0.9, .kl_clip = kl});
    VectorXd x = x0;
    REQUIRE(opt.step(model, x, batch) == dho2::step_status::taken);
    check_matrix_close(opt.factor_a(0), a_factor, 1e-14, "A = (1/B) sum abar abar^T");
    check_matrix_close(opt.factor_g(0), g_factor, 1e-13, "G = (1/B) sum (z - x)(z - x)^T");
    INFO(
        "expected x_new - x_old = -lr * nu * ((A + gamma_A I) kron (G + gamma_G I))^-1 "
        "vec(grad) with g_j = z_j - x_j");
    dho2_test::check_close(x - x0, -lr * nu * precond, 1e-10, "max |dx - dx_dense|");
    if (kl) {
      INFO("the clip is active for this kl_clip: expected nu = ", nu, " < 1");
      CHECK(nu < 1.0);
      CHECK(std::abs(opt.summary().last_kl_scale - nu) < 1e-12);
    }
  }
}

TEST_CASE("kfac: factors equal their per-sample definition on a 2-hidden-layer MLP") {
  const dho2::mlp<double> model({5, 4, 3, 3}, dho2::activation::tanh, 1e-3);
  const auto data = dho2::make_teacher_classification<double>(60, 0, 5, 3, 21);
  const dho2::classification_batch<double> batch1 = head(data.train, 9);
  const dho2::classification_batch<double> batch2{data.train.inputs.middleCols(20, 11),
                                                  data.train.labels.segment(20, 11)};
  const VectorXd x0 = model.initialize(3);

  SUBCASE("the model's signals are the per-sample inputs and pre-activation gradients") {
    dho2::mlp_layer_signals<double> signals;
    VectorXd g1(model.num_parameters()), g2(model.num_parameters());
    const double loss1 = model.loss_gradient_and_signals(x0, batch1, g1, signals);
    const double loss2 = model.loss_and_gradient(x0, batch1, g2);
    INFO("expected the loss and gradient bit-identical to loss_and_gradient");
    CHECK(loss1 == loss2);
    CHECK((g1.array() == g2.array()).all());
    const per_sample brute = brute_signals(model, x0, batch1);
    REQUIRE(signals.inputs.size() == 3);
    REQUIRE(signals.output_gradients.size() == 3);
    for (std::size_t l = 0; l < 3; ++l) {
      CAPTURE(l);
      check_matrix_close(signals.inputs[l], brute.a[l], 1e-14, "layer input a_l");
      check_matrix_close(signals.output_gradients[l], brute.g[l], 1e-13,
                         "pre-activation gradient g_l (one-sample bias gradient)");
    }
  }

  SUBCASE("the autoencoder's signals: g_l from the reconstruction residual") {
    const dho2::mlp<double> ae({5, 4, 3, 5}, dho2::activation::tanh, 1e-3,
                               dho2::mlp_loss::squared_error_reconstruction);
    const VectorXd y = ae.initialize(4);
    dho2::mlp_layer_signals<double> signals;
    VectorXd g1(ae.num_parameters()), g2(ae.num_parameters());
    const double loss1 = ae.loss_gradient_and_signals(y, batch1, g1, signals);
    CHECK(loss1 == ae.loss_and_gradient(y, batch1, g2));
    CHECK((g1.array() == g2.array()).all());
    const per_sample brute = brute_signals(ae, y, batch1);
    REQUIRE(signals.output_gradients.size() == 3);
    for (std::size_t l = 0; l < 3; ++l) {
      CAPTURE(l);
      check_matrix_close(signals.inputs[l], brute.a[l], 1e-14, "layer input a_l");
      check_matrix_close(signals.output_gradients[l], brute.g[l], 1e-13,
                         "pre-activation gradient g_l (one-sample bias gradient)");
    }
    // The last layer's g is the residual z_L − x itself (a linear output).
    const MatrixXd residual = signals.output_gradients[2];
    MatrixXd z = brute.a[2];  // a_2 is the input of the last layer
    const Eigen::Index off = 4 * 5 + 4 + 3 * 4 + 3;
    const Eigen::Map<const MatrixXd> w2(y.data() + off, 5, 3);
    const MatrixXd expected = (w2 * z).colwise() + y.segment(off + 15, 5) - batch1.inputs;
    check_matrix_close(residual, expected, 1e-13, "g_{L-1} = z_L - x");
  }

  SUBCASE("first update, then the moving average") {
    const double decay = 0.8;
    dho2::kfac<double> opt({.learning_rate = 0.05, .factor_decay = decay, .inverse_every = 1});
    VectorXd x = x0;
    REQUIRE(opt.step(model, x, batch1) == dho2::step_status::taken);
    const auto [a1, g1] = brute_factors(brute_signals(model, x0, batch1));
    REQUIRE(opt.num_layers() == 3);
    for (dho2::index l = 0; l < 3; ++l) {
      CAPTURE(l);
      const auto k = static_cast<std::size_t>(l);
      check_matrix_close(opt.factor_a(l), a1[k], 1e-14, "A_l after step 1 = (1/B) sum abar abar^T");
      check_matrix_close(opt.factor_g(l), g1[k], 1e-13, "G_l after step 1 = (1/B) sum g g^T");
      MatrixXd damped = a1[k];
      damped.diagonal().array() += opt.damping_a(l);
      check_matrix_close(opt.inverse_a(l) * damped,
                         MatrixXd::Identity(damped.rows(), damped.cols()), 1e-8,
                         "inverse_a(l) * (A_l + gamma_A I) = I");
    }
    const VectorXd x1 = x;
    REQUIRE(opt.step(model, x, batch2) == dho2::step_status::taken);
    const auto [a2, g2] = brute_factors(brute_signals(model, x1, batch2));
    for (dho2::index l = 0; l < 3; ++l) {
      CAPTURE(l);
      const auto k = static_cast<std::size_t>(l);
      check_matrix_close(opt.factor_a(l), decay * a1[k] + (1.0 - decay) * a2[k], 1e-14,
                         "A_l after step 2 = eps A_1 + (1 - eps) A_hat_2");
      check_matrix_close(opt.factor_g(l), decay * g1[k] + (1.0 - decay) * g2[k], 1e-13,
                         "G_l after step 2 = eps G_1 + (1 - eps) G_hat_2");
    }
    CHECK(opt.summary().factor_updates == 2);
    CHECK(opt.summary().inverse_updates == 2);
  }
}

namespace {

struct kfac_run {
  VectorXd x;
  std::vector<double> losses;
  dho2::kfac_summary summary;
  std::vector<int> owners;
};

// Ten K-FAC steps of a 6-8-5-3 tanh MLP (or a 6-8-4-6 autoencoder) on global batches of 25
// (uneven slices for P = 2, 3).
struct distributed_problem {
  explicit distributed_problem(dho2::mlp_loss loss = dho2::mlp_loss::softmax_cross_entropy)
      : model(loss == dho2::mlp_loss::softmax_cross_entropy ? std::vector<dho2::index>{6, 8, 5, 3}
                                                            : std::vector<dho2::index>{6, 8, 4, 6},
              dho2::activation::tanh, 1e-3, loss) {}
  dho2::mlp<double> model;
  dho2::train_test_sets<double> data = dho2::make_teacher_classification<double>(400, 0, 6, 3, 5);
  VectorXd x0 = model.initialize(9);
  dho2::kfac_options options{.learning_rate = 0.05,
                             .momentum = 0.9,
                             .damping = 1e-2,
                             .factor_decay = 0.9,
                             .factor_every = 2,
                             .inverse_every = 3,
                             .kl_clip = 1e-2};
  static constexpr int steps = 10;
  static constexpr dho2::index global_batch = 25;

  template <class Transport>
  kfac_run run(Transport transport, int rank, int ranks) const {
    dho2::kfac<double, Transport> opt(options, std::move(transport));
    dho2::shuffling_batcher<double> batches(data.train, global_batch, 17);
    kfac_run out{x0, {}, {}, {}};
    out.losses = dho2_test::train_steps(opt, model, out.x, batches, steps, rank, ranks);
    out.summary = opt.summary();
    for (dho2::index l = 0; l < opt.num_layers(); ++l) out.owners.push_back(opt.owner(l));
    return out;
  }
};

}  // namespace

TEST_CASE("kfac: P = 2 and 3 in-process ranks equal P = 1 over ten steps") {
  for (const auto loss :
       {dho2::mlp_loss::softmax_cross_entropy, dho2::mlp_loss::squared_error_reconstruction}) {
    CAPTURE(dho2::to_string(loss));
    const distributed_problem p(loss);
    const kfac_run single = p.run(dho2::single_process{}, 0, 1);
    CHECK(single.summary.steps == 10);
    CHECK(single.summary.factor_updates == 5);
    CHECK(single.summary.inverse_updates == 4);
    CHECK(single.summary.factors_inverted == 2 * 3 * 4);
    for (const int ranks : {2, 3}) {
      CAPTURE(ranks);
      const auto results = dho2_test::on_inproc_ranks(ranks, [&](dho2::inproc_transport& t) {
        const int rank = t.rank();
        return p.run(std::move(t), rank, ranks);
      });
      dho2::index inverted = 0;
      for (int r = 0; r < ranks; ++r) {
        CAPTURE(r);
        const auto& res = results[static_cast<std::size_t>(r)];
        dho2_test::check_close(res.x, single.x, 1e-12, "max |x_P - x_1| after ten steps");
        dho2_test::check_close(Eigen::Map<const VectorXd>(res.losses.data(), 10),
                               Eigen::Map<const VectorXd>(single.losses.data(), 10), 1e-12,
                               "max |loss_P - loss_1| over the steps");
        INFO("expected every rank to invert at least one layer (greedy by cost (s+1)^3 + s'^3)");
        CHECK(res.summary.factors_inverted > 0);
        CHECK(res.owners == results.front().owners);
        CHECK(res.summary.communicated_bytes > 0);
        inverted += res.summary.factors_inverted;
      }
      INFO("expected the ranks to share the 2 x 3 layers x 4 refreshes of inversions exactly");
      CHECK(inverted == 2 * 3 * 4);
    }
  }
}

namespace {

// Records what optimize() passes to the hooks; asks to stop after step call `stop_at` (0-based)
// when `stop_at` >= 0.
struct recorder {
  explicit recorder(dho2::index stop = -1) : stop_at(stop) {}
  dho2::index stop_at;
  bool began = false;
  bool ended = false;
  std::vector<dho2::index> iterations;
  std::vector<double> step_losses;
  std::vector<double> epoch_losses;
  std::vector<VectorXd> epoch_parameters;
  dho2::summary final_summary;

  void on_begin(const dho2::run_info&) { began = true; }
  bool on_step(const dho2::step_info<double>& info) {
    iterations.push_back(info.iteration);
    step_losses.push_back(info.loss);
    return info.iteration == stop_at;
  }
  void on_epoch_end(dho2::epoch_info<double>& info) {
    epoch_losses.push_back(info.train_loss);
    epoch_parameters.emplace_back(info.parameters);
  }
  void on_end(const dho2::summary& s) {
    ended = true;
    final_summary = s;
  }
};

}  // namespace

TEST_CASE("kfac: optimize() equals a hand-written step loop and calls every hook") {
  const distributed_problem p(dho2::mlp_loss::squared_error_reconstruction);
  dho2::shuffling_batcher<double> batches(p.data.train, 64, 17);
  const dho2::index per_epoch = batches.num_batches();
  REQUIRE(per_epoch == 6);  // 400 samples in batches of 64 (the partial last one dropped)

  // Oracle: the documented loop, by hand.
  dho2::kfac<double> manual(p.options);
  VectorXd x_manual = p.x0;
  std::vector<double> losses;
  std::vector<double> epoch_means;
  dho2::classification_batch<double> batch;
  for (dho2::index e = 0; e < 2; ++e) {
    batches.begin_epoch(e);
    double sum = 0.0;
    for (dho2::index i = 0; i < per_epoch; ++i) {
      batches.fill_batch(i, batch);
      REQUIRE(manual.step(p.model, x_manual, batch) == dho2::step_status::taken);
      losses.push_back(manual.last_loss());
      sum += manual.last_loss();
    }
    epoch_means.push_back(sum / static_cast<double>(per_epoch));
  }

  dho2::kfac<double> opt(p.options);
  VectorXd x = p.x0;
  recorder rec;
  const dho2::summary s = opt.optimize(p.model, x, batches, 2, rec);
  INFO("expected optimize() to take the same steps as the loop, bit for bit");
  CHECK((x.array() == x_manual.array()).all());
  CHECK(rec.step_losses == losses);
  CHECK(rec.epoch_losses == epoch_means);
  REQUIRE(rec.epoch_parameters.size() == 2);
  CHECK((rec.epoch_parameters.back().array() == x.array()).all());
  CHECK(rec.iterations.size() == 12);
  CHECK(rec.iterations.back() == 11);
  CHECK(rec.began);
  CHECK(rec.ended);
  CHECK(s.termination == dho2::termination_type::completed);
  CHECK(s.epochs == 2);
  CHECK(s.steps == 12);
  CHECK(s.iterations == 12);
  CHECK(s.final_loss == epoch_means.back());
  CHECK(s.curvature_bytes == opt.summary().curvature_bytes);
  CHECK(s.curvature_bytes + s.optimizer_state_bytes == opt.summary().optimizer_state_bytes);
  CHECK(s.curvature_bytes > 0);
  CHECK(rec.final_summary.steps == 12);
  CHECK(s.total_seconds >= s.gradient_seconds + s.update_seconds);
}

TEST_CASE("kfac: a stop asked by a callback on one rank stops every rank after that step") {
  const distributed_problem p;
  // P = 1, stopped after step call 9 (the fourth of the second epoch of 6 batches).
  dho2::shuffling_batcher<double> batches(p.data.train, 64, 17);
  dho2::kfac<double> single(p.options);
  VectorXd x_single = p.x0;
  recorder rec_single(9);
  const dho2::summary s1 = single.optimize(p.model, x_single, batches, 3, rec_single);
  CHECK(s1.termination == dho2::termination_type::stopped_by_callback);
  CHECK(s1.iterations == 10);
  CHECK(s1.epochs == 1);
  for (const int ranks : {2, 3}) {
    CAPTURE(ranks);
    struct result {
      VectorXd x;
      dho2::summary s;
      std::vector<double> losses;
    };
    const auto results = dho2_test::on_inproc_ranks(ranks, [&](dho2::inproc_transport& t) {
      const int rank = t.rank();
      dho2::kfac<double, dho2::inproc_transport> opt(p.options, std::move(t));
      dho2::shuffling_batcher<double> mine(p.data.train, 64, 17);
      VectorXd x = p.x0;
      recorder rec(rank == ranks - 1 ? 9 : -1);  // only the last rank asks
      const dho2::summary s = opt.optimize(p.model, x, mine, 3, rec);
      return result{x, s, rec.step_losses};
    });
    for (int r = 0; r < ranks; ++r) {
      CAPTURE(r);
      const auto& res = results[static_cast<std::size_t>(r)];
      INFO("expected every rank to stop after step call 9 like P = 1, with the same iterate");
      CHECK(res.s.termination == dho2::termination_type::stopped_by_callback);
      CHECK(res.s.iterations == 10);
      CHECK(res.s.epochs == 1);
      dho2_test::check_close(res.x, x_single, 1e-12, "max |x_P - x_1| at the stop");
      REQUIRE(res.losses.size() == rec_single.step_losses.size());
      dho2_test::check_close(Eigen::Map<const VectorXd>(res.losses.data(), 10),
                             Eigen::Map<const VectorXd>(rec_single.step_losses.data(), 10), 1e-12,
                             "max |loss_P - loss_1| over the steps");
    }
  }
}

TEST_CASE("kfac: reduces the training loss and ends below SGD at the same learning rate") {
  const dho2::mlp<double> model({8, 16, 4}, dho2::activation::tanh);
  const auto data = dho2::make_teacher_classification<double>(512, 0, 8, 4, 7);
  const VectorXd x0 = model.initialize(1);
  const dho2::classification_batch<double> all{data.train.inputs, data.train.labels};
  const double lr = 0.03;  // KL clipping is active (nu ~ 0.6) for K-FAC at this rate
  const int steps = 60;
  dho2::shuffling_batcher<double> batches(data.train, 32, 3);

  VectorXd x_kfac = x0;
  dho2::kfac<double> opt({.learning_rate = lr, .damping = 1e-2, .inverse_every = 5});
  VectorXd x_sgd = x0;
  VectorXd grad(model.num_parameters());
  dho2::classification_batch<double> batch;
  for (int s = 0; s < steps; ++s) {
    batches.fill_batch(s % batches.num_batches(), batch);
    REQUIRE(opt.step(model, x_kfac, batch) == dho2::step_status::taken);
    static_cast<void>(model.loss_and_gradient(x_sgd, batch, grad));
    x_sgd -= lr * grad;
  }
  const double initial = model.loss(x0, all);
  const double kfac_loss = model.loss(x_kfac, all);
  const double sgd_loss = model.loss(x_sgd, all);
  INFO("training loss: initial ", initial, ", K-FAC ", kfac_loss, ", SGD ", sgd_loss, " after ",
       steps, " steps at lr ", lr, "; expected K-FAC < 0.8 initial and K-FAC < SGD");
  CHECK(kfac_loss < 0.8 * initial);
  CHECK(kfac_loss < sgd_loss);

  SUBCASE("float parameters (factors in double) follow the double run") {
    const dho2::mlp<float> model_f({8, 16, 4}, dho2::activation::tanh);
    const auto data_f = dho2::make_teacher_classification<float>(512, 0, 8, 4, 7);
    dho2::shuffling_batcher<float> batches_f(data_f.train, 32, 3);
    Eigen::VectorXf x_f = x0.cast<float>();
    dho2::kfac<float> opt_f({.learning_rate = lr, .damping = 1e-2, .inverse_every = 5});
    dho2::classification_batch<float> batch_f;
    for (int s = 0; s < steps; ++s) {
      batches_f.fill_batch(s % batches_f.num_batches(), batch_f);
      REQUIRE(opt_f.step(model_f, x_f, batch_f) == dho2::step_status::taken);
    }
    const double diff = (x_f.cast<double>() - x_kfac).cwiseAbs().maxCoeff();
    INFO("max |x_float - x_double| after ", steps, " steps = ", diff, ", expected < 1e-3");
    CHECK(diff < 1e-3);
  }
}

TEST_CASE("kfac: invalid options are rejected naming the field") {
  struct bad_case {
    std::function<void(dho2::kfac_options&)> set;
    std::string expected;
  };
  const std::vector<bad_case> cases{
      {[](auto& o) { o.learning_rate = 0.0; }, "kfac_options.learning_rate = 0. Violated"},
      {[](auto& o) { o.learning_rate = NAN; }, "kfac_options.learning_rate = nan. Violated"},
      {[](auto& o) { o.momentum = 1.0; }, "kfac_options.momentum = 1. Violated"},
      {[](auto& o) { o.damping = -1.0; }, "kfac_options.damping = -1. Violated"},
      {[](auto& o) { o.damping = 0.0; }, "kfac_options.damping = 0. Violated"},
      {[](auto& o) { o.damping_form = static_cast<dho2::kfac_damping>(7); },
       "kfac_options.damping_form = 7. Violated"},
      {[](auto& o) { o.factor_decay = 1.0; }, "kfac_options.factor_decay = 1. Violated"},
      {[](auto& o) { o.factor_every = 0; }, "kfac_options.factor_every = 0. Violated"},
      {[](auto& o) { o.inverse_every = -2; }, "kfac_options.inverse_every = -2. Violated"},
      {[](auto& o) { o.kl_clip = 0.0; }, "kfac_options.kl_clip = 0. Violated"},
  };
  for (const auto& c : cases) {
    dho2::kfac_options o;
    c.set(o);
    std::string message;
    try {
      dho2::kfac<double> opt(o);
    } catch (const dho2::invalid_options& e) {
      message = e.what();
    }
    INFO("expected an invalid_options message starting with \"", c.expected, "\", got \"", message,
         "\"");
    CHECK(message.rfind(c.expected, 0) == 0);
  }

  SUBCASE("options that differ between ranks are rejected at the first step, x unchanged") {
    const distributed_problem p;
    const auto messages = dho2_test::on_inproc_ranks(2, [&](dho2::inproc_transport& t) {
      const int rank = t.rank();
      auto o = p.options;
      if (rank == 1) o.damping = 0.5;
      dho2::kfac<double, dho2::inproc_transport> opt(o, std::move(t));
      dho2::shuffling_batcher<double> batches(p.data.train, 25, 17);
      VectorXd x = p.x0;
      std::string message;
      try {
        dho2_test::train_steps(opt, p.model, x, batches, 1, rank, 2);
      } catch (const dho2::invalid_options& e) {
        message = e.what();
      }
      if (x != p.x0) message += " [x changed]";
      return message;
    });
    for (const auto& m : messages) {
      INFO(
          "expected \"kfac_options.damping = ... Violated constraint: identical on all 2 ranks\""
          ", got \"",
          m, "\"");
      CHECK(m.rfind("kfac_options.damping = ", 0) == 0);
      CHECK(m.find("identical on all 2 ranks") != std::string::npos);
      CHECK(m.find("[x changed]") == std::string::npos);
    }
  }

  SUBCASE("a model with another hidden activation on one rank is rejected, naming both") {
    const distributed_problem p;
    const auto messages = dho2_test::on_inproc_ranks(2, [&](dho2::inproc_transport& t) {
      const int rank = t.rank();
      const dho2::mlp<double> model(p.model.layers(),
                                    rank == 0 ? dho2::activation::tanh : dho2::activation::relu,
                                    1e-3, p.model.output_loss());
      dho2::kfac<double, dho2::inproc_transport> opt(p.options, std::move(t));
      dho2::shuffling_batcher<double> batches(p.data.train, 25, 17);
      VectorXd x = p.x0;
      std::string message;
      try {
        dho2_test::train_steps(opt, model, x, batches, 1, rank, 2);
      } catch (const dho2::invalid_options& e) {
        message = e.what();
      }
      return message;
    });
    for (const auto& m : messages) {
      CHECK(m ==
            "model.hidden_activation() = 1 on rank 0, 0 on rank 1. Violated constraint: "
            "identical on all 2 ranks");
    }
  }
}
