// The CNN's gradient against its exact Hessian-vector product, through dho2::torch_module_model:
// what a curvature estimate costs on a LibTorch model relative to a training step's gradient,
// and what the adapter's flat-vector copies add. Built only with LibTorch (DHO2_WITH_TORCH,
// cmake/dho2Torch.cmake).
//
// The model is dho2::torch_lenet (conv 5×5 ×16 → pool → conv 5×5 ×32 → pool → fc 64 → fc 10, ReLU;
// 46,730 parameters) with softmax cross-entropy, in float, on a fixed batch of B synthetic 28×28
// images (dho2::make_teacher_classification, pixels uniform in (0, 1)), B = 32 and 128, one
// LibTorch thread (torch::set_num_threads(1), at::set_num_interop_threads(1)).
//
//   BM_cnn_gradient/batch:B   model.loss_and_gradient(x, batch, g): forward, backward by autograd,
//                             and the adapter's copies (x into the flat parameter tensor, the
//                             gradient out into g).
//   BM_cnn_hvp/batch:B        model.hessian_vector_product(x, batch, v, hv): the exact product by
//                             double backward (the gradient with create_graph, then the gradient of
//                             its inner product with v), with the copies of x and v in and H·v out.
//   BM_flat_copy/n:N          one copy of the N = 46,730 floats between an Eigen vector and a flat
//                             tensor, as the adapter makes them (2 per gradient, 3 per product).
//   BM_paired_cnn/batch:B     per iteration one gradient and one product, each timed on its own:
//                             gradient_ms, hvp_ms and hvp_over_gradient (the target is <= 4), and
//                             copies_over_gradient, the measured time of the gradient's two flat
//                             copies over the gradient's time (the target is <= 1 %). Paired in the
//                             same iterations, the ratio is steadier on a shared machine than the
//                             ratio of two separate benchmarks.
// The fixture checks the float product before timing against the double one at the same
// parameters, direction and batch (relative error < 1e-4; the double product's exactness is
// dho2_torch_tests' business: finite differences and an explicit Hessian). Finite differences of
// gradients are no check here: at B = 32 a step of any useful size moves some of the ~10⁵ ReLU
// and max-pool switches, each a jump in the gradient, and the difference quotient never settles
// (measured: relative error ≈ 1 for steps 1e-1 … 1e-4, in double too). A failed check skips the
// benchmark with the figure, and the CTest smoke run fails on "ERROR OCCURRED".
#include "bench_context.hpp"
#include <dho2/data/synthetic.hpp>
#include <dho2/dho2.hpp>
#include <dho2/torch.hpp>

#include <Eigen/Core>
#include <benchmark/benchmark.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#ifndef DHO2_TORCH_PACKAGE
#define DHO2_TORCH_PACKAGE "unknown"
#endif

namespace {

using dho2::index;
using cnn_model = dho2::torch_module_model<float, dho2::torch_lenet, dho2::torch_cross_entropy>;

constexpr std::uint64_t seed = 20261208;

const bool context_added = [] {
  Eigen::setNbThreads(1);
  torch::set_num_threads(1);
  at::set_num_interop_threads(1);
  benchmark::AddCustomContext("git_revision", dho2_bench::git_revision());
  benchmark::AddCustomContext(
      "model", "dho2::torch_lenet: conv5x5x16-pool-conv5x5x32-pool-fc64-fc10 relu, cross-entropy");
  benchmark::AddCustomContext("scalar", "float");
  benchmark::AddCustomContext("torch_version", TORCH_VERSION);
  benchmark::AddCustomContext("torch_package", DHO2_TORCH_PACKAGE);
  benchmark::AddCustomContext("torch_threads",
                              std::to_string(torch::get_num_threads()) + " intra, " +
                                  std::to_string(at::get_num_interop_threads()) + " inter-op");
  return true;
}();

// The model, a point, a direction and a batch of B images.
struct fixture {
  cnn_model model{dho2::torch_lenet(10, torch::kFloat32),
                  dho2::torch_cross_entropy{{1, 28, 28}},
                  {.name = "lenet"}};
  dho2::vector<float> x;
  dho2::vector<float> v;
  dho2::classification_batch<float> batch;
  std::string check_failure;  // empty when the product passed the finite-difference check
  double check_relative = 0.0;

  explicit fixture(index b) {
    x = model.initial_point();  // LibTorch's default initialisation (its default seed)
    v = dho2::vector<float>::Random(model.num_parameters());
    v /= v.norm();
    const auto sets = dho2::make_teacher_classification<float>(
        b, 1, 784, 10, seed, {.inputs = dho2::input_distribution::unit_uniform});
    batch.inputs = sets.train.inputs;
    batch.labels = sets.train.labels;
    check();
  }

