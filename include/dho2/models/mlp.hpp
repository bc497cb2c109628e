/// @file
/// `dho2::mlp<S>`: a fully connected network (any depth, ReLU or tanh hidden layers, L2 weight
/// decay) with a softmax cross-entropy output (a classifier) or a linear output with squared
/// reconstruction error (an autoencoder, `dho2::mlp_loss`), backpropagation and an exact
/// Hessian-vector product by Pearlmutter's R-operator, and the per-layer K-FAC signals
/// (`mlp_layer_signals`); and `dho2::parse_mlp_layers` for "784-256-10" specs.
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/core/errors.hpp>
#include <dho2/core/types.hpp>
#include <dho2/data/classification_batch.hpp>
#include <dho2/detail/random.hpp>
#include <dho2/models/softmax_regression.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace dho2 {

/// Hidden-layer activation of `dho2::mlp`.
enum class activation {
  /// σ(z) = max(0, z); σ'(z) = [z > 0] (0 at z = 0); σ'' = 0. He initialisation.
  relu,
  /// σ(z) = tanh z; σ' = 1 − σ²; σ'' = −2σ(1 − σ²). Glorot initialisation.
  tanh
};

/// Output loss of `dho2::mlp` (see the class documentation for the formulas).
enum class mlp_loss {
  /// Softmax cross-entropy against the labels: a classifier with s_L classes.
  softmax_cross_entropy,
  /// Squared error ½‖z_L,j − xⱼ‖² of a linear output against the sample's own input xⱼ (an
  /// autoencoder; s_L = s₀, labels ignored).
  squared_error_reconstruction
};

/// Name of an output loss ("softmax_cross_entropy", "squared_error_reconstruction").
[[nodiscard]] inline std::string_view to_string(mlp_loss loss) noexcept {
  switch (loss) {
    case mlp_loss::softmax_cross_entropy: return "softmax_cross_entropy";
    case mlp_loss::squared_error_reconstruction: return "squared_error_reconstruction";
  }
  return "unknown";
}

/// Parses a layer-width spec such as "784-256-256-10" (input width, hidden widths, number of
/// classes, separated by '-') into {784, 256, 256, 10}.
/// @throws dho2::invalid_options with a one-line message of the form
///   `layers = "<spec>". Violated constraint: ...` if the spec is empty, has a component that is
///   not a decimal integer (signs and spaces are rejected), has fewer than two layers, or has a
///   width of 0.
[[nodiscard]] inline std::vector<index> parse_mlp_layers(std::string_view spec) {
  const auto fail = [&](const std::string& constraint) {
    throw invalid_options("layers", "\"" + std::string(spec) + "\"", constraint);
  };
  const std::string format = "widths separated by '-', e.g. \"784-256-10\"";
  if (spec.empty()) fail("non-empty list of " + format);
  std::vector<index> widths;
  std::size_t start = 0;
  while (true) {
    const std::size_t end = std::min(spec.find('-', start), spec.size());
    const std::string_view part = spec.substr(start, end - start);
    const bool digits = !part.empty() && std::all_of(part.begin(), part.end(),
                                                     [](char c) { return c >= '0' && c <= '9'; });
    if (!digits) {
      fail("every width is a decimal integer (\"" + std::string(part) + "\" is not); " + format);
    }
    long long width = 0;
    const auto [ptr, ec] = std::from_chars(part.data(), part.data() + part.size(), width);
    if (ec != std::errc() || ptr != part.data() + part.size() || width > (1LL << 31)) {
      fail("every width is at most 2^31 (\"" + std::string(part) + "\" is too large)");
    }
    if (width == 0) {
      fail("every width is >= 1 (layer " + std::to_string(widths.size()) + " has width 0)");
    }
    widths.push_back(static_cast<index>(width));
    if (end == spec.size()) break;
    start = end + 1;
  }
  if (widths.size() < 2) {
    fail("at least two layers (input and output), got " + std::to_string(widths.size()));
  }
  return widths;
}

