// FOSI invariants (docs/algorithm.md, "The FOSI step" and "Guards"): base-optimizer equality,
// schedule, exact Newton step on a quadratic, orthogonality, a dense reference implementation, and
// the guards.
#include <dho2/dho2.hpp>
#include <dho2/models/quadratic.hpp>
#include <dho2/testing/planted_spectrum.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <memory>
#include <vector>

namespace {

using Eigen::MatrixXd;
using Eigen::VectorXd;
using quad = dho2::quadratic<double>;
using sgd_policies = dho2::default_policies::with_base<dho2::sgd>;

const quad::batch_type no_batch{};

bool bitwise_equal(const VectorXd& a, const VectorXd& b) {
  return a.size() == b.size() && (a.array() == b.array()).all();
}

// The FOSI step (docs/algorithm.md, "The FOSI step") written densely, with the velocity as a full
// vector (as in the reference implementation). V: K × n with orthonormal rows.
struct dense_fosi {
  dho2::adam base;
  dho2::adam::state<double> state;
  VectorXd u;
  dense_fosi(dho2::adam b, Eigen::Index n)
      : base(b), state(b.init<double>(n)), u(VectorXd::Zero(n)) {}

  void step(VectorXd& x, const VectorXd& g, const MatrixXd& v, const VectorXd& rho, double s,
            double alpha, double beta) {
    const VectorXd g1 = v.transpose() * (v * g);
    const VectorXd g2 = g - g1;
    u = beta * u + (1.0 - beta) * g1;
    const VectorXd d = v.transpose() * rho.cwiseProduct(v * u);
    VectorXd b(x.size());
    base.step<double>(state, g2, b);
    b -= v.transpose() * (v * b);
    x += s * b - alpha * d;
  }
};

// A quadratic whose gradient (or HVP) turns non-finite on chosen calls.
struct faulty_quadratic {
  using scalar_type = double;
  using batch_type = quad::batch_type;
  const quad* q;
  std::shared_ptr<int> gradient_calls = std::make_shared<int>(0);
  std::shared_ptr<int> hvp_calls = std::make_shared<int>(0);
  int bad_gradient_call = -1;  // 0-based call index that returns NaN
  int bad_hvp_from = -1;       // HVP calls from this index on return NaN

  dho2::index num_parameters() const { return q->num_parameters(); }
  double loss_and_gradient(dho2::const_vector_ref<double> x, const batch_type& b,
                           dho2::vector_ref<double> g) const {
    const double loss = q->loss_and_gradient(x, b, g);
    if ((*gradient_calls)++ == bad_gradient_call) g(0) = std::numeric_limits<double>::quiet_NaN();
    return loss;
  }
  void hessian_vector_product(dho2::const_vector_ref<double> x, const batch_type& b,
                              dho2::const_vector_ref<double> v, dho2::vector_ref<double> hv) const {
    q->hessian_vector_product(x, b, v, hv);
    if (bad_hvp_from >= 0 && (*hvp_calls)++ >= bad_hvp_from) {
      hv(0) = std::numeric_limits<double>::quiet_NaN();
    }
  }
};

// The quadratic seen only through its gradient: FOSI must fall back to finite differences.
template <class S>
struct gradient_only {
  using scalar_type = S;
  using batch_type = typename dho2::quadratic<S>::batch_type;
  const dho2::quadratic<S>* q;
  dho2::index num_parameters() const { return q->num_parameters(); }
  S loss_and_gradient(dho2::const_vector_ref<S> x, const batch_type& b,
                      dho2::vector_ref<S> g) const {
    return q->loss_and_gradient(x, b, g);
  }
};

}  // namespace

TEST_CASE("fosi: identical to the base optimizer, bit for bit, before the first estimate") {
  const quad q(dho2::testing::geometric(40, 4.0, 0.85), 10);
  dho2::options o;
  o.k = 4;
  o.warmup = 10;
  dho2::optimizer<double> opt(o, {.base = {.learning_rate = 0.05}});
  VectorXd x = q.initial_point();
  VectorXd y = q.initial_point();
  const dho2::adam adam{.learning_rate = 0.05};
  auto state = adam.init<double>(40);
  VectorXd g(40), d(40);
  for (int t = 0; t < 9; ++t) {
    opt.step(q, x, no_batch);
    q.loss_and_gradient(y, no_batch, g);
    adam.step<double>(state, g, d);
    y += d;
    INFO("step ", t);
    REQUIRE(bitwise_equal(x, y));
  }
  CHECK(opt.get_summary().curvature_estimates == 0);
  opt.step(q, x, no_batch);  // step W − 1 = 9 estimates first
  CHECK(opt.get_summary().curvature_estimates == 1);
  CHECK(opt.last_step_estimated());
}

