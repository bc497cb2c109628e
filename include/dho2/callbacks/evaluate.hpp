/// @file
/// `dho2::evaluate`: a callback that computes a metric of the parameters at every epoch end of
/// `optimizer::optimize` (for example the accuracy on a test set).
#pragma once

#include <dho2/callbacks/events.hpp>
#include <dho2/core/types.hpp>

#include <concepts>
#include <functional>
#include <string>
#include <type_traits>
#include <utility>

namespace dho2 {

/// A callback for `optimizer::optimize` that, at every epoch end, calls
/// `function(parameters)` (`parameters` a `dho2::const_vector_ref<S>` holding the parameters at
/// the end of the epoch; the result converted to double) and sets it as metric `name` of the
/// epoch (`epoch_info::set_metric`, replacing an earlier value of the same name).
///
/// Later callbacks in the pack see the metric: pass `evaluate` before `early_stop_at`,
/// `csv_history` and `progress_bar`. The function is called through `std::invoke` on the stored
/// copy (pass `std::ref(f)` to keep a reference); an exception it throws ends the run and
/// propagates out of `optimize`. Its cost counts in the next epoch's elapsed time, not in this
/// one's.
///
///     dho2::evaluate accuracy("test_accuracy", [&](dho2::const_vector_ref<float> w) {
///       return model.accuracy(w, test_set);
///     });
template <class F>
class evaluate {
 public:
  /// Sets metric `name` to `function(parameters)` at every epoch end.
  evaluate(std::string name, F function) : name_(std::move(name)), function_(std::move(function)) {}

  /// The metric's name.
  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  /// The stored function.
  [[nodiscard]] const F& function() const noexcept { return function_; }

  /// Hook: computes the metric on the epoch's parameters and adds it to the epoch.
  template <model_scalar S>
  void on_epoch_end(epoch_info<S>& info) {
    static_assert(std::is_invocable_v<F&, const_vector_ref<S>>,
                  "DHO2: evaluate: the function must be callable as f(parameters) with "
                  "parameters a dho2::const_vector_ref<S> (S: the optimizer's scalar)");
    if constexpr (std::is_invocable_v<F&, const_vector_ref<S>>) {
      using result = std::invoke_result_t<F&, const_vector_ref<S>>;
      static_assert(std::is_convertible_v<result, double>,
                    "DHO2: evaluate: f(parameters) must return a value convertible to double");
      if constexpr (std::is_convertible_v<result, double>) {
        info.set_metric(name_, static_cast<double>(std::invoke(function_, info.parameters)));
      }
    }
  }

 private:
  std::string name_;
  F function_;
};

/// Deduces the function type: `dho2::evaluate("test_accuracy", lambda)`.
template <class F>
evaluate(std::string, F) -> evaluate<F>;

}  // namespace dho2
