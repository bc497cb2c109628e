// dho2_train: the glue callbacks of the training run. The shipped callbacks (dho2::csv_history,
// dho2::progress_bar) write the epoch history; these switch them on or off from the command line,
// evaluate (test accuracy and loss, training loss) at epoch ends and every --eval-every steps,
// add --max-steps / --time-budget / the target, write --eval-log, and keep the record that the
// summary reports.
#pragma once

#include <dho2/callbacks/callbacks.hpp>
#include <dho2/checkpoint/optimizer_state.hpp>
#include <dho2/io/output_file.hpp>

#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <functional>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
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

/// What one evaluation measures (rank 0). NaN where it does not apply: test_accuracy for the
/// autoencoder, train_loss with --eval-train-size 0. Losses are the model's `loss`, i.e. the
/// training objective: mean data loss plus the L2 term (λ/2)‖W‖² (0 unless --l2).
struct eval_metrics {
  double test_accuracy = std::numeric_limits<double>::quiet_NaN();
  double test_loss = std::numeric_limits<double>::quiet_NaN();
  double train_loss = std::numeric_limits<double>::quiet_NaN();  // first --eval-train-size samples
};

/// The evaluation of the parameters, timed: the run reports evaluation time apart, and excludes
/// it from train_seconds.
class timed_evaluation {
 public:
  explicit timed_evaluation(std::function<eval_metrics(dho2::const_vector_ref<scalar>)> f)
      : f_(std::move(f)) {}

