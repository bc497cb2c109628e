/// @file
/// `dho2::inproc_options`: the options of an `inproc_world` (`<dho2/transport/inproc.hpp>`).
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/detail/validate.hpp>

#include <chrono>
#include <cmath>
#include <cstddef>

namespace dho2 {

/// Options of an `inproc_world` (checked by `validate()` when the world is constructed; every
/// group created by `split` inherits them).
struct inproc_options {
  /// How long a rank waits for its peers at one phase of a collective, or for a message in
  /// `recv`, before it declares the world failed and throws `dho2::transport_error`. Finite and
  /// > 0; values above 10⁷ s are treated as 10⁷ s.
  std::chrono::duration<double> timeout{30.0};
  /// Algorithm switch of `all_reduce_sum`, in bytes of the vector. Below it every rank sums the
  /// whole vector itself (2 phases; each rank reads (P − 1)·n elements from peers). At or above
  /// it each rank sums one chunk of ≈ n/P elements and then copies the other ranks' chunks
  /// (3 phases; each rank reads ≈ 2n(P − 1)/P elements). Both give bit-identical results.
  std::size_t chunked_all_reduce_bytes = std::size_t{1} << 16;

  /// Throws `dho2::invalid_options` ("inproc_options::timeout = <s>. Violated constraint: ...")
  /// if the timeout is not finite and positive.
  void validate() const {
    detail::require(std::isfinite(timeout.count()) && timeout.count() > 0.0,
                    "inproc_options::timeout (seconds)", timeout.count(), "finite and > 0");
  }
};

}  // namespace dho2
