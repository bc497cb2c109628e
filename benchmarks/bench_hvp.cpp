// Gradient vs Hessian-vector product of dho2::mlp<float> 784-256-256-10 (ReLU, cross-entropy) at
// batch 128, and of the autoencoder 784-256-64-256-784 (ReLU, squared reconstruction error).
//
//   BM_gradient               mlp::loss_and_gradient
//   BM_hvp_exact              mlp::hessian_vector_product (Pearlmutter's R-operator)
//   BM_hvp_finite_difference  dho2::finite_difference_hvp (two gradients + vector work)
//   BM_autoencoder_gradient   the same two for the autoencoder
//   BM_autoencoder_hvp_exact
//
// The target "exact HVP <= 3x gradient" is read off the reported times (ratio of the
// medians of BM_hvp_exact and BM_gradient, or of the autoencoder pair); nothing here asserts
// timings.
//
// GEMM flop count ("flops" counter, a rate: FLOP/s; one multiply-add = 2 flops). With batch B,
// layers l = 1..L of shape s_l x s_{l-1}, P = sum_l s_l s_{l-1} (all layers) and
// P1 = sum_{l>=2} s_l s_{l-1} (every layer but the first), read from models/mlp.hpp:
//   gradient:  forward W_l A_{l-1}                         2BP
//              weight gradients Delta_l A_{l-1}^T          2BP
//              input gradients W_l^T Delta_l (l >= 2 only) 2B P1
//              total 2B(2P + P1)
//   exact HVP: forward W_l A_{l-1}, V_l A_{l-1}            4BP
//              R-forward W_l R{A_{l-1}} (l >= 2)            2B P1
//              R{Delta_l} A_{l-1}^T                        2BP
//              Delta_l R{A_{l-1}}^T (l >= 2)               2B P1
//              W_l^T Delta_l, V_l^T Delta_l, W_l^T R{Delta_l} (l >= 2)   6B P1
//              total 2B(3P + 5 P1)
//   FD HVP:    two gradients                               4B(2P + P1)
// For 784-256-256-10: P = 268,800, P1 = 68,096; at B = 128 a gradient is 155.1 MFLOP, an exact
// HVP 293.6 MFLOP (1.89x), a finite-difference HVP 310.1 MFLOP. Element-wise work (bias, ReLU
// masks, softmax, the O(n) vector work) is not counted. For 784-256-64-256-784: P = 434,176,
// P1 = 233,472; a gradient is 282.1 MFLOP, an exact HVP 632.3 MFLOP (2.24x).
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
constexpr index batch_size = 128;
const std::vector<index> layers{784, 256, 256, 10};
const std::vector<index> autoencoder_layers{784, 256, 64, 256, 784};

std::string layer_spec(const std::vector<index>& widths) {
  std::string spec;
  for (const index w : widths) {
    if (!spec.empty()) spec += '-';
    spec += std::to_string(w);
  }
  return spec;
}

// Context recorded once per executable (benchmark_main owns main()).
const bool context_added = [] {
  benchmark::AddCustomContext("git_revision", dho2_bench::git_revision());
  benchmark::AddCustomContext("model", "mlp " + layer_spec(layers) + " relu");
  benchmark::AddCustomContext("n", std::to_string(dho2::mlp<float>(layers).num_parameters()));
  benchmark::AddCustomContext("autoencoder", "mlp " + layer_spec(autoencoder_layers) +
                                                 " relu, squared reconstruction error");
  benchmark::AddCustomContext(
      "autoencoder_n", std::to_string(dho2::mlp<float>(autoencoder_layers).num_parameters()));
  benchmark::AddCustomContext("batch", std::to_string(batch_size));
  benchmark::AddCustomContext("scalar", "float");
  benchmark::AddCustomContext("eigen_simd", Eigen::SimdInstructionSetsInUse());
  benchmark::AddCustomContext("eigen_threads", std::to_string(Eigen::nbThreads()));
  return true;
}();

// 2 * sum of in*out over all layers (first == 0) or every layer but the first (first == 1).
double gemm_sum(const std::vector<index>& widths, std::size_t first) {
  double total = 0.0;
  for (std::size_t l = first + 1; l < widths.size(); ++l) {
    total += static_cast<double>(widths[l] * widths[l - 1]);
  }
  return total;
}

