/// @file
/// `dho2::weighted_partitioner`: contiguous shards whose sizes are proportional to per-rank
/// weights (e.g. measured speeds), for groups of unequal machines.
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/concepts/partitioner.hpp>
#include <dho2/core/types.hpp>
#include <dho2/detail/validate.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

namespace dho2 {

/// Shard sizes proportional to the weights w_r, rounded by the largest-remainder (Hamilton)
/// method: rank r first gets ⌊q_r⌋ of its quota q_r = n·w_r/Σw, and the n − Σ⌊q_r⌋ entries left
/// go one each to the ranks with the largest fractional parts q_r − ⌊q_r⌋ (the lower rank on a
/// tie). Sizes sum to n exactly and |size_r − q_r| < 1; a rank of weight 0 gets an empty shard.
/// Shards follow rank order: rank r owns [Σ_{q<r} size_q, Σ_{q≤r} size_q).
///
/// Requirements: weights finite, ≥ 0, not all 0 (checked at construction) and one per rank
/// (checked by `partition`); otherwise `dho2::invalid_options`.
class weighted_partitioner {
 public:
  /// Partitioner for one weight per rank. Throws `dho2::invalid_options`
  /// ("weighted_partitioner weights[r] = <v>. Violated constraint: finite and >= 0", or "... sum
  /// of the weights = 0. Violated constraint: > 0").
  explicit weighted_partitioner(std::vector<double> weights) : weights_(std::move(weights)) {
    double total = 0.0;
    for (std::size_t r = 0; r < weights_.size(); ++r) {
      detail::require(std::isfinite(weights_[r]) && weights_[r] >= 0.0,
                      "weighted_partitioner weights[" + std::to_string(r) + "]", weights_[r],
                      "finite and >= 0");
      total += weights_[r];
    }
    detail::require(total > 0.0 && std::isfinite(total), "weighted_partitioner sum of the weights",
                    total, "finite and > 0 (at least one rank must have a positive weight)");
  }

  /// The weights, one per rank.
  [[nodiscard]] const std::vector<double>& weights() const noexcept { return weights_; }

  /// Offsets of the `ranks` + 1 shard boundaries (see the class comment). Throws
  /// `dho2::invalid_options` if `ranks` differs from the number of weights or `n` < 0.
  [[nodiscard]] std::vector<index> partition(index n, int ranks) const {
    detail::require(static_cast<std::size_t>(std::max(ranks, 0)) == weights_.size() && ranks >= 1,
                    "weighted_partitioner ranks", ranks,
                    "equal to the number of weights, " + std::to_string(weights_.size()));
    detail::require(n >= 0, "weighted_partitioner n", n, ">= 0");
    const std::size_t p = weights_.size();
    const long double total =
        std::accumulate(weights_.begin(), weights_.end(), static_cast<long double>(0));
    std::vector<index> sizes(p, 0);
    std::vector<long double> fraction(p, 0);
    index given = 0;
    for (std::size_t r = 0; r < p; ++r) {
      const long double quota = static_cast<long double>(n) * (weights_[r] / total);
      const long double whole = std::min(std::floor(quota), static_cast<long double>(n));
      sizes[r] = static_cast<index>(whole);
      fraction[r] = quota - whole;
      given += sizes[r];
    }
    // Ranks by decreasing fractional part, lower rank first on a tie; weight-0 ranks never gain.
    std::vector<std::size_t> order(p);
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::stable_sort(order.begin(), order.end(),
                     [&](std::size_t a, std::size_t b) { return fraction[a] > fraction[b]; });
    // Round-off in the quotas can leave Σ⌊q⌋ off by one or two either way: settle it here.
    for (std::size_t k = 0; given < n; k = (k + 1) % p) {
      if (weights_[order[k]] > 0.0) {
        ++sizes[order[k]];
        ++given;
      }
    }
    for (std::size_t k = p; given > n;) {  // smallest fractional parts first
      k = (k == 0 ? p : k) - 1;
      if (sizes[order[k]] > 0) {
        --sizes[order[k]];
        --given;
      }
    }
    std::vector<index> offsets(p + 1, 0);
    for (std::size_t r = 0; r < p; ++r) offsets[r + 1] = offsets[r] + sizes[r];
    return offsets;
  }

 private:
  std::vector<double> weights_;
};

static_assert(partitioner<weighted_partitioner>);

}  // namespace dho2
