/// @file
/// What one optimizer step did (`dho2::step_status`), when a rejected step stops the run
/// (`dho2::stop_timing`), and a rank's weighted loss (`dho2::weighted_loss`).
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

/// When a step rejected under `nonfinite_policy::stop` stops the run.
enum class stop_timing {
  /// At once: every rank saw the non-finite value (it was agreed), so all stop together.
  now,
  /// At the next synchronisation, where the other ranks learn of it (the caller keeps the flag).
  next_round,
};

/// The loss of this rank's slice of the batch and its weight in the global mean (samples in the
/// slice when the model can tell, else 1; 0 for an empty slice).
struct weighted_loss {
  /// Mean loss over the slice (0 for an empty slice).
  double loss = 0.0;
  /// Weight of the slice in the global mean.
  double weight = 0.0;
};

}  // namespace dho2
