/// @file
/// `dho2::early_stop_at`: a callback that stops `optimizer::optimize` when a metric reaches a
/// target (time-to-accuracy runs).
#pragma once

#include <dho2/callbacks/events.hpp>
#include <dho2/core/types.hpp>

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
    std::optional<double> value = info.metric(metric_);
    if (!value && metric_ == "train_loss") value = info.train_loss;
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

}  // namespace dho2
