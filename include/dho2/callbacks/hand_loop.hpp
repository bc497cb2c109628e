/// @file
/// `dho2::hand_loop`: the callbacks' hooks driven from a loop that calls `step` itself, with the
/// same event data `optimize` gives them (so `progress_bar`, `csv_history`, `early_stopping`, …
/// work there too).
#pragma once

#include <dho2/callbacks/events.hpp>
#include <dho2/core/step_status.hpp>
#include <dho2/core/summary.hpp>
#include <dho2/core/types.hpp>

#include <chrono>
#include <limits>
#include <optional>
#include <string>
#include <tuple>
#include <utility>

namespace dho2 {

/// Calls the hooks of `callbacks` (held by reference; they must outlive it) from a hand-written
/// training loop, building the events as `optimize` does:
///
///     dho2::progress_bar bar(std::cerr);
///     dho2::csv_history csv("history.csv");
///     dho2::hand_loop events({model.num_parameters(), epochs, batches.num_batches()}, bar, csv);
///     for (dho2::index e = 0; e < epochs && !stop; ++e) {
///       batches.begin_epoch(e);
///       for (dho2::index i = 0; i < batches.num_batches() && !stop; ++i) {
///         batches.fill_batch(i, batch);
///         stop = events.after_step(opt, opt.step(model, x, batch), x);
///       }
///       if (!stop) stop = events.end_epoch(opt, x);
///     }
///     dho2::summary s = events.end(opt.get_summary());
///
/// - The constructor calls every `on_begin` and starts the run's clock.
/// - `after_step` gives `on_step` the step just taken: epoch and batch counted by this object
///   (the batch index restarts at 0 after `end_epoch`), the optimizer's step count, `last_loss()`,
///   the status, whether an estimate ran, the elapsed seconds and the parameters.
/// - `end_epoch` gives `on_epoch_end` the epoch: the mean loss of its taken steps (NaN if none),
///   the step count, the elapsed seconds and the parameters; metrics added by callbacks go to
///   the later ones, as in `optimize`.
/// - `end` completes the optimizer's summary — which, outside `optimize`, still says
///   `running` and 0 epochs — with the epochs ended, the elapsed seconds and the termination
///   (`completed` when every epoch of `run_info::epochs` ended; the cause a callback's
///   `stop_reason()` gives, or `stopped_by_callback`, when a hook asked to stop; a summary whose
///   termination is already set, say `numerical_failure`, keeps it), calls every `on_end` with
///   it and returns it.
///
/// `after_step` and `end_epoch` return whether a hook asked to stop; the loop decides what to do.
/// No hook is agreed across ranks here: in a distributed loop every rank must take the same
/// decision (agree it, or use `optimize`, which does). `on_stop` hooks are not called.
template <class... Callbacks>
class hand_loop {
 public:
  /// Calls `on_begin(info)` on each callback, in order, and starts the clock.
  explicit hand_loop(run_info info, Callbacks&... callbacks)
      : info_(info), callbacks_(callbacks...), start_(clock::now()) {
    std::apply([&](auto&... c) { (detail::call_on_begin(c, info_), ...); }, callbacks_);
  }

  /// Calls `on_step` for the step `opt` has just taken with result `status`, `x` being the
  /// parameters after it; returns true when a hook asked to stop.
  template <class Optimizer>
  bool after_step(const Optimizer& opt, step_status status,
                  const_vector_ref<typename Optimizer::scalar_type> x) {
    using S = typename Optimizer::scalar_type;
    bool estimated = false;
    if constexpr (requires { opt.last_step_estimated(); }) estimated = opt.last_step_estimated();
    const double loss = opt.last_loss();
    if (status == step_status::taken) {
      loss_sum_ += loss;
      ++loss_count_;
    }
    const step_info<S> info{epoch_,
                            batch_,
                            info_.batches_per_epoch,
                            detail::step_calls_of(opt) - 1,
                            loss,
                            status,
                            estimated,
                            elapsed(),
                            x};
    ++batch_;
    const bool asked = std::apply(
        [&](auto&... c) { return (detail::call_on_step(c, info) | ... | false); }, callbacks_);
    asked_ = asked_ || asked;
    return asked;
  }

  /// Calls `on_epoch_end` for the epoch just finished, `x` being the parameters at its end;
  /// returns true when a hook asked to stop. The next step starts the next epoch at batch 0.
  template <class Optimizer>
  bool end_epoch(const Optimizer& opt, const_vector_ref<typename Optimizer::scalar_type> x) {
    using S = typename Optimizer::scalar_type;
    epoch_info<S> info{epoch_,
                       info_.epochs,
                       detail::step_calls_of(opt),
                       loss_count_ > 0 ? loss_sum_ / static_cast<double>(loss_count_)
                                       : std::numeric_limits<double>::quiet_NaN(),
                       elapsed(),
                       x,
                       {}};
    ++epoch_;
    batch_ = 0;
    loss_sum_ = 0.0;
    loss_count_ = 0;
    const bool asked = std::apply(
        [&](auto&... c) { return (detail::call_on_epoch_end(c, info) | ... | false); }, callbacks_);
    asked_ = asked_ || asked;
    return asked;
  }

  /// Completes `s` (see the class comment), calls `on_end(s)` on each callback and returns it.
  summary end(summary s) {
    s.epochs = epoch_;
    s.total_seconds = elapsed();
    if (s.termination == termination_type::running) {
      if (asked_) {
        stop_cause cause;
        bool found = false;
        std::apply(
            [&](auto&... c) {
              const auto take = [&](const auto& cb) {
                if (found) return;
                if (std::optional<stop_cause> why = detail::cause_of(cb)) {
                  cause = std::move(*why);
                  found = true;
                }
              };
              (take(c), ...);
            },
            callbacks_);
        s.termination = cause.termination;
        s.message = cause.message;
      } else if (epoch_ >= info_.epochs) {
        s.termination = termination_type::completed;
        s.message = "all " + std::to_string(info_.epochs) + " epochs done";
      } else {
        s.termination = termination_type::stopped_by_callback;
        s.message = "the loop ended after " + std::to_string(epoch_) + " of " +
                    std::to_string(info_.epochs) + " epochs";
      }
    }
    std::apply([&](auto&... c) { (detail::call_on_end(c, s), ...); }, callbacks_);
    return s;
  }

  /// Epochs ended so far (`end_epoch` calls).
  [[nodiscard]] index epochs_done() const noexcept { return epoch_; }
  /// Seconds since construction.
  [[nodiscard]] double elapsed() const {
    return std::chrono::duration<double>(clock::now() - start_).count();
  }

 private:
  using clock = std::chrono::steady_clock;

  run_info info_;
  std::tuple<Callbacks&...> callbacks_;
  clock::time_point start_;
  index epoch_ = 0;
  index batch_ = 0;
  double loss_sum_ = 0.0;
  index loss_count_ = 0;
  bool asked_ = false;
};

}  // namespace dho2