  // The float H·v against the double one.
  void check() {
    const index n = model.num_parameters();
    dho2::vector<float> hv(n);
    model.hessian_vector_product(x, batch, v, hv);
    using double_model =
        dho2::torch_module_model<double, dho2::torch_lenet, dho2::torch_cross_entropy>;
    const double_model reference(dho2::torch_lenet(10, torch::kFloat64),
                                 dho2::torch_cross_entropy{{1, 28, 28}}, {.name = "lenet"});
    const dho2::classification_batch<double> batch64{batch.inputs.cast<double>(), batch.labels};
    dho2::vector<double> hv64(n);
    reference.hessian_vector_product(x.cast<double>(), batch64, v.cast<double>(), hv64);
    check_relative = (hv.cast<double>() - hv64).norm() / hv64.norm();
    if (!(check_relative < 1e-4)) {
      check_failure = "the float H.v differs from the double one by " +
                      std::to_string(check_relative) + " relative (expected < 1e-4)";
    }
  }
};

std::shared_ptr<fixture> fixture_for(index b) {
  static std::shared_ptr<fixture> cached;
  if (!cached || cached->batch.size() != b) cached = std::make_shared<fixture>(b);
  return cached;
}

// The fixture of the benchmark's batch, or nullptr after skipping the benchmark with the fixture's
// failed check.
std::shared_ptr<fixture> checked_fixture(benchmark::State& state) {
  auto f = fixture_for(state.range(0));
  if (f->check_failure.empty()) return f;
  state.SkipWithError(f->check_failure.c_str());
  return nullptr;
}

void BM_cnn_gradient(benchmark::State& state) {
  const auto f = checked_fixture(state);
  if (!f) return;
  dho2::vector<float> g(f->model.num_parameters());
  static_cast<void>(f->model.loss_and_gradient(f->x, f->batch, g));  // warm-up
  for (auto _ : state) {
    benchmark::DoNotOptimize(f->model.loss_and_gradient(f->x, f->batch, g));
    benchmark::ClobberMemory();
  }
  state.counters["samples_per_s"] = benchmark::Counter(
      static_cast<double>(f->batch.size()) * static_cast<double>(state.iterations()),
      benchmark::Counter::kIsRate);
}

void BM_cnn_hvp(benchmark::State& state) {
  const auto f = checked_fixture(state);
  if (!f) return;
  dho2::vector<float> hv(f->model.num_parameters());
  f->model.hessian_vector_product(f->x, f->batch, f->v, hv);  // warm-up
  for (auto _ : state) {
    f->model.hessian_vector_product(f->x, f->batch, f->v, hv);
    benchmark::DoNotOptimize(hv.data());
    benchmark::ClobberMemory();
  }
  state.counters["float_vs_double"] = f->check_relative;
}

// One copy of n floats into a flat tensor and one back out, halved: the cost of one copy.
void BM_flat_copy(benchmark::State& state) {
  const auto n = static_cast<index>(state.range(0));
  const torch::Tensor flat = torch::zeros({static_cast<std::int64_t>(n)}, torch::kFloat32);
  dho2::vector<float> x = dho2::vector<float>::Ones(n);
  for (auto _ : state) {
    Eigen::Map<dho2::vector<float>>(flat.data_ptr<float>(), n) = x;
    benchmark::ClobberMemory();
    x = Eigen::Map<const dho2::vector<float>>(flat.data_ptr<float>(), n);
    benchmark::DoNotOptimize(x.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(2 * static_cast<std::int64_t>(state.iterations()));  // copies
  state.SetBytesProcessed(2 * static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(n) * 2 *
                          static_cast<std::int64_t>(sizeof(float)));
}

double seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

void BM_paired_cnn(benchmark::State& state) {
  const auto f = checked_fixture(state);
  if (!f) return;
  const index n = f->model.num_parameters();
  dho2::vector<float> g(n);
  dho2::vector<float> hv(n);
  dho2::vector<float> copy(n);
  const torch::Tensor flat = torch::zeros({static_cast<std::int64_t>(n)}, torch::kFloat32);
  static_cast<void>(f->model.loss_and_gradient(f->x, f->batch, g));
  f->model.hessian_vector_product(f->x, f->batch, f->v, hv);
  double gradient = 0.0;
  double product = 0.0;
  double copies = 0.0;
  for (auto _ : state) {
    auto t0 = std::chrono::steady_clock::now();
    benchmark::DoNotOptimize(f->model.loss_and_gradient(f->x, f->batch, g));
    auto t1 = std::chrono::steady_clock::now();
    f->model.hessian_vector_product(f->x, f->batch, f->v, hv);
    benchmark::DoNotOptimize(hv.data());
    auto t2 = std::chrono::steady_clock::now();
    // The gradient's two copies: x in, g out.
    Eigen::Map<dho2::vector<float>>(flat.data_ptr<float>(), n) = f->x;
    benchmark::ClobberMemory();
    copy = Eigen::Map<const dho2::vector<float>>(flat.data_ptr<float>(), n);
    benchmark::DoNotOptimize(copy.data());
    auto t3 = std::chrono::steady_clock::now();
    gradient += seconds(t1 - t0);
    product += seconds(t2 - t1);
    copies += seconds(t3 - t2);
  }
  const auto it = static_cast<double>(state.iterations());
  state.counters["gradient_ms"] = 1e3 * gradient / it;
  state.counters["hvp_ms"] = 1e3 * product / it;
  state.counters["hvp_over_gradient"] = product / gradient;
  state.counters["copies_over_gradient"] = copies / gradient;
}

}  // namespace

BENCHMARK(BM_cnn_gradient)->ArgName("batch")->Arg(32)->Arg(128)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_cnn_hvp)->ArgName("batch")->Arg(32)->Arg(128)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_flat_copy)->ArgName("n")->Arg(46730)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_paired_cnn)->ArgName("batch")->Arg(32)->Arg(128)->Unit(benchmark::kMillisecond);
