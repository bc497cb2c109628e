/// @file
/// `dho2::lr_schedule`: a callback that changes the optimizer's learning rate while it trains,
/// as the schedulers of `torch.optim.lr_scheduler` do, and the schedules it applies:
/// `step_decay` (StepLR), `cosine_annealing` (CosineAnnealingLR, held at its floor after the
/// period), `linear_warmup` (LinearLR up to the full rate) and `warmup_then` (a linear warm-up
/// followed by another schedule, as SequentialLR).
///
/// A schedule is a pure function of the step: `schedule(base, t)` is the learning rate of step t
/// (0-based: the number of step calls made before it, skipped steps included, as
/// `summary::iterations` counts them) for a run whose configured rate is `base`. So every rank,
/// which counts the same steps, sets the same rate before the same step with no communication,
/// and a run resumed from a checkpoint (whose summary holds the step count) recomputes the rate
/// it would have had: the rate needs no saving. The optimizer's agreement of the policies across
/// ranks runs once, at the first step, and a checkpoint's identity leaves out the base
/// optimizer's hyper-parameters, so neither refuses a run whose rate the schedule changed.
///
/// @code
///   dho2::optimizer<float> opt(o, {.base = {.learning_rate = 1e-3}});
///   dho2::lr_schedule lr(opt, dho2::warmup_then{dho2::linear_warmup{.steps = 500},
///                                               dho2::cosine_annealing{.period = 20'000,
///                                                                      .min_learning_rate =
///                                                                      1e-5}});
///   opt.optimize(model, x, batches, epochs, lr, dho2::progress_bar{});
/// @endcode
///
/// In a loop that calls `step` itself, call `lr.apply()` before each step: it sets the rate of
/// the optimizer's next step, exactly what the callback does inside `optimize`.
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/callbacks/events.hpp>
#include <dho2/core/types.hpp>
#include <dho2/detail/validate.hpp>

#include <algorithm>
#include <cmath>
#include <numbers>
#include <utility>

namespace dho2 {

/// Step decay (torch `StepLR`): the rate is multiplied by `gamma` every `every` steps,
/// lr(t) = base · gamma^⌊t / every⌋. For a decay every N epochs, `every` = N × batches per epoch.
struct step_decay {
  /// Factor applied at each decay (finite, > 0; < 1 decays).
  double gamma = 0.1;
  /// Steps between two decays (>= 1).
  index every = 1;

  /// Throws `dho2::invalid_options` naming the first invalid field.
  void validate() const {
    detail::require_finite_positive("step_decay::gamma", gamma);
    detail::require(every >= 1, "step_decay::every", every, ">= 1");
  }
  /// The rate of step `t` for a configured rate `base`.
  [[nodiscard]] double operator()(double base, index t) const {
    return base * std::pow(gamma, static_cast<double>(t / every));
  }
};

/// Cosine annealing (torch `CosineAnnealingLR` over one half period): from the configured rate
/// down to `min_learning_rate` over `period` steps,
/// lr(t) = min + (base − min)(1 + cos(π t / period)) / 2 for t < period, and `min` after.
struct cosine_annealing {
  /// T: steps from the full rate to the floor (>= 1).
  index period = 1;
  /// The floor η_min (finite, > 0: a base optimizer's rate must be positive).
  double min_learning_rate = 1e-6;

  /// Throws `dho2::invalid_options` naming the first invalid field.
  void validate() const {
    detail::require(period >= 1, "cosine_annealing::period", period, ">= 1");
    detail::require_finite_positive("cosine_annealing::min_learning_rate", min_learning_rate);
  }
  /// The rate of step `t` for a configured rate `base`.
  [[nodiscard]] double operator()(double base, index t) const {
    if (t >= period) return min_learning_rate;
    const double phase = std::numbers::pi * static_cast<double>(t) / static_cast<double>(period);
    return min_learning_rate + (base - min_learning_rate) * (1.0 + std::cos(phase)) / 2.0;
  }
};

/// Linear warm-up (torch `LinearLR` with end factor 1): from `start_factor` × the configured rate
/// to the full rate over `steps` steps, lr(t) = base · (f + (1 − f) t / steps) for t < steps, and
/// the full rate after.
struct linear_warmup {
  /// W: steps of warm-up (>= 1).
  index steps = 1;
  /// f: the fraction of the rate at step 0 (in (0, 1]).
  double start_factor = 0.1;

