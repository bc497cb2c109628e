/// @file
/// `dho2::even_partitioner`: contiguous shards whose sizes differ by at most one.
#pragma once

#include <dho2/concepts/partitioner.hpp>

#include <vector>

namespace dho2 {

/// Contiguous shards of ⌊n/P⌋ or ⌈n/P⌉ entries; the first n mod P ranks get one more.
/// With P > n the last P − n shards are empty.
struct even_partitioner {
  /// Offsets of the P + 1 shard boundaries.
  [[nodiscard]] std::vector<index> partition(index n, int ranks) const {
    const index p = ranks;
    std::vector<index> offsets(static_cast<std::size_t>(p + 1), 0);
    for (index r = 0; r < p; ++r) {
      offsets[static_cast<std::size_t>(r + 1)] =
          offsets[static_cast<std::size_t>(r)] + n / p + (r < n % p ? 1 : 0);
    }
    return offsets;
  }
};

static_assert(partitioner<even_partitioner>);

}  // namespace dho2
