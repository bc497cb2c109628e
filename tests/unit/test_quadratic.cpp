// Oracles for dho2::quadratic and the planted spectra of dho2::testing: the dense Hessian's
// eigen-decomposition (Eigen::SelfAdjointEigenSolver) returns the planted eigenvalues, the
// eigenvectors are orthonormal, the gradient vanishes at x*, and the HVP is hessian()·v.
#include <dho2/concepts/hvp_model.hpp>
#include <dho2/models/quadratic.hpp>
#include <dho2/testing/hvp_checker.hpp>
#include <dho2/testing/planted_spectrum.hpp>

#include <Eigen/Eigenvalues>
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>

static_assert(dho2::hvp_model<dho2::quadratic<double>>);
static_assert(dho2::hvp_model<dho2::quadratic<float>>);

namespace {

Eigen::VectorXd sorted(Eigen::VectorXd v) {
  std::sort(v.data(), v.data() + v.size());
  return v;
}

Eigen::VectorXd random_vector(dho2::index n, std::uint64_t seed) {
  dho2::detail::xoshiro256 rng(seed);
  Eigen::VectorXd v(n);
  for (dho2::index i = 0; i < n; ++i) v(i) = rng.normal();
  return v;
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const dho2::invalid_options& e) {
    return e.what();
  }
  return "(no exception)";
}

}  // namespace

TEST_CASE("quadratic: the dense Hessian has exactly the planted eigenvalues (to 1e-12)") {
  const struct {
    const char* name;
    Eigen::VectorXd lambda;
  } spectra[] = {
      {"geometric", dho2::testing::geometric(40, 10.0, 0.8)},
      {"clustered", dho2::testing::clustered(40, 4, 10.0, 1e-6, 1.0)},
      {"negative outliers", dho2::testing::with_negative_outliers(40, 3, 10.0, -5.0)},
      {"rank deficient", dho2::testing::rank_deficient(40, 5, 3.0)},
      {"zero", dho2::testing::zero(40)},
  };
  for (const auto& spectrum : spectra) {
    INFO("spectrum ", spectrum.name);
    const dho2::quadratic<double> q(spectrum.lambda, 17);
    REQUIRE(q.num_parameters() == 40);
    CHECK_MESSAGE((q.hessian() - q.hessian().transpose()).norm() == 0.0,
                  "hessian() must be exactly symmetric");
    const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> solver(q.hessian());
    REQUIRE(solver.info() == Eigen::Success);
    const double error = (solver.eigenvalues() - sorted(spectrum.lambda)).cwiseAbs().maxCoeff();
    CHECK_MESSAGE(error <= 1e-12, "eigenvalues of hessian() differ from the planted ones by ",
                  error, " (expected <= 1e-12)");
    const Eigen::MatrixXd& q_mat = q.eigenvectors();
    const double orthogonality =
        (q_mat.transpose() * q_mat - Eigen::MatrixXd::Identity(40, 40)).cwiseAbs().maxCoeff();
    CHECK_MESSAGE(orthogonality <= 1e-13,
                  "eigenvectors must be orthonormal, QᵀQ − I = ", orthogonality);
    const double residual =
        (q.hessian() * q_mat - q_mat * spectrum.lambda.asDiagonal()).cwiseAbs().maxCoeff();
    CHECK_MESSAGE(residual <= 1e-12, "A qᵢ = λᵢ qᵢ must hold column by column, residual ",
                  residual);
  }
}

TEST_CASE("quadratic: gradient vanishes at the minimiser, loss, gradient and HVP formulas") {
  const Eigen::VectorXd lambda = dho2::testing::geometric(30, 4.0, 0.85);
  const Eigen::VectorXd x_star = random_vector(30, 50);
  const dho2::quadratic<double> q(lambda, 51, x_star);
  const dho2::quadratic<double>::batch full;
  Eigen::VectorXd g(30);
  CHECK(q.loss_and_gradient(q.minimizer(), full, g) == 0.0);
  CHECK_MESSAGE(g.norm() == 0.0, "gradient at x* must be exactly zero, got norm ", g.norm());
  CHECK_MESSAGE((q.minimizer() - x_star).norm() == 0.0, "minimizer() returns x*");

  const Eigen::VectorXd x = random_vector(30, 52);
  const double loss = q.loss_and_gradient(x, full, g);
  const Eigen::VectorXd d = x - x_star;
  CHECK_MESSAGE((g - q.hessian() * d).norm() <= 1e-13 * g.norm(), "∇f(x) = A (x − x*)");
  CHECK_MESSAGE(std::abs(loss - 0.5 * d.dot(q.hessian() * d)) <= 1e-13 * loss,
                "f(x) = ½ (x − x*)ᵀ A (x − x*)");
  CHECK(q.loss(x, full) == doctest::Approx(loss).epsilon(1e-14));

  const Eigen::VectorXd v = random_vector(30, 53);
  Eigen::VectorXd hv(30);
  q.hessian_vector_product(x, full, v, hv);
  const double error = (hv - q.hessian() * v).norm() / (q.hessian() * v).norm();
  CHECK_MESSAGE(error <= 1e-14, "HVP must equal hessian() * v, relative error ", error);

  const double start_loss = q.loss(q.initial_point(), full);
  CHECK_MESSAGE(std::abs(start_loss - 0.5 * lambda.sum()) <= 1e-12 * lambda.sum(),
                "f(initial_point()) = ½ Σ λᵢ = ", 0.5 * lambda.sum(), ", got ", start_loss);
  const Eigen::VectorXd components =
      q.eigenvectors().transpose() * (q.initial_point() - q.minimizer());
  CHECK_MESSAGE((components - Eigen::VectorXd::Ones(30)).cwiseAbs().maxCoeff() <= 1e-13,
                "the start error has a unit component along every eigenvector");
  CHECK(dho2::testing::check_gradient(q, x, full, 4, 54).ok(1e-8));
  CHECK(dho2::testing::check_hvp(q, x, full, 4, 55).ok(1e-8));
}