  /// Throws `dho2::invalid_options` naming the first invalid field.
  void validate() const {
    detail::require(steps >= 1, "linear_warmup::steps", steps, ">= 1");
    detail::require(std::isfinite(start_factor) && start_factor > 0.0 && start_factor <= 1.0,
                    "linear_warmup::start_factor", start_factor, "in (0, 1]");
  }
  /// The rate of step `t` for a configured rate `base`.
  [[nodiscard]] double operator()(double base, index t) const {
    if (t >= steps) return base;
    const double ramp = static_cast<double>(t) / static_cast<double>(steps);
    return base * (start_factor + (1.0 - start_factor) * ramp);
  }
};

/// A linear warm-up, then schedule `Then` counted from the end of the warm-up (torch
/// `SequentialLR` with one milestone at W): lr(t) = warmup(base, t) for t < W, then(base, t − W)
/// after.
template <class Then>
struct warmup_then {
  /// The warm-up (W = `warmup.steps`).
  linear_warmup warmup{};
  /// The schedule after the warm-up, its step 0 being step W of the run.
  Then then{};

  /// Validates both parts.
  void validate() const {
    warmup.validate();
    if constexpr (requires { then.validate(); }) then.validate();
  }
  /// The rate of step `t` for a configured rate `base`.
  [[nodiscard]] double operator()(double base, index t) const {
    if (t < warmup.steps) return warmup(base, t);
    return then(base, t - warmup.steps);
  }
};

/// Deduces the schedule after the warm-up: `dho2::warmup_then{linear_warmup{…}, step_decay{…}}`.
template <class Then>
warmup_then(linear_warmup, Then) -> warmup_then<Then>;

/// A callback for `optimize` that sets the optimizer's learning rate to `schedule(base, t)`
/// before every step t (see the file comment): at `on_begin` for the first step of the run (the
/// step count the optimizer has reached, so a resumed run continues the schedule) and at every
/// `on_step` for the next one. `base` is the optimizer's rate when the callback is constructed,
/// or the one given. `Optimizer` is a `dho2::optimizer` whose base has a `learning_rate` field
/// (every shipped base), or `dho2::kfac`: anything with `set_learning_rate(double)`,
/// `learning_rate()` and a step count.
///
/// A rate the schedule computes that is not finite and positive makes `set_learning_rate`
/// throw `dho2::invalid_options`, which ends the run. The callback holds a reference to the
/// optimizer, which must outlive it.
template <class Optimizer, class Schedule>
class lr_schedule {
 public:
  /// Schedules `opt` from its current learning rate.
  /// @throws dho2::invalid_options if the schedule's `validate()` does.
  lr_schedule(Optimizer& opt, Schedule schedule)
      : lr_schedule(opt, std::move(schedule), opt.learning_rate()) {}
  /// Schedules `opt` from the rate `base_learning_rate`.
  /// @throws dho2::invalid_options if the schedule's `validate()` does or `base_learning_rate`
  ///   is not finite and positive.
  lr_schedule(Optimizer& opt, Schedule schedule, double base_learning_rate)
      : opt_(&opt), schedule_(std::move(schedule)), base_(base_learning_rate) {
    detail::require_finite_positive("lr_schedule base_learning_rate", base_);
    if constexpr (requires { schedule_.validate(); }) schedule_.validate();
  }

  /// The configured rate the schedule scales.
  [[nodiscard]] double base_learning_rate() const noexcept { return base_; }
  /// The schedule.
  [[nodiscard]] const Schedule& schedule() const noexcept { return schedule_; }
  /// The rate of step `t` (0-based).
  [[nodiscard]] double learning_rate_at(index t) const { return schedule_(base_, t); }

  /// Sets the rate of the optimizer's next step (step t = the step calls made so far). Call it
  /// before each `step` of a hand-written loop.
  void apply() { opt_->set_learning_rate(learning_rate_at(detail::step_calls_of(*opt_))); }

  /// Hook: sets the rate of the run's first step.
  void on_begin(const run_info& /*info*/) { apply(); }
  /// Hook: sets the rate of the next step.
  template <model_scalar S>
  void on_step(const step_info<S>& /*info*/) {
    apply();
  }

 private:
  Optimizer* opt_;
  Schedule schedule_;
  double base_;
};

}  // namespace dho2