double gradient_flops(index batch, const std::vector<index>& widths = layers) {
  return 2.0 * static_cast<double>(batch) * (2.0 * gemm_sum(widths, 0) + gemm_sum(widths, 1));
}

double exact_hvp_flops(index batch, const std::vector<index>& widths = layers) {
  return 2.0 * static_cast<double>(batch) * (3.0 * gemm_sum(widths, 0) + 5.0 * gemm_sum(widths, 1));
}

dho2::vector<float> random_direction(index n) {
  dho2::detail::xoshiro256 rng(seed + 2);
  dho2::vector<float> v(n);
  for (index i = 0; i < n; ++i) v(i) = static_cast<float>(rng.normal());
  return v;
}

struct problem {
  dho2::mlp<float> model{layers, dho2::activation::relu};
  dho2::vector<float> x = model.initialize(seed);
  dho2::classification_batch<float> batch = dho2::testing::random_batch<float>(
      model.features(), model.is_classifier() ? model.classes() : 10, batch_size, seed + 1,
      dho2::testing::input_distribution::uniform);
  dho2::vector<float> v = random_direction(model.num_parameters());
  dho2::vector<float> out = dho2::vector<float>::Zero(model.num_parameters());
};

void report(benchmark::State& state, double flops_per_call) {
  const auto calls = static_cast<double>(state.iterations());
  state.counters["flops"] = benchmark::Counter(flops_per_call * calls, benchmark::Counter::kIsRate);
  state.counters["mflop_per_call"] = flops_per_call / 1e6;
  state.SetItemsProcessed(state.iterations() * batch_size);  // samples
}

void BM_gradient(benchmark::State& state) {
  problem p;
  for (auto _ : state) {
    float loss = p.model.loss_and_gradient(p.x, p.batch, p.out);
    benchmark::DoNotOptimize(loss);
    benchmark::DoNotOptimize(p.out.data());
    benchmark::ClobberMemory();
  }
  report(state, gradient_flops(batch_size));
}
BENCHMARK(BM_gradient)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_hvp_exact(benchmark::State& state) {
  problem p;
  for (auto _ : state) {
    p.model.hessian_vector_product(p.x, p.batch, p.v, p.out);
    benchmark::DoNotOptimize(p.out.data());
    benchmark::ClobberMemory();
  }
  report(state, exact_hvp_flops(batch_size));
}
BENCHMARK(BM_hvp_exact)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_hvp_finite_difference(benchmark::State& state) {
  problem p;
  for (auto _ : state) {
    dho2::finite_difference_hvp(p.model, p.x, p.batch, p.v, p.out);
    benchmark::DoNotOptimize(p.out.data());
    benchmark::ClobberMemory();
  }
  report(state, 2.0 * gradient_flops(batch_size));
}
BENCHMARK(BM_hvp_finite_difference)->Unit(benchmark::kMillisecond)->UseRealTime();

// The autoencoder (its batch's labels are drawn but unused).
struct autoencoder_problem : problem {
  autoencoder_problem() {
    model = dho2::mlp<float>(autoencoder_layers, dho2::activation::relu, 0.0,
                             dho2::mlp_loss::squared_error_reconstruction);
    x = model.initialize(seed);
    batch = dho2::testing::random_batch<float>(model.features(), 10, batch_size, seed + 1,
                                               dho2::testing::input_distribution::uniform);
    v = random_direction(model.num_parameters());
    out = dho2::vector<float>::Zero(model.num_parameters());
  }
};

void BM_autoencoder_gradient(benchmark::State& state) {
  autoencoder_problem p;
  for (auto _ : state) {
    float loss = p.model.loss_and_gradient(p.x, p.batch, p.out);
    benchmark::DoNotOptimize(loss);
    benchmark::DoNotOptimize(p.out.data());
    benchmark::ClobberMemory();
  }
  report(state, gradient_flops(batch_size, autoencoder_layers));
}
BENCHMARK(BM_autoencoder_gradient)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_autoencoder_hvp_exact(benchmark::State& state) {
  autoencoder_problem p;
  for (auto _ : state) {
    p.model.hessian_vector_product(p.x, p.batch, p.v, p.out);
    benchmark::DoNotOptimize(p.out.data());
    benchmark::ClobberMemory();
  }
  report(state, exact_hvp_flops(batch_size, autoencoder_layers));
}
BENCHMARK(BM_autoencoder_hvp_exact)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
