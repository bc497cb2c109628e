/// @file
/// What a curvature estimator is asked for (`estimate_request`) and what it returns
/// (`eigen_estimate`).
#pragma once

#include <dho2/core/types.hpp>

#include <Eigen/Core>

#include <cstddef>
#include <cstdint>

namespace dho2 {

/// Parameters of one curvature estimate.
struct estimate_request {
  /// Number of largest eigenpairs wanted.
  index largest = 0;
  /// Number of smallest eigenpairs wanted.
  index smallest = 0;
  /// Iteration budget (Lanczos steps m; at most n are used).
  index steps = 0;
  /// Seed of the estimator's own RNG.
  std::uint64_t seed = 0;
  /// Stream within the seed (the estimate's ordinal), so successive estimates start differently.
  std::uint64_t stream = 0;
};

/// Eigenpairs of the Hessian found by one estimate, on this rank's shard.
///
/// Row r of `eigenvectors` is this rank's slice of eigenvector r; rows are orthonormal over the
/// global vector. The first `num_largest` entries are the largest eigenvalues in descending
/// order, the next `num_smallest` the smallest in ascending order. Fewer than requested are
/// returned when the Krylov space was exhausted (breakdown). When `failed` is true (a non-finite
/// Hessian-vector product), nothing else is meaningful and the caller must keep its previous
/// curvature.
struct eigen_estimate {
  /// Ritz values: largest (descending), then smallest (ascending).
  Eigen::VectorXd eigenvalues;
  /// (num_largest + num_smallest) × shard size; row r is this rank's slice of Ritz vector r.
  Eigen::MatrixXd eigenvectors;
  /// Ritz residual norms ‖H vᵣ − λᵣ vᵣ‖ (from the last β and the tridiagonal's eigenvectors).
  Eigen::VectorXd residuals;
  /// Number of largest pairs returned.
  index num_largest = 0;
  /// Number of smallest pairs returned.
  index num_smallest = 0;
  /// Iterations performed (Lanczos steps).
  index iterations = 0;
  /// Hessian-vector products used.
  index hvps = 0;
  /// Re-orthogonalisation passes over the basis, all steps together (Lanczos: between one and
  /// `reorthogonalization_passes` per step, as the DGKS criterion decides; 0 for estimators
  /// without re-orthogonalisation).
  index reorthogonalization_passes = 0;
  /// True when the iteration stopped early because the Krylov space became invariant (β ≈ 0).
  bool breakdown = false;
  /// True when a Hessian-vector product was not finite: the estimate is unusable.
  bool failed = false;
  /// Peak bytes of iteration storage (the Krylov basis) on this rank.
  std::size_t basis_bytes = 0;
  /// Wall seconds of the whole estimate.
  double seconds = 0.0;
  /// Wall seconds inside Hessian-vector products.
  double hvp_seconds = 0.0;
};

}  // namespace dho2
