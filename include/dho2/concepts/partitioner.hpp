/// @file
/// The `partitioner` concept: how the parameter vector is cut into one contiguous shard per rank.
///
/// A type `P` models `partitioner` when, on a `const P&` named `p`:
///  1. `p.partition(n, ranks)` with `n` (`dho2::index`, ≥ 1) parameters and `ranks` (`int`, ≥ 1)
///     returns a `std::vector<dho2::index>` of `ranks + 1` non-decreasing offsets with front 0
///     and back n; rank r owns [offsets[r], offsets[r + 1]) (possibly empty).
///
/// Semantic requirements: deterministic (every rank computes the same offsets).
/// `dho2::even_partitioner` is the shipped default.
#pragma once

#include <dho2/core/types.hpp>

#include <concepts>
#include <vector>

namespace dho2 {

/// Cuts n parameters into contiguous shards, one per rank (see the file comment).
template <class P>
concept partitioner = std::copy_constructible<P> && requires(const P& p, index n, int ranks) {
  { p.partition(n, ranks) } -> std::same_as<std::vector<index>>;
};

}  // namespace dho2
