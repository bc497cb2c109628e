// Lanczos against a dense eigensolver (Eigen::SelfAdjointEigenSolver) on planted spectra.
#include <dho2/curvature/lanczos.hpp>
#include <dho2/models/quadratic.hpp>
#include <dho2/testing/planted_spectrum.hpp>
#include <dho2/transport/inproc.hpp>

#include <Eigen/Eigenvalues>
#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <mutex>
#include <span>
#include <vector>

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

// Rank `rank` of `ranks` (even shards) of y = A x: gathers x, multiplies its own rows; the flag is
// this rank's (hvp_operator::apply_function). `poison` puts a NaN into this rank's product at its
// `poison`-th call (0: never). `reductions` counts the estimator's all_reduce_sum calls.
dho2::hvp_operator sharded_operator(const MatrixXd& a, dho2::inproc_transport& t,
                                    std::vector<dho2::index>& offsets, int poison, int& calls,
                                    int& reductions) {
  const auto n = a.rows();
  const int ranks = t.size();
  offsets.assign(static_cast<std::size_t>(ranks) + 1, 0);
  for (int r = 0; r <= ranks; ++r) offsets[static_cast<std::size_t>(r)] = n * r / ranks;
  const dho2::index lo = offsets[static_cast<std::size_t>(t.rank())];
  const dho2::index len = offsets[static_cast<std::size_t>(t.rank()) + 1] - lo;
  return dho2::hvp_operator(
      dho2::shard_layout{n, lo, len},
      [&a, &t, &offsets, lo, len, poison, &calls](Eigen::Ref<const VectorXd> x,
                                                  Eigen::Ref<VectorXd> y) {
        VectorXd mine = x;
        VectorXd all(a.rows());
        t.all_gather(std::span<const double>(mine.data(), static_cast<std::size_t>(len)),
                     std::span<double>(all.data(), static_cast<std::size_t>(all.size())),
                     std::span<const dho2::index>(offsets));
        y.noalias() = a.middleRows(lo, len) * all;
        if (++calls == poison) y(0) = std::numeric_limits<double>::quiet_NaN();
        return y.allFinite();
      },
      [&t, &reductions](std::span<double> values) {
        ++reductions;
        t.all_reduce_sum(values);
      });
}

struct sharded_result {
  dho2::eigen_estimate estimate;
  int reductions = 0;
};

