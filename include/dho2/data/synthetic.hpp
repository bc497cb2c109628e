/// @file
/// `make_teacher_classification<S>`: a synthetic classification problem labelled by a random
/// "teacher" network. Tests, examples and the demo use it so that they run, reproducibly, on a
/// machine where no real data set (Fashion-MNIST) is installed; unlike random labels it is
/// learnable, and unlike linearly separable blobs it has curvature worth estimating.
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/core/errors.hpp>
#include <dho2/core/types.hpp>
#include <dho2/data/classification_set.hpp>
#include <dho2/detail/random.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace dho2 {

/// How `make_teacher_classification` draws the inputs.
enum class input_distribution {
  /// Independent standard normal features.
  gaussian,
  /// Independent features uniform in (0, 1), like scaled pixels.
  unit_uniform,
};

/// Options of `make_teacher_classification`.
struct teacher_options {
  /// Width of the teacher's hidden tanh layer (>= 1).
  index hidden = 32;
  /// Distribution of the input features.
  input_distribution inputs = input_distribution::gaussian;
  /// Standard deviation of a hidden pre-activation for a standardised input (> 0); larger values
  /// saturate tanh more and make the teacher less linear.
  double hidden_gain = 2.0;
  /// Probability (in [0, 1]) that a training label is replaced by a different class drawn
  /// uniformly: the fraction of wrong training labels is `label_noise` on average.
  double label_noise = 0.0;
  /// Apply `label_noise` to the test set as well (by default test labels are the teacher's).
  bool noisy_test = false;
  /// Shift the teacher's output biases so that its classes are about equally frequent (otherwise
  /// a random teacher may almost never predict some classes).
  bool balance_classes = true;
};

namespace detail {

struct teacher_net {
  matrix<double> w1;  // hidden × features, applied to standardised inputs
  vector<double> b1;
  matrix<double> w2;  // classes × hidden
  vector<double> b2;
};

inline std::uint64_t synthetic_stream_seed(std::uint64_t seed, std::uint64_t stream) {
  return splitmix64(seed ^ splitmix64(stream ^ 0x73796e7468657469ULL));
}

// features × n inputs; column j depends only on (rng state at sample j), so a smaller n gives a
// prefix of a larger one.
inline matrix<double> teacher_inputs(xoshiro256& rng, index features, index n,
                                     input_distribution dist) {
  matrix<double> x(features, n);
  for (index j = 0; j < n; ++j) {
    for (index f = 0; f < features; ++f) {
      x(f, j) = dist == input_distribution::gaussian ? rng.normal() : rng.uniform();
    }
  }
  return x;
}

inline matrix<double> teacher_hidden(const teacher_net& t, const matrix<double>& x,
                                     input_distribution dist) {
  // U(0, 1) is standardised with its mean 1/2 and standard deviation 1/sqrt(12).
  matrix<double> h = dist == input_distribution::unit_uniform
                         ? matrix<double>(t.w1 * ((x.array() - 0.5) * std::sqrt(12.0)).matrix())
                         : matrix<double>(t.w1 * x);
  h.colwise() += t.b1;
  return h.array().tanh().matrix();
}

inline Eigen::VectorXi teacher_argmax(const teacher_net& t, const matrix<double>& h) {
  matrix<double> logits = t.w2 * h;
  logits.colwise() += t.b2;
  Eigen::VectorXi labels(h.cols());
  for (index j = 0; j < h.cols(); ++j) {
    index best = 0;
    logits.col(j).maxCoeff(&best);
    labels(j) = static_cast<int>(best);
  }
  return labels;
}

}  // namespace detail

