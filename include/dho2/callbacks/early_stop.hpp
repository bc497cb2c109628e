/// @file
/// `dho2::early_stop_at` and `dho2::early_stopping`: callbacks that stop `optimizer::optimize`
/// when a metric reaches a target (time-to-accuracy runs), or when it has stopped improving
/// (patience).
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/callbacks/events.hpp>
#include <dho2/core/types.hpp>
#include <dho2/detail/validate.hpp>

#include <cmath>
#include <cstdio>
#include <limits>
#include <optional>
#include <string>
#include <utility>

namespace dho2 {

/// Which side of the target counts as reached for `dho2::early_stop_at`.
enum class metric_direction {
  /// Reached when the metric is >= the target (accuracy-like metrics).
  maximize,
  /// Reached when the metric is <= the target (loss-like metrics).
  minimize,
};

namespace detail::early_stop_impl {

// The value of `metric` at this epoch end: a metric some callback set, else for "train_loss" the
// epoch's mean training loss; nullopt when neither.
template <class Info>
std::optional<double> monitored(const Info& info, const std::string& metric) {
  std::optional<double> value = info.metric(metric);
  if (!value && metric == "train_loss") value = info.train_loss;
  return value;
}

// Whether `v` improves on `best` by more than `min_delta` in `direction` (any finite value
// improves on no best; NaN never improves).
inline bool improves(double v, const std::optional<double>& best, metric_direction direction,
                     double min_delta) {
  if (!std::isfinite(v)) return false;
  if (!best) return true;
  return direction == metric_direction::minimize ? v < *best - min_delta : v > *best + min_delta;
}

// "%.6g" of v.
inline std::string shown(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

}  // namespace detail::early_stop_impl

/// A callback for `optimizer::optimize` that stops the run at the end of the first epoch whose
/// metric reaches the target: `value >= target` for `metric_direction::maximize` (the default),
/// `value <= target` for `metric_direction::minimize`. The summary's termination is then
/// `stopped_by_callback`.
///
/// The metric is looked up in `epoch_info::metrics` (pass the callback that sets it, e.g.
/// `dho2::evaluate`, before this one). The name `"train_loss"`, when no callback set a metric of
/// that name, means `epoch_info::train_loss`. A missing metric, or a NaN value, never stops the
/// run and never counts as reached.
///
/// It records whether and when the target was reached: the epoch (1-based, the count of
/// completed epochs, equal to `summary::epochs` of the stopped run) and the seconds since the run
/// began (that epoch's `epoch_info::elapsed_seconds`, taken before the epoch-end callbacks run:
/// it includes the evaluations at earlier epoch ends but not the one at this epoch end). The
/// record is reset by `on_begin`, so it describes the last run.
///
///     dho2::early_stop_at stop{"test_accuracy", 0.88};
///     opt.optimize(model, x, batches, 50, dho2::evaluate("test_accuracy", accuracy), stop);
///     if (stop.reached()) std::printf("%.1f s\n", stop.reached_seconds());
class early_stop_at {
 public:
  /// Stops when metric `metric` reaches `target` in the given direction.
  early_stop_at(std::string metric, double target,
                metric_direction direction = metric_direction::maximize)
      : metric_(std::move(metric)), target_(target), direction_(direction) {}

  /// The metric watched.
  [[nodiscard]] const std::string& metric() const noexcept { return metric_; }
  /// The target value.
  [[nodiscard]] double target() const noexcept { return target_; }
  /// The direction in which the target counts as reached.
  [[nodiscard]] metric_direction direction() const noexcept { return direction_; }

  /// Whether the target was reached in the last run.
  [[nodiscard]] bool reached() const noexcept { return reached_; }
  /// The 1-based epoch at which the target was reached, 0 if it was not.
  [[nodiscard]] index reached_epoch() const noexcept { return reached_epoch_; }
  /// Seconds from the start of the run to the end of that epoch, NaN if not reached.
  [[nodiscard]] double reached_seconds() const noexcept { return reached_seconds_; }
  /// The metric's value when the target was reached, NaN if not reached.
  [[nodiscard]] double reached_value() const noexcept { return reached_value_; }

  /// Hook: forgets the record of a previous run.
  void on_begin(const run_info& /*info*/) noexcept {
    reached_ = false;
    reached_epoch_ = 0;
    reached_seconds_ = std::numeric_limits<double>::quiet_NaN();
    reached_value_ = std::numeric_limits<double>::quiet_NaN();
  }

  /// Hook: returns true (stop) when the metric has reached the target.
  template <model_scalar S>
  bool on_epoch_end(const epoch_info<S>& info) {
    const std::optional<double> value = detail::early_stop_impl::monitored(info, metric_);
    if (!value) return false;
    const double v = *value;
    const bool hit = direction_ == metric_direction::maximize ? v >= target_ : v <= target_;
    if (!hit) return false;  // also for NaN: every comparison with NaN is false
    reached_ = true;
    reached_epoch_ = info.epoch + 1;
    reached_seconds_ = info.elapsed_seconds;
    reached_value_ = v;
    return true;
  }

