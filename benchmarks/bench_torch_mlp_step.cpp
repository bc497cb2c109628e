// One MLP training step (forward, backward, Adam update), DHO2 against LibTorch in one binary:
// 784-256-256-10 ReLU, softmax cross-entropy (mean over the batch), float, B = 32, 128, 512,
// one thread on both sides (Eigen::setNbThreads(1); torch::set_num_threads(1),
// at::set_num_interop_threads(1) and openblas_set_num_threads(1)). Built only with LibTorch
// (DHO2_WITH_TORCH, cmake/dho2Torch.cmake).
//
//   BM_dho2_mlp_step/batch:B    dho2::mlp<float> + dho2::optimizer<float> with
//                               use_curvature = false (Adam): the code path of bench_mlp_step.
//   BM_torch_mlp_step/batch:B   torch::nn::Sequential(Linear, ReLU, Linear, ReLU, Linear),
//                               torch::nn::functional::cross_entropy, loss.backward(),
//                               torch::optim::Adam (lr 1e-3, betas (0.9, 0.999), eps 1e-8).
//   BM_paired_mlp_step/batch:B  one step of each per iteration, each timed on its own; reports
//                               dho2_ms, torch_ms and dho2_over_torch (wall; < 1: DHO2 is
//                               faster), the same in the calling thread's CPU time (*_cpu_ms,
//                               dho2_over_torch_cpu), and the agreement check's figures
//                               (check_loss_rel, check_param_rel). Paired in the same iterations,
//                               the ratio is steadier on a shared machine than the ratio of two
//                               separate benchmarks.
// Both sides start from the same parameters (dho2::mlp::initialize(seed), copied into the torch
// layers) and train on the same fixed random batch (the generator of bench_mlp_step). Before
// timing, the fixture checks that the two compute the same thing: the initial losses agree to a
// relative 1e-5 and, after three Adam steps from the same point, the parameter vectors differ by
// less than 1 % of the distance they moved (a failure skips the benchmark with the figures).
//
// The GEMMs: DHO2's are Eigen's own (compiled with DHO2's flags, -march=native by default), or —
// in the twin binary bench_torch_mlp_step_blas, the same source compiled with EIGEN_USE_BLAS and
// linked with OpenBLAS, a like-with-like control only; DHO2's defaults are unchanged — the BLAS
// that LibTorch calls. LibTorch's are the BLAS Debian's libtorch links (libblas.so.3, resolved by
// update-alternatives); the context records which library provides sgemm_ to this process, the
// BLAS and LAPACK objects mapped into it, and OpenBLAS's configuration and core.
//
// "flops" as in bench_mlp_step: 2B(2P + P1) per step (the first layer's input gradient is formed
// by neither side).
#include "bench_context.hpp"
#include "peer/blas_info.hpp"
#include <dho2/dho2.hpp>
#include <dho2/models/mlp.hpp>
#include <dho2/testing/random_batch.hpp>

#include <Eigen/Core>
#include <benchmark/benchmark.h>
#include <time.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#ifndef DHO2_TORCH_PACKAGE
#define DHO2_TORCH_PACKAGE "unknown"
#endif