/// Per-layer signals of a batch that Kronecker-factored curvature (K-FAC; Martens & Grosse,
/// ICML 2015) is built from, as `mlp::loss_gradient_and_signals` returns them for a batch of B
/// samples. Weight layers are numbered l = 0, …, L − 1 (0-based; layer l maps width sₗ to
/// sₗ₊₁). The bias is the homogeneous coordinate: the consumer appends a 1 to each input,
/// āₗⱼ = [aₗⱼ; 1], so that Wₗaₗⱼ + bₗ = [Wₗ bₗ] āₗⱼ; it is not stored here.
template <model_scalar S>
struct mlp_layer_signals {
  /// inputs[l] (sₗ × B): column j is aₗⱼ, the input of layer l for sample j (the sample itself
  /// for l = 0, else the previous layer's activations).
  std::vector<matrix<S>> inputs;
  /// output_gradients[l] (sₗ₊₁ × B): column j is gₗⱼ = ∂ℓⱼ/∂zₗⱼ, the gradient of sample j's
  /// own loss ℓⱼ (cross-entropy, or ½‖z_L,j − xⱼ‖² for the reconstruction loss; not divided by
  /// B, no weight decay) with respect to the pre-activation zₗⱼ = Wₗaₗⱼ + bₗ; that is B times
  /// the column of the mean loss's back-propagated Δ.
  std::vector<matrix<S>> output_gradients;
};

/// A multilayer perceptron with L2 weight decay and one of two output losses (`dho2::mlp_loss`):
/// softmax cross-entropy (a classifier, the default) or squared reconstruction error (an
/// autoencoder).
///
/// Layer widths s₀ (inputs), s₁, …, s_L (outputs); L weight layers. For a batch X ∈ R^{s₀×B}
/// (samples as columns) with labels y:
///
///     A₀ = X,   Zₗ = Wₗ Aₗ₋₁ + bₗ 1ᵀ,   Aₗ = σ(Zₗ) (l < L)   (the output Z_L is not activated),
///     decay:                  D = (λ/2) Σₗ ‖Wₗ‖²_F     (biases are not decayed),
///     softmax_cross_entropy:  P = softmax(Z_L) column-wise,  f = (1/B) Σⱼ −log P[yⱼ, j] + D,
///     squared_error_reconstruction (s_L = s₀, labels ignored):
///                             f = (1/(2B)) Σⱼ ‖Z_L[:, j] − X[:, j]‖² + D.
///
/// Gradient (backpropagation): Δ_L = (P − Y)/B (cross-entropy; Y one-hot) or Δ_L = (Z_L − X)/B
/// (reconstruction), then Δₗ₋₁ = σ'(Zₗ₋₁) ⊙ (Wₗᵀ Δₗ), ∇Wₗ = Δₗ Aₗ₋₁ᵀ + λWₗ, ∇bₗ = Δₗ 1.
///
/// Exact Hessian-vector product along v = (Vₗ, cₗ)ₗ by Pearlmutter's R-operator
/// (R{·} = d/dt ·(x + t v) at t = 0; Pearlmutter, Neural Computation 6(1), 1994):
///
///     forward:  R{A₀} = 0,  R{Zₗ} = Vₗ Aₗ₋₁ + cₗ 1ᵀ + Wₗ R{Aₗ₋₁},  R{Aₗ} = σ'(Zₗ) ⊙ R{Zₗ},
///     output:   R{Δ_L} = (P ⊙ (R{Z_L} − 1 (1ᵀ(P ⊙ R{Z_L})))) / B   (cross-entropy),
///               R{Δ_L} = R{Z_L} / B                                (reconstruction: X is fixed),
///     backward: R{Δₗ₋₁} = σ'(Zₗ₋₁) ⊙ (Vₗᵀ Δₗ + Wₗᵀ R{Δₗ}) + σ''(Zₗ₋₁) ⊙ R{Zₗ₋₁} ⊙ (Wₗᵀ Δₗ),
///     product:  (Hv)_{Wₗ} = R{Δₗ} Aₗ₋₁ᵀ + Δₗ R{Aₗ₋₁}ᵀ + λVₗ,   (Hv)_{bₗ} = R{Δₗ} 1.
///
/// The R-forward pass runs fused with the forward pass and the R-backward pass with the backward
/// pass, so a product costs about two gradients' worth of matrix products (the gradient of the
/// first layer's input is never formed). σ' and σ'' are expressed through Aₗ (ReLU: [Aₗ > 0];
/// tanh: 1 − Aₗ², and σ''(Z) ⊙ R{Z} = −2Aₗ ⊙ R{Aₗ}), so pre-activations are not stored. For ReLU
/// the Hessian is the generalised one (σ'' = 0 off the kinks).
///
/// `predict` and `accuracy` exist for the classifier only: with the reconstruction loss they
/// throw `dho2::invalid_options` (there are no classes; evaluate with `loss`).
///
/// Parameter layout (n = Σₗ sₗ(sₗ₋₁ + 1)): for l = 1, …, L in order, Wₗ (sₗ × sₗ₋₁,
/// column-major: entry (i, k) at offset i + sₗ·k) then bₗ (sₗ). `parameter_blocks()` returns one
/// length per Wₗ and per bₗ in that order. Parameters are mapped into matrices without copying.
///
/// All member functions are const and thread-safe: workspaces are local to each call (about
/// 2·B·Σₗ sₗ scalars for a gradient, twice that for a product). The softmax is computed stably;
/// the squared error is summed in double.
template <model_scalar S>
class mlp {
 public:
  /// Parameter scalar (`float` or `double`).
  using scalar_type = S;
  /// Batches of labelled samples, one per column.
  using batch_type = classification_batch<S>;

