// One dho2::lanczos estimate (k = 10 largest pairs, l = 0) against the number of steps m, on
//   BM_lanczos_mlp/m:M       the exact HVP of dho2::mlp<float> 784-256-256-10 (ReLU) at batch 128
//   BM_lanczos_mlp_kept_workspace/m:M  the same with one dho2::lanczos::workspace kept across
//                            estimates (as the optimizer keeps it): no fresh basis allocation
//   BM_lanczos_mlp_float_basis/m:M  the same kept-workspace estimate with the basis stored in float
//                            (dho2::basic_lanczos<float>): half the bytes per pass over Q
//   BM_lanczos_diagonal/m:M  a diagonal operator of the same n (an HVP that costs almost nothing)
// so that the HVP time and the rest of the estimate (mostly the re-orthogonalisation) are seen
// separately. Counters, per estimate (averaged over the iterations):
//   hvp_seconds    eigen_estimate::hvp_seconds (time inside hvp_operator::apply)
//   reorth_seconds eigen_estimate::seconds - hvp_seconds: the re-orthogonalisation (one or two
//                  classical Gram-Schmidt passes per step, as the DGKS criterion decides), plus
//                  the start vector, the tridiagonal eigensolver and the Ritz vectors
//                  V = Y^T Q^T (small next to the re-orthogonalisation for m >= 20)
//   passes_per_step eigen_estimate::reorthogonalization_passes / m (2 = CGS2 on every step)
//   reorth_GBps    reorth_bytes / reorth_seconds, with reorth_bytes counted from lanczos.hpp
//                  (basis Q of n x (j + 1) entries of b bytes at step j, b = 8 in double, 4 in
//                  float): a step reads Q once to project, and once more for each pass's
//                  subtraction (a second pass's projection shares that read), so p passes read
//                  Q p + 1 times; w moves three times per read of Q, and q_{j+1} = w / beta 2n
//                  doubles. Counted as sum_j (p_j + 1) (b (j + 1) n + 24 n) + 16 n m with the
//                  average p of the run spread evenly over the steps (an approximation: second
//                  passes are more frequent late in a run, where Q is larger).
// The operator is built here as the optimizer builds it for one process: shard_layout{n, 0, n},
// the apply function casts the double vector to float, calls the model's HVP and casts back, and
// the reduction is a no-op. Every estimate uses the same seed and stream, so every iteration
// does the same work.
#include "bench_context.hpp"
#include <dho2/dho2.hpp>
#include <dho2/models/mlp.hpp>
#include <dho2/testing/random_batch.hpp>

#include <Eigen/Core>
#include <benchmark/benchmark.h>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace {

using dho2::index;

constexpr std::uint64_t seed = 20240917;
constexpr index batch_size = 128;
constexpr index k_largest = 10;
const std::vector<index> layers{784, 256, 256, 10};

const bool context_added = [] {
  benchmark::AddCustomContext("git_revision", dho2_bench::git_revision());
  benchmark::AddCustomContext("model", "mlp 784-256-256-10 relu (BM_lanczos_mlp)");
  benchmark::AddCustomContext("n", std::to_string(dho2::mlp<float>(layers).num_parameters()));
  benchmark::AddCustomContext("batch", std::to_string(batch_size));
  benchmark::AddCustomContext("k", std::to_string(k_largest));
  benchmark::AddCustomContext("m", "10,20,40,80");
  benchmark::AddCustomContext("scalar",
                              "float model; Lanczos basis in double (float in *_float_basis)");
  benchmark::AddCustomContext("eigen_simd", Eigen::SimdInstructionSetsInUse());
  benchmark::AddCustomContext("eigen_threads", std::to_string(Eigen::nbThreads()));
  return true;
}();

double as_double(index v) { return static_cast<double>(v); }

// Every benchmark here runs m = 10, 20, 40, 80 Lanczos steps, timed in wall-clock milliseconds.
void lanczos_step_counts(benchmark::internal::Benchmark* b) {
  b->ArgName("m")->Arg(10)->Arg(20)->Arg(40)->Arg(80)->Unit(benchmark::kMillisecond)->UseRealTime();
}

