/// @file
/// `dho2::shard_layout`: where one rank's shard lies in the global parameter vector.
#pragma once

#include <dho2/core/types.hpp>

namespace dho2 {

/// Where this rank's shard lies in the global parameter vector.
struct shard_layout {
  /// Length n of the global vector.
  index global_size = 0;
  /// First global index of this rank's shard.
  index offset = 0;
  /// Number of entries in this rank's shard.
  index size = 0;
};

}  // namespace dho2
