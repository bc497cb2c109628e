/// @file
/// `dho2::quadratic<S>`: a quadratic test problem with a planted Hessian spectrum.
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/core/errors.hpp>
#include <dho2/core/types.hpp>
#include <dho2/detail/random.hpp>

#include <Eigen/Core>
#include <Eigen/QR>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <sstream>
#include <string>
#include <utility>

namespace dho2 {

/// A quadratic with a planted spectrum, the oracle problem for curvature code:
///
///     f(x) = ½ (x − x*)ᵀ A (x − x*),   A = Q diag(λ) Qᵀ,
///     ∇f(x) = A (x − x*),   ∇²f(x) = A,
///
/// where λ ∈ Rⁿ are the eigenvalues given to the constructor (any signs, any order) and Q is a
/// random orthogonal matrix drawn from a seed: the Q factor of the Householder QR of a matrix of
/// independent standard normals (drawn with `dho2::detail::xoshiro256`, never global state), with
/// column signs fixed so that R has a positive diagonal, which makes Q Haar-distributed. Column i
/// of Q is the eigenvector of λᵢ. The same (λ, seed) gives the same A on every platform.
///
/// The problem carries its own start and optimum (ensmallen style): `initial_point()` is
/// x₀ = x* + Q·1, whose error has a unit component along every eigenvector, so
/// f(x₀) = ½ Σᵢ λᵢ; `minimizer()` is x* (a minimiser only when every λᵢ ≥ 0; otherwise the unique
/// stationary point if no λᵢ is 0). Every batch is the full problem: `batch_type` is the empty
/// tag `quadratic::batch`.
///
/// The spectrum, Q and A are kept in double; the loss, gradient and Hessian-vector product are
/// evaluated in S with A and x* rounded to S once at construction (so for S = float the planted
/// eigenvalues hold to float precision). Construction costs O(n³) time and the model O(n²)
/// memory: meant for n up to a few thousand.
template <model_scalar S>
class quadratic {
 public:
  /// Parameter scalar (`float` or `double`).
  using scalar_type = S;
  /// The empty batch tag: a quadratic has no data, every evaluation is the full problem.
  struct batch {};
  /// Batch type required by `dho2::differentiable_model`.
  using batch_type = batch;

  /// Builds the problem with minimiser x* = 0.
  /// @throws dho2::invalid_options if `eigenvalues` is empty or not finite.
  quadratic(vector<double> eigenvalues, std::uint64_t seed)
      : quadratic(eigenvalues, seed, vector<double>::Zero(eigenvalues.size())) {}

  /// Builds the problem with the given minimiser x* (its length must equal the number of
  /// eigenvalues).
  /// @throws dho2::invalid_options if `eigenvalues` is empty or not finite, or if `minimizer`
  ///   has the wrong length or is not finite.
  quadratic(vector<double> eigenvalues, std::uint64_t seed, vector<double> minimizer)
      : eigenvalues_(std::move(eigenvalues)), seed_(seed) {
    const index n = eigenvalues_.size();
    if (n < 1) {
      throw invalid_options("eigenvalues.size() = 0. Violated constraint: at least one eigenvalue");
    }
    if (!eigenvalues_.allFinite()) {
      throw invalid_options("eigenvalues = (non-finite entry). Violated constraint: all finite");
    }
    if (minimizer.size() != n) {
      std::ostringstream message;
      message << "minimizer.size() = " << minimizer.size()
              << ". Violated constraint: equal to eigenvalues.size() = " << n;
      throw invalid_options(message.str());
    }
    if (!minimizer.allFinite()) {
      throw invalid_options("minimizer = (non-finite entry). Violated constraint: all finite");
    }
    eigenvectors_ = random_orthogonal(n, seed);
    hessian_ = eigenvectors_ * eigenvalues_.asDiagonal() * eigenvectors_.transpose();
    hessian_ = (0.5 * (hessian_ + hessian_.transpose())).eval();  // exactly symmetric
    hessian_s_ = hessian_.template cast<S>();
    minimizer_ = minimizer.template cast<S>();
    initial_point_ = (minimizer + eigenvectors_ * vector<double>::Ones(n)).template cast<S>();
  }

