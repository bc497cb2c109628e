/// @file
/// `dho2::softmax_regression<S>`: multinomial logistic regression with L2 weight decay and an
/// exact Hessian-vector product. Also holds the softmax cross-entropy kernels `dho2::mlp` shares.
#pragma once

#include <dho2/core/errors.hpp>
#include <dho2/core/types.hpp>
#include <dho2/data/classification_batch.hpp>

#include <Eigen/Core>

#include <cmath>
#include <limits>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace dho2::detail {

// Throws data_error unless the batch has `features` rows, one label per column, labels in range.
template <model_scalar S>
void check_classification_batch(const classification_batch<S>& batch, index features, index classes,
                                const char* model) {
  std::ostringstream message;
  if (batch.inputs.rows() != features) {
    message << model << ": batch.inputs has " << batch.inputs.rows() << " rows, the model expects "
            << features << " features";
  } else if (batch.labels.size() != batch.inputs.cols()) {
    message << model << ": batch has " << batch.inputs.cols() << " samples but "
            << batch.labels.size() << " labels";
  } else {
    for (index j = 0; j < batch.labels.size(); ++j) {
      if (batch.labels(j) < 0 || batch.labels(j) >= classes) {
        message << model << ": batch.labels(" << j << ") = " << batch.labels(j)
                << " is outside [0, " << classes << ")";
        break;
      }
    }
  }
  if (!message.str().empty()) throw data_error(message.str());
}

// z (classes x batch) of logits becomes the column-wise softmax, computed stably (the column
// maximum is subtracted first); returns the summed cross-entropy -sum_j log p(labels(j), j).
template <model_scalar S>
double softmax_cross_entropy(matrix<S>& z, const Eigen::VectorXi& labels) {
  const index batch = z.cols();
  Eigen::Matrix<S, 1, Eigen::Dynamic> column(batch);
  column = z.colwise().maxCoeff();
  z.rowwise() -= column;
  double total = 0.0;
  for (index j = 0; j < batch; ++j) total -= static_cast<double>(z(labels(j), j));
  z.array() = z.array().exp();
  column = z.colwise().sum();
  for (index j = 0; j < batch; ++j) total += std::log(static_cast<double>(column(j)));
  z.array().rowwise() /= column.array();
  return total;
}

// p (softmax probabilities) becomes scale * (p - onehot(labels)): d(loss)/d(logits).
template <model_scalar S>
void softmax_output_delta(matrix<S>& p, const Eigen::VectorXi& labels, S scale) {
  for (index j = 0; j < p.cols(); ++j) p(labels(j), j) -= S(1);
  p *= scale;
}

// r (directional derivative of the logits) becomes scale * J_softmax r column-wise:
// p ⊙ (r − 1 (pᵀ r)).
template <model_scalar S>
void softmax_jvp(const matrix<S>& p, matrix<S>& r, S scale) {
  Eigen::Matrix<S, 1, Eigen::Dynamic> dots(p.cols());
  dots = (p.array() * r.array()).colwise().sum();
  r.rowwise() -= dots;
  r.array() *= scale * p.array();
}

// Column-wise argmax.
template <class Derived>
Eigen::VectorXi column_argmax(const Eigen::MatrixBase<Derived>& scores) {
  Eigen::VectorXi result(scores.cols());
  for (index j = 0; j < scores.cols(); ++j) {
    index best = 0;
    scores.col(j).maxCoeff(&best);
    result(j) = static_cast<int>(best);
  }
  return result;
}

}  // namespace dho2::detail