// One estimate of `lanczos` on A sharded over `ranks` in-process ranks; rank 0's result (every
// rank's eigenvalues are checked equal) and its reduction count.
template <class Lanczos>
sharded_result run_sharded(const Lanczos& lanczos, const MatrixXd& a, int ranks,
                           const dho2::estimate_request& request, int poison_rank = -1,
                           int poison_call = 0) {
  std::vector<sharded_result> results(static_cast<std::size_t>(ranks));
  dho2::run_inproc(
      ranks, {.timeout = std::chrono::duration<double>(20.0)}, [&](dho2::inproc_transport& t) {
        std::vector<dho2::index> offsets;
        int calls = 0;
        auto& mine = results[static_cast<std::size_t>(t.rank())];
        auto op = sharded_operator(a, t, offsets, t.rank() == poison_rank ? poison_call : 0, calls,
                                   mine.reductions);
        mine.estimate = lanczos.estimate(op, request);
      });
  for (const sharded_result& r : results) {
    CHECK_MESSAGE(r.estimate.failed == results[0].estimate.failed,
                  "expected every rank to agree on failure");
    CHECK_MESSAGE(r.estimate.eigenvalues == results[0].estimate.eigenvalues,
                  "expected identical eigenvalues on every rank (reduced values only)");
    CHECK(r.reductions == results[0].reductions);
  }
  return results[0];
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

TEST_CASE(
    "lanczos: a step reduces once (twice with a second pass): the product's finiteness flag and "
    "beta ride along") {
  // Distributed, a step's collectives are the product's (gather, reduce-scatter) plus one
  // all-reduce per Gram-Schmidt pass: the start vector's norm, then exactly one reduction per pass.
  const MatrixXd a = dho2::quadratic<double>(dho2::testing::geometric(120, 5.0, 0.8), 3).hessian();
  for (const int ranks : {1, 2, 3}) {
    CAPTURE(ranks);
    const auto r = run_sharded(dho2::lanczos{}, a, ranks, {5, 0, 30, 7, 0});
    REQUIRE(r.estimate.iterations == 30);
    CHECK_MESSAGE(r.reductions == 1 + r.estimate.reorthogonalization_passes,
                  "expected 1 + passes = ", 1 + r.estimate.reorthogonalization_passes,
                  " reductions, got ", r.reductions);
  }
}

TEST_CASE("lanczos: sharded over P = 2, 3 equals P = 1 to round-off, double and float basis") {
  const MatrixXd a = dho2::quadratic<double>(dho2::testing::geometric(150, 6.0, 0.75), 5).hessian();
  const dho2::estimate_request request{6, 1, 40, 9, 2};
  const auto one = run_sharded(dho2::lanczos{}, a, 1, request);
  const auto one_f = run_sharded(dho2::basic_lanczos<float>{}, a, 1, request);
  for (const int ranks : {2, 3}) {
    CAPTURE(ranks);
    const auto d = run_sharded(dho2::lanczos{}, a, ranks, request);
    const auto f = run_sharded(dho2::basic_lanczos<float>{}, a, ranks, request);
    for (Eigen::Index i = 0; i < 7; ++i) {
      INFO("pair ", i, ": P = 1 ", one.estimate.eigenvalues(i), ", sharded ",
           d.estimate.eigenvalues(i), " (double basis), ", f.estimate.eigenvalues(i), " (float)");
      CHECK(std::abs(d.estimate.eigenvalues(i) - one.estimate.eigenvalues(i)) < 1e-12);
      CHECK(std::abs(f.estimate.eigenvalues(i) - one_f.estimate.eigenvalues(i)) < 1e-5);
    }
  }
}

TEST_CASE("lanczos: a non-finite product on one rank fails the estimate on every rank") {
  // Rank 1's third product has a NaN in its own shard only; the flag travels in the pass's
  // reduction, so rank 0 must stop at the same step without a collective of its own.
  const MatrixXd a = dho2::quadratic<double>(dho2::testing::geometric(60, 4.0, 0.8), 2).hessian();
  for (const bool in_float : {false, true}) {
    CAPTURE(in_float);
    const auto r = in_float
                       ? run_sharded(dho2::basic_lanczos<float>{}, a, 2, {3, 0, 10, 1, 0}, 1, 3)
                       : run_sharded(dho2::lanczos{}, a, 2, {3, 0, 10, 1, 0}, 1, 3);
    CHECK_MESSAGE(r.estimate.failed, "expected the estimate to fail on rank 0 too");
    CHECK(r.estimate.hvps == 3);
    CHECK(r.estimate.eigenvalues.size() == 0);
    CHECK(r.estimate.eigenvectors.allFinite());
  }
}

TEST_CASE(
    "lanczos: with one pass per step, a cancelled step reduces its norm explicitly and still "
    "detects breakdown") {
  // A rank-3 Hessian: the fourth Krylov vector cancels to round-off in its only pass, where
  // Pythagoras cannot give beta; the explicit reduction must, and breakdown must follow.
  const dho2::quadratic<double> q(dho2::testing::rank_deficient(80, 3, 6.0), 5);
  dho2::lanczos one_pass;
  one_pass.reorthogonalization_passes = 1;
  const auto r = run_sharded(one_pass, q.hessian(), 2, {6, 0, 30, 7, 0});
  CHECK(r.estimate.breakdown);
  CHECK(r.estimate.iterations <= 4);
  CHECK_MESSAGE(r.reductions > 1 + r.estimate.reorthogonalization_passes,
                "expected at least one explicit norm reduction, got ", r.reductions,
                " reductions for ", r.estimate.reorthogonalization_passes, " passes");
  REQUIRE(r.estimate.num_largest >= 3);
  CHECK(std::abs(r.estimate.eigenvalues(0) - 6.0) < 1e-10);
  CHECK(std::abs(r.estimate.eigenvalues(1) - 4.0) < 1e-10);
  CHECK(std::abs(r.estimate.eigenvalues(2) - 2.0) < 1e-10);
}

TEST_CASE(
    "basic_lanczos<float>: the float basis's Ritz values match the double basis's to float "
    "accuracy (1e-5 of |H|), at half the basis bytes") {
  // Planted spectra: geometric, a clustered top, negative outliers; the same request with the
  // basis in float and in double, so the difference is what the basis precision costs. The
  // bound: a basis rounded to float (unit round-off 6e-8) is orthonormal to about sqrt(m)·6e-8,
  // which moves a Ritz value by about that much of |H|; 1e-5 leaves a wide margin and is still
  // five orders above the double basis's 1e-10 checks in this file, so a wrong conversion or a
  // lost block would fail it.
  struct spectrum_case {
    const char* name;
    dho2::vector<double> values;
    dho2::index k;
    dho2::index l;
    dho2::index m;
  };
  const std::vector<spectrum_case> cases{
      {"geometric", dho2::testing::geometric(300, 5.0, 0.7), 5, 0, 60},
      {"clustered", dho2::testing::clustered(150, 3, 10.0, 1e-3, 1.0), 3, 0, 80},
      {"negative outliers", dho2::testing::with_negative_outliers(120, 2, 10.0, -20.0), 2, 2, 80}};
  for (const spectrum_case& c : cases) {
    CAPTURE(c.name);
    const dho2::quadratic<double> q(c.values, 13);
    auto op = dense_operator(q.hessian());
    const auto est = dho2::basic_lanczos<float>{}.estimate(op, {c.k, c.l, c.m, 7, 0});
    auto op_d = dense_operator(q.hessian());
    const auto est_d = dho2::lanczos{}.estimate(op_d, {c.k, c.l, c.m, 7, 0});
    CHECK(est.basis_bytes * 2 == est_d.basis_bytes);
    REQUIRE(est.eigenvalues.size() == c.k + c.l);
    const double scale = c.values.cwiseAbs().maxCoeff();
    for (Eigen::Index i = 0; i < c.k + c.l; ++i) {
      INFO("pair ", i, ": float basis ", est.eigenvalues(i), ", double basis ",
           est_d.eigenvalues(i), ", error/|H| ",
           std::abs(est.eigenvalues(i) - est_d.eigenvalues(i)) / scale);
      CHECK(std::abs(est.eigenvalues(i) - est_d.eigenvalues(i)) < 1e-5 * scale);
      CHECK(misalignment(est.eigenvectors.row(i).transpose(),
                         est_d.eigenvectors.row(i).transpose()) < 1e-5);
    }
  }
}

TEST_CASE("basic_lanczos<float>: a kept workspace gives the same estimate bit for bit") {
  const MatrixXd a = dho2::quadratic<double>(dho2::testing::geometric(90, 5.0, 0.8), 11).hessian();
  const dho2::basic_lanczos<float> lanczos{};
  dho2::basic_lanczos<float>::workspace ws;
  for (const dho2::index m : {40, 12, 30}) {
    CAPTURE(m);
    auto op = dense_operator(a);
    const auto kept = lanczos.estimate(op, {4, 1, m, 7, 0}, ws);
    auto op2 = dense_operator(a);
    const auto fresh = lanczos.estimate(op2, {4, 1, m, 7, 0});
    CHECK_MESSAGE(kept.eigenvalues == fresh.eigenvalues, "expected bit-identical eigenvalues");
    CHECK_MESSAGE(kept.eigenvectors == fresh.eigenvectors, "expected bit-identical eigenvectors");
  }
}

TEST_CASE_TEMPLATE("gram_schmidt kernels: blocked and fused passes equal the plain matrix products",
                   B, double, float) {
  // n = 1000 rows and 40 columns give blocks of 409, 409 and 182 rows; the fused kernel must
  // equal a subtraction followed by a projection, and every kernel the products on Q in double.
  const dho2::index n = 1000;
  const dho2::index cols = 40;
  dho2::detail::xoshiro256 rng(5);
  dho2::detail::basis_matrix<B> q(n, cols + 3);
  for (dho2::index j = 0; j < q.cols(); ++j) {
    for (dho2::index i = 0; i < n; ++i) q(i, j) = static_cast<B>(rng.uniform() - 0.5);
  }
  const MatrixXd qd = q.leftCols(cols).template cast<double>();
  VectorXd w(n);
  for (dho2::index i = 0; i < n; ++i) w(i) = rng.uniform() - 0.5;
  VectorXd h(cols);
  for (dho2::index i = 0; i < cols; ++i) h(i) = rng.uniform() - 0.5;
  VectorXd buffer;

  VectorXd projected(cols);
  dho2::detail::project<B>(q, w, projected, buffer);
  const VectorXd projected_ref = qd.transpose() * w;
  CHECK_MESSAGE((projected - projected_ref).norm() <= 1e-12 * projected_ref.norm(),
                "expected Q^T w");

  VectorXd subtracted = w;
  dho2::detail::subtract<B>(q, h, subtracted, buffer);
  const VectorXd subtracted_ref = w - qd * h;
  CHECK_MESSAGE((subtracted - subtracted_ref).norm() <= 1e-12 * subtracted_ref.norm(),
                "expected w - Q h");

  VectorXd fused = w;
  VectorXd fused_h(cols);
  const double norm2 = dho2::detail::subtract_project<B>(q, h, fused, fused_h, buffer);
  const VectorXd fused_h_ref = qd.transpose() * subtracted_ref;
  CHECK((fused - subtracted_ref).norm() <= 1e-12 * subtracted_ref.norm());
  CHECK_MESSAGE((fused_h - fused_h_ref).norm() <= 1e-12 * fused_h_ref.norm(),
                "expected Q^T (w - Q h) from the fused pass");
  CHECK(std::abs(norm2 - subtracted_ref.squaredNorm()) <= 1e-12 * subtracted_ref.squaredNorm());

  MatrixXd y(cols, 3);
  for (dho2::index j = 0; j < 3; ++j) {
    for (dho2::index i = 0; i < cols; ++i) y(i, j) = rng.uniform() - 0.5;
  }
  MatrixXd ritz;
  dho2::detail::ritz_vectors<B>(q, y, ritz, buffer);
  const MatrixXd ritz_ref = y.transpose() * qd.transpose();
  CHECK_MESSAGE((ritz - ritz_ref).norm() <= 1e-12 * ritz_ref.norm(), "expected Y^T Q^T");
}

TEST_CASE(
    "hvp_operator: apply agrees over the ranks, apply_local_check leaves that to the caller") {
  // Rank 1's first product has a NaN in its own shard. apply must return false and zero on both
  // ranks; apply_local_check returns each rank's own flag (rank 0: finite), whose sum is 1.
  const MatrixXd a = MatrixXd::Identity(10, 10);
  for (const bool local : {false, true}) {
    CAPTURE(local);
    std::vector<int> flags(2, -1);
    std::vector<double> sums(2, -1.0);
    std::vector<double> norms(2, -1.0);
    dho2::run_inproc(
        2, {.timeout = std::chrono::duration<double>(20.0)}, [&](dho2::inproc_transport& t) {
          std::vector<dho2::index> offsets;
          int calls = 0;
          int reductions = 0;
          auto op = sharded_operator(a, t, offsets, t.rank() == 1 ? 1 : 0, calls, reductions);
          const VectorXd x = VectorXd::Ones(op.shard_size());
          VectorXd y(op.shard_size());
          const bool ok = local ? op.apply_local_check(x, y) : op.apply(x, y);
          double bad = ok ? 0.0 : 1.0;
          t.all_reduce_sum(std::span<double>(&bad, 1));
          const auto r = static_cast<std::size_t>(t.rank());
          flags[r] = ok ? 1 : 0;
          sums[r] = bad;
          norms[r] = y.allFinite() ? y.norm() : -2.0;
        });
    if (local) {
      CHECK_MESSAGE(flags[0] == 1, "expected rank 0's own shard to be finite");
      CHECK_MESSAGE(flags[1] == 0, "expected rank 1's own shard to be flagged");
      CHECK_MESSAGE(sums[0] == 1.0, "expected the summed flag to say one rank is bad");
    } else {
      CHECK_MESSAGE(flags[0] == 0, "expected apply to fail on rank 0 too");
      CHECK(flags[1] == 0);
      CHECK_MESSAGE(norms[0] == 0.0, "expected a failed apply to leave zero");
      CHECK(norms[1] == 0.0);
    }
  }
}