TEST_CASE("quadratic: same seed, same problem, float evaluates the same problem in float") {
  const Eigen::VectorXd lambda = dho2::testing::with_negative_outliers(25, 2);
  const dho2::quadratic<double> a(lambda, 7);
  const dho2::quadratic<double> b(lambda, 7);
  const dho2::quadratic<double> c(lambda, 8);
  CHECK_MESSAGE((a.hessian() - b.hessian()).norm() == 0.0, "the seed determines Q");
  CHECK_MESSAGE((a.hessian() - c.hessian()).norm() > 1e-3, "another seed gives another Q");
  CHECK(a.seed() == 7);
  CHECK(a.eigenvalues() == lambda);

  const dho2::quadratic<float> f(lambda, 7);
  CHECK_MESSAGE((f.hessian() - a.hessian()).norm() == 0.0,
                "hessian() is double and identical for every S");
  const Eigen::VectorXf x = random_vector(25, 60).cast<float>();
  const Eigen::VectorXf v = random_vector(25, 61).cast<float>();
  Eigen::VectorXf hv(25);
  f.hessian_vector_product(x, {}, v, hv);
  const Eigen::VectorXd expected = a.hessian() * v.cast<double>();
  CHECK_MESSAGE((hv.cast<double>() - expected).norm() <= 1e-5 * expected.norm(),
                "float HVP within float round-off of hessian() * v");
  Eigen::VectorXf g(25);
  static_cast<void>(f.loss_and_gradient(f.minimizer(), {}, g));
  CHECK_MESSAGE(g.norm() == 0.0f, "float gradient at x* is exactly zero");
  CHECK(dho2::testing::check_hvp(f, x, {}, 3, 62).ok(1e-3));
}

TEST_CASE("quadratic: planted spectra have the documented shape") {
  const Eigen::VectorXd g = dho2::testing::geometric(5, 8.0, 0.5);
  CHECK(g == (Eigen::VectorXd(5) << 8.0, 4.0, 2.0, 1.0, 0.5).finished());

  const Eigen::VectorXd c = dho2::testing::clustered(10, 3, 10.0, 1e-3, 1.0);
  CHECK_MESSAGE((c(0) - c(2) <= 1e-2 && c(0) - c(2) > 0.0), "the top 3 form a tight cluster");
  CHECK_MESSAGE(c(3) == 1.0, "the bulk starts at `bulk`");
  CHECK(std::is_sorted(c.data(), c.data() + c.size(), std::greater<>()));

  const Eigen::VectorXd w = dho2::testing::with_negative_outliers(10, 3, 10.0, -6.0);
  CHECK_MESSAGE((w.array() < 0.0).count() == 3, "three negative outliers");
  CHECK(w(9) == -6.0);
  CHECK(w(0) == 10.0);
  CHECK(std::is_sorted(w.data(), w.data() + w.size(), std::greater<>()));

  const Eigen::VectorXd r = dho2::testing::rank_deficient(10, 4, 2.0);
  CHECK_MESSAGE((r.array() != 0.0).count() == 4, "rank 4: four nonzero eigenvalues");
  CHECK(r(0) == 2.0);
  CHECK(dho2::testing::zero(6) == Eigen::VectorXd::Zero(6));
}

TEST_CASE("quadratic: bad arguments throw invalid_options naming the field and the constraint") {
  CHECK(message_of([] { dho2::quadratic<double>(Eigen::VectorXd(0), 1); }) ==
        "eigenvalues.size() = 0. Violated constraint: at least one eigenvalue");
  CHECK(message_of([] {
          dho2::quadratic<double>(Eigen::VectorXd::Constant(2, std::nan("")), 1);
        }) == "eigenvalues = (non-finite entry). Violated constraint: all finite");
  CHECK(message_of([] {
          dho2::quadratic<double>(Eigen::VectorXd::Ones(3), 1, Eigen::VectorXd::Zero(2));
        }) == "minimizer.size() = 2. Violated constraint: equal to eigenvalues.size() = 3");
  CHECK(message_of([] { static_cast<void>(dho2::testing::geometric(0)); }) ==
        "n = 0. Violated constraint: n >= 1");
  CHECK(message_of([] { static_cast<void>(dho2::testing::geometric(3, 1.0, 1.5)); }) ==
        "ratio = 1.5. Violated constraint: 0 < ratio <= 1");
  CHECK(message_of([] { static_cast<void>(dho2::testing::clustered(3, 4)); }) ==
        "cluster_size = 4. Violated constraint: 1 <= cluster_size <= n");
  CHECK(message_of([] { static_cast<void>(dho2::testing::rank_deficient(3, 5)); }) ==
        "rank = 5. Violated constraint: 0 <= rank <= n");
  CHECK(message_of([] {
          static_cast<void>(dho2::testing::with_negative_outliers(3, 1, 1.0, 2.0));
        }) == "most_negative = 2. Violated constraint: finite and < 0");
}
