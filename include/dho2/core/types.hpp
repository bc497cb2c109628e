/// @file
/// Vocabulary types shared by every DHO2 header: Eigen vectors and matrices of a model's scalar,
/// the index type, and the scalar requirement (`float` or `double`).
#pragma once

#include <Eigen/Core>

#include <concepts>
#include <cstddef>

/// DHO2: FOSI optimizers composed from policies (`dho2::optimizer`, `dho2::policies`), the
/// concepts that models and policies satisfy, the shipped policies, models, data and callbacks.
/// Names in `dho2::detail` are implementation details, not part of the API.
namespace dho2 {

/// Signed index type used for sizes and positions (Eigen's, so no conversions at the boundary).
using index = Eigen::Index;

/// Dense column vector of scalar `S`; parameters, gradients and Hessian-vector products use it.
template <class S>
using vector = Eigen::Matrix<S, Eigen::Dynamic, 1>;

/// Dense column-major matrix of scalar `S`.
template <class S>
using matrix = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;

/// Read-only view of a contiguous vector (what non-template boundaries take, as in Eigen).
template <class S>
using const_vector_ref = Eigen::Ref<const vector<S>>;

/// Writable view of a contiguous vector.
template <class S>
using vector_ref = Eigen::Ref<vector<S>>;

/// The floating-point types a model may use for its parameters: `float` or `double`.
/// Curvature (Lanczos basis, tridiagonal, eigenvalues) is always computed in `double`.
template <class S>
concept model_scalar = std::same_as<S, float> || std::same_as<S, double>;

}  // namespace dho2
