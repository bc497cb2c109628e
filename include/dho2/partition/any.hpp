/// @file
/// `dho2::any_partitioner`: a partitioner chosen at run time, so that one optimizer type serves
/// every partitioner a program may pick from its command line (like `dho2::any_transport` for
/// transports).
#pragma once

#include <dho2/concepts/partitioner.hpp>
#include <dho2/core/types.hpp>
#include <dho2/partition/even.hpp>

#include <functional>
#include <type_traits>
#include <utility>
#include <vector>

namespace dho2 {

/// A `dho2::partitioner` that forwards `partition(n, ranks)` to a copy of any partitioner. A
/// default-constructed one forwards to `dho2::even_partitioner`. The wrapped partitioner's rules,
/// results and errors are unchanged.
class any_partitioner {
 public:
  /// Wraps `dho2::even_partitioner`.
  any_partitioner() : any_partitioner(even_partitioner{}) {}

  // (clang-format 14 would put the requires-clause and the constructor on one line)
  // clang-format off
  /// Wraps a copy of `p`.
  template <partitioner P>
    requires(!std::is_same_v<std::remove_cvref_t<P>, any_partitioner>)
  explicit any_partitioner(P p)
      : partition_([p = std::move(p)](index n, int ranks) { return p.partition(n, ranks); }) {}
  // clang-format on

  /// Offsets of the `ranks` + 1 shard boundaries of `n` parameters, as the wrapped partitioner
  /// computes them.
  [[nodiscard]] std::vector<index> partition(index n, int ranks) const {
    return partition_(n, ranks);
  }

 private:
  std::function<std::vector<index>(index, int)> partition_;
};

static_assert(partitioner<any_partitioner>);

}  // namespace dho2
