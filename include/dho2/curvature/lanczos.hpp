/// @file
/// `dho2::lanczos`: extreme-spectrum estimation by the Lanczos iteration with full
/// re-orthogonalisation, on shards (DESIGN §2.2, §2.4).
#pragma once

#include <dho2/concepts/curvature_estimator.hpp>
#include <dho2/detail/random.hpp>
#include <dho2/detail/validate.hpp>

#include <Eigen/Eigenvalues>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <span>

namespace dho2 {

/// The Lanczos iteration (Lanczos, 1950) for the k largest and l smallest eigenpairs of the
/// Hessian H, as FOSI's extreme spectrum estimation (Sivan et al., ICLR 2024).
///
/// From a start vector q₀ drawn from the estimator's own counter-based RNG (seed and stream of
/// the request; the value of coordinate i does not depend on how the vector is sharded), step j
/// computes w = H qⱼ and orthogonalises it against the whole basis Q = [q₀ … qⱼ] by classical
/// Gram–Schmidt applied `reorthogonalization_passes` times (twice by default, "CGS2"):
/// \f[ h = Q^\top w,\; w \leftarrow w - Q h,\; \alpha_j = h_j \;(+\text{corrections}),\quad
///     \beta_j = \lVert w \rVert,\quad q_{j+1} = w / \beta_j. \f]
/// The first pass contains the three-term recurrence; the rest keep Q orthonormal to round-off.
/// After m steps the tridiagonal T = tridiag(β, α, β) = Y Θ Yᵀ gives Ritz values θ and vectors
/// V = Yᵀ Qᵀ, with residuals ‖H vᵢ − θᵢ vᵢ‖ = |β_{m−1} Y_{m−1,i}| at no extra cost.
///
/// Everything is in double precision whatever the model's scalar. Every dot product is a
/// partial sum on the shard followed by `op.all_reduce_sum` of a few scalars, so the basis lives
/// only in shards (8·m·n/P bytes per rank).
///
/// Breakdown: when βⱼ ≤ `breakdown_tolerance`·‖T‖ (the Krylov space is invariant, e.g. a zero or
/// low-rank Hessian), the iteration stops and returns the pairs of the steps done — fewer than
/// requested if needed, never NaN, never a throw.
struct lanczos {
  /// Relative threshold on β for declaring breakdown (in (0, 1)).
  double breakdown_tolerance = 1e-10;
  /// Classical Gram–Schmidt passes per step (≥ 1; 2 gives orthogonality to round-off).
  index reorthogonalization_passes = 2;

  /// Throws `dho2::invalid_options` for bad hyper-parameters.
  void validate() const {
    detail::require(std::isfinite(breakdown_tolerance) && breakdown_tolerance > 0.0 &&
                        breakdown_tolerance < 1.0,
                    "lanczos::breakdown_tolerance", breakdown_tolerance, "0 < value < 1");
    detail::require(reorthogonalization_passes >= 1, "lanczos::reorthogonalization_passes",
                    reorthogonalization_passes, ">= 1");
  }

