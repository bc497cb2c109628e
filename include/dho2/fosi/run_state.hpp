/// @file
/// `dho2::run_state`: everything one rank of a `dho2::optimizer` carries from step to step —
/// the one struct a checkpoint captures and restores whole.
#pragma once

#include <dho2/core/summary.hpp>
#include <dho2/core/types.hpp>
#include <dho2/fosi/newton_subspace.hpp>

namespace dho2 {

/// The run state of one rank of an optimizer with scalar `S`, base-optimizer state `BaseState`
/// and consensus-policy state `ConsensusState`. Everything else the optimizer holds (buffers,
/// the shard layout, the schedule's estimate in flight) is derived at set-up or transient, so
/// saving this struct and the parameters continues a run bit for bit.
template <model_scalar S, class BaseState, class ConsensusState>
struct run_state {
  /// The base optimizer's state on this rank's state layout.
  BaseState base{};
  /// The consensus policy's state (mode A: consensus point, dual, penalty, local steps).
  ConsensusState consensus{};
  /// Retained curvature and Newton velocity.
  newton_subspace<S> newton{};
  /// Curvature requests made: the position in the estimator's RNG stream.
  index requests = 0;
  /// The run has stopped on a non-finite value.
  bool stopped = false;
  /// Steps skipped in a row for a non-finite loss or gradient (`options::max_consecutive_skips`).
  index consecutive_skips = 0;
  /// Epoch and batch of the step `optimize` is taking (the split schedule's snapshot position).
  index batch_epoch = 0;
  /// See `batch_epoch`.
  index batch_index = 0;
  /// The run summary so far.
  summary stats{};
};

}  // namespace dho2
