/// @file
/// `dho2::keep_best`: a callback that keeps a copy of the parameters at the epoch with the best
/// value of a metric, to be restored after the run.
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/callbacks/early_stop.hpp>
#include <dho2/callbacks/events.hpp>
#include <dho2/core/types.hpp>
#include <dho2/detail/validate.hpp>

#include <limits>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

namespace dho2 {

/// A callback for `optimize` that copies the parameters at every epoch end whose metric improves
/// on the best so far (the rule of `dho2::early_stopping`: better by more than `min_delta` in
/// `direction`; the first finite value improves; NaN never does; an epoch end without the metric
/// is ignored). The metric is looked up as by `dho2::early_stop_at` (`"train_loss"`, the
/// default, is the epoch's mean training loss).
///
/// It **exposes** the copy and does not restore it: when `optimize` returns, `x` is the last
/// iterate (the one a checkpoint saved at the stop continues from); call `restore(x)` to put
/// the best parameters in `x`. `on_begin` forgets the copy of a previous run.
///
/// Distributed runs: the copy is `epoch_info::parameters`, the whole x as this rank holds it.
/// In mode S every rank holds the same x after every step (the all-gather) and `train_loss` is
/// the global mean, so every rank keeps the same copy. In mode A x is the rank's local iterate
/// and `train_loss` its local loss: x is the consensus point on every rank only at the end of a
/// consensus round (when the batches per epoch are a multiple of τ), and the ranks agree on the
/// best epoch only for a metric that is the same on every rank.
///
///     dho2::keep_best<float> best{"test_loss"};
///     opt.optimize(model, x, batches, 50, dho2::evaluate("test_loss", test_loss), best);
///     best.restore(x);  // the parameters of epoch best.best_epoch()
template <model_scalar S>
class keep_best {
 public:
  /// Keeps the parameters at the best value of `metric`.
  /// @throws dho2::invalid_options if `min_delta` is not finite and >= 0.
  explicit keep_best(std::string metric = "train_loss",
                     metric_direction direction = metric_direction::minimize,
                     double min_delta = 0.0)
      : metric_(std::move(metric)), direction_(direction), min_delta_(min_delta) {
    detail::require_finite_nonnegative("keep_best min_delta", min_delta_);
  }

  /// The metric watched.
  [[nodiscard]] const std::string& metric() const noexcept { return metric_; }
  /// Whether a copy was kept in the last run.
  [[nodiscard]] bool has_best() const noexcept { return best_.has_value(); }
  /// The 1-based epoch of the copy, 0 if none.
  [[nodiscard]] index best_epoch() const noexcept { return best_epoch_; }
  /// The metric's value at that epoch, NaN if none.
  [[nodiscard]] double best_value() const noexcept {
    return best_.value_or(std::numeric_limits<double>::quiet_NaN());
  }
  /// The parameters at the end of the best epoch (empty if none).
  [[nodiscard]] const vector<S>& best_parameters() const noexcept { return parameters_; }

  /// Copies the best parameters into `x` and returns true; returns false (leaving `x`) when no
  /// copy was kept.
  /// @throws dho2::invalid_options if `x` does not have the copy's length.
  bool restore(vector_ref<S> x) const {
    if (!best_) return false;
    detail::require(x.size() == parameters_.size(), "keep_best restore: x.size()", x.size(),
                    "the number of parameters kept (" + std::to_string(parameters_.size()) + ")");
    x = parameters_;
    return true;
  }

  /// Hook: forgets the copy of a previous run.
  void on_begin(const run_info& /*info*/) {
    best_.reset();
    best_epoch_ = 0;
    parameters_.resize(0);
  }

  /// Hook: copies the parameters when the metric improves.
  template <model_scalar T>
  void on_epoch_end(const epoch_info<T>& info) {
    static_assert(std::is_same_v<T, S>, "DHO2: keep_best<S>: S must be the optimizer's scalar");
    const std::optional<double> value = detail::early_stop_impl::monitored(info, metric_);
    if (!value || !detail::early_stop_impl::improves(*value, best_, direction_, min_delta_)) {
      return;
    }
    best_ = *value;
    best_epoch_ = info.epoch + 1;
    parameters_ = info.parameters;
  }

 private:
  std::string metric_;
  metric_direction direction_;
  double min_delta_;
  std::optional<double> best_;
  index best_epoch_ = 0;
  vector<S> parameters_;
};

}  // namespace dho2
