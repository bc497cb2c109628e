/// @file
/// `dho2::single_process`: the transport of a job with one rank. Every collective is the identity.
#pragma once

#include <dho2/concepts/transport.hpp>

#include <span>

namespace dho2 {

/// One rank, no communication: `all_reduce_sum` leaves its input unchanged.
struct single_process {
  /// Always 0.
  [[nodiscard]] int rank() const noexcept { return 0; }
  /// Always 1.
  [[nodiscard]] int size() const noexcept { return 1; }
  /// The sum over one rank is the input itself.
  void all_reduce_sum(std::span<double> /*values*/) noexcept {}
};

static_assert(transport<single_process>);

}  // namespace dho2