// Runs the timed loop of estimates on `op` and reports the split; with `kept`, every estimate
// reuses one workspace (as the optimizer does), else each allocates its basis.
template <class Basis = double>
void run_estimates(benchmark::State& state, dho2::hvp_operator& op, bool kept) {
  constexpr std::size_t basis_bytes_per_entry = sizeof(Basis);
  const index m = state.range(0);
  const dho2::basic_lanczos<Basis> lanczos{};
  const dho2::estimate_request request{k_largest, 0, m, seed, 0};
  typename dho2::basic_lanczos<Basis>::workspace ws;
  double total = 0.0;
  double hvp = 0.0;
  index hvps = 0;
  index passes = 0;
  bool failed = false;
  for (auto _ : state) {
    dho2::eigen_estimate est =
        kept ? lanczos.estimate(op, request, ws) : lanczos.estimate(op, request);
    benchmark::DoNotOptimize(est.eigenvalues.data());
    benchmark::DoNotOptimize(est.eigenvectors.data());
    benchmark::ClobberMemory();
    total += est.seconds;
    hvp += est.hvp_seconds;
    hvps += est.hvps;
    passes += est.reorthogonalization_passes;
    failed = failed || est.failed;
  }
  if (failed) {
    state.SkipWithError("an estimate failed (non-finite HVP)");
    return;
  }
  const double n = as_double(op.global_size());
  const double mm = as_double(m);
  const double estimates = as_double(state.iterations());
  const double passes_per_step = as_double(passes) / estimates / mm;
  const double b = as_double(static_cast<index>(basis_bytes_per_entry));
  const double reorth_bytes =
      (passes_per_step + 1.0) * (b * n * mm * (mm + 1.0) / 2.0 + 24.0 * n * mm) + 16.0 * n * mm;
  using counter = benchmark::Counter;
  state.counters["hvp_seconds"] = counter(hvp, counter::kAvgIterations);
  state.counters["reorth_seconds"] = counter(total - hvp, counter::kAvgIterations);
  state.counters["hvps"] = counter(as_double(hvps), counter::kAvgIterations);
  state.counters["passes_per_step"] = passes_per_step;
  state.counters["reorth_bytes"] = reorth_bytes;
  state.counters["reorth_GBps"] =
      total > hvp ? reorth_bytes * estimates / (total - hvp) / 1e9 : 0.0;
}

template <class Basis = double>
void lanczos_mlp(benchmark::State& state, bool kept) {
  const dho2::mlp<float> model(layers, dho2::activation::relu);
  const index n = model.num_parameters();
  const dho2::vector<float> x = model.initialize(seed);
  const dho2::classification_batch<float> batch =
      dho2::testing::random_batch<float>(model.features(), model.classes(), batch_size, seed + 1,
                                         dho2::testing::input_distribution::uniform);
  dho2::vector<float> v(n);
  dho2::vector<float> hv(n);
  dho2::hvp_operator op(
      dho2::shard_layout{n, 0, n},
      [&](Eigen::Ref<const Eigen::VectorXd> in, Eigen::Ref<Eigen::VectorXd> out) {
        v = in.cast<float>();
        model.hessian_vector_product(x, batch, v, hv);
        out = hv.cast<double>();
        return hv.allFinite();
      },
      [](std::span<double>) {});
  run_estimates<Basis>(state, op, kept);
}
void BM_lanczos_mlp(benchmark::State& state) { lanczos_mlp(state, false); }
void BM_lanczos_mlp_kept_workspace(benchmark::State& state) { lanczos_mlp(state, true); }
void BM_lanczos_mlp_float_basis(benchmark::State& state) { lanczos_mlp<float>(state, true); }
BENCHMARK(BM_lanczos_mlp)->Apply(lanczos_step_counts);
BENCHMARK(BM_lanczos_mlp_kept_workspace)->Apply(lanczos_step_counts);
BENCHMARK(BM_lanczos_mlp_float_basis)->Apply(lanczos_step_counts);

void BM_lanczos_diagonal(benchmark::State& state) {
  const index n = dho2::mlp<float>(layers).num_parameters();
  // A spread spectrum in (0, 1] with a few outliers, so no step breaks down.
  Eigen::VectorXd diagonal(n);
  dho2::detail::xoshiro256 rng(seed + 3);
  for (index i = 0; i < n; ++i) diagonal(i) = rng.uniform();
  for (index r = 0; r < k_largest; ++r) diagonal((r * n) / k_largest) = 10.0 + as_double(r);
  dho2::hvp_operator op(
      dho2::shard_layout{n, 0, n},
      [&](Eigen::Ref<const Eigen::VectorXd> in, Eigen::Ref<Eigen::VectorXd> out) {
        out = diagonal.cwiseProduct(in);
        return true;
      },
      [](std::span<double>) {});
  run_estimates(state, op, false);
}
BENCHMARK(BM_lanczos_diagonal)->Apply(lanczos_step_counts);

}  // namespace
