// Tests of dho2::adamw (include/dho2/base/adamw.hpp): with weight_decay = 0 it is Adam bit for
// bit inside FOSI; one step alone against literals worked out by hand; inside FOSI the decay is
// added after the combination (not projected off V, not scaled by s) on a diagonal quadratic
// whose step is computed densely here; a checkpoint carries its state; mode S at P = 2 equals
// P = 1.
#include "distributed_fixture.hpp"
#include <dho2/base/adam.hpp>
#include <dho2/base/adamw.hpp>
#include <dho2/core/errors.hpp>
#include <dho2/data/batcher.hpp>
#include <dho2/fosi/optimizer.hpp>
#include <dho2/fosi/policies.hpp>
#include <dho2/transport/inproc.hpp>

#include <doctest/doctest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <system_error>
#include <type_traits>

namespace {

using Eigen::VectorXd;
using adamw_policies = dho2::default_policies::with_base<dho2::adamw>;
using adam_policies = dho2::default_policies::with_base<dho2::adam>;

bool bitwise_equal(const VectorXd& a, const VectorXd& b) {
  return a.size() == b.size() && (a.array() == b.array()).all();
}

// f(x) = ½ Σᵢ aᵢ xᵢ² − Σᵢ bᵢ xᵢ with a = (4, 2, 1, 0.5), b = (1, −1, 0.5, 2): Hessian diag(a),
// whose top eigenvector is e₀ (λ = 4).
struct diagonal_quadratic {
  using scalar_type = double;
  struct batch_type {};
  VectorXd a = (VectorXd(4) << 4.0, 2.0, 1.0, 0.5).finished();
  VectorXd b = (VectorXd(4) << 1.0, -1.0, 0.5, 2.0).finished();
  [[nodiscard]] dho2::index num_parameters() const { return 4; }
  double loss_and_gradient(dho2::const_vector_ref<double> x, const batch_type& /*batch*/,
                           dho2::vector_ref<double> g) const {
    g = a.cwiseProduct(x) - b;
    return 0.5 * x.dot(a.cwiseProduct(x)) - b.dot(x);
  }
  void hessian_vector_product(dho2::const_vector_ref<double> /*x*/, const batch_type& /*batch*/,
                              dho2::const_vector_ref<double> v, dho2::vector_ref<double> hv) const {
    hv = a.cwiseProduct(v);
  }
};

}  // namespace

TEST_CASE("adamw: with weight_decay = 0 a FOSI run equals Adam's bit for bit") {
  const dho2_test::mlp_problem p;
  dho2::shuffling_batcher<double> batches(p.data.train, 32, 5);
  const dho2::adamw w{.learning_rate = 3e-3, .beta1 = 0.8, .weight_decay = 0.0};
  const dho2::adam a{.learning_rate = 3e-3, .beta1 = 0.8};
  dho2::optimizer<double, adamw_policies> with_w(dho2_test::fosi_test_options(), {.base = w});
  dho2::optimizer<double, adam_policies> with_a(dho2_test::fosi_test_options(), {.base = a});
  VectorXd xw = p.x0;
  VectorXd xa = p.x0;
  dho2_test::train_steps(with_w, p.model, xw, batches, 11);
  dho2_test::train_steps(with_a, p.model, xa, batches, 11);
  REQUIRE(with_w.get_summary().curvature_estimates == 3);  // before steps 2, 6, 10
  INFO("expected AdamW(λ = 0) and Adam to give the same parameters, bit for bit");
  CHECK(bitwise_equal(xw, xa));
  CHECK(with_w.eigenvalues() == with_a.eigenvalues());
  // The decay is on by default (λ = 1e-2), and then the run differs.
  dho2::optimizer<double, adamw_policies> decayed(dho2_test::fosi_test_options(),
                                                  {.base = {.learning_rate = 3e-3, .beta1 = 0.8}});
  VectorXd xd = p.x0;
  dho2_test::train_steps(decayed, p.model, xd, batches, 11);
  CHECK_FALSE(bitwise_equal(xd, xa));
}