  /// A network with the given widths {s₀, …, s_L} (see `parse_mlp_layers`), hidden activation,
  /// weight-decay coefficient `l2` (λ) and output loss: `mlp(layers)` is a ReLU classifier,
  /// `mlp(layers, activation::relu, 0.0, mlp_loss::squared_error_reconstruction)` an autoencoder.
  /// @throws dho2::invalid_options unless there are at least two widths, all ≥ 1, l2 is finite
  ///   and ≥ 0, `loss` is an `mlp_loss`, and s_L = s₀ for the reconstruction loss.
  explicit mlp(std::vector<index> layers, dho2::activation hidden = dho2::activation::relu,
               double l2 = 0.0, mlp_loss loss = mlp_loss::softmax_cross_entropy)
      : layers_(std::move(layers)), hidden_(hidden), l2_(l2), loss_(loss) {
    const auto fail = [](std::string_view field, const auto& value, std::string_view rule) {
      std::ostringstream shown;
      shown << value;
      throw invalid_options(field, shown.str(), rule);
    };
    if (layers_.size() < 2) {
      fail("layers.size()", layers_.size(), "at least two layers (input and output)");
    } else if (!(std::isfinite(l2) && l2 >= 0.0)) {
      fail("l2", l2, "finite and >= 0");
    } else if (loss != mlp_loss::softmax_cross_entropy &&
               loss != mlp_loss::squared_error_reconstruction) {
      fail("loss", static_cast<int>(loss), "softmax_cross_entropy or squared_error_reconstruction");
    } else if (loss == mlp_loss::squared_error_reconstruction &&
               layers_.back() != layers_.front()) {
      fail("layers.back()", layers_.back(),
           "== layers.front() (= " + std::to_string(layers_.front()) +
               ") for mlp_loss::squared_error_reconstruction (the output reconstructs the input)");
    } else {
      for (std::size_t l = 0; l < layers_.size(); ++l) {
        if (layers_[l] < 1) fail("layers[" + std::to_string(l) + "]", layers_[l], ">= 1");
      }
    }
    offsets_.reserve(layers_.size());
    index offset = 0;
    for (std::size_t l = 0; l + 1 < layers_.size(); ++l) {
      offsets_.push_back(offset);
      offset += layers_[l + 1] * (layers_[l] + 1);
    }
    offsets_.push_back(offset);
  }

  /// The widths {s₀, …, s_L}.
  [[nodiscard]] const std::vector<index>& layers() const noexcept { return layers_; }
  /// Number of weight layers L.
  [[nodiscard]] index num_layers() const noexcept {
    return static_cast<index>(offsets_.size()) - 1;
  }
  /// Number of inputs s₀.
  [[nodiscard]] index features() const noexcept { return layers_.front(); }
  /// Number of outputs s_L (the classes of a classifier; s₀ for the reconstruction loss).
  [[nodiscard]] index classes() const noexcept { return layers_.back(); }
  /// The hidden-layer activation.
  [[nodiscard]] dho2::activation hidden_activation() const noexcept { return hidden_; }
  /// The output loss.
  [[nodiscard]] mlp_loss output_loss() const noexcept { return loss_; }
  /// True for the softmax cross-entropy loss (a classifier: `predict` and `accuracy` exist).
  [[nodiscard]] bool is_classifier() const noexcept {
    return loss_ == mlp_loss::softmax_cross_entropy;
  }
  /// The weight-decay coefficient λ.
  [[nodiscard]] double l2() const noexcept { return l2_; }
  /// Number of parameters n = Σₗ sₗ(sₗ₋₁ + 1).
  [[nodiscard]] index num_parameters() const noexcept { return offsets_.back(); }
  /// The architecture as text, e.g. "mlp 784-256-10 relu softmax_cross_entropy": widths, hidden
  /// activation and output loss (the model's fingerprint, see `dho2::model_structure`).
  [[nodiscard]] std::string structure() const {
    std::string out = "mlp ";
    for (std::size_t l = 0; l < layers_.size(); ++l) {
      if (l > 0) out += '-';
      out += std::to_string(static_cast<long long>(layers_[l]));
    }
    out += hidden_ == dho2::activation::relu ? " relu " : " tanh ";
    out.append(to_string(loss_));
    return out;
  }
  /// Number of samples in a batch.
  [[nodiscard]] index batch_size(const batch_type& batch) const noexcept { return batch.size(); }