/// A synthetic classification problem: `train_size` training and `test_size` test samples with
/// `features` inputs and `classes` classes, labelled by a random teacher network
/// ```
/// label(x) = argmax_c [ W2 tanh(W1 z(x) + b1) + b2 ]_c
/// ```
/// where z(x) standardises the inputs (zero mean, unit variance), W1 (hidden × features) has
/// N(0, gain² / features) entries, b1 N(0, 1/4), W2 (classes × hidden) N(0, 1 / hidden); b2 is 0,
/// or (with `balance_classes`) shifted so that the teacher's classes are about equally frequent
/// on a calibration sample. Training labels are then flipped with probability `label_noise`.
///
/// Deterministic for a given seed and arguments (xoshiro256 streams, never global state): the
/// teacher, the training inputs, the test inputs and the noise each use their own stream, so the
/// teacher does not depend on the sizes and a smaller `train_size` gives a prefix of a larger one.
/// The teacher's arithmetic runs in double through Eigen; a sample whose top two logits tie to
/// the last bit could be labelled differently by a build with other SIMD instructions.
///
/// Throws `invalid_options` unless train_size >= 0, test_size >= 0, features >= 1,
/// classes >= 2, options.hidden >= 1, options.hidden_gain > 0 and 0 <= options.label_noise <= 1.
template <model_scalar S>
[[nodiscard]] train_test_sets<S> make_teacher_classification(index train_size, index test_size,
                                                             index features, int classes,
                                                             std::uint64_t seed,
                                                             const teacher_options& options = {}) {
  const auto require = [](bool ok, const std::string& field, const std::string& value,
                          const char* constraint) {
    if (!ok) {
      throw invalid_options(field + " = " + value + ". Violated constraint: " + constraint);
    }
  };
  require(train_size >= 0, "train_size", std::to_string(train_size), "train_size >= 0");
  require(test_size >= 0, "test_size", std::to_string(test_size), "test_size >= 0");
  require(features >= 1, "features", std::to_string(features), "features >= 1");
  require(classes >= 2, "classes", std::to_string(classes), "classes >= 2");
  require(options.hidden >= 1, "hidden", std::to_string(options.hidden), "hidden >= 1");
  require(options.hidden_gain > 0.0, "hidden_gain", std::to_string(options.hidden_gain),
          "hidden_gain > 0");
  require(options.label_noise >= 0.0 && options.label_noise <= 1.0, "label_noise",
          std::to_string(options.label_noise), "0 <= label_noise <= 1");

  const index hidden = options.hidden;
  const auto num_classes = static_cast<index>(classes);

  detail::teacher_net t;
  detail::xoshiro256 teacher_rng(detail::synthetic_stream_seed(seed, 0));
  const double s1 = options.hidden_gain / std::sqrt(static_cast<double>(features));
  const double s2 = 1.0 / std::sqrt(static_cast<double>(hidden));
  t.w1.resize(hidden, features);
  for (index i = 0; i < t.w1.size(); ++i) t.w1(i) = s1 * teacher_rng.normal();
  t.b1.resize(hidden);
  for (index i = 0; i < hidden; ++i) t.b1(i) = 0.5 * teacher_rng.normal();
  t.w2.resize(num_classes, hidden);
  for (index i = 0; i < t.w2.size(); ++i) t.w2(i) = s2 * teacher_rng.normal();
  t.b2 = vector<double>::Zero(num_classes);

  if (options.balance_classes) {
    // Damped fixed-point iteration on a calibration sample from its own stream: lower the bias
    // of a class predicted too often, raise it for a rare one, by 1/4 of the log frequency ratio.
    detail::xoshiro256 calib_rng(detail::synthetic_stream_seed(seed, 1));
    const index n_calib = std::min<index>(256 * num_classes, index{1} << 14U);
    const matrix<double> h = detail::teacher_hidden(
        t, detail::teacher_inputs(calib_rng, features, n_calib, options.inputs), options.inputs);
    const matrix<double> logits = t.w2 * h;
    const double target = static_cast<double>(n_calib) / static_cast<double>(num_classes);
    std::vector<double> counts(static_cast<std::size_t>(num_classes));
    for (int round = 0; round < 100; ++round) {
      std::fill(counts.begin(), counts.end(), 0.0);
      for (index j = 0; j < n_calib; ++j) {
        index best = 0;
        (logits.col(j) + t.b2).maxCoeff(&best);
        counts[static_cast<std::size_t>(best)] += 1.0;
      }
      for (index c = 0; c < num_classes; ++c) {
        t.b2(c) -= 0.25 * std::log((counts[static_cast<std::size_t>(c)] + 1.0) / (target + 1.0));
      }
    }
  }

  const auto make_set = [&](index n, std::uint64_t input_stream, std::uint64_t noise_stream,
                            bool noisy) {
    detail::xoshiro256 input_rng(detail::synthetic_stream_seed(seed, input_stream));
    const matrix<double> x = detail::teacher_inputs(input_rng, features, n, options.inputs);
    classification_set<S> set;
    set.num_classes = classes;
    set.labels = detail::teacher_argmax(t, detail::teacher_hidden(t, x, options.inputs));
    set.inputs = x.cast<S>();
    if (noisy && options.label_noise > 0.0) {
      detail::xoshiro256 noise_rng(detail::synthetic_stream_seed(seed, noise_stream));
      for (index j = 0; j < n; ++j) {
        // Two draws per sample whatever happens, so sample j's noise does not depend on n.
        const bool flip = noise_rng.uniform() < options.label_noise;
        const auto shift =
            static_cast<int>(noise_rng.below(static_cast<std::uint64_t>(classes - 1)));
        if (flip) set.labels(j) = (set.labels(j) + 1 + shift) % classes;
      }
    }
    return set;
  };

  train_test_sets<S> out;
  out.train = make_set(train_size, 2, 3, true);
  out.test = make_set(test_size, 4, 5, options.noisy_test);
  return out;
}

}  // namespace dho2
