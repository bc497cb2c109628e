// Lanczos against a dense eigensolver (Eigen::SelfAdjointEigenSolver) on planted spectra.
#include <dho2/curvature/lanczos.hpp>
#include <dho2/models/quadratic.hpp>
#include <dho2/testing/planted_spectrum.hpp>

#include <Eigen/Eigenvalues>
#include <doctest/doctest.h>

#include <cmath>

namespace {

using Eigen::MatrixXd;
using Eigen::VectorXd;

// y = A x on one process, optionally with the product evaluated in float.
dho2::hvp_operator dense_operator(const MatrixXd& a, bool in_float = false) {
  const auto n = a.rows();
  const Eigen::MatrixXf af = a.cast<float>();
  return dho2::hvp_operator(
      dho2::shard_layout{n, 0, n},
      [a, af, in_float](Eigen::Ref<const VectorXd> x, Eigen::Ref<VectorXd> y) {
        if (in_float) {
          const Eigen::VectorXf xf = x.cast<float>();
          y = (af * xf).cast<double>();
        } else {
          y.noalias() = a * x;
        }
        return y.allFinite();
      },
      {});
}

struct dense_reference {
  VectorXd values;   // descending
  MatrixXd vectors;  // columns, matching `values`
};

dense_reference solve_dense(const MatrixXd& a) {
  Eigen::SelfAdjointEigenSolver<MatrixXd> es(a);
  const auto n = a.rows();
  dense_reference r{VectorXd(n), MatrixXd(n, n)};
  for (Eigen::Index i = 0; i < n; ++i) {
    r.values(i) = es.eigenvalues()(n - 1 - i);
    r.vectors.col(i) = es.eigenvectors().col(n - 1 - i);
  }
  return r;
}

// 1 − |⟨u, v⟩| for unit vectors: 0 when aligned up to sign.
double misalignment(const VectorXd& u, const VectorXd& v) { return 1.0 - std::abs(u.dot(v)); }

dho2::eigen_estimate run(const MatrixXd& a, dho2::index k, dho2::index l, dho2::index m,
                         bool in_float = false) {
  auto op = dense_operator(a, in_float);
  return dho2::lanczos{}.estimate(op, {k, l, m, 7, 0});
}

}  // namespace

TEST_CASE("lanczos: geometric spectrum, top-k eigenpairs to 1e-10 against the dense solver") {
  const dho2::quadratic<double> q(dho2::testing::geometric(200, 10.0, 0.8), 1);
  const auto ref = solve_dense(q.hessian());
  const auto est = run(q.hessian(), 5, 0, 60);
  REQUIRE(est.num_largest == 5);
  REQUIRE_FALSE(est.failed);
  for (Eigen::Index i = 0; i < 5; ++i) {
    INFO("eigenpair ", i, ": lanczos ", est.eigenvalues(i), ", dense ", ref.values(i));
    CHECK(std::abs(est.eigenvalues(i) - ref.values(i)) < 1e-10);
    CHECK(misalignment(est.eigenvectors.row(i).transpose(), ref.vectors.col(i)) < 1e-10);
    // The cheap residual estimate matches the true residual ‖A v − λ v‖.
    const VectorXd v = est.eigenvectors.row(i).transpose();
    const double true_residual = (q.hessian() * v - est.eigenvalues(i) * v).norm();
    CHECK(est.residuals(i) < 1e-9);
    CHECK(true_residual < 1e-9);
  }
  // Rows are orthonormal (full re-orthogonalisation).
  const MatrixXd gram = est.eigenvectors * est.eigenvectors.transpose();
  CHECK((gram - MatrixXd::Identity(5, 5)).cwiseAbs().maxCoeff() < 1e-12);
  CHECK(est.hvps == 60);
  CHECK(est.iterations == 60);
  CHECK(est.basis_bytes == 200u * 60u * sizeof(double));
}

TEST_CASE("lanczos: clustered top eigenvalues are all found") {
  // Three eigenvalues within 0.1% of each other above a bulk: without re-orthogonalisation
  // Lanczos would report ghost copies; with it, each member of the cluster appears once.
  const dho2::quadratic<double> q(dho2::testing::clustered(150, 3, 10.0, 1e-3, 1.0), 2);
  const auto ref = solve_dense(q.hessian());
  const auto est = run(q.hessian(), 3, 0, 80);
  REQUIRE(est.num_largest == 3);
  for (Eigen::Index i = 0; i < 3; ++i) {
    INFO("cluster member ", i, ": lanczos ", est.eigenvalues(i), ", dense ", ref.values(i));
    CHECK(std::abs(est.eigenvalues(i) - ref.values(i)) < 1e-10);
    CHECK(misalignment(est.eigenvectors.row(i).transpose(), ref.vectors.col(i)) < 1e-10);
  }
}

