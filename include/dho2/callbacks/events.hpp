/// @file
/// The callback events of `dho2::optimizer::optimize`, in one place (ensmallen style).
///
/// A callback is any object passed in the pack `optimize(model, x, batches, epochs, cbs...)`. Each
/// hook below is optional and detected with `requires`; a hook that returns `bool` stops the run
/// by returning true (the summary's termination is then `stopped_by_callback`, or what the
/// callback's `stop_reason()` says). Hooks run in the order the callbacks were passed, so a
/// callback that adds a metric at `on_epoch_end` must come before the ones that read it.
///
/// | hook                                      | when                              | may stop |
/// |-------------------------------------------|-----------------------------------|----------|
/// | `on_begin(const run_info&)`               | before the first step             | no       |
/// | `on_step(const step_info<S>&)`            | after every step call             | yes      |
/// | `on_stop(const step_info<S>&, const stop_cause&)` | after the step the run stops at | no |
/// | `on_epoch_end(epoch_info<S>&)`            | after every epoch; may add metrics | yes     |
/// | `on_end(const summary&)`                  | once, after the run               | no       |
///
/// A stop asked at a step is agreed by every rank (each rank's callbacks see the same step), and
/// then `on_stop` runs on every rank at that step, before the run ends: the place to save a
/// checkpoint of the state the run ends in. A callback that knows why it stops says so with
/// `std::optional<stop_cause> stop_reason() const` (say, `termination_type::interrupted` for a
/// signal); an interruption on any rank makes every rank's termination `interrupted`.
#pragma once

#include <dho2/core/step_status.hpp>
#include <dho2/core/summary.hpp>
#include <dho2/core/types.hpp>

#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace dho2 {

/// Facts about a run, given to `on_begin`.
struct run_info {
  /// Number of parameters n.
  index parameters = 0;
  /// Epochs requested.
  index epochs = 0;
  /// Batches (steps) per epoch.
  index batches_per_epoch = 0;
};

/// One step, given to `on_step`.
template <model_scalar S>
struct step_info {
  /// 0-based epoch.
  index epoch = 0;
  /// 0-based batch within the epoch.
  index batch = 0;
  /// Batches per epoch.
  index batches_per_epoch = 0;
  /// 0-based step call since the optimizer started (what the schedule counts).
  index iteration = 0;
  /// Mean loss on the batch at the parameters before the step.
  double loss = 0.0;
  /// What the step did.
  step_status status = step_status::taken;
  /// A curvature estimate ran before this step.
  bool estimated = false;
  /// Seconds since the run began.
  double elapsed_seconds = 0.0;
  /// Parameters after the step.
  const_vector_ref<S> parameters;
};

/// One finished epoch, given to `on_epoch_end`; callbacks may add metrics for later ones.
template <model_scalar S>
struct epoch_info {
  /// 0-based epoch just finished.
  index epoch = 0;
  /// Epochs requested.
  index epochs = 0;
  /// Step calls so far.
  index iterations = 0;
  /// Mean loss over the epoch's taken steps (NaN if none).
  double train_loss = 0.0;
  /// Seconds since the run began.
  double elapsed_seconds = 0.0;
  /// Parameters at the end of the epoch.
  const_vector_ref<S> parameters;
  /// Named metrics added by callbacks (for example "test_accuracy"), in the order added.
  std::vector<std::pair<std::string, double>> metrics;

  /// Adds or replaces metric `name`.
  void set_metric(std::string_view name, double value) {
    for (auto& [k, v] : metrics) {
      if (k == name) {
        v = value;
        return;
      }
    }
    metrics.emplace_back(std::string(name), value);
  }
  /// The value of metric `name`, if some callback set it.
  [[nodiscard]] std::optional<double> metric(std::string_view name) const {
    for (const auto& [k, v] : metrics) {
      if (k == name) return v;
    }
    return std::nullopt;
  }
};

/// Why callbacks stopped a run: the termination and message its summary gets. Returned by a
/// callback's optional `stop_reason()` hook and given to the `on_stop` hook.
struct stop_cause {
  /// `stopped_by_callback`, or `interrupted` when a signal asked to stop.
  termination_type termination = termination_type::stopped_by_callback;
  /// A sentence for the summary's message.
  std::string message = "a callback asked to stop";
};

namespace detail {
// The cause callback c gives (nullopt when it has no stop_reason() hook or gives none).
template <class C>
std::optional<stop_cause> cause_of(const C& c) {
  if constexpr (requires { c.stop_reason(); }) {
    return c.stop_reason();
  } else {
    return std::nullopt;
  }
}
template <class C, class Info>
void call_on_stop(C& c, const Info& info, const stop_cause& why) {
  if constexpr (requires { c.on_stop(info, why); }) c.on_stop(info, why);
}
// Invokes hook `f(cb, info)` if present; returns true if it asked to stop.
template <class R>
constexpr bool as_stop(R&& r) {
  if constexpr (std::is_convertible_v<R, bool>) {
    return static_cast<bool>(r);
  } else {
    return false;
  }
}
template <class C>
void call_on_begin(C& c, const run_info& info) {
  if constexpr (requires { c.on_begin(info); }) c.on_begin(info);
}
template <class C, class Info>
bool call_on_step(C& c, const Info& info) {
  if constexpr (requires { c.on_step(info); }) {
    if constexpr (std::is_void_v<decltype(c.on_step(info))>) {
      c.on_step(info);
      return false;
    } else {
      return as_stop(c.on_step(info));
    }
  }
  return false;
}
template <class C, class Info>
bool call_on_epoch_end(C& c, Info& info) {
  if constexpr (requires { c.on_epoch_end(info); }) {
    if constexpr (std::is_void_v<decltype(c.on_epoch_end(info))>) {
      c.on_epoch_end(info);
      return false;
    } else {
      return as_stop(c.on_epoch_end(info));
    }
  }
  return false;
}
// Whether callback C has an on_step hook that can ask to stop (returns something other than void).
template <class C, class Info>
inline constexpr bool can_stop_on_step = [] {
  if constexpr (requires(std::remove_reference_t<C> & c, const Info& info) { c.on_step(info); }) {
    return !std::is_void_v<decltype(std::declval<std::remove_reference_t<C>&>().on_step(
        std::declval<const Info&>()))>;
  } else {
    return false;
  }
}();

template <class C>
void call_on_end(C& c, const summary& s) {
  if constexpr (requires { c.on_end(s); }) c.on_end(s);
}
// Step calls an optimizer has made (`optimizer::get_summary()`, `kfac::summary()`).
template <class Optimizer>
index step_calls_of(const Optimizer& opt) {
  if constexpr (requires { opt.get_summary().iterations; }) {
    return opt.get_summary().iterations;
  } else {
    return opt.summary().iterations;
  }
}
}  // namespace detail

}  // namespace dho2
