// The sample order of one epoch shared by the batchers: a Fisher–Yates shuffle of 0..n−1 driven
// by a xoshiro256 stream seeded from (seed, epoch) alone, so any epoch regenerates directly and
// the order is the same on every rank and platform.
#pragma once

#include <dho2/detail/internal_header_check.hpp>

#include <dho2/core/types.hpp>
#include <dho2/detail/random.hpp>

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace dho2::detail {

// perm = the order of epoch `epoch` (>= 0) of n samples under `seed`.
inline void epoch_order(std::vector<index>& perm, index n, std::uint64_t seed, index epoch) {
  const auto count = static_cast<std::size_t>(n);
  perm.resize(count);
  for (std::size_t i = 0; i < count; ++i) perm[i] = static_cast<index>(i);
  constexpr std::uint64_t stream_tag = 0x62617463686572ULL;  // "batcher"
  xoshiro256 rng(
      splitmix64(seed ^ splitmix64(static_cast<std::uint64_t>(epoch) ^ splitmix64(stream_tag))));
  for (std::size_t i = count; i > 1; --i) {
    const auto j = static_cast<std::size_t>(rng.below(i));
    std::swap(perm[i - 1], perm[j]);
  }
}

}  // namespace dho2::detail
