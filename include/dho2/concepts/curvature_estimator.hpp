/// @file
/// The `curvature_estimator` concept: a policy that finds extreme eigenpairs of the Hessian from
/// Hessian-vector products, on shards (the estimate: docs/algorithm.md, "Curvature estimates";
/// the shards: "Mode S" there; this concept: docs/concepts/curvature_estimator.md).
///
/// A type `E` models `curvature_estimator` when:
///  1. it is copy-constructible (a copyable hyper-parameter object, ensmallen style);
///  2. `e.estimate(op, request)` on a `const E&`, with `op` a `dho2::hvp_operator&` and
///     `request` a `const dho2::estimate_request&`, returns a `dho2::eigen_estimate` holding at
///     most `request.largest` largest and `request.smallest` smallest pairs, eigenvectors as
///     this rank's shard (rows orthonormal globally).
///
/// Semantic requirements: every rank of the estimate calls `estimate` with the same request and
/// makes the same sequence of `op.apply` / `op.all_reduce_sum` calls (they are collective). It
/// must not throw once it has started calling `op` (peers would wait forever): numerical trouble
/// is reported through `failed`/`breakdown`. It never produces NaN or Inf in its output.
///
/// Not required, used when present: `e.validate()` (throws `dho2::invalid_options`), called
/// before any estimate; a default-constructible scratch type `E::workspace` with
/// `e.estimate(op, request, ws)` (`ws` an `E::workspace&`): the optimizer keeps one workspace and
/// lends it to each estimate, so large buffers (a Krylov basis) are allocated once per run
/// instead of once per estimate (one estimate uses a workspace at a time).
/// `dho2::lanczos` is the shipped policy.
#pragma once

#include <dho2/core/eigen_estimate.hpp>
#include <dho2/core/hvp_operator.hpp>

#include <concepts>

namespace dho2 {

/// A policy that estimates extreme Hessian eigenpairs on shards (see the file comment).
template <class E>
concept curvature_estimator =
    std::copy_constructible<E> &&
    requires(const E& e, hvp_operator& op, const estimate_request& request) {
      { e.estimate(op, request) } -> std::same_as<eigen_estimate>;
    };

namespace detail {
template <class E>
constexpr bool check_curvature_estimator() {
  constexpr bool ok = requires(const E& e, hvp_operator& op, const estimate_request& request) {
    { e.estimate(op, request) } -> std::same_as<eigen_estimate>;
  };
  static_assert(ok, "DHO2: curvature_estimator requires `e.estimate(op, request)` (const; op: "
                    "dho2::hvp_operator&, request: const dho2::estimate_request&) returning "
                    "dho2::eigen_estimate");
  static_assert(!ok || std::copy_constructible<E>,
                "DHO2: curvature_estimator requires a copy-constructible policy type");
  return ok && std::copy_constructible<E>;
}
}  // namespace detail

}  // namespace dho2

/// Fails compilation with a message starting "DHO2:" naming the first requirement of
/// `dho2::curvature_estimator` that `E` does not meet.
#define DHO2_REQUIRE_CURVATURE_ESTIMATOR(E) \
  static_assert(::dho2::detail::check_curvature_estimator<E>(), "DHO2: see the message above")
