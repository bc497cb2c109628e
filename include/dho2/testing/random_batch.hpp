/// @file
/// `dho2::testing::random_batch`: a classification batch of random inputs and uniform labels
/// from the library's own seeded generator, for tests and benchmarks.
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/core/types.hpp>
#include <dho2/data/classification_batch.hpp>
#include <dho2/detail/random.hpp>

#include <cstdint>

namespace dho2::testing {

/// How `random_batch` draws its inputs.
enum class input_distribution {
  /// Standard normal N(0, 1).
  normal,
  /// Uniform in (0, 1), like pixel intensities.
  uniform,
};

/// A batch of `size` samples with `features` inputs each, drawn from `inputs` by the seeded
/// xoshiro256 generator, and labels uniform over [0, classes). Deterministic for a seed.
template <model_scalar S>
[[nodiscard]] classification_batch<S> random_batch(
    index features, index classes, index size, std::uint64_t seed,
    input_distribution inputs = input_distribution::normal) {
  detail::xoshiro256 rng(seed);
  classification_batch<S> batch;
  batch.inputs.resize(features, size);
  batch.labels.resize(size);
  for (index j = 0; j < size; ++j) {
    for (index k = 0; k < features; ++k) {
      batch.inputs(k, j) =
          static_cast<S>(inputs == input_distribution::normal ? rng.normal() : rng.uniform());
    }
    batch.labels(j) = static_cast<int>(rng.below(static_cast<std::uint64_t>(classes)));
  }
  return batch;
}

}  // namespace dho2::testing
