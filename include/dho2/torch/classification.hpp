/// @file
/// `dho2::classification_batch` as LibTorch tensors, and the loss and accuracy of a classifier
/// module on such batches: `torch_inputs` (a zero-copy view of the samples), `torch_labels`,
/// `torch_cross_entropy` (a loss for `dho2::torch_module_model`), `torch_accuracy` and
/// `torch_chunked_loss` (a mean loss over a large data set). Part of the optional component
/// `dho2::torch`.
#pragma once

#include <dho2/core/errors.hpp>
#include <dho2/core/types.hpp>
#include <dho2/data/classification_batch.hpp>
#include <dho2/torch/module_model.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace dho2 {

/// The samples of `batch` as a tensor of shape [B, sample_shape...] that views `batch.inputs`
/// (no copy: sample j is column j, contiguous), e.g. `sample_shape = {1, 28, 28}` for images.
/// The tensor must not outlive the batch, and must not be written.
/// @throws dho2::invalid_options unless the product of `sample_shape` is the number of features
///   (rows of `batch.inputs`).
template <model_scalar S>
[[nodiscard]] torch::Tensor torch_inputs(const classification_batch<S>& batch,
                                         const std::vector<std::int64_t>& sample_shape) {
  std::int64_t features = 1;
  for (const std::int64_t d : sample_shape) features *= d;
  if (features != static_cast<std::int64_t>(batch.inputs.rows())) {
    throw invalid_options(
        "sample_shape", std::to_string(static_cast<long long>(features)) + " values per sample",
        "== batch.inputs.rows() = " + std::to_string(static_cast<long long>(batch.inputs.rows())));
  }
  std::vector<std::int64_t> sizes;
  sizes.reserve(sample_shape.size() + 1);
  sizes.push_back(static_cast<std::int64_t>(batch.inputs.cols()));
  sizes.insert(sizes.end(), sample_shape.begin(), sample_shape.end());
  return torch::from_blob(const_cast<S*>(batch.inputs.data()), sizes, torch_scalar_type<S>);
}

/// The labels of `batch` as a tensor of B 64-bit integers (the class indices LibTorch's
/// cross-entropy expects; a copy).
template <model_scalar S>
[[nodiscard]] torch::Tensor torch_labels(const classification_batch<S>& batch) {
  const auto size = static_cast<std::int64_t>(batch.labels.size());
  return torch::from_blob(const_cast<int*>(batch.labels.data()), {size}, torch::kInt32)
      .to(torch::kInt64);
}

/// The loss of a classifier module for `dho2::torch_module_model`: the mean softmax
/// cross-entropy of `module->forward(torch_inputs(batch, sample_shape))` (logits, B × classes)
/// against the labels.
struct torch_cross_entropy {
  /// The shape of one sample as the module expects it, e.g. {1, 28, 28} (channels, height,
  /// width) or {784}.
  std::vector<std::int64_t> sample_shape;

  /// The mean cross-entropy of the module's logits on `batch`.
  template <class Module, model_scalar S>
  torch::Tensor operator()(Module& module, const classification_batch<S>& batch) const {
    const torch::Tensor logits = module->forward(torch_inputs(batch, sample_shape));
    return torch::nn::functional::cross_entropy(logits, torch_labels(batch));
  }
};

/// Fraction of the samples of `data` whose largest logit of `module->forward` is at their label
/// (0 for no samples), evaluated in chunks of `chunk` samples under `torch::NoGradGuard`. The
/// default, 128, keeps a CNN's activations small: with LibTorch 1.13 on a CPU, LeNet forward
/// passes over chunks of 500–1000 images cost 3–5× more per image than chunks of 32–256.
template <class Module, model_scalar S>
[[nodiscard]] double torch_accuracy(Module& module, const classification_batch<S>& data,
                                    const std::vector<std::int64_t>& sample_shape,
                                    index chunk = 128) {
  torch::NoGradGuard no_grad;
  const torch::Tensor inputs = torch_inputs(data, sample_shape);
  const torch::Tensor labels = torch_labels(data);
  const auto size = static_cast<std::int64_t>(data.size());
  std::int64_t correct = 0;
  for (std::int64_t start = 0; start < size; start += static_cast<std::int64_t>(chunk)) {
    const std::int64_t count = std::min(static_cast<std::int64_t>(chunk), size - start);
    const torch::Tensor predicted = module->forward(inputs.narrow(0, start, count)).argmax(1);
    correct += predicted.eq(labels.narrow(0, start, count)).sum().template item<std::int64_t>();
  }
  return size == 0 ? 0.0 : static_cast<double>(correct) / static_cast<double>(size);
}

/// The mean of `model.loss(x, ·)` over the samples of `data` (0 for no samples), evaluated in
/// chunks of `chunk` samples (each copied once) and weighted by their sizes, for data sets whose
/// activations would not fit at once (a test set through a CNN); the default 128 as for
/// `torch_accuracy`. `Model` is a `dho2::torch_module_model` on classification batches, or any
/// model with that `loss`.
template <class Model>
[[nodiscard]] double torch_chunked_loss(
    const Model& model, const_vector_ref<typename Model::scalar_type> x,
    const classification_batch<typename Model::scalar_type>& data, index chunk = 128) {
  if (data.size() <= chunk) {
    return data.size() == 0 ? 0.0 : static_cast<double>(model.loss(x, data));
  }
  double total = 0.0;
  classification_batch<typename Model::scalar_type> part;
  for (index start = 0; start < data.size(); start += chunk) {
    const index count = std::min(chunk, data.size() - start);
    part.inputs = data.inputs.middleCols(start, count);
    part.labels = data.labels.segment(start, count);
    total += static_cast<double>(model.loss(x, part)) * static_cast<double>(count);
  }
  return total / static_cast<double>(data.size());
}

}  // namespace dho2
