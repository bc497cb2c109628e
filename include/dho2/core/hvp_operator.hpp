/// @file
/// `dho2::hvp_operator`: the Hessian seen by a curvature estimator — a symmetric linear operator
/// on this rank's shard of the parameter space, plus the reduction that turns partial dot
/// products into global ones.
///
/// Estimators work only on shards: `apply` takes this rank's slice of a global vector x and
/// returns this rank's slice of H·x (the operator gathers, multiplies on the rank's slice of the
/// curvature batch and reduce-scatters behind the call); `all_reduce_sum` sums small arrays of
/// partial dot products over the ranks that share the estimate. On one process the shard is the
/// whole vector and the reduction does nothing.
#pragma once

#include <dho2/core/shard_layout.hpp>
#include <dho2/core/types.hpp>

#include <Eigen/Core>

#include <chrono>
#include <functional>
#include <span>
#include <utility>

namespace dho2 {

/// A symmetric operator y = H·x on shards, with a global sum for partial dot products.
class hvp_operator {
 public:
  /// Computes this rank's shard of H·x from this rank's shard of x; returns false when *this
  /// rank's shard* of the product has non-finite entries. (A function that already agrees over
  /// the ranks is also correct, only slower: the flag is summed once more.)
  using apply_function =
      std::function<bool(Eigen::Ref<const Eigen::VectorXd>, Eigen::Ref<Eigen::VectorXd>)>;
  /// Sums the array element-wise over all ranks of the estimate, in place.
  using reduce_function = std::function<void(std::span<double>)>;

  /// An operator on the given shard layout.
  hvp_operator(shard_layout layout, apply_function apply, reduce_function reduce)
      : layout_(layout), apply_(std::move(apply)), reduce_(std::move(reduce)) {}

  /// Global dimension n.
  [[nodiscard]] index global_size() const noexcept { return layout_.global_size; }
  /// First global index of this rank's shard.
  [[nodiscard]] index shard_offset() const noexcept { return layout_.offset; }
  /// Length of this rank's shard.
  [[nodiscard]] index shard_size() const noexcept { return layout_.size; }

  /// y = H·x on this rank's shard (x, y of length `shard_size()`); returns false on every rank
  /// when the product has non-finite entries on any rank (y is then zero). One collective of one
  /// scalar on top of the product when distributed.
  bool apply(Eigen::Ref<const Eigen::VectorXd> x, Eigen::Ref<Eigen::VectorXd> y) {
    double bad = apply_local_check(x, y) ? 0.0 : 1.0;
    all_reduce_sum(std::span<double>(&bad, 1));
    if (bad != 0.0) {
      y.setZero();
      return false;
    }
    return true;
  }

  /// y = H·x like `apply`, without the collective that makes the ranks agree on its outcome:
  /// returns whether *this rank's* shard of y is finite (a non-finite entry of any rank's partial
  /// product reaches the shard that owns it). The caller must sum the flag (1 for not finite)
  /// over the ranks in its next `all_reduce_sum` before it lets y decide anything; an estimator
  /// that reduces right after each product anyway saves one collective per product this way
  /// (`dho2::basic_lanczos` carries the flag with its projections).
  bool apply_local_check(Eigen::Ref<const Eigen::VectorXd> x, Eigen::Ref<Eigen::VectorXd> y) {
    const auto t0 = std::chrono::steady_clock::now();
    const bool ok = apply_(x, y);
    apply_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ++applications_;
    return ok;
  }

  /// Sums `values` element-wise over the ranks of the estimate, in place (a no-op on one rank).
  void all_reduce_sum(std::span<double> values) {
    if (reduce_) reduce_(values);
  }

  /// Number of `apply` calls so far (Hessian-vector products).
  [[nodiscard]] index applications() const noexcept { return applications_; }
  /// Seconds spent inside `apply`.
  [[nodiscard]] double apply_seconds() const noexcept { return apply_seconds_; }

 private:
  shard_layout layout_;
  apply_function apply_;
  reduce_function reduce_;
  index applications_ = 0;
  double apply_seconds_ = 0.0;
};

}  // namespace dho2