  eval_metrics operator()(dho2::const_vector_ref<scalar> w) {
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
  [[nodiscard]] const eval_metrics& last() const noexcept { return last_; }
  [[nodiscard]] long long count() const noexcept { return count_; }

 private:
  std::function<eval_metrics(dho2::const_vector_ref<scalar>)> f_;
  double seconds_ = 0.0;
  double last_seconds_ = 0.0;
  double cpu_seconds_ = 0.0;
  double last_cpu_seconds_ = 0.0;
  eval_metrics last_;
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
  template <class Info>
  void on_stop(const Info& info, const dho2::stop_cause& why) {
    if constexpr (requires(C & c) { c.on_stop(info, why); }) {
      if (inner_) inner_->on_stop(info, why);
    }
  }
  [[nodiscard]] std::optional<dho2::stop_cause> stop_reason() const {
    if constexpr (requires(const C& c) { c.stop_reason(); }) {
      if (inner_) return inner_->stop_reason();
    }
    return std::nullopt;
  }
  void on_end(const dho2::summary& s) {
    if constexpr (requires(C & c) { c.on_end(s); }) {
      if (inner_) inner_->on_end(s);
    }
  }

  /// The wrapped callback, when there is one.
  [[nodiscard]] const std::optional<C>& get() const noexcept { return inner_; }

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

/// One evaluation (every --eval-every steps, every epoch end, and the final parameters of a run
/// that stopped between those).
struct evaluation_record {
  long long step = 0;      // step calls done when evaluated
  long long epoch = 0;     // 1-based epoch it happened in (at an epoch end: the epoch finished)
  double elapsed_s = 0.0;  // wall seconds of the run so far, earlier evaluations included
  double train_s = 0.0;    // elapsed_s without any evaluation time
  double cpu_s = 0.0;      // process CPU seconds of the run so far, evaluations excluded
  eval_metrics metrics;
};

/// One finished epoch.
struct epoch_record {
  long long epoch = 0;  // 1-based
  long long steps = 0;  // step calls so far
  double train_loss = 0.0;
  double test_accuracy = std::numeric_limits<double>::quiet_NaN();
  double test_loss = std::numeric_limits<double>::quiet_NaN();
  double elapsed_s = 0.0;
};

/// When the target (test accuracy >= X, or test loss <= X) was first met.
struct target_record {
  bool reached = false;
  long long step = 0;
  double elapsed_s = std::numeric_limits<double>::quiet_NaN();  // wall, earlier evaluations in
  double eval_s = 0.0;  // evaluation seconds included in elapsed_s
  double cpu_s = std::numeric_limits<double>::quiet_NaN();  // process CPU, evaluations excluded
};

/// What --target-accuracy / --target-loss ask for.
struct target_spec {
  bool accuracy = true;  // test_accuracy >= value; else test_loss <= value
  double value = 0.0;
  [[nodiscard]] bool met(const eval_metrics& m) const {
    return accuracy ? m.test_accuracy >= value : m.test_loss <= value;  // false for NaN
  }
};

/// --eval-log FILE.csv: one row per evaluation, written at once (`dho2::output_stream`: a
/// symbolic link is followed, a device or FIFO written, a directory refused), columns
/// step,epoch,train_seconds,cpu_seconds,test_accuracy,test_loss,train_loss (empty cells for NaN).
/// A failed write throws `dho2::output_error` naming --eval-log, the file and the cause.
class eval_log {
 public:
  explicit eval_log(const std::string& path) : file_(path, "--eval-log") {
    file_.write("step,epoch,train_seconds,cpu_seconds,test_accuracy,test_loss,train_loss\n");
  }

  void write(const evaluation_record& r) {
    const std::string line = std::to_string(r.step) + ',' + std::to_string(r.epoch) + ',' +
                             number(r.train_s) + ',' + number(r.cpu_s) + ',' +
                             number(r.metrics.test_accuracy) + ',' + number(r.metrics.test_loss) +
                             ',' + number(r.metrics.train_loss) + '\n';
    file_.write(line);
  }

  /// Closes the file, reporting a delayed write error.
  void close() { file_.close(); }

 private:
  // Shortest text that reads back as exactly `v`; empty for NaN or infinite values.
  static std::string number(double v) {
    if (!std::isfinite(v)) return {};
    char buf[64];
    const auto r = std::to_chars(buf, buf + sizeof buf, v);
    return std::string(buf, r.ptr);
  }

  dho2::output_stream file_;
};

/// --max-steps, --eval-every, --time-budget and the target; evaluates at epoch ends and keeps
/// the history.
///
/// On rank 0 (`lead`) it evaluates (`timed_evaluation`: test accuracy, test loss, loss on the
/// first training samples) every --eval-every steps and at every epoch end, where it adds the
/// metrics test_accuracy (classifiers), test_loss and eval_train_loss to the epoch for the
/// callbacks after it (--log, progress). The target is checked at every evaluation; the time to
/// it is recorded as the run's elapsed seconds when the evaluation that met it began (earlier
/// evaluations included, this one not; `target_record::eval_s` says how much evaluation time
/// that includes). --time-budget stops the run after the first step at which the training time
/// (elapsed seconds without evaluations) exceeds the budget. Other ranks only count
/// --max-steps; the optimizer agrees a stop across the ranks.
class run_monitor {
 public:
  run_monitor(bool lead, std::optional<long long> max_steps, long long eval_every,
              std::optional<target_spec> target, bool stop_at_target,
              std::optional<double> time_budget, timed_evaluation& evaluation, eval_log* log)
      : lead_(lead),
        max_steps_(max_steps),
        eval_every_(lead ? eval_every : 0),
        target_spec_(lead ? target : std::nullopt),
        stop_at_target_(stop_at_target),
        time_budget_(lead ? time_budget : std::nullopt),
        evaluation_(&evaluation),
        log_(log) {}

  void on_begin(const dho2::run_info&) { cpu_begin_ = process_cpu_seconds(); }

  template <dho2::model_scalar S>
  bool on_step(const dho2::step_info<S>& info) {
    bool stop = false;
    const long long done = info.iteration + 1;
    const bool epoch_end_next = info.batch + 1 == info.batches_per_epoch;
    const double train_s = info.elapsed_seconds - evaluation_->seconds();
    if (eval_every_ > 0 && done % eval_every_ == 0 && !epoch_end_next) {
      stop = evaluate(info.parameters, done, info.epoch + 1, info.elapsed_seconds);
    }
    if (max_steps_ && done >= *max_steps_) {
      max_steps_reached_ = true;
      stop = true;
    }
    if (time_budget_ && train_s > *time_budget_) {
      time_budget_reached_ = true;
      stop = true;
    }
    return stop;
  }

  template <dho2::model_scalar S>
  bool on_epoch_end(dho2::epoch_info<S>& info) {
    epoch_record row{info.epoch + 1,
                     info.iterations,
                     info.train_loss,
                     std::numeric_limits<double>::quiet_NaN(),
                     std::numeric_limits<double>::quiet_NaN(),
                     info.elapsed_seconds};
    bool stop = false;
    if (lead_) {
      stop = evaluate(info.parameters, info.iterations, info.epoch + 1, info.elapsed_seconds);
      const eval_metrics& m = evaluations_.back().metrics;
      row.test_accuracy = m.test_accuracy;
      row.test_loss = m.test_loss;
      if (std::isfinite(m.test_accuracy)) info.set_metric("test_accuracy", m.test_accuracy);
      info.set_metric("test_loss", m.test_loss);
      if (std::isfinite(m.train_loss)) info.set_metric("eval_train_loss", m.train_loss);
    }
    epochs_.push_back(row);
    return stop;
  }

  /// After the run (rank 0): evaluates the final parameters unless the last evaluation saw them
  /// (a run stopped mid-epoch gets no epoch-end evaluation) or `always`. `elapsed_s` is the run's
  /// wall time (evaluations included), `cpu_end` the process CPU time when it ended.
  void finish(dho2::const_vector_ref<scalar> x, long long iterations, long long epoch,
              double elapsed_s, double cpu_end, bool always) {
    if (!lead_) return;
    if (!always && !evaluations_.empty() && evaluations_.back().step == iterations) return;
    evaluate(x, iterations, epoch, elapsed_s, cpu_end);
  }

  [[nodiscard]] const target_record& target() const noexcept { return target_; }
  [[nodiscard]] bool max_steps_reached() const noexcept { return max_steps_reached_; }
  [[nodiscard]] bool time_budget_reached() const noexcept { return time_budget_reached_; }
  [[nodiscard]] const std::vector<evaluation_record>& evaluations() const noexcept {
    return evaluations_;
  }
  [[nodiscard]] const std::vector<epoch_record>& epochs() const noexcept { return epochs_; }

 private:
  // Evaluates, records (and logs) the evaluation; returns true when it met the target and the
  // run should stop.
  bool evaluate(dho2::const_vector_ref<scalar> x, long long step, long long epoch, double elapsed_s,
                std::optional<double> cpu_now = std::nullopt) {
    const double eval_before = evaluation_->seconds();
    const double cpu =
        cpu_now.value_or(process_cpu_seconds()) - cpu_begin_ - evaluation_->cpu_seconds();
    const eval_metrics m = (*evaluation_)(x);
    evaluations_.push_back({step, epoch, elapsed_s, elapsed_s - eval_before, cpu, m});
    if (log_ != nullptr) log_->write(evaluations_.back());
    if (target_spec_ && !target_.reached && target_spec_->met(m)) {
      target_ = {true, step, elapsed_s, eval_before, cpu};
      return stop_at_target_;
    }
    return false;
  }

  bool lead_ = true;
  std::optional<long long> max_steps_;
  long long eval_every_ = 0;
  std::optional<target_spec> target_spec_;
  bool stop_at_target_ = true;
  std::optional<double> time_budget_;
  timed_evaluation* evaluation_;
  eval_log* log_;
  double cpu_begin_ = 0.0;
  target_record target_;
  bool max_steps_reached_ = false;
  bool time_budget_reached_ = false;
  std::vector<evaluation_record> evaluations_;
  std::vector<epoch_record> epochs_;
};

/// --checkpoint-every N: saves a checkpoint (`optimizer::save_checkpoint`, collective: every rank
/// runs this callback) after every N-th step call, recording where the data continues. While a
/// background estimate is in flight (when saving is not possible) the save waits for the first
/// step after it; every rank decides alike (the schedule is deterministic). With N = 0 it saves
/// only when a signal interrupts the run (`on_stop`; the stop waits for a step without an
/// estimate in flight, see `run_rank`). A save that fails (every rank throws alike; the previous
/// checkpoint stays committed) stops the run (--checkpoint-failure stop) or, with `keep_going`,
/// is reported on stderr by `lead` and retried at the next multiple of N.
template <class Optimizer>
class checkpointer {
 public:
  checkpointer(Optimizer& opt, std::filesystem::path dir, long long every, bool keep_going = false,
               bool lead = false)
      : opt_(&opt), dir_(std::move(dir)), every_(every), keep_going_(keep_going), lead_(lead) {}

  template <dho2::model_scalar S>
  void on_step(const dho2::step_info<S>& info) {
    if (every_ <= 0) return;
    if ((info.iteration + 1) % every_ == 0) due_ = true;
    if (!due_ || opt_->estimate_in_flight()) return;
    save(info);
  }

  /// An interrupted run saves the state it ends in (unless this step's was just saved).
  template <dho2::model_scalar S>
  void on_stop(const dho2::step_info<S>& info, const dho2::stop_cause& why) {
    if (why.termination != dho2::termination_type::interrupted) return;
    if (last_saved_ == info.iteration || opt_->estimate_in_flight()) return;
    save(info);
  }

  /// Checkpoints written so far.
  [[nodiscard]] long long saved() const noexcept { return saved_; }
  /// Checkpoints that could not be saved (with `keep_going`).
  [[nodiscard]] long long failed() const noexcept { return failed_; }
  /// Step (0-based iteration) of the last checkpoint written, -1 before the first.
  [[nodiscard]] long long last_saved() const noexcept { return last_saved_; }

 private:
  template <dho2::model_scalar S>
  void save(const dho2::step_info<S>& info) {
    const dho2::data_position next = info.batch + 1 < info.batches_per_epoch
                                         ? dho2::data_position{info.epoch, info.batch + 1}
                                         : dho2::data_position{info.epoch + 1, 0};
    due_ = false;
    try {
      opt_->save_checkpoint(dir_, info.parameters, next);
    } catch (const dho2::checkpoint_error& e) {
      if (!keep_going_) {
        throw dho2::checkpoint_error(std::string(e.what()) +
                                     "; training stopped (--checkpoint-failure continue would "
                                     "train on without this checkpoint)");
      }
      ++failed_;
      if (lead_) {
        std::fflush(stdout);
        std::fprintf(stderr,
                     "dho2_train: warning: %s; training goes on (--checkpoint-failure "
                     "continue)\n",
                     e.what());
      }
      return;
    }
    ++saved_;
    last_saved_ = static_cast<long long>(info.iteration);
  }

  Optimizer* opt_;
  std::filesystem::path dir_;
  long long every_;
  bool keep_going_;
  bool lead_;
  bool due_ = false;
  long long saved_ = 0;
  long long failed_ = 0;
  long long last_saved_ = -1;
};

}  // namespace dho2_train