TEST_CASE_TEMPLATE("adamw: one step alone is -lr (g/(|g| + eps) + weight_decay x) at t = 1", S,
                   float, double) {
  // At t = 1 the bias-corrected moments are m̂ = g and v̂ = g², so with η = 0.1, λ = 0.5,
  // ε = 1e-8, x = (1, −2), g = (0.5, −0.25):
  //   Δx₀ = −0.1 (0.5/(0.5 + 1e-8) + 0.5·1)    = −0.1 (0.99999998000000040 + 0.5) = −0.149999998
  //   Δx₁ = −0.1 (−0.25/(0.25 + 1e-8) + 0.5·(−2)) = −0.1 (−0.99999996000000160 − 1) = 0.199999996
  // (to 1e-17: 0.5/0.50000001 = 1 − 2e-8 + 4e-16, 0.25/0.25000001 = 1 − 4e-8 + 1.6e-15).
  const dho2::adamw w{.learning_rate = 0.1, .weight_decay = 0.5};
  auto st = w.template init<S>(2);
  dho2::vector<S> x(2);
  x << S(1), S(-2);
  dho2::vector<S> g(2);
  g << S(0.5), S(-0.25);
  dho2::vector<S> delta = dho2::vector<S>::Constant(2, S(12345));
  w.step(st, dho2::const_vector_ref<S>(g), dho2::vector_ref<S>(delta));
  w.decay(dho2::const_vector_ref<S>(x), dho2::vector_ref<S>(delta));
  const double tol = std::is_same_v<S, float> ? 2e-6 : 1e-13;
  const double want0 = -0.1 * (0.99999998000000040 + 0.5);
  const double want1 = -0.1 * (-0.99999996000000160 - 1.0);
  INFO("delta = (", double(delta(0)), ", ", double(delta(1)), "), expected (", want0, ", ", want1,
       ")");
  CHECK(std::abs(double(delta(0)) - want0) <= tol * std::abs(want0));
  CHECK(std::abs(double(delta(1)) - want1) <= tol * std::abs(want1));
  CHECK(st.t == 1);
  // λ = 0: decay leaves delta untouched; the identity names every hyper-parameter.
  const dho2::adamw none{.weight_decay = 0.0};
  dho2::vector<S> d2 = delta;
  none.decay(dho2::const_vector_ref<S>(x), dho2::vector_ref<S>(d2));
  CHECK(d2 == delta);
  CHECK(dho2::adamw{}.identity() ==
        "adamw learning_rate=0.001 beta1=0.9 beta2=0.999 epsilon=1e-08 weight_decay=0.01");
}

