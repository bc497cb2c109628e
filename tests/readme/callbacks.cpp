// Context of the README's callback fragment: a small synthetic classification problem, an MLP
// and an optimizer; the fragment trains it for 3 epochs with every callback it names.
#include <dho2/dho2.hpp>

#include <iostream>

int main() {
  const auto data = dho2::make_teacher_classification<float>(1024, 256, 8, 3, /*seed=*/7);
  const dho2::mlp<float> model({8, 16, 3});
  dho2::vector<float> x = model.initialize(/*seed=*/1);
  dho2::options opts;
  opts.warmup = 4;
  opts.refresh_every = 8;
  dho2::optimizer<float> opt(opts);
  // README-BLOCK
  const dho2::summary& s = opt.get_summary();
  if (s.iterations == 0) {
    std::cerr << "README callback fragment: expected training steps, got none\n";
    return 1;
  }
  return 0;
}