TEST_CASE("fosi: use_curvature = false is the base optimizer at every step") {
  const quad q(dho2::testing::geometric(30, 4.0, 0.8), 11);
  dho2::options o;
  o.use_curvature = false;
  o.k = 0;
  o.warmup = 1;
  o.refresh_every = 3;
  dho2::optimizer<double, dho2::default_policies::with_base<dho2::nesterov>> opt(
      o, {.base = {.learning_rate = 0.02, .momentum = 0.9}});
  VectorXd x = q.initial_point();
  VectorXd y = q.initial_point();
  const dho2::nesterov base{.learning_rate = 0.02, .momentum = 0.9};
  auto state = base.init<double>(30);
  VectorXd g(30), d(30);
  for (int t = 0; t < 25; ++t) {
    opt.step(q, x, no_batch);
    q.loss_and_gradient(y, no_batch, g);
    base.step<double>(state, g, d);
    y += d;
  }
  CHECK(bitwise_equal(x, y));
  CHECK(opt.get_summary().curvature_estimates == 0);
  CHECK(opt.get_summary().hvp == dho2::hvp_source::none);
}

TEST_CASE("fosi: estimates run before steps W - 1, W - 1 + T, ...") {
  const quad q(dho2::testing::geometric(30, 4.0, 0.8), 12);
  struct schedule_case {
    dho2::index warmup, refresh;
    std::vector<dho2::index> expected;
  };
  for (const auto& c : {schedule_case{3, 5, {2, 7, 12}}, schedule_case{1, 4, {0, 4, 8, 12}},
                        schedule_case{6, 2, {5, 7, 9, 11, 13}}}) {
    dho2::options o;
    o.k = 2;
    o.warmup = c.warmup;
    o.refresh_every = c.refresh;
    dho2::optimizer<double, sgd_policies> opt(o, {.base = {.learning_rate = 0.01}});
    VectorXd x = q.initial_point();
    std::vector<dho2::index> seen;
    for (dho2::index t = 0; t < 14; ++t) {
      opt.step(q, x, no_batch);
      if (opt.last_step_estimated()) seen.push_back(t);
    }
    INFO("W = ", c.warmup, ", T = ", c.refresh);
    CHECK(seen == c.expected);
    const auto& reports = opt.get_summary().estimates;
    REQUIRE(reports.size() == c.expected.size());
    for (std::size_t i = 0; i < reports.size(); ++i) CHECK(reports[i].step == c.expected[i]);
  }
}

TEST_CASE("fosi: with alpha = 1, no momentum and SGD, one step removes the top-k components") {
  // f = ½ eᵀAe with e = x − x*; the Newton part Vᵀ(ρ ⊙ V A e) is exactly the top-k part of e,
  // and the base part −s·lr·(I − VᵀV)A e scales every other component by (1 − s·lr·λᵢ).
  const auto lambda = dho2::testing::geometric(100, 10.0, 0.8);
  const quad q(lambda, 13);
  dho2::options o;
  o.k = 4;
  o.warmup = 1;
  o.alpha = 1.0;
  o.momentum_form = dho2::momentum_kind::none;
  o.lanczos_steps = 60;
  const double lr = 0.01;
  dho2::optimizer<double, sgd_policies> opt(o, {.base = {.learning_rate = lr}});
  VectorXd x = q.initial_point();
  const VectorXd e_before = q.eigenvectors().transpose() * (x - q.minimizer());
  opt.step(q, x, no_batch);
  const VectorXd e_after = q.eigenvectors().transpose() * (x - q.minimizer());
  const double s = std::min(lambda(0) / lambda(3), 3.0);
  CHECK(opt.base_scale() == doctest::Approx(s).epsilon(1e-12));
  for (Eigen::Index i = 0; i < 100; ++i) {
    INFO("component ", i, " (λ = ", lambda(i), "): before ", e_before(i), ", after ", e_after(i));
    if (i < 4) {
      CHECK(std::abs(e_after(i)) < 1e-10 * std::abs(e_before(i)));
    } else {
      const double expected = (1.0 - s * lr * lambda(i)) * e_before(i);
      CHECK(std::abs(e_after(i) - expected) < 1e-10 * std::abs(e_before(i)));
    }
  }
}

