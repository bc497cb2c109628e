/// @file
/// `dho2::torch_lenet`: a LeNet-style convolutional network for 28 × 28 single-channel images
/// (Fashion-MNIST, MNIST) as a LibTorch module, ready for `dho2::torch_module_model` with
/// `dho2::torch_cross_entropy{{1, 28, 28}}`. Part of the optional component `dho2::torch`.
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace dho2 {

/// The layers of `dho2::torch_lenet`: for inputs B × 1 × 28 × 28,
///
///     conv1  5 × 5, 1 → 16 channels, ReLU, 2 × 2 max-pool   → B × 16 × 12 × 12
///     conv2  5 × 5, 16 → 32 channels, ReLU, 2 × 2 max-pool  → B × 32 × 4 × 4
///     fc1    512 → 64, ReLU
///     fc2    64 → classes (logits; softmax cross-entropy is the loss's job)
///
/// 46,730 parameters for 10 classes, in the order conv1.weight, conv1.bias, conv2.weight,
/// conv2.bias, fc1.weight, fc1.bias, fc2.weight, fc2.bias; LibTorch's default initialisation
/// (seed it with `torch::manual_seed`). Cloneable, so `torch_module_model` can clone it.
class torch_lenet_impl : public torch::nn::Cloneable<torch_lenet_impl> {
 public:
  /// A network with `classes` outputs whose parameters have the scalar type `dtype`
  /// (`torch::kFloat32` or `torch::kFloat64`).
  explicit torch_lenet_impl(std::int64_t classes = 10, torch::Dtype dtype = torch::kFloat32)
      : classes_(classes), dtype_(dtype) {
    reset();
  }

  /// (Re)creates the layers (called by the constructor and by `clone()`).
  void reset() override {
    conv1 = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 16, 5)));
    conv2 = register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(16, 32, 5)));
    fc1 = register_module("fc1", torch::nn::Linear(32 * 4 * 4, 64));
    fc2 = register_module("fc2", torch::nn::Linear(64, classes_));
    to(dtype_);
  }

  /// Logits (B × classes) of images `x` (B × 1 × 28 × 28).
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor h = torch::max_pool2d(torch::relu(conv1->forward(x)), 2);
    h = torch::max_pool2d(torch::relu(conv2->forward(h)), 2);
    h = torch::relu(fc1->forward(h.flatten(1)));
    return fc2->forward(h);
  }

  /// First convolution (1 → 16 channels, 5 × 5).
  torch::nn::Conv2d conv1{nullptr};
  /// Second convolution (16 → 32 channels, 5 × 5).
  torch::nn::Conv2d conv2{nullptr};
  /// Hidden fully connected layer (512 → 64).
  torch::nn::Linear fc1{nullptr};
  /// Output layer (64 → classes).
  torch::nn::Linear fc2{nullptr};

 private:
  std::int64_t classes_;
  torch::Dtype dtype_;
};

/// The module holder of `dho2::torch_lenet_impl` (what `TORCH_MODULE` would declare):
/// `dho2::torch_lenet net(10, torch::kFloat64); net->forward(images)`.
class torch_lenet : public torch::nn::ModuleHolder<torch_lenet_impl> {
 public:
  using torch::nn::ModuleHolder<torch_lenet_impl>::ModuleHolder;
  /// The implementation type.
  using Impl = torch_lenet_impl;
};

}  // namespace dho2