  /// Number of parameters n (the number of planted eigenvalues).
  [[nodiscard]] index num_parameters() const noexcept { return eigenvalues_.size(); }
  /// The problem as text, "quadratic n=N seed=S spectrum=H" with H a hash of the planted
  /// eigenvalues and the minimiser (the model's fingerprint, see `dho2::model_structure`).
  [[nodiscard]] std::string structure() const {
    std::uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a 64 of the doubles' bytes
    const auto feed = [&h](const vector<double>& v) {
      for (index i = 0; i < v.size(); ++i) {
        const auto bits = std::bit_cast<std::uint64_t>(v(i));
        for (int b = 0; b < 8; ++b) {
          h ^= (bits >> (8 * b)) & 0xffU;
          h *= 0x100000001b3ULL;
        }
      }
    };
    feed(eigenvalues_);
    feed(minimizer_.template cast<double>());
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
    return "quadratic n=" + std::to_string(static_cast<long long>(num_parameters())) +
           " seed=" + std::to_string(seed_) + " spectrum=" + hex;
  }

  /// The planted eigenvalues λ, in the order given to the constructor.
  [[nodiscard]] const vector<double>& eigenvalues() const noexcept { return eigenvalues_; }

  /// The eigenvectors Q (n × n, orthonormal columns; column i belongs to eigenvalues()(i)).
  [[nodiscard]] const matrix<double>& eigenvectors() const noexcept { return eigenvectors_; }

  /// The dense Hessian A = Q diag(λ) Qᵀ in double (exactly symmetric).
  [[nodiscard]] const matrix<double>& hessian() const noexcept { return hessian_; }

  /// The stationary point x* (the minimiser when A is positive semi-definite), in S.
  [[nodiscard]] const vector<S>& minimizer() const noexcept { return minimizer_; }

  /// The start point x₀ = x* + Q·1, in S (see the class documentation).
  [[nodiscard]] const vector<S>& initial_point() const noexcept { return initial_point_; }

  /// The seed Q was drawn from.
  [[nodiscard]] std::uint64_t seed() const noexcept { return seed_; }

  /// Writes ∇f(x) = A (x − x*) into `g` and returns f(x).
  S loss_and_gradient(const_vector_ref<S> x, const batch_type& /*batch*/, vector_ref<S> g) const {
    eigen_assert(x.size() == num_parameters() && g.size() == num_parameters());
    const vector<S> d = x - minimizer_;
    g.noalias() = hessian_s_ * d;
    return S(0.5) * d.dot(g);
  }

  /// Returns f(x).
  [[nodiscard]] S loss(const_vector_ref<S> x, const batch_type& /*batch*/) const {
    eigen_assert(x.size() == num_parameters());
    const vector<S> d = x - minimizer_;
    return S(0.5) * d.dot(hessian_s_ * d);
  }

  /// Writes the exact Hessian-vector product A v into `hv` (independent of x).
  void hessian_vector_product(const_vector_ref<S> x, const batch_type& /*batch*/,
                              const_vector_ref<S> v, vector_ref<S> hv) const {
    eigen_assert(x.size() == num_parameters() && v.size() == num_parameters() &&
                 hv.size() == num_parameters());
    static_cast<void>(x);
    hv.noalias() = hessian_s_ * v;
  }

 private:
  static matrix<double> random_orthogonal(index n, std::uint64_t seed) {
    detail::xoshiro256 rng(seed);
    matrix<double> gaussian(n, n);
    for (index j = 0; j < n; ++j) {
      for (index i = 0; i < n; ++i) gaussian(i, j) = rng.normal();
    }
    const Eigen::HouseholderQR<matrix<double>> qr(gaussian);
    matrix<double> q = qr.householderQ();
    for (index j = 0; j < n; ++j) {
      if (qr.matrixQR()(j, j) < 0.0) q.col(j) = -q.col(j);
    }
    return q;
  }

  vector<double> eigenvalues_;
  std::uint64_t seed_;
  matrix<double> eigenvectors_;
  matrix<double> hessian_;
  matrix<S> hessian_s_;
  vector<S> minimizer_;
  vector<S> initial_point_;
};

}  // namespace dho2