TEST_CASE("fosi: the base part of every step is orthogonal to span(V)") {
  // With α = 0 the step is s·(b − VᵀVb): V·Δx must vanish.
  const quad q(dho2::testing::geometric(80, 6.0, 0.85), 14);
  dho2::options o;
  o.k = 5;
  o.warmup = 1;
  o.refresh_every = 4;
  o.alpha = 0.0;
  dho2::optimizer<double> opt(o, {.base = {.learning_rate = 0.05}});
  VectorXd x = q.initial_point();
  for (int t = 0; t < 10; ++t) {
    const VectorXd before = x;
    opt.step(q, x, no_batch);
    const VectorXd dx = x - before;
    const MatrixXd v = opt.eigenvectors().transpose();  // K × n
    REQUIRE(v.rows() == 5);
    INFO("step ", t, ": |V dx| = ", (v * dx).norm(), ", |dx| = ", dx.norm());
    CHECK((v * dx).norm() < 1e-12 * dx.norm());
  }
}

TEST_CASE("fosi: matches a dense reference implementation across estimates") {
  const quad q(dho2::testing::geometric(60, 5.0, 0.8), 15);
  dho2::options o;
  o.k = 3;
  o.warmup = 3;
  o.refresh_every = 4;
  o.alpha = 0.3;
  o.momentum = 0.7;
  const dho2::adam adam{.learning_rate = 0.03};
  dho2::optimizer<double> opt(o, {.base = adam});
  dense_fosi ref(adam, 60);
  VectorXd x = q.initial_point();
  VectorXd y = q.initial_point();
  VectorXd g(60);
  for (int t = 0; t < 14; ++t) {
    q.loss_and_gradient(y, no_batch, g);
    opt.step(q, x, no_batch);
    // The V in force for step t is the one installed before it; it is unchanged by the update.
    const MatrixXd v = opt.eigenvectors().transpose();  // K × n
    const VectorXd rho = opt.eigenvalues().cwiseAbs().cwiseInverse();
    ref.step(y, g, v, rho, opt.base_scale(), o.alpha, o.momentum);
    INFO("step ", t, ": max |x - x_ref| = ", (x - y).cwiseAbs().maxCoeff());
    CHECK((x - y).cwiseAbs().maxCoeff() < 1e-12 * y.cwiseAbs().maxCoeff());
  }
  CHECK(opt.get_summary().curvature_estimates == 3);
}

TEST_CASE("fosi: k above the Hessian's rank, and l = 1 on a singular Hessian, stay finite") {
  // f_b(x) = ½ eᵀAe + ξ_bᵀx with A of rank 3 and batch noise ξ_b in null(A), as stochastic
  // gradients have in flat directions. Lanczos finds a Ritz value of pure round-off (~1e-16)
  // for the null direction; inverting it, as the reference does, multiplies the noise by ~1e16.
  // The eigenvalue floor drops it.
  const quad q(dho2::testing::rank_deficient(50, 3, 4.0), 16);
  const MatrixXd null_basis = q.eigenvectors().rightCols(47);
  struct noisy_model {
    using scalar_type = double;
    using batch_type = VectorXd;  // ξ
    const quad* q;
    dho2::index num_parameters() const { return q->num_parameters(); }
    double loss_and_gradient(dho2::const_vector_ref<double> x, const VectorXd& xi,
                             dho2::vector_ref<double> g) const {
      const double loss = q->loss_and_gradient(x, {}, g) + xi.dot(x);
      g += xi;
      return loss;
    }
    void hessian_vector_product(dho2::const_vector_ref<double> x, const VectorXd& /*xi*/,
                                dho2::const_vector_ref<double> v,
                                dho2::vector_ref<double> hv) const {
      q->hessian_vector_product(x, {}, v, hv);
    }
  };
  const noisy_model model{&q};
  struct guard_case {
    dho2::index k, l;
  };
  for (const auto& c : {guard_case{6, 0}, guard_case{2, 1}}) {
    struct outcome {
      std::vector<double> losses;
      double final_norm;
    };
    auto run = [&](double floor) {
      dho2::options o;
      o.k = c.k;
      o.l = c.l;
      o.warmup = 1;
      o.refresh_every = 5;
      o.alpha = 0.5;
      o.momentum_form = dho2::momentum_kind::none;
      o.eigenvalue_floor = floor;
      dho2::optimizer<double, sgd_policies> opt(o, {.base = {.learning_rate = 0.1}});
      dho2::detail::xoshiro256 rng(99);
      VectorXd x = q.initial_point();
      outcome out{{q.loss(x, no_batch)}, 0.0};
      for (int t = 0; t < 20; ++t) {
        VectorXd z(47);
        for (auto& zi : z) zi = 0.1 * rng.normal();
        opt.step(model, x, VectorXd(null_basis * z));
        out.losses.push_back(q.loss(x, no_batch));
      }
      out.final_norm = x.norm();
      return out;
    };
    const auto guarded = run(1e-4);
    INFO("k = ", c.k, ", l = ", c.l, ": loss ", guarded.losses.front(), " -> ",
         guarded.losses.back(), ", |x| = ", guarded.final_norm);
    for (std::size_t t = 1; t < guarded.losses.size(); ++t) {
      CHECK(std::isfinite(guarded.losses[t]));
      CHECK(guarded.losses[t] <= guarded.losses[t - 1]);
    }
    CHECK(guarded.losses.back() < 1e-3 * guarded.losses.front());
    CHECK(guarded.final_norm < 100.0);
    // Without the floor (the reference's behaviour) the iterate is thrown far along the flat
    // direction.
    const auto unguarded = run(0.0);
    INFO("unguarded |x| = ", unguarded.final_norm);
    CHECK((!std::isfinite(unguarded.final_norm) || unguarded.final_norm > 1e6));
  }
}