 private:
  std::string metric_;
  double target_;
  metric_direction direction_;
  bool reached_ = false;
  index reached_epoch_ = 0;
  double reached_seconds_ = std::numeric_limits<double>::quiet_NaN();
  double reached_value_ = std::numeric_limits<double>::quiet_NaN();
};

/// A callback for `optimizer::optimize` that stops the run when a metric has not improved for
/// `patience` epochs (Keras `EarlyStopping`, ensmallen `EarlyStopAtMinLoss`): at each epoch end
/// the value improves when it is below the best so far by more than `min_delta`
/// (`metric_direction::minimize`, the default: a loss) or above it by more than `min_delta`
/// (`maximize`: an accuracy); the first finite value always improves. After `patience` epoch
/// ends in a row without improvement the run stops there, with termination
/// `stopped_by_callback` and a message naming the metric, the patience, the best value and its
/// epoch: "no improvement of train_loss for 3 epochs (best 0.0195312 at epoch 2)".
///
/// The metric is looked up as by `dho2::early_stop_at`: in `epoch_info::metrics` (pass the
/// callback that sets it first), or `"train_loss"` (the default) for the epoch's mean training
/// loss. An epoch end without the metric is ignored (neither improves nor counts); a NaN or
/// infinite value counts as an epoch without improvement (a diverged loss stops the run).
///
/// It reports the best epoch (1-based, as `summary::epochs` counts), its value and, when it
/// stopped the run, the epoch it stopped at; `on_begin` resets the record, so it describes the
/// last run (a resumed run starts a fresh count). To keep the parameters of the best epoch, pass
/// a `dho2::keep_best` with the same metric as well. With several ranks the stop is agreed
/// (every rank stops at the same epoch); monitor a value every rank sees alike (in mode S
/// `train_loss` is the global mean; in mode A it is each rank's local loss).
///
///     dho2::early_stopping stop{"test_loss", 3, 1e-4};
///     opt.optimize(model, x, batches, 100, dho2::evaluate("test_loss", test_loss), stop);
///     std::printf("best epoch %lld\n", static_cast<long long>(stop.best_epoch()));
class early_stopping {
 public:
  /// Stops when `metric` has not improved by more than `min_delta` for `patience` epochs.
  /// @throws dho2::invalid_options if `patience` < 1 or `min_delta` is not finite and >= 0.
  explicit early_stopping(std::string metric = "train_loss", index patience = 5,
                          double min_delta = 0.0,
                          metric_direction direction = metric_direction::minimize)
      : metric_(std::move(metric)),
        patience_(patience),
        min_delta_(min_delta),
        direction_(direction) {
    detail::require(patience_ >= 1, "early_stopping patience", patience_, ">= 1");
    detail::require_finite_nonnegative("early_stopping min_delta", min_delta_);
  }

  /// The metric watched.
  [[nodiscard]] const std::string& metric() const noexcept { return metric_; }
  /// Epoch ends without improvement after which the run stops.
  [[nodiscard]] index patience() const noexcept { return patience_; }
  /// The margin an improvement must exceed.
  [[nodiscard]] double min_delta() const noexcept { return min_delta_; }
  /// The direction that counts as better.
  [[nodiscard]] metric_direction direction() const noexcept { return direction_; }

  /// The 1-based epoch with the best value of the last run, 0 if none had a finite value.
  [[nodiscard]] index best_epoch() const noexcept { return best_epoch_; }
  /// The best value of the last run, NaN if none.
  [[nodiscard]] double best_value() const noexcept {
    return best_.value_or(std::numeric_limits<double>::quiet_NaN());
  }
  /// Epoch ends since the last improvement.
  [[nodiscard]] index epochs_without_improvement() const noexcept { return wait_; }
  /// Whether this callback stopped the last run.
  [[nodiscard]] bool stopped() const noexcept { return stopped_epoch_ > 0; }
  /// The 1-based epoch at which it stopped the run, 0 if it did not.
  [[nodiscard]] index stopped_epoch() const noexcept { return stopped_epoch_; }

  /// Hook: forgets the record of a previous run.
  void on_begin(const run_info& /*info*/) noexcept {
    best_.reset();
    best_epoch_ = 0;
    wait_ = 0;
    stopped_epoch_ = 0;
  }

  /// Hook: returns true (stop) at the `patience`-th epoch end in a row without improvement.
  template <model_scalar S>
  bool on_epoch_end(const epoch_info<S>& info) {
    const std::optional<double> value = detail::early_stop_impl::monitored(info, metric_);
    if (!value) return false;
    if (detail::early_stop_impl::improves(*value, best_, direction_, min_delta_)) {
      best_ = *value;
      best_epoch_ = info.epoch + 1;
      wait_ = 0;
      return false;
    }
    if (++wait_ < patience_) return false;
    stopped_epoch_ = info.epoch + 1;
    return true;
  }

  /// The summary's termination and message once it stopped the run.
  [[nodiscard]] std::optional<stop_cause> stop_reason() const {
    if (stopped_epoch_ == 0) return std::nullopt;
    using detail::early_stop_impl::shown;
    std::string why =
        "no improvement of " + metric_ + " for " + std::to_string(patience_) + " epochs (best ";
    why += best_ ? shown(*best_) + " at epoch " + std::to_string(best_epoch_) : "none";
    why += ")";
    return stop_cause{termination_type::stopped_by_callback, std::move(why)};
  }

 private:
  std::string metric_;
  index patience_;
  double min_delta_;
  metric_direction direction_;
  std::optional<double> best_;
  index best_epoch_ = 0;
  index wait_ = 0;
  index stopped_epoch_ = 0;
};

}  // namespace dho2
