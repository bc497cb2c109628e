/// @file
/// `classification_set<S>`: a whole labelled data set held in memory (what the IDX reader and the
/// synthetic generator produce and what `shuffling_batcher` draws batches from), the
/// `train_test_sets<S>` pair, and a class-histogram helper.
#pragma once

#include <dho2/core/errors.hpp>
#include <dho2/core/types.hpp>

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace dho2 {

/// A labelled data set stored column-wise, like `classification_batch<S>`: `inputs.col(j)` is
/// sample j (features × size) and `labels(j)` its class in [0, num_classes).
template <model_scalar S>
struct classification_set {
  /// features × samples, one column per sample.
  matrix<S> inputs;
  /// One class label per column of `inputs`, each in [0, num_classes).
  Eigen::VectorXi labels;
  /// Number of classes; labels lie in [0, num_classes).
  int num_classes = 0;

  /// Number of samples (columns of `inputs`).
  [[nodiscard]] index size() const noexcept { return inputs.cols(); }

  /// Number of features per sample (rows of `inputs`).
  [[nodiscard]] index num_features() const noexcept { return inputs.rows(); }

  /// A copy of the `count` consecutive samples starting at sample `first` (same `num_classes`).
  /// Throws `data_error` unless 0 <= first, 0 <= count and first + count <= size().
  [[nodiscard]] classification_set subset(index first, index count) const {
    if (first < 0 || count < 0 || first > size() || count > size() - first) {
      throw data_error("classification_set::subset: first = " + std::to_string(first) +
                       ", count = " + std::to_string(count) + " is outside the set of " +
                       std::to_string(size()) + " samples");
    }
    classification_set out;
    out.inputs = inputs.middleCols(first, count);
    out.labels = labels.segment(first, count);
    out.num_classes = num_classes;
    return out;
  }

  /// Checks the invariants: num_classes >= 1, one label per sample, every label in
  /// [0, num_classes). Throws `data_error` whose message starts with `what` and names the defect.
  void validate(std::string_view what = "classification_set") const {
    const std::string name(what);
    if (num_classes < 1) {
      throw data_error(name + ": num_classes is " + std::to_string(num_classes) +
                       ", must be at least 1");
    }
    if (labels.size() != inputs.cols()) {
      throw data_error(name + ": " + std::to_string(labels.size()) + " labels for " +
                       std::to_string(inputs.cols()) + " samples");
    }
    for (index j = 0; j < labels.size(); ++j) {
      if (labels(j) < 0 || labels(j) >= num_classes) {
        throw data_error(name + ": label out of range: label " + std::to_string(labels(j)) +
                         " of sample " + std::to_string(j) + " is not in [0, " +
                         std::to_string(num_classes) + ")");
      }
    }
  }
};

/// A training set and a test set of the same problem (same features and classes).
template <model_scalar S>
struct train_test_sets {
  /// The samples to train on.
  classification_set<S> train;
  /// Held-out samples for evaluation.
  classification_set<S> test;
};

/// Number of samples of each class: element c counts the labels equal to c, for c in
/// [0, set.num_classes). Throws `data_error` if a label is out of range (see `validate`).
template <model_scalar S>
[[nodiscard]] std::vector<index> class_histogram(const classification_set<S>& set) {
  set.validate("class_histogram");
  std::vector<index> counts(static_cast<std::size_t>(set.num_classes), 0);
  for (index j = 0; j < set.labels.size(); ++j) {
    ++counts[static_cast<std::size_t>(set.labels(j))];
  }
  return counts;
}

}  // namespace dho2