TEST_CASE("lanczos: negative outliers are the l smallest pairs") {
  const dho2::quadratic<double> q(dho2::testing::with_negative_outliers(120, 2, 10.0, -20.0), 3);
  const auto ref = solve_dense(q.hessian());
  const auto est = run(q.hessian(), 2, 2, 80);
  REQUIRE(est.num_largest == 2);
  REQUIRE(est.num_smallest == 2);
  const auto n = ref.values.size();
  // Smallest come in ascending order after the largest.
  const double smallest[2] = {ref.values(n - 1), ref.values(n - 2)};
  for (Eigen::Index i = 0; i < 2; ++i) {
    INFO("smallest pair ", i, ": lanczos ", est.eigenvalues(2 + i), ", dense ", smallest[i]);
    CHECK(std::abs(est.eigenvalues(2 + i) - smallest[i]) < 1e-10);
    CHECK(misalignment(est.eigenvectors.row(2 + i).transpose(), ref.vectors.col(n - 1 - i)) <
          1e-10);
    CHECK(est.eigenvalues(2 + i) < 0.0);
  }
  CHECK(std::abs(est.eigenvalues(0) - ref.values(0)) < 1e-10);
}

TEST_CASE("lanczos: DGKS skips second passes on an indefinite bulk and stays exact") {
  // A bulk spread over [-1, 1] plus 5 outliers in [5, 9]: here one Gram-Schmidt pass often
  // suffices, so the DGKS criterion must skip some second passes, and the pairs must still match
  // the dense solver as tightly as with a second pass on every step (eta = 1).
  const dho2::index n = 200;
  dho2::vector<double> spectrum(n);
  for (dho2::index i = 0; i < n; ++i) {
    spectrum(i) = i < 5 ? 9.0 - static_cast<double>(i)
                        : -1.0 + 2.0 * static_cast<double>(i - 5) / static_cast<double>(n - 6);
  }
  const dho2::quadratic<double> q(spectrum, 11);
  const auto ref = solve_dense(q.hessian());
  for (const double eta : {0.70710678118654752, 1.0}) {
    CAPTURE(eta);
    auto op = dense_operator(q.hessian());
    dho2::lanczos lz;
    lz.reorthogonalization_eta = eta;
    const auto est = lz.estimate(op, {5, 0, 80, 7, 0});
    REQUIRE(est.iterations == 80);
    INFO("passes over the basis: ", est.reorthogonalization_passes, " for 80 steps");
    if (eta < 1.0) {
      CHECK(est.reorthogonalization_passes < 2 * est.iterations);  // some second passes skipped
    }
    CHECK(est.reorthogonalization_passes >= est.iterations);
    for (Eigen::Index i = 0; i < 5; ++i) {
      INFO("pair ", i, ": lanczos ", est.eigenvalues(i), ", dense ", ref.values(i));
      CHECK(std::abs(est.eigenvalues(i) - ref.values(i)) < 1e-10);
      CHECK(misalignment(est.eigenvectors.row(i).transpose(), ref.vectors.col(i)) < 1e-10);
    }
  }
}

TEST_CASE("lanczos: float Hessian-vector products give eigenvalues within 1e-4 relative") {
  const dho2::quadratic<double> q(dho2::testing::geometric(300, 5.0, 0.7), 4);
  const auto ref = solve_dense(q.hessian());
  const auto est = run(q.hessian(), 5, 0, 40, /*in_float=*/true);
  for (Eigen::Index i = 0; i < 5; ++i) {
    INFO("eigenvalue ", i, ": lanczos(float HVP) ", est.eigenvalues(i), ", dense ", ref.values(i));
    CHECK(std::abs(est.eigenvalues(i) - ref.values(i)) < 1e-4 * std::abs(ref.values(i)));
  }
}

TEST_CASE("lanczos: zero Hessian breaks down at once and returns finite pairs") {
  const MatrixXd zero = MatrixXd::Zero(50, 50);
  const auto est = run(zero, 5, 0, 20);
  CHECK(est.breakdown);
  CHECK_FALSE(est.failed);
  CHECK(est.iterations == 1);
  CHECK(est.num_largest == 1);  // only one Krylov vector exists
  CHECK(est.eigenvalues.allFinite());
  CHECK(est.eigenvectors.allFinite());
  CHECK(est.residuals.allFinite());
  CHECK(est.eigenvalues(0) == 0.0);
}

TEST_CASE("lanczos: rank-deficient Hessian breaks down and recovers the nonzero spectrum") {
  const dho2::quadratic<double> q(dho2::testing::rank_deficient(80, 3, 6.0), 5);
  const auto est = run(q.hessian(), 6, 0, 30);
  CHECK(est.breakdown);
  // A rank-3 matrix has a Krylov space of dimension ≤ 4 (3 eigenvectors + the null component).
  CHECK(est.iterations <= 4);
  CHECK(est.eigenvalues.allFinite());
  CHECK(est.eigenvectors.allFinite());
  REQUIRE(est.num_largest >= 3);
  CHECK(std::abs(est.eigenvalues(0) - 6.0) < 1e-10);
  CHECK(std::abs(est.eigenvalues(1) - 4.0) < 1e-10);
  CHECK(std::abs(est.eigenvalues(2) - 2.0) < 1e-10);
}

