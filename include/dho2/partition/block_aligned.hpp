/// @file
/// `dho2::block_aligned_partitioner`: contiguous shards whose boundaries fall on the boundaries of
/// the model's parameter blocks (layers, weight matrices, bias vectors), so no block is split
/// between ranks.
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/concepts/partitioner.hpp>
#include <dho2/core/types.hpp>
#include <dho2/detail/validate.hpp>

#include <cstddef>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

namespace dho2 {

/// Shards made of whole blocks. With block boundaries B₀ = 0 < … ≤ B_m = n (cumulative block
/// lengths), the boundary between ranks r − 1 and r (r = 1, …, P − 1) is the B_j nearest to the
/// ideal cumulative target n·r/P (the lower one on a tie). Targets increase with r, so the
/// offsets are non-decreasing; each boundary is within half a block of its ideal position, which
/// makes the shards as even as the blocks allow for this greedy rule (it does not minimise the
/// largest shard in general). When P exceeds the number of blocks, or a block is larger than
/// n/P, several boundaries coincide and some shards are empty.
///
/// Requirements: block lengths ≥ 0 (zero-length blocks are allowed and harmless); at
/// `partition(n, P)`, the lengths sum to n and P ≥ 1 — otherwise `dho2::invalid_options`.
class block_aligned_partitioner {
 public:
  /// Partitioner for the given block lengths (in parameter order). Throws
  /// `dho2::invalid_options` ("block_aligned_partitioner blocks[j] = <v>. Violated constraint:
  /// >= 0") for a negative length.
  explicit block_aligned_partitioner(std::vector<index> blocks) : blocks_(std::move(blocks)) {
    for (std::size_t j = 0; j < blocks_.size(); ++j) {
      detail::require(blocks_[j] >= 0,
                      "block_aligned_partitioner blocks[" + std::to_string(j) + "]", blocks_[j],
                      ">= 0");
    }
  }

  /// Partitioner for `model.parameter_blocks()` (any range of lengths convertible to
  /// `dho2::index`), e.g. one block per weight matrix and bias of an `mlp`. When the model also
  /// has `num_parameters()`, the blocks are checked to sum to it (`dho2::invalid_options`).
  template <class Model>
  requires requires(const Model& m) { m.parameter_blocks(); }
  [[nodiscard]] static block_aligned_partitioner for_model(const Model& model) {
    std::vector<index> blocks;
    for (const auto& b : model.parameter_blocks()) blocks.push_back(static_cast<index>(b));
    block_aligned_partitioner result(std::move(blocks));
    if constexpr (requires { model.num_parameters(); }) {
      result.check_sum(static_cast<index>(model.num_parameters()));
    }
    return result;
  }

  /// The block lengths, in parameter order.
  [[nodiscard]] const std::vector<index>& blocks() const noexcept { return blocks_; }

  /// Offsets of the `ranks` + 1 shard boundaries (every one a block boundary; see the class
  /// comment). Throws `dho2::invalid_options` if the blocks do not sum to `n` (the message names
  /// both) or `ranks` < 1.
  [[nodiscard]] std::vector<index> partition(index n, int ranks) const {
    detail::require(ranks >= 1, "block_aligned_partitioner ranks", ranks, ">= 1");
    check_sum(n);
    std::vector<index> bounds(blocks_.size() + 1, 0);
    std::partial_sum(blocks_.begin(), blocks_.end(), bounds.begin() + 1);
    const index p = ranks;
    std::vector<index> offsets(static_cast<std::size_t>(p) + 1, 0);
    offsets.back() = n;
    std::size_t j = 0;  // candidate boundary, only moves forward
    for (index r = 1; r < p; ++r) {
      // Distances are compared scaled by P: |B·P − n·r| (exact integer arithmetic).
      const auto distance = [&](std::size_t k) {
        const index d = bounds[k] * p - n * r;
        return d < 0 ? -d : d;
      };
      // The distance is unimodal in k; equal bounds (zero-length blocks) are stepped over.
      while (j + 1 < bounds.size() &&
             (bounds[j + 1] == bounds[j] || distance(j + 1) < distance(j))) {
        ++j;
      }
      offsets[static_cast<std::size_t>(r)] = bounds[j];
    }
    return offsets;
  }

 private:
  void check_sum(index n) const {
    const index total = std::accumulate(blocks_.begin(), blocks_.end(), index{0});
    detail::require(total == n, "block_aligned_partitioner n", n,
                    "equal to the sum of the block lengths, " + std::to_string(total) + " (" +
                        std::to_string(blocks_.size()) + " blocks)");
  }

  std::vector<index> blocks_;
};

static_assert(partitioner<block_aligned_partitioner>);

}  // namespace dho2