namespace dho2 {

/// Multinomial logistic (softmax) regression with weight decay in the loss.
///
/// For a batch of B samples xⱼ ∈ R^F with labels yⱼ ∈ {0, …, C−1}, parameters W ∈ R^{C×F} and
/// b ∈ R^C, logits zⱼ = W xⱼ + b and probabilities pⱼ = softmax(zⱼ):
///
///     f(W, b) = (1/B) Σⱼ −log pⱼ[yⱼ] + (λ/2) ‖W‖²_F,
///     ∇_W f = D Xᵀ + λ W,   ∇_b f = D 1,   D = (P − Y) / B,
///
/// with X = [x₁ … x_B], P = [p₁ … p_B] and Y the one-hot labels. The exact Hessian-vector
/// product along (V, c) differentiates D along the direction:
///
///     R{Z} = V X + c 1ᵀ,   R{D}ⱼ = (pⱼ ⊙ (R{zⱼ} − pⱼᵀR{zⱼ})) / B,
///     H(V, c) = (R{D} Xᵀ + λ V,  R{D} 1).
///
/// The loss is convex (strictly so in W for λ > 0). The bias is not decayed.
///
/// Parameter layout (n = C·F + C): W first, column-major (entry (k, i) at index k + C·i), then b.
/// `parameter_blocks()` returns {C·F, C}. The softmax is computed stably (column maximum
/// subtracted first). All member functions are const and thread-safe (no shared scratch).
template <model_scalar S>
class softmax_regression {
 public:
  /// Parameter scalar (`float` or `double`).
  using scalar_type = S;
  /// Batches of labelled samples, one per column.
  using batch_type = classification_batch<S>;

  /// A model for `features` inputs and `classes` outputs with weight-decay coefficient `l2` (λ).
  /// @throws dho2::invalid_options unless features ≥ 1, classes ≥ 2 and l2 is finite and ≥ 0.
  softmax_regression(index features, index classes, double l2 = 0.0)
      : features_(features), classes_(classes), l2_(l2) {
    const auto fail = [](std::string_view field, const auto& value, std::string_view rule) {
      std::ostringstream shown;
      shown << value;
      throw invalid_options(field, shown.str(), rule);
    };
    if (features < 1) {
      fail("features", features, "features >= 1");
    } else if (classes < 2) {
      fail("classes", classes, "classes >= 2");
    } else if (!(std::isfinite(l2) && l2 >= 0.0)) {
      fail("l2", l2, "finite and >= 0");
    }
  }

  /// Number of input features F.
  [[nodiscard]] index features() const noexcept { return features_; }
  /// Number of classes C.
  [[nodiscard]] index classes() const noexcept { return classes_; }
  /// The weight-decay coefficient λ.
  [[nodiscard]] double l2() const noexcept { return l2_; }
  /// Number of parameters n = C·F + C.
  [[nodiscard]] index num_parameters() const noexcept { return classes_ * features_ + classes_; }
  /// The architecture as text, "softmax_regression F-C" (the model's fingerprint, see
  /// `dho2::model_structure`).
  [[nodiscard]] std::string structure() const {
    return "softmax_regression " + std::to_string(static_cast<long long>(features_)) + "-" +
           std::to_string(static_cast<long long>(classes_));
  }
  /// Block lengths of the parameter vector: {C·F (W), C (b)}.
  [[nodiscard]] std::vector<index> parameter_blocks() const {
    return {classes_ * features_, classes_};
  }
  /// Number of samples in a batch.
  [[nodiscard]] index batch_size(const batch_type& batch) const noexcept { return batch.size(); }
  /// The start point: all zeros (every class equally likely, f = log C).
  [[nodiscard]] vector<S> initial_point() const { return vector<S>::Zero(num_parameters()); }

  /// Writes the gradient of the loss into `g` and returns the loss (see the class
  /// documentation). An empty batch contributes 0 to the mean.
  /// @throws dho2::data_error if the batch does not match the model.
  S loss_and_gradient(const_vector_ref<S> x, const batch_type& batch, vector_ref<S> g) const {
    eigen_assert(x.size() == num_parameters() && g.size() == num_parameters());
    detail::check_classification_batch(batch, features_, classes_, "softmax_regression");
    const auto w = weights(x);
    Eigen::Map<matrix<S>> g_w(g.data(), classes_, features_);
    Eigen::Map<vector<S>> g_b(g.data() + classes_ * features_, classes_);
    const index size = batch.size();
    double data_loss = 0.0;
    if (size > 0) {
      matrix<S> p(classes_, size);
      logits(x, batch.inputs, p);
      data_loss = detail::softmax_cross_entropy(p, batch.labels) / static_cast<double>(size);
      detail::softmax_output_delta(p, batch.labels, S(1) / static_cast<S>(size));
      g_w.noalias() = p * batch.inputs.transpose();
      g_b = p.rowwise().sum();
    } else {
      g_w.setZero();
      g_b.setZero();
    }
    g_w += static_cast<S>(l2_) * w;
    return static_cast<S>(data_loss + 0.5 * l2_ * static_cast<double>(w.squaredNorm()));
  }