TEST_CASE("fosi: a non-finite gradient is skipped without touching any state") {
  const quad q(dho2::testing::geometric(20, 3.0, 0.8), 17);
  dho2::options o;
  o.use_curvature = false;
  faulty_quadratic bad{&q};
  bad.bad_gradient_call = 3;
  dho2::optimizer<double> skipping(o, {.base = {.learning_rate = 0.05}});
  dho2::optimizer<double> clean(o, {.base = {.learning_rate = 0.05}});
  VectorXd x = q.initial_point();
  VectorXd y = q.initial_point();
  for (int t = 0; t < 8; ++t) {
    const VectorXd before = x;
    const auto status = skipping.step(bad, x, no_batch);
    if (t == 3) {
      CHECK(status == dho2::step_status::skipped_nonfinite_gradient);
      CHECK(bitwise_equal(x, before));
    } else {
      CHECK(status == dho2::step_status::taken);
      clean.step(q, y, no_batch);
    }
  }
  // Adam's moments and step count were not advanced by the skipped step.
  CHECK(bitwise_equal(x, y));
  CHECK(skipping.get_summary().skipped_nonfinite_gradient == 1);
  CHECK(skipping.get_summary().steps == 7);
}

TEST_CASE("fosi: nonfinite_policy::stop ends the run with the last finite parameters") {
  const quad q(dho2::testing::geometric(20, 3.0, 0.8), 18);
  dho2::options o;
  o.use_curvature = false;
  o.on_nonfinite = dho2::nonfinite_policy::stop;
  faulty_quadratic bad{&q};
  bad.bad_gradient_call = 2;
  dho2::optimizer<double> opt(o);
  VectorXd x = q.initial_point();
  opt.step(bad, x, no_batch);
  opt.step(bad, x, no_batch);
  const VectorXd before = x;
  CHECK(opt.step(bad, x, no_batch) == dho2::step_status::stopped);
  CHECK(opt.step(bad, x, no_batch) == dho2::step_status::stopped);
  CHECK(bitwise_equal(x, before));
  CHECK(opt.stopped());
  CHECK(opt.get_summary().termination == dho2::termination_type::numerical_failure);
  CHECK(opt.get_summary().message.find("non-finite gradient at step 2") != std::string::npos);
}

TEST_CASE("fosi: a failed estimate keeps the previous curvature") {
  const quad q(dho2::testing::geometric(40, 5.0, 0.8), 19);
  dho2::options o;
  o.k = 3;
  o.warmup = 1;
  o.refresh_every = 3;
  o.lanczos_steps = 12;
  faulty_quadratic bad{&q};
  bad.bad_hvp_from = 12 + 5;  // the first estimate (12 HVPs) is clean, the second fails
  dho2::optimizer<double> opt(o);
  VectorXd x = q.initial_point();
  opt.step(bad, x, no_batch);
  const VectorXd values = opt.eigenvalues();
  const MatrixXd vectors = opt.eigenvectors();
  opt.step(bad, x, no_batch);
  opt.step(bad, x, no_batch);
  const auto status = opt.step(bad, x, no_batch);  // step 3: the estimate fails
  CHECK(status == dho2::step_status::taken);
  CHECK(opt.get_summary().curvature_estimates == 2);
  CHECK(opt.get_summary().failed_estimates == 1);
  CHECK(opt.get_summary().estimates.back().failed);
  CHECK(bitwise_equal(opt.eigenvalues(), values));
  CHECK((opt.eigenvectors().array() == vectors.array()).all());
  CHECK(x.allFinite());
}

