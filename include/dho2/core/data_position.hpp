/// @file
/// `dho2::data_position`: where a training loop is in its data.
#pragma once

#include <dho2/core/types.hpp>

namespace dho2 {

/// Where a training loop is in its data: it trains next on global batch `batch` of epoch
/// `epoch`. Saved with a checkpoint and handed back on load, so the loop can resume its batcher
/// (a `shuffling_batcher` regenerates any epoch's order from its seed: call `begin_epoch(epoch)`
/// and continue at `batch`).
struct data_position {
  /// Epoch of the next batch (≥ 0).
  index epoch = 0;
  /// Index within the epoch of the next batch (≥ 0).
  index batch = 0;
};

}  // namespace dho2