  /// Block lengths of the parameter vector: {s₁s₀, s₁, s₂s₁, s₂, …} (each Wₗ, then its bₗ).
  [[nodiscard]] std::vector<index> parameter_blocks() const {
    std::vector<index> blocks;
    blocks.reserve(2 * layers_.size());
    for (index l = 0; l < num_layers(); ++l) {
      blocks.push_back(rows(l) * cols(l));
      blocks.push_back(rows(l));
    }
    return blocks;
  }

  /// Initial parameters drawn from `seed` with `dho2::detail::xoshiro256`: biases 0; weights
  /// He-normal N(0, 2/sₗ₋₁) for ReLU, Glorot-uniform U(±√(6/(sₗ₋₁ + sₗ))) for tanh, drawn in
  /// parameter order. The same seed gives the same vector on every platform.
  [[nodiscard]] vector<S> initialize(std::uint64_t seed) const {
    detail::xoshiro256 rng(seed);
    vector<S> x = vector<S>::Zero(num_parameters());
    for (index l = 0; l < num_layers(); ++l) {
      const auto fan_in = static_cast<double>(cols(l));
      const auto fan_out = static_cast<double>(rows(l));
      const index count = rows(l) * cols(l);
      for (index i = 0; i < count; ++i) {
        const double w = hidden_ == dho2::activation::relu
                             ? rng.normal() * std::sqrt(2.0 / fan_in)
                             : (2.0 * rng.uniform() - 1.0) * std::sqrt(6.0 / (fan_in + fan_out));
        x(offsets_[static_cast<std::size_t>(l)] + i) = static_cast<S>(w);
      }
    }
    return x;
  }

  /// Writes the gradient of the loss into `g` (backpropagation) and returns the loss (see the
  /// class documentation). An empty batch contributes 0 to the mean.
  /// @throws dho2::data_error if the batch does not match the model.
  S loss_and_gradient(const_vector_ref<S> x, const batch_type& batch, vector_ref<S> g) const {
    return backpropagate(x, batch, g, nullptr);
  }

  /// `loss_and_gradient`, and in the same pass the per-layer signals of Kronecker-factored
  /// curvature (K-FAC, see `dho2::mlp_layer_signals`): for weight layer l = 0, …, L − 1 (0-based)
  /// and sample j, the layer's input aₗⱼ (column j of the batch for l = 0, else of the hidden
  /// activations) and gₗⱼ = ∂ℓⱼ/∂zₗⱼ = B·Δₗ[:, j], the gradient of sample j's own loss ℓⱼ
  /// (cross-entropy, or ½‖z_L,j − xⱼ‖²) with respect to the layer's pre-activation (no weight
  /// decay). Then
  /// ∇[Wₗ bₗ] = (1/B) Σⱼ gₗⱼ [aₗⱼ; 1]ᵀ + λ[Wₗ 0]. The loss and `g` are bit-identical to
  /// `loss_and_gradient`'s. An empty batch gives 0 × … matrices with the right row counts.
  /// @throws dho2::data_error if the batch does not match the model.
  S loss_gradient_and_signals(const_vector_ref<S> x, const batch_type& batch, vector_ref<S> g,
                              mlp_layer_signals<S>& signals) const {
    return backpropagate(x, batch, g, &signals);
  }