TEST_CASE("fosi: models without an HVP use finite differences, in float and double") {
  const auto lambda = dho2::testing::geometric(50, 8.0, 0.75);
  SUBCASE("double") {
    const quad q(lambda, 20);
    const gradient_only<double> model{&q};
    dho2::options o;
    o.k = 3;
    o.warmup = 1;
    o.lanczos_steps = 30;
    dho2::optimizer<double> opt(o);
    VectorXd x = q.initial_point();
    opt.step(model, x, {});
    CHECK(opt.get_summary().hvp == dho2::hvp_source::finite_difference);
    for (Eigen::Index i = 0; i < 3; ++i) {
      CHECK(opt.eigenvalues()(i) == doctest::Approx(lambda(i)).epsilon(1e-6));
    }
  }
  SUBCASE("float") {
    const dho2::quadratic<float> q(lambda, 21);
    const gradient_only<float> model{&q};
    dho2::options o;
    o.k = 3;
    o.warmup = 1;
    o.lanczos_steps = 30;
    dho2::optimizer<float> opt(o);
    Eigen::VectorXf x = q.initial_point();
    opt.step(model, x, {});
    for (Eigen::Index i = 0; i < 3; ++i) {
      CHECK(opt.eigenvalues()(i) == doctest::Approx(lambda(i)).epsilon(1e-2));
    }
    const float before = q.loss(x, {});
    for (int t = 0; t < 20; ++t) opt.step(model, x, {});
    CHECK(q.loss(x, {}) < before);
  }
}

TEST_CASE("fosi: the summary measures curvature and optimizer-state bytes") {
  const quad q(dho2::testing::geometric(64, 5.0, 0.8), 22);
  dho2::options o;
  o.k = 4;
  o.warmup = 1;
  o.lanczos_steps = 20;
  dho2::optimizer<double> opt(o);
  VectorXd x = q.initial_point();
  CHECK(opt.get_summary().curvature_bytes == 0);
  opt.step(q, x, no_batch);
  const auto& s = opt.get_summary();
  // The Lanczos basis (64 × 20 doubles) is larger than V (4 × 64 doubles).
  CHECK(s.curvature_bytes == 64u * 20u * sizeof(double));
  // Adam's two moments and the Newton velocity anchor.
  CHECK(s.optimizer_state_bytes == 3u * 64u * sizeof(double));
  CHECK(s.hvps == 20);
  CHECK(s.hvp == dho2::hvp_source::model);
}

TEST_CASE(
    "fosi: a float Lanczos basis (basic_lanczos<float>) as the estimator policy follows the "
    "double basis's run to float accuracy") {
  // Same problem, options and steps; only the basis precision differs. The eigenvalues must agree
  // to about float round-off of |H| and the parameters after 14 steps (3 estimates) to 1e-5 of
  // their size: the Newton part moves x along V / |lambda|, so a Ritz pair off by 1e-7 moves it
  // by about that much.
  const quad q(dho2::testing::geometric(60, 5.0, 0.8), 15);
  dho2::options o;
  o.k = 3;
  o.warmup = 3;
  o.refresh_every = 4;
  o.alpha = 0.3;
  using float_basis = dho2::default_policies::with_estimator<dho2::basic_lanczos<float>>;
  const dho2::adam adam{.learning_rate = 0.03};
  dho2::optimizer<double> with_double(o, {.base = adam});
  dho2::optimizer<double, float_basis> with_float(o, {.base = adam});
  VectorXd x = q.initial_point();
  VectorXd y = q.initial_point();
  for (int t = 0; t < 14; ++t) {
    with_double.step(q, x, no_batch);
    with_float.step(q, y, no_batch);
  }
  REQUIRE(with_float.get_summary().curvature_estimates == 3);
  CHECK(with_float.get_summary().curvature_bytes < with_double.get_summary().curvature_bytes);
  const VectorXd lambda_d = with_double.eigenvalues();
  const VectorXd lambda_f = with_float.eigenvalues();
  INFO("eigenvalues, double basis: ", lambda_d.transpose(),
       "; float basis: ", lambda_f.transpose());
  CHECK((lambda_f - lambda_d).cwiseAbs().maxCoeff() < 1e-5 * 5.0);
  INFO("max |x_float - x_double| = ", (y - x).cwiseAbs().maxCoeff());
  CHECK((y - x).cwiseAbs().maxCoeff() < 1e-5 * x.cwiseAbs().maxCoeff());
}
