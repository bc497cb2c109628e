// Context of the README's LibTorch fragment (built only with dho2::torch): options with an early
// curvature estimate and one batch of random 28×28 images; the fragment builds the CNN model,
// takes a step and gets the module back.
#include <dho2/dho2.hpp>
#include <dho2/torch.hpp>

#include <iostream>

int main() {
  torch::set_num_threads(1);
  dho2::options opts;
  opts.k = 2;
  opts.warmup = 1;
  opts.lanczos_steps = 8;
  dho2::classification_batch<float> batch;
  batch.inputs = dho2::matrix<float>::Random(28 * 28, 16);
  batch.labels = Eigen::VectorXi::LinSpaced(16, 0, 15).unaryExpr([](int i) { return i % 10; });
  // README-BLOCK
  if (!x.allFinite() || opt.get_summary().iterations != 1) {
    std::cerr << "README LibTorch fragment: expected one finite step\n";
    return 1;
  }
  return trained.is_empty() ? 1 : 0;
}
