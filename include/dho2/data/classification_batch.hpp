/// @file
/// `classification_batch<S>`: the batch type of the built-in classifiers (`softmax_regression`,
/// `mlp`) and what the data layer (IDX reader, batchers, synthetic generator) produces.
#pragma once

#include <dho2/core/types.hpp>

namespace dho2 {

/// A batch of labelled samples stored column-wise: `inputs.col(j)` is sample j (features × size)
/// and `labels(j)` its class in [0, num_classes).
template <model_scalar S>
struct classification_batch {
  /// features × samples, one column per sample.
  matrix<S> inputs;
  /// One class label per column of `inputs`.
  Eigen::VectorXi labels;

  /// Number of samples in the batch.
  [[nodiscard]] index size() const noexcept { return inputs.cols(); }
};

}  // namespace dho2
