// dho2_train: the glue callbacks of the training run. The shipped callbacks (dho2::evaluate,
// dho2::early_stop_at, dho2::csv_history, dho2::progress_bar) do the work; these only switch
// them on or off from the command line, add --eval-every / --max-steps, and keep the record
// that the summary reports.
#pragma once

#include <dho2/callbacks/callbacks.hpp>
#include <dho2/checkpoint/optimizer_state.hpp>

#include <chrono>
#include <ctime>
#include <filesystem>
#include <functional>
#include <limits>
#include <optional>
#include <utility>
#include <vector>

namespace dho2_train {

using scalar = float;

/// CPU seconds used by this process so far (all threads). With one thread on a busy machine it
/// estimates the wall time the same work takes on an idle one better than the wall clock does.
inline double process_cpu_seconds() {
  timespec ts{};
  if (::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) != 0) return 0.0;
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

/// A metric of the parameters (test accuracy), timed: the run reports evaluation time apart.
class timed_metric {
 public:
  explicit timed_metric(std::function<double(dho2::const_vector_ref<scalar>)> f)
      : f_(std::move(f)) {}

  double operator()(dho2::const_vector_ref<scalar> w) {
    const auto t0 = std::chrono::steady_clock::now();
    const double cpu0 = process_cpu_seconds();
    last_ = f_(w);
    last_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    last_cpu_seconds_ = process_cpu_seconds() - cpu0;
    seconds_ += last_seconds_;
    cpu_seconds_ += last_cpu_seconds_;
    ++count_;
    return last_;
  }

  [[nodiscard]] double seconds() const noexcept { return seconds_; }
  [[nodiscard]] double last_seconds() const noexcept { return last_seconds_; }
  [[nodiscard]] double cpu_seconds() const noexcept { return cpu_seconds_; }
  [[nodiscard]] double last_cpu_seconds() const noexcept { return last_cpu_seconds_; }
  [[nodiscard]] double last() const noexcept { return last_; }
  [[nodiscard]] long long count() const noexcept { return count_; }

 private:
  std::function<double(dho2::const_vector_ref<scalar>)> f_;
  double seconds_ = 0.0;
  double last_seconds_ = 0.0;
  double cpu_seconds_ = 0.0;
  double last_cpu_seconds_ = 0.0;
  double last_ = std::numeric_limits<double>::quiet_NaN();
  long long count_ = 0;
};

/// A callback that may be absent (chosen at run time): forwards every hook to the wrapped
/// callback when there is one.
template <class C>
class optional_callback {
 public:
  optional_callback() = default;
  explicit optional_callback(std::optional<C> inner) : inner_(std::move(inner)) {}

  void on_begin(const dho2::run_info& info) {
    if constexpr (requires(C & c) { c.on_begin(info); }) {
      if (inner_) inner_->on_begin(info);
    }
  }
  template <class Info>
  bool on_step(const Info& info) {
    if constexpr (requires(C & c) { c.on_step(info); }) {
      if (inner_) return stop(*inner_, [&](C& c) { return c.on_step(info); });
    }
    return false;
  }
  template <class Info>
  bool on_epoch_end(Info& info) {
    if constexpr (requires(C & c) { c.on_epoch_end(info); }) {
      if (inner_) return stop(*inner_, [&](C& c) { return c.on_epoch_end(info); });
    }
    return false;
  }
  void on_end(const dho2::summary& s) {
    if constexpr (requires(C & c) { c.on_end(s); }) {
      if (inner_) inner_->on_end(s);
    }
  }

 private:
  template <class F>
  static bool stop(C& c, F&& hook) {
    if constexpr (std::is_void_v<std::invoke_result_t<F&, C&>>) {
      hook(c);
      return false;
    } else {
      return static_cast<bool>(hook(c));
    }
  }

  std::optional<C> inner_;
};

/// One evaluation of the test accuracy.
struct evaluation_record {
  long long step = 0;   // step calls done when evaluated
  long long epoch = 0;  // 1-based epoch it happened in
  double elapsed_s = 0.0;
  double test_accuracy = 0.0;
};

/// One finished epoch.
struct epoch_record {
  long long epoch = 0;  // 1-based
  long long steps = 0;  // step calls so far
  double train_loss = 0.0;
  double test_accuracy = std::numeric_limits<double>::quiet_NaN();
  double elapsed_s = 0.0;
};

/// When the target accuracy was first met.
struct target_record {
  bool reached = false;
  long long step = 0;
  double elapsed_s = std::numeric_limits<double>::quiet_NaN();  // wall, earlier evaluations in
  double eval_s = 0.0;  // evaluation seconds included in elapsed_s
  double cpu_s = std::numeric_limits<double>::quiet_NaN();  // process CPU, evaluations excluded
};

/// --max-steps, --eval-every and the target between epoch ends; keeps the history.
///
/// The target at epoch ends is watched by a dho2::early_stop_at (stopping the run, or only
/// recording when --continue-after-target is given); with --eval-every N the test accuracy is also
/// computed every N steps and the target checked there. Both record the time as the run's elapsed
/// seconds when the evaluation that met the target began (earlier evaluations included, this one
/// not; `target_record::eval_s` says how much evaluation time that includes).
class run_monitor {
 public:
  run_monitor(std::optional<long long> max_steps, long long eval_every,
              std::optional<double> target, bool stop_at_target, timed_metric& metric)
      : max_steps_(max_steps),
        eval_every_(eval_every),
        stop_at_target_(stop_at_target),
        metric_(&metric) {
    if (target) early_.emplace("test_accuracy", *target, dho2::metric_direction::maximize);
  }

