/// @file
/// The optional LibTorch component (CMake target `dho2::torch`, built when LibTorch is found, see
/// `DHO2_WITH_TORCH`): `dho2::torch_module_model` (any torch::nn::Module and loss as a
/// `dho2::hvp_model`, with the exact Hessian-vector product by double backward),
/// `dho2::torch_cross_entropy` and the batch conversions of `dho2/torch/classification.hpp`, and
/// the LeNet-style CNN `dho2::torch_lenet`.
#pragma once

#include <dho2/torch/classification.hpp>
#include <dho2/torch/lenet.hpp>
#include <dho2/torch/module_model.hpp>
