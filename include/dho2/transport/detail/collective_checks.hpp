// Argument checks shared by the transports, with the messages every transport reports: the shard
// offsets of reduce_scatter_sum / all_gather, the buffers' lengths against them, an index out of
// range, overlapping buffers, and the "<transport> <routine> [rank r, world size P]" prefix.
#pragma once

#include <dho2/detail/internal_header_check.hpp>

#include <dho2/core/types.hpp>

#include <cstddef>
#include <functional>
#include <span>
#include <string>
#include <string_view>

namespace dho2::detail {

// "<transport> <routine> [rank <rank>, world size <size>]", the start of every error message.
inline std::string call_prefix(std::string_view transport, std::string_view routine, int rank,
                               int size) {
  return std::string(transport) + " " + std::string(routine) + " [rank " + std::to_string(rank) +
         ", world size " + std::to_string(size) + "]";
}

// "" if `offsets` are the ranks + 1 non-decreasing shard boundaries from 0 of `ranks` shards,
// else what is wrong.
inline std::string offsets_error(std::span<const index> offsets, int ranks) {
  if (offsets.size() != static_cast<std::size_t>(ranks) + 1) {
    return "offsets.size() = " + std::to_string(offsets.size()) +
           ", expected size() + 1 = " + std::to_string(ranks + 1);
  }
  if (offsets.front() != 0) return "offsets[0] = " + std::to_string(offsets.front()) + " != 0";
  for (std::size_t r = 0; r + 1 < offsets.size(); ++r) {
    if (offsets[r + 1] < offsets[r]) {
      return "offsets decrease at " + std::to_string(r + 1) + " (" + std::to_string(offsets[r]) +
             " > " + std::to_string(offsets[r + 1]) + ")";
    }
  }
  return {};
}

// "" if, with valid `offsets` (offsets_error), the whole vector `full_name` has offsets.back()
// entries (`full`) and the shard `shard_name` has rank `rank`'s (`shard`), else what is wrong.
inline std::string shard_lengths_error(std::span<const index> offsets, int rank, std::size_t full,
                                       std::size_t shard, std::string_view full_name,
                                       std::string_view shard_name) {
  if (static_cast<std::size_t>(offsets.back()) != full) {
    return std::string(full_name) + ".size() = " + std::to_string(full) +
           " != offsets.back() = " + std::to_string(offsets.back());
  }
  const auto r = static_cast<std::size_t>(rank);
  const auto len = static_cast<std::size_t>(offsets[r + 1] - offsets[r]);
  if (shard != len) {
    return std::string(shard_name) + ".size() = " + std::to_string(shard) +
           " != this rank's shard length " + std::to_string(len);
  }
  return {};
}

// offsets_error, then shard_lengths_error: "" if the shard arguments of a reduce-scatter
// (full "in", shard "out") or all-gather (full "out", shard "in") are consistent.
inline std::string shard_error(std::span<const index> offsets, int rank, int ranks,
                               std::size_t full, std::size_t shard, std::string_view full_name,
                               std::string_view shard_name) {
  std::string bad = offsets_error(offsets, ranks);
  if (!bad.empty()) return bad;
  return shard_lengths_error(offsets, rank, full, shard, full_name, shard_name);
}

// "<name> = <value> is out of range [0, <size>)".
inline std::string out_of_range_error(std::string_view name, int value, int size) {
  return std::string(name) + " = " + std::to_string(value) + " is out of range [0, " +
         std::to_string(size) + ")";
}

// Whether two byte ranges overlap (empty ranges overlap nothing).
inline bool buffers_overlap(const void* a, std::size_t a_bytes, const void* b,
                            std::size_t b_bytes) noexcept {
  if (a_bytes == 0 || b_bytes == 0) return false;
  const auto* pa = static_cast<const std::byte*>(a);
  const auto* pb = static_cast<const std::byte*>(b);
  const std::less<const std::byte*> less;
  return less(pa, pb + b_bytes) && less(pb, pa + a_bytes);
}

}  // namespace dho2::detail