  void on_begin(const dho2::run_info& info) {
    cpu_begin_ = process_cpu_seconds();
    if (early_) early_->on_begin(info);
  }

  template <dho2::model_scalar S>
  bool on_step(const dho2::step_info<S>& info) {
    bool stop = false;
    const long long done = info.iteration + 1;
    const bool epoch_end_next = info.batch + 1 == info.batches_per_epoch;
    if (eval_every_ > 0 && done % eval_every_ == 0 && !epoch_end_next) {
      const double eval_before = metric_->seconds();
      const double cpu = process_cpu_seconds() - cpu_begin_ - metric_->cpu_seconds();
      const double acc = (*metric_)(info.parameters);
      evaluations_.push_back({done, info.epoch + 1, info.elapsed_seconds, acc});
      if (early_ && !target_.reached && acc >= early_->target()) {
        target_ = {true, done, info.elapsed_seconds, eval_before, cpu};
        stop = stop_at_target_;
      }
    }
    if (max_steps_ && done >= *max_steps_) {
      max_steps_reached_ = true;
      stop = true;
    }
    return stop;
  }

  template <dho2::model_scalar S>
  bool on_epoch_end(const dho2::epoch_info<S>& info) {
    const std::optional<double> acc = info.metric("test_accuracy");
    epoch_record row{info.epoch + 1, info.iterations, info.train_loss,
                     acc.value_or(std::numeric_limits<double>::quiet_NaN()), info.elapsed_seconds};
    epochs_.push_back(row);
    if (acc) evaluations_.push_back({info.iterations, info.epoch + 1, info.elapsed_seconds, *acc});
    if (!early_ || target_.reached) return false;
    if (!early_->on_epoch_end(info)) return false;
    // The metric of this epoch end was computed just before: exclude it like early_stop_at does.
    target_ = {true, info.iterations, early_->reached_seconds(),
               metric_->seconds() - metric_->last_seconds(),
               process_cpu_seconds() - cpu_begin_ - metric_->cpu_seconds()};
    return stop_at_target_;
  }

  [[nodiscard]] const target_record& target() const noexcept { return target_; }
  [[nodiscard]] bool max_steps_reached() const noexcept { return max_steps_reached_; }
  [[nodiscard]] const std::vector<evaluation_record>& evaluations() const noexcept {
    return evaluations_;
  }
  [[nodiscard]] const std::vector<epoch_record>& epochs() const noexcept { return epochs_; }

 private:
  std::optional<long long> max_steps_;
  long long eval_every_ = 0;
  bool stop_at_target_ = true;
  timed_metric* metric_;
  double cpu_begin_ = 0.0;
  std::optional<dho2::early_stop_at> early_;
  target_record target_;
  bool max_steps_reached_ = false;
  std::vector<evaluation_record> evaluations_;
  std::vector<epoch_record> epochs_;
};

/// --checkpoint-every N: saves a checkpoint (`optimizer::save_checkpoint`, collective: every rank
/// runs this callback) after every N-th step call, recording where the data continues. While a
/// background estimate is in flight (when saving is not possible) the save waits for the first
/// step after it; every rank decides alike (the schedule is deterministic).
template <class Optimizer>
class checkpointer {
 public:
  checkpointer(Optimizer& opt, std::filesystem::path dir, long long every)
      : opt_(&opt), dir_(std::move(dir)), every_(every) {}

  template <dho2::model_scalar S>
  void on_step(const dho2::step_info<S>& info) {
    if (every_ <= 0) return;
    if ((info.iteration + 1) % every_ == 0) due_ = true;
    if (!due_ || opt_->estimate_in_flight()) return;
    const dho2::data_position next = info.batch + 1 < info.batches_per_epoch
                                         ? dho2::data_position{info.epoch, info.batch + 1}
                                         : dho2::data_position{info.epoch + 1, 0};
    opt_->save_checkpoint(dir_, info.parameters, next);
    due_ = false;
    ++saved_;
  }

  /// Checkpoints written so far.
  [[nodiscard]] long long saved() const noexcept { return saved_; }

 private:
  Optimizer* opt_;
  std::filesystem::path dir_;
  long long every_;
  bool due_ = false;
  long long saved_ = 0;
};

}  // namespace dho2_train