  /// Returns the loss. Large batches are evaluated in chunks of columns to bound memory.
  /// @throws dho2::data_error if the batch does not match the model.
  [[nodiscard]] S loss(const_vector_ref<S> x, const batch_type& batch) const {
    eigen_assert(x.size() == num_parameters());
    check_batch(batch);
    const index size = batch.size();
    double data_loss = 0.0;
    std::vector<matrix<S>> a(static_cast<std::size_t>(num_layers()));
    for (index start = 0; start < size; start += evaluation_chunk) {
      const index count = std::min(evaluation_chunk, size - start);
      const auto inputs = batch.inputs.middleCols(start, count);
      forward(x, inputs, a);
      if (is_classifier()) {
        const Eigen::VectorXi labels = batch.labels.segment(start, count);
        data_loss += detail::softmax_cross_entropy(a.back(), labels);
      } else {
        a.back() -= inputs;
        data_loss += 0.5 * a.back().template cast<double>().squaredNorm();
      }
    }
    if (size > 0) data_loss /= static_cast<double>(size);
    double decay = 0.0;
    for (index l = 0; l < num_layers(); ++l) {
      decay += static_cast<double>(weights(x, l).squaredNorm());
    }
    return static_cast<S>(data_loss + 0.5 * l2_ * decay);
  }

  /// Writes the exact Hessian-vector product H(x)·v into `hv` (Pearlmutter's R-operator; see
  /// the class documentation). Costs about twice a gradient.
  /// @throws dho2::data_error if the batch does not match the model.
  void hessian_vector_product(const_vector_ref<S> x, const batch_type& batch, const_vector_ref<S> v,
                              vector_ref<S> hv) const {
    eigen_assert(x.size() == num_parameters() && v.size() == num_parameters() &&
                 hv.size() == num_parameters());
    check_batch(batch);
    const index size = batch.size();
    const index depth = num_layers();
    if (size == 0) {
      hv.setZero();
      static_cast<void>(add_decay(x, v, hv));
      return;
    }
    const auto layers = static_cast<std::size_t>(depth);
    std::vector<matrix<S>> a(layers);   // Aₗ (hidden), then P
    std::vector<matrix<S>> ra(layers);  // R{Aₗ} (hidden), then R{Z_L}
    for (index l = 0; l < depth; ++l) {
      const auto k = static_cast<std::size_t>(l);
      const Eigen::Ref<const matrix<S>> in = input_of(l, batch.inputs, a);
      a[k].noalias() = weights(x, l) * in;
      a[k].colwise() += bias(x, l);
      ra[k].noalias() = weights(v, l) * in;
      ra[k].colwise() += bias(v, l);
      if (l > 0) ra[k].noalias() += weights(x, l) * ra[k - 1];
      if (l + 1 < depth) {
        activate(a[k]);
        apply_derivative(a[k], ra[k]);
      }
    }
    matrix<S> delta = std::move(a.back());
    matrix<S> rdelta = std::move(ra.back());
    a.pop_back();
    ra.pop_back();
    const S scale = S(1) / static_cast<S>(size);
    if (is_classifier()) {
      static_cast<void>(detail::softmax_cross_entropy(delta, batch.labels));
      detail::softmax_jvp(delta, rdelta, scale);
      detail::softmax_output_delta(delta, batch.labels, scale);
    } else {
      // Δ_L = (Z_L − X)/B, R{Δ_L} = R{Z_L}/B.
      delta -= batch.inputs;
      delta *= scale;
      rdelta *= scale;
    }
    matrix<S> back;
    matrix<S> rback;
    for (index l = depth - 1; l >= 0; --l) {
      const Eigen::Ref<const matrix<S>> in = input_of(l, batch.inputs, a);
      auto hv_w = weights(hv, l);
      hv_w.noalias() = rdelta * in.transpose();
      bias(hv, l) = rdelta.rowwise().sum();
      if (l == 0) break;
      const auto k = static_cast<std::size_t>(l - 1);
      hv_w.noalias() += delta * ra[k].transpose();
      back.noalias() = weights(x, l).transpose() * delta;
      rback.noalias() = weights(v, l).transpose() * delta;
      rback.noalias() += weights(x, l).transpose() * rdelta;
      if (hidden_ == dho2::activation::relu) {
        apply_derivative(a[k], rback);
      } else {
        // R{Δ} = (1 − A²) ⊙ U − 2 A ⊙ R{A} ⊙ T, with T = WᵀΔ (back) and U (rback).
        rback.array() = (S(1) - a[k].array().square()) * rback.array() -
                        S(2) * a[k].array() * ra[k].array() * back.array();
      }
      apply_derivative(a[k], back);
      std::swap(delta, back);
      std::swap(rdelta, rback);
    }
    static_cast<void>(add_decay(x, v, hv));
  }