namespace {

using dho2::index;

constexpr std::uint64_t seed = 20240917;
const std::vector<index> layers{784, 256, 256, 10};

#ifdef EIGEN_USE_BLAS
constexpr const char* eigen_gemm = "EIGEN_USE_BLAS (BLAS sgemm_/sgemv_)";
#else
constexpr const char* eigen_gemm = "Eigen's own";
#endif

const bool context_added = [] {
  Eigen::setNbThreads(1);
  torch::set_num_threads(1);
  at::set_num_interop_threads(1);
  const int blas_threads = dho2_peer::set_openblas_threads(1);
  benchmark::AddCustomContext("git_revision", dho2_bench::git_revision());
  benchmark::AddCustomContext("model", "mlp 784-256-256-10 relu, softmax cross-entropy");
  benchmark::AddCustomContext("n", std::to_string(dho2::mlp<float>(layers).num_parameters()));
  benchmark::AddCustomContext("batch", "32,128,512");
  benchmark::AddCustomContext("optimizer", "adam lr 1e-3 betas (0.9, 0.999) eps 1e-8");
  benchmark::AddCustomContext("scalar", "float");
  benchmark::AddCustomContext("eigen_simd", Eigen::SimdInstructionSetsInUse());
  benchmark::AddCustomContext("eigen_threads", std::to_string(Eigen::nbThreads()));
  benchmark::AddCustomContext("eigen_gemm", eigen_gemm);
  benchmark::AddCustomContext("torch_version", TORCH_VERSION);
  benchmark::AddCustomContext("torch_package", DHO2_TORCH_PACKAGE);
  benchmark::AddCustomContext("torch_threads",
                              std::to_string(torch::get_num_threads()) + " intra, " +
                                  std::to_string(at::get_num_interop_threads()) + " inter-op");
  benchmark::AddCustomContext("blas_threads", std::to_string(blas_threads));
  benchmark::AddCustomContext("sgemm_provider", dho2_peer::symbol_provider("sgemm_"));
  benchmark::AddCustomContext("blas_loaded", dho2_peer::loaded_blas_string());
  benchmark::AddCustomContext("openblas", dho2_peer::openblas_config());
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

// DHO2's side: the model, its parameters and the optimizer of bench_mlp_step.
struct dho2_side {
  dho2::mlp<float> model{layers, dho2::activation::relu};
  dho2::vector<float> x;
  dho2::optimizer<float> opt;

  static dho2::options make_options() {
    dho2::options o;
    o.use_curvature = false;
    return o;
  }
  explicit dho2_side(const dho2::vector<float>& x0) : x(x0), opt(make_options()) {}

  dho2::step_status step(const dho2::classification_batch<float>& batch) {
    return opt.step(model, x, batch);
  }
  [[nodiscard]] bool all_taken() const {
    return opt.get_summary().steps == opt.get_summary().iterations;
  }
};

// LibTorch's side: the same network as nn::Sequential, the same parameters, torch's Adam.
struct torch_side {
  torch::nn::Sequential net;
  std::unique_ptr<torch::optim::Adam> opt;
  torch::Tensor inputs;
  torch::Tensor labels;

  torch_side(const dho2::vector<float>& x0, const dho2::classification_batch<float>& batch) {
    for (std::size_t l = 0; l + 1 < layers.size(); ++l) {
      net->push_back(torch::nn::Linear(layers[l], layers[l + 1]));
      if (l + 2 < layers.size()) net->push_back(torch::nn::ReLU());
    }
    {
      torch::NoGradGuard no_grad;
      index offset = 0;
      for (auto& module : net->children()) {
        auto* linear = module->as<torch::nn::Linear>();
        if (linear == nullptr) continue;
        const std::int64_t out = linear->options.out_features();
        const std::int64_t in = linear->options.in_features();
        float* w = const_cast<float*>(x0.data()) + offset;  // column-major out × in
        linear->weight.copy_(torch::from_blob(w, {in, out}, torch::kFloat).t());
        linear->bias.copy_(torch::from_blob(w + out * in, {out}, torch::kFloat));
        offset += out * (in + 1);
      }
    }
    opt = std::make_unique<torch::optim::Adam>(
        net->parameters(),
        torch::optim::AdamOptions(1e-3).betas(std::make_tuple(0.9, 0.999)).eps(1e-8));
    // The batch, as torch sees it (B × 784 row-major is DHO2's 784 × B column-major).
    inputs = torch::from_blob(const_cast<float*>(batch.inputs.data()),
                              {batch.inputs.cols(), batch.inputs.rows()}, torch::kFloat);
    labels =
        torch::from_blob(const_cast<int*>(batch.labels.data()), {batch.labels.size()}, torch::kInt)
            .to(torch::kLong);
  }

  float step() {
    opt->zero_grad();
    torch::Tensor loss = torch::nn::functional::cross_entropy(net->forward(inputs), labels);
    loss.backward();
    opt->step();
    return loss.item<float>();
  }

  // The parameters in DHO2's layout.
  [[nodiscard]] dho2::vector<float> parameters() const {
    std::vector<float> out;
    for (const auto& module : net->children()) {
      const auto* linear = module->as<torch::nn::Linear>();
      if (linear == nullptr) continue;
      const torch::Tensor w = linear->weight.detach().t().contiguous();  // in × out row-major
      const torch::Tensor b = linear->bias.detach().contiguous();
      out.insert(out.end(), w.data_ptr<float>(), w.data_ptr<float>() + w.numel());
      out.insert(out.end(), b.data_ptr<float>(), b.data_ptr<float>() + b.numel());
    }
    return Eigen::Map<const dho2::vector<float>>(out.data(), static_cast<index>(out.size()));
  }
};

// Both sides on one batch size, checked to compute the same thing.
struct fixture {
  dho2::classification_batch<float> batch;
  dho2::vector<float> x0;
  std::unique_ptr<dho2_side> ours;
  std::unique_ptr<torch_side> theirs;
  std::string error;
  double loss_difference = 0.0;       // |f_dho2 − f_torch| / |f_dho2| at x0
  double parameter_difference = 0.0;  // ‖x_dho2 − x_torch‖ / ‖x_dho2 − x0‖ after 3 steps

  explicit fixture(index batch_size) {
    const dho2::mlp<float> model(layers, dho2::activation::relu);
    batch =
        dho2::testing::random_batch<float>(model.features(), model.classes(), batch_size, seed + 1,
                                           dho2::testing::input_distribution::uniform);
    x0 = model.initialize(seed);
    // The check, on fresh copies: three steps of each from x0.
    dho2_side a(x0);
    torch_side b(x0, batch);
    const double loss_a = static_cast<double>(model.loss(x0, batch));
    const double loss_b = static_cast<double>(b.step());
    static_cast<void>(a.step(batch));
    for (int s = 0; s < 2; ++s) {
      static_cast<void>(a.step(batch));
      static_cast<void>(b.step());
    }
    const double moved = (a.x - x0).norm();
    const double apart = (a.x - b.parameters()).norm();
    loss_difference = std::abs(loss_a - loss_b) / std::abs(loss_a);
    parameter_difference = apart / moved;
    if (!(loss_difference < 1e-5 && parameter_difference < 1e-2) || !a.all_taken()) {
      error = "DHO2 and LibTorch disagree: initial loss " + std::to_string(loss_a) + " vs " +
              std::to_string(loss_b) + " (expected relative difference < 1e-5), parameters " +
              std::to_string(apart) + " apart after 3 steps that moved them " +
              std::to_string(moved) + " (expected < 1 %)";
      return;
    }
    ours = std::make_unique<dho2_side>(x0);
    theirs = std::make_unique<torch_side>(x0, batch);
  }
};

fixture& fixture_for(index batch_size) {
  static std::map<index, std::unique_ptr<fixture>> cache;
  auto& slot = cache[batch_size];
  if (!slot) slot = std::make_unique<fixture>(batch_size);
  return *slot;
}

void report(benchmark::State& state, index batch_size) {
  const auto steps = static_cast<double>(state.iterations());
  state.counters["flops"] =
      benchmark::Counter(gemm_flops(batch_size) * steps, benchmark::Counter::kIsRate);
  state.SetItemsProcessed(state.iterations() * batch_size);
}

void BM_dho2_mlp_step(benchmark::State& state) {
  const index batch_size = state.range(0);
  fixture& f = fixture_for(batch_size);
  if (!f.error.empty()) {
    state.SkipWithError(f.error.c_str());
    return;
  }
  for (auto _ : state) {
    benchmark::DoNotOptimize(f.ours->step(f.batch));
    benchmark::DoNotOptimize(f.ours->x.data());
    benchmark::ClobberMemory();
  }
  if (!f.ours->all_taken()) {
    state.SkipWithError("a step was skipped (non-finite loss or gradient)");
    return;
  }
  report(state, batch_size);
}

void BM_torch_mlp_step(benchmark::State& state) {
  const index batch_size = state.range(0);
  fixture& f = fixture_for(batch_size);
  if (!f.error.empty()) {
    state.SkipWithError(f.error.c_str());
    return;
  }
  for (auto _ : state) {
    benchmark::DoNotOptimize(f.theirs->step());
    benchmark::ClobberMemory();
  }
  report(state, batch_size);
}

// CPU seconds of the calling thread (both sides compute on it alone at one thread).
double thread_cpu_seconds() {
  timespec ts{};
  if (::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) return 0.0;
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

void BM_paired_mlp_step(benchmark::State& state) {
  using clock = std::chrono::steady_clock;
  const index batch_size = state.range(0);
  fixture& f = fixture_for(batch_size);
  if (!f.error.empty()) {
    state.SkipWithError(f.error.c_str());
    return;
  }
  double ours = 0.0;
  double theirs = 0.0;
  double ours_cpu = 0.0;
  double theirs_cpu = 0.0;
  for (auto _ : state) {
    const auto t0 = clock::now();
    const double c0 = thread_cpu_seconds();
    benchmark::DoNotOptimize(f.ours->step(f.batch));
    benchmark::ClobberMemory();
    const auto t1 = clock::now();
    const double c1 = thread_cpu_seconds();
    benchmark::DoNotOptimize(f.theirs->step());
    benchmark::ClobberMemory();
    const auto t2 = clock::now();
    const double c2 = thread_cpu_seconds();
    ours += std::chrono::duration<double>(t1 - t0).count();
    theirs += std::chrono::duration<double>(t2 - t1).count();
    ours_cpu += c1 - c0;
    theirs_cpu += c2 - c1;
  }
  const auto steps = static_cast<double>(state.iterations());
  state.counters["dho2_ms"] = 1e3 * ours / steps;
  state.counters["torch_ms"] = 1e3 * theirs / steps;
  state.counters["dho2_over_torch"] = ours / theirs;
  state.counters["dho2_cpu_ms"] = 1e3 * ours_cpu / steps;
  state.counters["torch_cpu_ms"] = 1e3 * theirs_cpu / steps;
  state.counters["dho2_over_torch_cpu"] = ours_cpu / theirs_cpu;
  state.counters["check_loss_rel"] = f.loss_difference;
  state.counters["check_param_rel"] = f.parameter_difference;
}

BENCHMARK(BM_dho2_mlp_step)
    ->ArgName("batch")
    ->Arg(32)
    ->Arg(128)
    ->Arg(512)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_torch_mlp_step)
    ->ArgName("batch")
    ->Arg(32)
    ->Arg(128)
    ->Arg(512)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_paired_mlp_step)
    ->ArgName("batch")
    ->Arg(32)
    ->Arg(128)
    ->Arg(512)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