TEST_CASE("lanczos: a non-finite product fails the estimate without NaN output") {
  const auto n = Eigen::Index{30};
  int calls = 0;
  dho2::hvp_operator op(dho2::shard_layout{n, 0, n},
                        [&calls](Eigen::Ref<const VectorXd> x, Eigen::Ref<VectorXd> y) {
                          y = VectorXd::LinSpaced(x.size(), 1.0, 2.0).cwiseProduct(x);
                          if (++calls == 3) y(0) = std::numeric_limits<double>::quiet_NaN();
                          return y.allFinite();
                        },
                        {});
  const auto est = dho2::lanczos{}.estimate(op, {3, 0, 10, 1, 0});
  CHECK(calls == 3);  // the iteration stops at the bad product
  CHECK(est.failed);
  CHECK(est.eigenvalues.size() == 0);
  CHECK(est.eigenvectors.allFinite());
}

TEST_CASE("lanczos: the start vector depends on seed and stream, not on the shard layout") {
  // Two half-shards of the same global start vector, generated independently, equal the
  // single-shard vector: the basis of a sharded run is the P = 1 basis cut in pieces.
  const std::uint64_t seed = 11;
  VectorXd whole(10);
  for (std::uint64_t i = 0; i < 10; ++i) {
    whole(static_cast<Eigen::Index>(i)) = dho2::detail::counter_normal(seed, 2, i);
  }
  for (std::uint64_t i = 5; i < 10; ++i) {
    CHECK(dho2::detail::counter_normal(seed, 2, i) == whole(static_cast<Eigen::Index>(i)));
  }
  CHECK(dho2::detail::counter_normal(seed, 3, 0) != whole(0));
}

TEST_CASE("lanczos: default step count is max(4(k + l), ceil(2 ln n)) capped at n") {
  CHECK(dho2::default_lanczos_steps(5, 0, 1000000) == 28);  // ceil(2 ln 1e6) = 28 > 20
  CHECK(dho2::default_lanczos_steps(10, 0, 1000000) == 40);
  CHECK(dho2::default_lanczos_steps(3, 2, 12) == 12);  // capped at n
}

TEST_CASE("lanczos: validate names the field") {
  dho2::lanczos bad;
  bad.breakdown_tolerance = 0.0;
  CHECK_THROWS_WITH_AS(bad.validate(),
                       doctest::Contains("lanczos::breakdown_tolerance = 0. Violated constraint"),
                       dho2::invalid_options);
}

TEST_CASE(
    "lanczos: an estimate into a kept workspace equals a fresh one bit for bit, whatever the "
    "workspace held before") {
  const MatrixXd a = dho2::quadratic<double>(dho2::testing::geometric(60, 5.0, 0.8), 11).hessian();
  const MatrixXd b = dho2::quadratic<double>(dho2::testing::geometric(60, 3.0, 0.9), 12).hessian();
  auto op_a = dense_operator(a);
  auto op_b = dense_operator(b);
  const dho2::lanczos lanczos{};
  dho2::lanczos::workspace ws;
  // Different step counts (the basis grows and shrinks), a second matrix and a failed estimate
  // leave stale values in the workspace; each estimate must still equal a fresh one.
  int bad_calls = 0;
  dho2::hvp_operator failing(dho2::shard_layout{60, 0, 60},
                             [&](Eigen::Ref<const VectorXd> x, Eigen::Ref<VectorXd> y) {
                               y.noalias() = a * x;
                               if (++bad_calls == 4) y(1) = std::numeric_limits<double>::infinity();
                               return y.allFinite();
                             },
                             {});
  struct step {
    dho2::hvp_operator* op;
    dho2::estimate_request request;
  };
  const std::vector<step> steps{{&op_a, {4, 1, 30, 7, 0}},
                                {&op_b, {3, 0, 12, 7, 1}},
                                {&failing, {3, 0, 10, 7, 2}},
                                {&op_a, {5, 2, 40, 9, 3}},
                                {&op_b, {4, 0, 30, 7, 4}}};
  for (const step& s : steps) {
    const dho2::eigen_estimate kept = lanczos.estimate(*s.op, s.request, ws);
    if (s.op == &failing) bad_calls = 0;
    const dho2::eigen_estimate fresh = lanczos.estimate(*s.op, s.request);
    CAPTURE(s.request.steps);
    CHECK_MESSAGE(kept.failed == fresh.failed,
                  "expected the same failure flag as a fresh estimate");
    CHECK_MESSAGE(kept.eigenvalues == fresh.eigenvalues,
                  "expected bit-identical eigenvalues with a kept workspace");
    CHECK_MESSAGE(kept.eigenvectors == fresh.eigenvectors,
                  "expected bit-identical eigenvectors with a kept workspace");
    CHECK(kept.residuals == fresh.residuals);
    CHECK(kept.iterations == fresh.iterations);
    CHECK(kept.basis_bytes == fresh.basis_bytes);
  }
  CHECK_MESSAGE(ws.basis.rows() == 60, "expected the workspace to hold the last basis shard");
}
