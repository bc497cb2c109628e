// One training step of dho2::mlp<float> 784-256-256-10 (ReLU) through dho2::optimizer<float>
// with use_curvature = false (Adam): loss_and_gradient (forward + backward), Adam step and
// x += delta, on a fixed random batch of B = 32, 128 and 512 samples.
//
// "flops" (a rate, FLOP/s) counts the GEMM flops of forward + backward as models/mlp.hpp does
// them (one multiply-add = 2 flops), with P = sum_l s_l s_{l-1} = 268,800 and
// P1 = sum_{l>=2} s_l s_{l-1} = 68,096 (the first layer's input gradient is never formed):
//   forward 2BP + weight gradients 2BP + input gradients 2B P1 = 2B (2P + P1)
// i.e. 155.1 MFLOP at B = 128. (The rule of thumb 6 B P = 206.4 MFLOP at B = 128 overcounts by
// the first layer's skipped input gradient.) The Adam step (about 60n bytes, n = 269,322; see
// bench_fosi_step.cpp) and the element-wise work are not counted in "flops" but are timed.
// items_per_second is samples per second.
#include "bench_context.hpp"
#include <dho2/dho2.hpp>
#include <dho2/models/mlp.hpp>
#include <dho2/testing/random_batch.hpp>

#include <Eigen/Core>
#include <benchmark/benchmark.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace {

using dho2::index;

constexpr std::uint64_t seed = 20240917;
const std::vector<index> layers{784, 256, 256, 10};

const bool context_added = [] {
  benchmark::AddCustomContext("git_revision", dho2_bench::git_revision());
  benchmark::AddCustomContext("model", "mlp 784-256-256-10 relu");
  benchmark::AddCustomContext("n", std::to_string(dho2::mlp<float>(layers).num_parameters()));
  benchmark::AddCustomContext("batch", "32,128,512");
  benchmark::AddCustomContext("optimizer", "dho2::optimizer<float>, adam, use_curvature=false");
  benchmark::AddCustomContext("scalar", "float");
  benchmark::AddCustomContext("eigen_simd", Eigen::SimdInstructionSetsInUse());
  benchmark::AddCustomContext("eigen_threads", std::to_string(Eigen::nbThreads()));
  return true;
}();

double gemm_flops(index batch) {
  double all = 0.0;
  double after_first = 0.0;
  for (std::size_t l = 1; l < layers.size(); ++l) {
    const auto p = static_cast<double>(layers[l] * layers[l - 1]);
    all += p;
    if (l >= 2) after_first += p;
  }
  return 2.0 * static_cast<double>(batch) * (2.0 * all + after_first);
}

void BM_mlp_step(benchmark::State& state) {
  const index batch_size = state.range(0);
  const dho2::mlp<float> model(layers, dho2::activation::relu);
  dho2::vector<float> x = model.initialize(seed);
  const dho2::classification_batch<float> batch =
      dho2::testing::random_batch<float>(model.features(), model.classes(), batch_size, seed + 1,
                                         dho2::testing::input_distribution::uniform);
  dho2::options opts;
  opts.use_curvature = false;
  dho2::optimizer<float> opt(opts);
  for (auto _ : state) {
    auto status = opt.step(model, x, batch);
    benchmark::DoNotOptimize(status);
    benchmark::DoNotOptimize(x.data());
    benchmark::ClobberMemory();
  }
  if (opt.get_summary().steps != opt.get_summary().iterations) {
    state.SkipWithError("a step was skipped (non-finite loss or gradient)");
    return;
  }
  const auto steps = static_cast<double>(state.iterations());
  state.counters["flops"] =
      benchmark::Counter(gemm_flops(batch_size) * steps, benchmark::Counter::kIsRate);
  state.counters["mflop_per_step"] = gemm_flops(batch_size) / 1e6;
  state.SetItemsProcessed(state.iterations() * batch_size);
}
BENCHMARK(BM_mlp_step)
    ->ArgName("batch")
    ->Arg(32)
    ->Arg(128)
    ->Arg(512)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