  /// Predicted class (argmax of the output logits) of every column of `inputs`
  /// (features × samples), evaluated in chunks of columns.
  /// @throws dho2::invalid_options for the reconstruction loss (no classes).
  [[nodiscard]] Eigen::VectorXi predict(const_vector_ref<S> x,
                                        const Eigen::Ref<const matrix<S>>& inputs) const {
    require_classifier("predict");
    eigen_assert(x.size() == num_parameters() && inputs.rows() == features());
    Eigen::VectorXi result(inputs.cols());
    std::vector<matrix<S>> a(static_cast<std::size_t>(num_layers()));
    for (index start = 0; start < inputs.cols(); start += evaluation_chunk) {
      const index count = std::min(evaluation_chunk, inputs.cols() - start);
      forward(x, inputs.middleCols(start, count), a);
      result.segment(start, count) = detail::column_argmax(a.back());
    }
    return result;
  }

  /// Fraction of the batch whose predicted class equals its label (0 for an empty batch).
  /// @throws dho2::invalid_options for the reconstruction loss (no classes: use `loss`);
  ///   dho2::data_error if the batch does not match the model.
  [[nodiscard]] double accuracy(const_vector_ref<S> x, const batch_type& batch) const {
    require_classifier("accuracy");
    detail::check_classification_batch(batch, features(), classes(), "mlp");
    if (batch.size() == 0) return 0.0;
    const Eigen::VectorXi predicted = predict(x, batch.inputs);
    return static_cast<double>((predicted.array() == batch.labels.array()).count()) /
           static_cast<double>(batch.size());
  }

 private:
  static constexpr index evaluation_chunk = 1024;

  [[nodiscard]] index rows(index l) const { return layers_[static_cast<std::size_t>(l) + 1]; }
  [[nodiscard]] index cols(index l) const { return layers_[static_cast<std::size_t>(l)]; }
  [[nodiscard]] index offset(index l) const { return offsets_[static_cast<std::size_t>(l)]; }

  // Cross-entropy: inputs, label count and range; reconstruction: inputs only (labels ignored).
  void check_batch(const batch_type& batch) const {
    if (is_classifier()) {
      detail::check_classification_batch(batch, features(), classes(), "mlp");
    } else if (batch.inputs.rows() != features()) {
      throw data_error("mlp: batch.inputs has " + std::to_string(batch.inputs.rows()) +
                       " rows, the model expects " + std::to_string(features()) + " features");
    }
  }

  void require_classifier(const char* function) const {
    if (is_classifier()) return;
    throw invalid_options("mlp::output_loss()", to_string(loss_),
                          "mlp::" + std::string(function) +
                              " needs mlp_loss::softmax_cross_entropy (an autoencoder has no "
                              "classes; evaluate it with mlp::loss)");
  }

  [[nodiscard]] Eigen::Map<const matrix<S>> weights(const_vector_ref<S> x, index l) const {
    return Eigen::Map<const matrix<S>>(x.data() + offset(l), rows(l), cols(l));
  }
  [[nodiscard]] Eigen::Map<const vector<S>> bias(const_vector_ref<S> x, index l) const {
    return Eigen::Map<const vector<S>>(x.data() + offset(l) + rows(l) * cols(l), rows(l));
  }
  [[nodiscard]] Eigen::Map<matrix<S>> weights(vector_ref<S> x, index l) const {
    return Eigen::Map<matrix<S>>(x.data() + offset(l), rows(l), cols(l));
  }
  [[nodiscard]] Eigen::Map<vector<S>> bias(vector_ref<S> x, index l) const {
    return Eigen::Map<vector<S>>(x.data() + offset(l) + rows(l) * cols(l), rows(l));
  }