  /// Returns the loss.
  /// @throws dho2::data_error if the batch does not match the model.
  [[nodiscard]] S loss(const_vector_ref<S> x, const batch_type& batch) const {
    eigen_assert(x.size() == num_parameters());
    detail::check_classification_batch(batch, features_, classes_, "softmax_regression");
    const index size = batch.size();
    double data_loss = 0.0;
    if (size > 0) {
      matrix<S> p(classes_, size);
      logits(x, batch.inputs, p);
      data_loss = detail::softmax_cross_entropy(p, batch.labels) / static_cast<double>(size);
    }
    return static_cast<S>(data_loss + 0.5 * l2_ * static_cast<double>(weights(x).squaredNorm()));
  }

  /// Writes the exact Hessian-vector product H(x)·v into `hv` (see the class documentation).
  /// @throws dho2::data_error if the batch does not match the model.
  void hessian_vector_product(const_vector_ref<S> x, const batch_type& batch, const_vector_ref<S> v,
                              vector_ref<S> hv) const {
    eigen_assert(x.size() == num_parameters() && v.size() == num_parameters() &&
                 hv.size() == num_parameters());
    detail::check_classification_batch(batch, features_, classes_, "softmax_regression");
    const auto v_w = weights(v);
    Eigen::Map<matrix<S>> hv_w(hv.data(), classes_, features_);
    Eigen::Map<vector<S>> hv_b(hv.data() + classes_ * features_, classes_);
    const index size = batch.size();
    if (size > 0) {
      matrix<S> p(classes_, size);
      matrix<S> r(classes_, size);
      logits(x, batch.inputs, p);
      static_cast<void>(detail::softmax_cross_entropy(p, batch.labels));
      logits(v, batch.inputs, r);
      detail::softmax_jvp(p, r, S(1) / static_cast<S>(size));
      hv_w.noalias() = r * batch.inputs.transpose();
      hv_b = r.rowwise().sum();
    } else {
      hv_w.setZero();
      hv_b.setZero();
    }
    hv_w += static_cast<S>(l2_) * v_w;
  }

  /// Predicted class (argmax of the logits) of every column of `inputs` (features × samples).
  [[nodiscard]] Eigen::VectorXi predict(const_vector_ref<S> x, const matrix<S>& inputs) const {
    eigen_assert(x.size() == num_parameters() && inputs.rows() == features_);
    matrix<S> z(classes_, inputs.cols());
    logits(x, inputs, z);
    return detail::column_argmax(z);
  }

  /// Fraction of the batch whose predicted class equals its label (0 for an empty batch).
  /// @throws dho2::data_error if the batch does not match the model.
  [[nodiscard]] double accuracy(const_vector_ref<S> x, const batch_type& batch) const {
    detail::check_classification_batch(batch, features_, classes_, "softmax_regression");
    if (batch.size() == 0) return 0.0;
    const Eigen::VectorXi predicted = predict(x, batch.inputs);
    return static_cast<double>((predicted.array() == batch.labels.array()).count()) /
           static_cast<double>(batch.size());
  }

 private:
  [[nodiscard]] Eigen::Map<const matrix<S>> weights(const_vector_ref<S> x) const {
    return Eigen::Map<const matrix<S>>(x.data(), classes_, features_);
  }

  // z = W X + b 1ᵀ for the parameters (or direction) x.
  void logits(const_vector_ref<S> x, const matrix<S>& inputs, matrix<S>& z) const {
    z.noalias() = weights(x) * inputs;
    z.colwise() += Eigen::Map<const vector<S>>(x.data() + classes_ * features_, classes_);
  }

  index features_;
  index classes_;
  double l2_;
};

}  // namespace dho2
