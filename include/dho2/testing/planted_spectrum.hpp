/// @file
/// Spectra to plant in `dho2::quadratic` (or any test problem): each helper returns the n
/// eigenvalues of a symmetric matrix, in descending order, as a `dho2::vector<double>`.
///
/// They cover the cases the curvature code must get right: a well-separated geometric decay
/// (`geometric`), nearly equal top eigenvalues (`clustered`), an indefinite Hessian with a few
/// negative eigenvalues (`with_negative_outliers`), a singular Hessian (`rank_deficient`) and the
/// zero Hessian on which Lanczos breaks down at once (`zero`). Bad arguments throw
/// `dho2::invalid_options` with a message of the form "<name> = <value>. Violated constraint: ...".
#pragma once

#include <dho2/core/errors.hpp>
#include <dho2/core/types.hpp>

#include <cmath>
#include <sstream>

namespace dho2::detail {
inline void spectrum_require(bool ok, const char* name, double value, const char* constraint) {
  if (!ok) {
    std::ostringstream message;
    message << name << " = " << value << ". Violated constraint: " << constraint;
    throw invalid_options(message.str());
  }
}
inline void spectrum_require_size(index n) {
  spectrum_require(n >= 1, "n", static_cast<double>(n), "n >= 1");
}
}  // namespace dho2::detail

namespace dho2::testing {

/// Geometric decay: λᵢ = largest · ratioⁱ for i = 0, …, n−1.
///
/// With ratio < 1 every gap λᵢ − λᵢ₊₁ is a fixed fraction of λᵢ, so the top eigenvalues are well
/// separated and Lanczos converges on them quickly; the condition number is ratio^{−(n−1)}.
/// Requires n ≥ 1, largest finite and 0 < ratio ≤ 1 (ratio = 1 gives n equal eigenvalues).
[[nodiscard]] inline vector<double> geometric(index n, double largest = 1.0, double ratio = 0.5) {
  detail::spectrum_require_size(n);
  detail::spectrum_require(std::isfinite(largest), "largest", largest, "finite");
  detail::spectrum_require(ratio > 0.0 && ratio <= 1.0, "ratio", ratio, "0 < ratio <= 1");
  vector<double> lambda(n);
  double value = largest;
  for (index i = 0; i < n; ++i) {
    lambda(i) = value;
    value *= ratio;
  }
  return lambda;
}

/// A cluster of `cluster_size` nearly equal top eigenvalues above a bulk:
/// λᵢ = top · (1 − spread · i / cluster_size) for i < cluster_size, then a bulk decreasing
/// linearly from `bulk` to bulk / (n − cluster_size): λᵢ = bulk · (n − i) / (n − cluster_size).
///
/// Relative gaps inside the cluster are spread / cluster_size, the hard case for extreme-eigenvalue
/// solvers (slow convergence, lost multiplicity without re-orthogonalisation). Requires
/// 1 ≤ cluster_size ≤ n, 0 ≤ spread < 1 and 0 ≤ bulk < top · (1 − spread).
[[nodiscard]] inline vector<double> clustered(index n, index cluster_size, double top = 10.0,
                                              double spread = 1e-3, double bulk = 1.0) {
  detail::spectrum_require_size(n);
  detail::spectrum_require(cluster_size >= 1 && cluster_size <= n, "cluster_size",
                           static_cast<double>(cluster_size), "1 <= cluster_size <= n");
  detail::spectrum_require(spread >= 0.0 && spread < 1.0, "spread", spread, "0 <= spread < 1");
  detail::spectrum_require(std::isfinite(top) && top > 0.0, "top", top, "finite and > 0");
  detail::spectrum_require(bulk >= 0.0 && bulk < top * (1.0 - spread), "bulk", bulk,
                           "0 <= bulk < top * (1 - spread)");
  vector<double> lambda(n);
  const auto c = static_cast<double>(cluster_size);
  for (index i = 0; i < cluster_size; ++i) {
    lambda(i) = top * (1.0 - spread * static_cast<double>(i) / c);
  }
  const auto rest = static_cast<double>(n - cluster_size);
  for (index i = cluster_size; i < n; ++i) {
    lambda(i) = bulk * static_cast<double>(n - i) / rest;
  }
  return lambda;
}

/// An indefinite spectrum: n − num_negative positive eigenvalues decreasing linearly from
/// `largest` to largest / (n − num_negative), then num_negative negative outliers decreasing
/// linearly to `most_negative`: the j-th from the end is most_negative · (num_negative − j) /
/// num_negative, j = 0, …, num_negative − 1.
///
/// Models a saddle point: the l smallest eigenpairs (l = num_negative) are well separated from
/// each other and from the positive bulk. Requires 0 ≤ num_negative ≤ n, largest > 0 and
/// most_negative < 0.
[[nodiscard]] inline vector<double> with_negative_outliers(index n, index num_negative,
                                                           double largest = 10.0,
                                                           double most_negative = -10.0) {
  detail::spectrum_require_size(n);
  detail::spectrum_require(num_negative >= 0 && num_negative <= n, "num_negative",
                           static_cast<double>(num_negative), "0 <= num_negative <= n");
  detail::spectrum_require(std::isfinite(largest) && largest > 0.0, "largest", largest,
                           "finite and > 0");
  detail::spectrum_require(std::isfinite(most_negative) && most_negative < 0.0, "most_negative",
                           most_negative, "finite and < 0");
  vector<double> lambda(n);
  const index positive = n - num_negative;
  for (index i = 0; i < positive; ++i) {
    lambda(i) = largest * static_cast<double>(positive - i) / static_cast<double>(positive);
  }
  for (index j = 0; j < num_negative; ++j) {
    lambda(n - 1 - j) =
        most_negative * static_cast<double>(num_negative - j) / static_cast<double>(num_negative);
  }
  return lambda;
}

/// A singular positive semi-definite spectrum of the given rank: λᵢ = largest · (rank − i) / rank
/// for i < rank, and exactly 0 for the remaining n − rank eigenvalues.
///
/// The Krylov space of such a Hessian has dimension at most rank + 1, so Lanczos must break down
/// (β = 0) and the zero eigenvalues must not be inverted. Requires 0 ≤ rank ≤ n and largest > 0.
[[nodiscard]] inline vector<double> rank_deficient(index n, index rank, double largest = 1.0) {
  detail::spectrum_require_size(n);
  detail::spectrum_require(rank >= 0 && rank <= n, "rank", static_cast<double>(rank),
                           "0 <= rank <= n");
  detail::spectrum_require(std::isfinite(largest) && largest > 0.0, "largest", largest,
                           "finite and > 0");
  vector<double> lambda = vector<double>::Zero(n);
  for (index i = 0; i < rank; ++i) {
    lambda(i) = largest * static_cast<double>(rank - i) / static_cast<double>(rank);
  }
  return lambda;
}

/// The zero spectrum: n eigenvalues equal to 0 (a flat loss; every Hessian-vector product is 0).
/// Requires n ≥ 1.
[[nodiscard]] inline vector<double> zero(index n) {
  detail::spectrum_require_size(n);
  return vector<double>::Zero(n);
}

}  // namespace dho2::testing