  // loss_and_gradient; with `signals`, also the K-FAC signals (loss_gradient_and_signals).
  S backpropagate(const_vector_ref<S> x, const batch_type& batch, vector_ref<S> g,
                  mlp_layer_signals<S>* signals) const {
    eigen_assert(x.size() == num_parameters() && g.size() == num_parameters());
    check_batch(batch);
    const index size = batch.size();
    const index depth = num_layers();
    if (signals != nullptr) {
      signals->inputs.resize(static_cast<std::size_t>(depth));
      signals->output_gradients.resize(static_cast<std::size_t>(depth));
    }
    double data_loss = 0.0;
    if (size > 0) {
      std::vector<matrix<S>> a(static_cast<std::size_t>(depth));
      forward(x, batch.inputs, a);
      matrix<S> delta = std::move(a.back());
      a.pop_back();
      if (is_classifier()) {
        data_loss = detail::softmax_cross_entropy(delta, batch.labels) / static_cast<double>(size);
        detail::softmax_output_delta(delta, batch.labels, S(1) / static_cast<S>(size));
      } else {
        delta -= batch.inputs;  // Z_L − X
        data_loss = 0.5 * delta.template cast<double>().squaredNorm() / static_cast<double>(size);
        delta *= S(1) / static_cast<S>(size);
      }
      matrix<S> back;
      for (index l = depth - 1; l >= 0; --l) {
        const Eigen::Ref<const matrix<S>> in = input_of(l, batch.inputs, a);
        weights(g, l).noalias() = delta * in.transpose();
        bias(g, l) = delta.rowwise().sum();
        if (signals != nullptr) {
          signals->output_gradients[static_cast<std::size_t>(l)] = delta * static_cast<S>(size);
        }
        if (l == 0) break;
        back.noalias() = weights(x, l).transpose() * delta;
        apply_derivative(a[static_cast<std::size_t>(l - 1)], back);
        std::swap(delta, back);
      }
      if (signals != nullptr) {
        signals->inputs.front() = batch.inputs;
        for (std::size_t k = 1; k < signals->inputs.size(); ++k) {
          signals->inputs[k] = std::move(a[k - 1]);
        }
      }
    } else {
      g.setZero();
      if (signals != nullptr) {
        for (index l = 0; l < depth; ++l) {
          signals->inputs[static_cast<std::size_t>(l)].resize(cols(l), 0);
          signals->output_gradients[static_cast<std::size_t>(l)].resize(rows(l), 0);
        }
      }
    }
    return static_cast<S>(data_loss + add_decay(x, x, g));
  }

  // The input of weight layer l: the batch for l = 0, else the activations of layer l − 1.
  static Eigen::Ref<const matrix<S>> input_of(index l, const Eigen::Ref<const matrix<S>>& inputs,
                                              const std::vector<matrix<S>>& a) {
    if (l == 0) return inputs;
    return a[static_cast<std::size_t>(l - 1)];
  }

  void activate(matrix<S>& z) const {
    if (hidden_ == dho2::activation::relu) {
      z = z.cwiseMax(S(0));
    } else {
      z.array() = z.array().tanh();
    }
  }

  // m ⊙= σ'(Z) expressed through A = σ(Z).
  void apply_derivative(const matrix<S>& a, matrix<S>& m) const {
    if (hidden_ == dho2::activation::relu) {
      m = (a.array() > S(0)).select(m, S(0));
    } else {
      m.array() *= S(1) - a.array().square();
    }
  }

  // a[l] = layer outputs for the columns `inputs`: hidden activations, then the linear output
  // Z_L (a.back(): logits of the classifier).
  void forward(const_vector_ref<S> x, const Eigen::Ref<const matrix<S>>& inputs,
               std::vector<matrix<S>>& a) const {
    const index depth = num_layers();
    for (index l = 0; l < depth; ++l) {
      const auto k = static_cast<std::size_t>(l);
      const Eigen::Ref<const matrix<S>> in = input_of(l, inputs, a);
      a[k].noalias() = weights(x, l) * in;
      a[k].colwise() += bias(x, l);
      if (l + 1 < depth) activate(a[k]);
    }
  }

  // out_W += λ · dir_W for every layer; returns (λ/2) Σ‖W(x)‖² (the decay term of the loss).
  double add_decay(const_vector_ref<S> x, const_vector_ref<S> dir, vector_ref<S> out) const {
    double decay = 0.0;
    for (index l = 0; l < num_layers(); ++l) {
      decay += static_cast<double>(weights(x, l).squaredNorm());
      if (l2_ != 0.0) weights(out, l) += static_cast<S>(l2_) * weights(dir, l);
    }
    return 0.5 * l2_ * decay;
  }

  std::vector<index> layers_;
  std::vector<index> offsets_;
  dho2::activation hidden_;
  double l2_;
  mlp_loss loss_;
};

}  // namespace dho2