TEST_CASE("adamw: validate names the field, the optimizer refuses a negative weight decay") {
  const auto message = [](const dho2::adamw& w) {
    try {
      w.validate();
    } catch (const dho2::invalid_options& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  CHECK(message({}).empty());
  CHECK(message({.weight_decay = 0.0}).empty());
  CHECK(message({.weight_decay = -1e-3}).find("adamw::weight_decay") != std::string::npos);
  CHECK(message({.learning_rate = 0.0}).find("adamw::learning_rate") != std::string::npos);
  CHECK(message({.beta2 = 1.0}).find("adamw::beta2") != std::string::npos);
  const auto construct = [] {
    const dho2::optimizer<double, adamw_policies> opt({}, {.base = {.weight_decay = -1.0}});
  };
  CHECK_THROWS_AS(construct(), dho2::invalid_options);
}

TEST_CASE("adamw: inside FOSI the decay is added after the combination, outside the split") {
  // k = 2, l = 0, W = 1, clip c = 3: the estimate before step 0 finds λ = 4, 2 with eigenvectors
  // e₀, e₁ (Lanczos over all n = 4 directions is exact to round-off), so V Vᵀ keeps
  // coordinates 0 and 1, s = clip(4/2, 1, 3) = 2, and with momentum off the Newton direction is
  // dᵢ = gᵢ/λᵢ on them. The documented step is
  //   Δx = s (b − V Vᵀ b) − α d − ηλ x,  b = adam(g₂), g₂ = g with coordinates 0, 1 zeroed,
  // at t = 1 bᵢ = −η g₂ᵢ/(|g₂ᵢ| + ε). Computed here densely, without V. A decay projected off V
  // would leave coordinates 0 and 1 undecayed, one scaled by s would double it on 2 and 3, one
  // put in the gradient would pass through Adam's normalisation: each fails the comparison.
  // No gradient coordinate is 0: Adam's g/(|g| + ε) would turn the round-off of g − V Vᵀg there
  // (about 1e-16) into a step of about 1e-8·η.
  const diagonal_quadratic model;
  dho2::options o;
  o.k = 2;
  o.l = 0;
  o.warmup = 1;
  o.lanczos_steps = 4;
  o.alpha = 0.5;
  o.clip = 3.0;
  o.momentum_form = dho2::momentum_kind::none;
  const double eta = 0.05;
  const double lambda = 0.3;
  dho2::optimizer<double, adamw_policies> opt(
      o, {.base = {.learning_rate = eta, .weight_decay = lambda}});
  const VectorXd x0 = (VectorXd(4) << 2.0, -1.0, 1.5, 3.0).finished();
  VectorXd x = x0;
  REQUIRE(opt.step(model, x, {}) == dho2::step_status::taken);
  REQUIRE(opt.eigenvalues().size() == 2);
  CHECK(std::abs(opt.eigenvalues()(0) - 4.0) < 1e-12);
  CHECK(std::abs(opt.eigenvalues()(1) - 2.0) < 1e-12);
  CHECK(std::abs(opt.base_scale() - 2.0) < 1e-12);

  const VectorXd g = model.a.cwiseProduct(x0) - model.b;  // (7, −1, 1, −0.5)
  VectorXd want = x0;
  for (dho2::index i = 2; i < 4; ++i) want(i) += -2.0 * eta * g(i) / (std::abs(g(i)) + 1e-8);
  want(0) += -o.alpha * g(0) / 4.0;
  want(1) += -o.alpha * g(1) / 2.0;
  want += -eta * lambda * x0;
  INFO("x after one FOSI-AdamW step = ", x.transpose(), ", expected ", want.transpose());
  dho2_test::check_close(x, want, 1e-12, "max |x - dense reference|");
  // The same run without decay differs from it by exactly ηλ x₀ (to round-off).
  dho2::optimizer<double, adamw_policies> plain(
      o, {.base = {.learning_rate = eta, .weight_decay = 0.0}});
  VectorXd y = x0;
  REQUIRE(plain.step(model, y, {}) == dho2::step_status::taken);
  dho2_test::check_close(y - x, eta * lambda * x0, 1e-12, "max |(x_plain - x) - eta lambda x0|");
}

TEST_CASE("adamw: checkpoint and resume continues bit for bit") {
  namespace fs = std::filesystem;
  const dho2_test::mlp_problem p;
  const fs::path dir =
      fs::temp_directory_path() / ("dho2_adamw_test_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  const dho2::adamw w{.learning_rate = 3e-3, .weight_decay = 0.05};
  dho2::shuffling_batcher<double> batches(p.data.train, 32, 5);
  // Straight: 10 steps.
  dho2::optimizer<double, adamw_policies> straight(dho2_test::fosi_test_options(), {.base = w});
  VectorXd xs = p.x0;
  dho2_test::train_steps(straight, p.model, xs, batches, 10);
  // Five steps, save, load into a fresh optimizer, five more (batches 5 … 9).
  dho2::optimizer<double, adamw_policies> first(dho2_test::fosi_test_options(), {.base = w});
  VectorXd x = p.x0;
  dho2_test::train_steps(first, p.model, x, batches, 5);
  first.save_checkpoint(dir, x, {0, 5});
  CHECK(first.state().base.t == 5);
  dho2::optimizer<double, adamw_policies> second(dho2_test::fosi_test_options(), {.base = w});
  VectorXd y = VectorXd::Zero(p.x0.size());
  second.load_checkpoint(dir, y);
  CHECK(second.state().base.t == 5);
  CHECK(bitwise_equal(second.state().base.m, first.state().base.m));
  CHECK(bitwise_equal(second.state().base.v, first.state().base.v));
  dho2::classification_batch<double> batch;
  for (int s = 5; s < 10; ++s) {
    batches.fill_batch(s, batch);
    second.step(p.model, y, batch);
  }
  std::error_code ec;
  fs::remove_all(dir, ec);
  INFO("expected 5 steps + save + load + 5 steps to equal 10 steps, bit for bit");
  CHECK(bitwise_equal(y, xs));
}

TEST_CASE("adamw: mode S on 2 in-process ranks equals 1 rank") {
  const dho2_test::mlp_problem p;
  const dho2::adamw w{.learning_rate = 3e-3, .weight_decay = 0.05};
  dho2::shuffling_batcher<double> batches(p.data.train, 32, 5);
  dho2::optimizer<double, adamw_policies> single(dho2_test::fosi_test_options(), {.base = w});
  VectorXd x1 = p.x0;
  dho2_test::train_steps(single, p.model, x1, batches, 11);
  using policies = adamw_policies::with_transport<dho2::inproc_transport>;
  const auto results = dho2_test::on_inproc_ranks(2, [&](dho2::inproc_transport& t) {
    const int rank = t.rank();
    dho2::optimizer<double, policies> opt(dho2_test::fosi_test_options(),
                                          policies{.base = w, .transport = std::move(t)});
    dho2::shuffling_batcher<double> mine(p.data.train, 32, 5);
    VectorXd x = p.x0;
    dho2_test::train_steps(opt, p.model, x, mine, 11, rank, 2);
    return x;
  });
  for (const VectorXd& x : results) {
    dho2_test::check_close(x, x1, 1e-12, "max |x_P2 - x_P1|");
  }
}