  /// Runs at most `request.steps` (and at most n) Lanczos steps on `op` and returns the
  /// `request.largest` largest and `request.smallest` smallest Ritz pairs.
  [[nodiscard]] eigen_estimate estimate(hvp_operator& op, const estimate_request& request) const {
    using Eigen::MatrixXd;
    using Eigen::VectorXd;
    const auto t_start = std::chrono::steady_clock::now();
    const index ns = op.shard_size();
    const index m = std::max<index>(1, std::min(request.steps, op.global_size()));
    const index hvps_before = op.applications();
    const double hvp_seconds_before = op.apply_seconds();

    eigen_estimate out;
    MatrixXd basis(ns, m);
    out.basis_bytes = static_cast<std::size_t>(basis.size()) * sizeof(double);
    VectorXd alpha = VectorXd::Zero(m);
    VectorXd beta = VectorXd::Zero(m);
    VectorXd w(ns);
    VectorXd h(m);

    const auto offset = static_cast<std::uint64_t>(op.shard_offset());
    for (index i = 0; i < ns; ++i) {
      basis(i, 0) = detail::counter_normal(request.seed, request.stream,
                                           offset + static_cast<std::uint64_t>(i));
    }
    double norm2 = basis.col(0).squaredNorm();
    op.all_reduce_sum(std::span<double>(&norm2, 1));
    basis.col(0) /= std::sqrt(norm2);

    index steps = 0;
    double last_beta = 0.0;
    double t_norm = 0.0;
    for (index j = 0; j < m; ++j) {
      if (!op.apply(basis.col(j), w)) {
        out.failed = true;
        break;
      }
      steps = j + 1;
      const auto q = basis.leftCols(j + 1);
      for (index pass = 0; pass < reorthogonalization_passes; ++pass) {
        auto hj = h.head(j + 1);
        hj.noalias() = q.transpose() * w;
        op.all_reduce_sum(std::span<double>(hj.data(), static_cast<std::size_t>(j + 1)));
        w.noalias() -= q * hj;
        alpha(j) += hj(j);
      }
      double b2 = w.squaredNorm();
      op.all_reduce_sum(std::span<double>(&b2, 1));
      const double b = std::sqrt(b2);
      beta(j) = b;
      t_norm = std::max(t_norm, std::abs(alpha(j)) + b + (j > 0 ? beta(j - 1) : 0.0));
      last_beta = b;
      if (j + 1 == m) break;
      if (!(b > breakdown_tolerance * t_norm)) {
        out.breakdown = true;
        break;
      }
      basis.col(j + 1) = w / b;
    }

    out.iterations = steps;
    out.hvps = op.applications() - hvps_before;
    out.hvp_seconds = op.apply_seconds() - hvp_seconds_before;
    if (out.failed || steps == 0) {
      out.failed = true;
      out.eigenvalues.resize(0);
      out.eigenvectors.resize(0, ns);
      out.residuals.resize(0);
      out.seconds = seconds_since(t_start);
      return out;
    }

    Eigen::SelfAdjointEigenSolver<MatrixXd> tri;
    const VectorXd diag = alpha.head(steps);
    const VectorXd sub = beta.head(std::max<index>(steps - 1, 0));
    tri.computeFromTridiagonal(diag, sub, Eigen::ComputeEigenvectors);
    const VectorXd& theta = tri.eigenvalues();  // ascending
    const MatrixXd& y = tri.eigenvectors();

    out.num_largest = std::min(request.largest, steps);
    out.num_smallest = std::min(request.smallest, steps - out.num_largest);
    const index count = out.num_largest + out.num_smallest;
    MatrixXd y_sel(steps, count);
    out.eigenvalues.resize(count);
    out.residuals.resize(count);
    for (index r = 0; r < count; ++r) {
      const index col = r < out.num_largest ? steps - 1 - r : r - out.num_largest;
      y_sel.col(r) = y.col(col);
      out.eigenvalues(r) = theta(col);
      out.residuals(r) = std::abs(last_beta * y(steps - 1, col));
    }
    out.eigenvectors.noalias() = y_sel.transpose() * basis.leftCols(steps).transpose();
    out.seconds = seconds_since(t_start);
    return out;
  }

 private:
  static double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
};

static_assert(curvature_estimator<lanczos>);

/// The default Lanczos iteration count for k + l pairs in dimension n (DESIGN §2.2):
/// m = max(4(k + l), ⌈2 ln n⌉), capped at n.
[[nodiscard]] inline index default_lanczos_steps(index k, index l, index n) {
  const auto log_term = static_cast<index>(std::ceil(2.0 * std::log(static_cast<double>(
                                                           std::max<index>(n, 1)))));
  return std::min(n, std::max(4 * (k + l), log_term));
}

}  // namespace dho2
