// dho2_train: --model cnn (only when built with LibTorch, DHO2_TRAIN_WITH_TORCH). The network is
// dho2::torch_lenet — conv 5×5 ×16 → max-pool 2 → conv 5×5 ×32 → max-pool 2 → fc 64 → fc classes,
// ReLU, 46,730 parameters for 10 classes — with softmax cross-entropy, made a dho2::hvp_model by
// dho2::torch_module_model (gradients by autograd, exact Hessian-vector products by double
// backward). Every optimizer of dho2_train runs it except K-FAC, which preconditions dho2::mlp's
// dense layers only (refused in parse_model with that reason).
#include "cnn.hpp"

#include "train.hpp"
#include <dho2/torch.hpp>

#include <torch/torch.h>

#include <cstdint>
#include <mutex>
#include <string>

namespace dho2_train {
namespace {

/// The image shape the CNN takes: one channel of 28 × 28 (a sample's 784 features, row-major).
const std::vector<std::int64_t>& image_shape() {
  static const std::vector<std::int64_t> shape{1, 28, 28};
  return shape;
}

using lenet_model = dho2::torch_module_model<scalar, dho2::torch_lenet, dho2::torch_cross_entropy>;

/// The CNN as the runner uses a classifier: the hvp_model of dho2::torch_module_model, plus a
/// seeded initial point, test accuracy, and a loss that evaluates large batches (a test set) in
/// chunks of 128 samples (one forward pass over 10,000 images would hold about a gigabyte of
/// activations, and with LibTorch 1.13 on a CPU chunks of 1,000 cost 5× more per image than chunks
/// of 128). Const members are safe to call concurrently, as the adapter's are.
class cnn_model : public lenet_model {
 public:
  explicit cnn_model(long long classes)
      : lenet_model(dho2::torch_lenet(classes, torch_dtype()),
                    dho2::torch_cross_entropy{image_shape()}, {.name = "lenet"}),
        classes_(classes) {}

  /// LibTorch's default initialisation of a fresh network after `torch::manual_seed(seed)`: the
  /// same parameters on every rank (the global generator is seeded and read under one lock, so
  /// ranks that are threads of one process do not interleave).
  [[nodiscard]] dho2::vector<scalar> initialize(std::uint64_t seed) const {
    static std::mutex generator;
    const std::lock_guard<std::mutex> lock(generator);
    torch::manual_seed(seed);
    return read_parameters(dho2::torch_lenet(classes_, torch_dtype()));
  }

  /// Fraction of `data` classified correctly with parameters `x`.
  [[nodiscard]] double accuracy(dho2::const_vector_ref<scalar> x,
                                const dho2::classification_batch<scalar>& data) const {
    dho2::torch_lenet module = make_module(x);
    module->eval();
    return dho2::torch_accuracy(module, data, image_shape());
  }

  /// The mean loss over `batch`, in chunks of 128 samples (`dho2::torch_chunked_loss`).
  [[nodiscard]] scalar loss(dho2::const_vector_ref<scalar> x,
                            const dho2::classification_batch<scalar>& batch) const {
    return static_cast<scalar>(
        dho2::torch_chunked_loss(static_cast<const lenet_model&>(*this), x, batch));
  }

 private:
  static torch::Dtype torch_dtype() { return dho2::torch_scalar_type<scalar>; }

  long long classes_;
};

}  // namespace

int train_cnn(const train_config& c, const model_choice& choice, const std::string& transport) {
  // LibTorch's intra-op threads per rank, as --threads sets Eigen's for the other models.
  torch::set_num_threads(static_cast<int>(c.threads));
  const cnn_model model(choice.classes);
  return train(c, model, choice, transport);
}

}  // namespace dho2_train
