/// @file
/// `dho2::step_status`: what one optimizer step did.
#pragma once

namespace dho2 {

/// What a step did.
enum class step_status {
  /// The parameters were updated.
  taken,
  /// Skipped: the loss was not finite.
  skipped_nonfinite_loss,
  /// Skipped: the gradient was not finite.
  skipped_nonfinite_gradient,
  /// The run is stopped (`nonfinite_policy::stop` met a non-finite value); nothing changed.
  stopped,
};

}  // namespace dho2
