// dho2_train: --model cnn, the LeNet-style CNN of dho2::torch_lenet trained through LibTorch. It
// lives in its own translation unit (cnn.cpp), compiled only when dho2_train is built with the
// optional component dho2::torch (DHO2_TRAIN_WITH_TORCH); without it, --model cnn is refused with
// a message saying how to get it.
#pragma once

#include "config.hpp"
#include "runner.hpp"

#include <string>

namespace dho2_train {

/// Whether this dho2_train was built with LibTorch (--model cnn).
#if defined(DHO2_TRAIN_WITH_TORCH) && DHO2_TRAIN_WITH_TORCH
inline constexpr bool has_cnn = true;
#else
inline constexpr bool has_cnn = false;
#endif

/// Trains the CNN (`choice.kind == model_kind::cnn`) over `transport`, as `train` does the other
/// models. Defined in cnn.cpp; only with DHO2_TRAIN_WITH_TORCH.
int train_cnn(const train_config& c, const model_choice& choice, const std::string& transport);

}  // namespace dho2_train
