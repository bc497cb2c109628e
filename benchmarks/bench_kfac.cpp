// K-FAC (dho2::kfac, include/dho2/kfac/kfac.hpp) on dho2::mlp<float> 784-256-256-10 (ReLU) at
// batch B = 128, one rank (single_process), one thread (Eigen::setNbThreads(1)): the factor work
// per layer and whole steps.
//
// Weight layer l = 0, 1, 2 maps 784 → 256 → 256 → 10; its factors are A (in = sₗ + 1 square,
// the bias as homogeneous coordinate) and G (out = sₗ₊₁ square), kept in double:
//   layer 0: A 785², G 256²   layer 1: A 257², G 256²   layer 2: A 257², G 10²
//
// Per-layer kernels, on the real signals of one batch (model.loss_gradient_and_signals); each runs
// the same Eigen expressions as kfac.hpp's private members (which the whole steps below time
// through the public API), and the fixture checks the results against the factors and inverses
// dho2::kfac itself computed for the same batch (a mismatch skips the benchmark with an error):
//   BM_kfac_factor_sums/layer:l   Â = [a; 1][a; 1]ᵀ and Ĝ = g gᵀ over the B samples (signals
//                                 cast to double), then the moving averages A ← εA + (1 − ε)Â/B,
//                                 G ← εG + (1 − ε)Ĝ/B (local_factor_sums + update_factors).
//                                 "flops": the two products as Eigen computes them (full, not
//                                 symmetric rank-k): 2B(in² + out²).
//   BM_kfac_inversion/layer:l     Cholesky of A + γ_A I and of G + γ_G I and the solve against the
//                                 identity (invert_damped), γ from the trace norm as kfac chose
//                                 it. "flops": per factor of dimension d, d³/3 (LLT) + 2d³ (two
//                                 triangular solves with d right-hand sides) = 7d³/3.
//   BM_kfac_precondition/layer:l  Pₗ = G⁻¹ ∇W̄ₗ A⁻¹ and ⟨Pₗ, ∇W̄ₗ⟩ (the per-layer part of
//                                 kfac::update). "flops": 2·out²·in + 2·out·in².
//
// Whole steps, dho2::kfac<float>::step on one rank (fixed batch, steady state):
//   BM_kfac_step/every_step       factor_every = inverse_every = 1: gradient + signals, factor
//                                 sums and averages, every inversion and the update, each step.
//   BM_kfac_step/defaults         kfac_options defaults (factors every step, inverses every 10).
//   BM_kfac_step/gradient_only    factor_every = inverse_every = huge: after the fixture's first
//                                 step only the gradient, preconditioning and update run.
//   BM_adam_step                  the same model and batch through dho2::optimizer<float> with
//                                 use_curvature = false (as bench_mlp_step), for the ratio.
// The whole steps also report ms per step of each phase from dho2::kfac_summary (gradient,
// factor, inverse, update), which add up (the summary's times do not overlap).
#include "bench_context.hpp"
#include <dho2/dho2.hpp>
#include <dho2/kfac/kfac.hpp>
#include <dho2/models/mlp.hpp>
#include <dho2/testing/random_batch.hpp>

#include <Eigen/Cholesky>
#include <Eigen/Core>
#include <benchmark/benchmark.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace {

using dho2::index;

constexpr std::uint64_t seed = 20240917;
constexpr index batch_size = 128;
const std::vector<index> layers{784, 256, 256, 10};

const bool context_added = [] {
  Eigen::setNbThreads(1);  // one thread (Eigen would use OpenMP's default where it is linked)
  benchmark::AddCustomContext("git_revision", dho2_bench::git_revision());
  benchmark::AddCustomContext("model", "mlp 784-256-256-10 relu");
  benchmark::AddCustomContext("n", std::to_string(dho2::mlp<float>(layers).num_parameters()));
  benchmark::AddCustomContext("batch", std::to_string(batch_size));
  benchmark::AddCustomContext("scalar", "float parameters, double factors");
  benchmark::AddCustomContext("kfac", "single_process, damping 1e-3 trace_norm, decay 0.95");
  benchmark::AddCustomContext("eigen_simd", Eigen::SimdInstructionSetsInUse());
  benchmark::AddCustomContext("eigen_threads", std::to_string(Eigen::nbThreads()));
  return true;
}();

double as_double(index v) { return static_cast<double>(v); }

// Model, batch, signals and one K-FAC step (factors and inverses from this batch alone: the first
// factor update sets A = Â) shared by the per-layer kernels.
struct layer_fixture {
  dho2::mlp<float> model{layers, dho2::activation::relu};
  dho2::vector<float> x = model.initialize(seed);
  dho2::classification_batch<float> batch =
      dho2::testing::random_batch<float>(model.features(), model.classes(), batch_size, seed + 1,
                                         dho2::testing::input_distribution::uniform);
  dho2::mlp_layer_signals<float> signals;
  dho2::vector<float> grad = dho2::vector<float>(model.num_parameters());
  dho2::kfac<float> opt;
  std::string error;

  layer_fixture() {
    model.loss_gradient_and_signals(x, batch, grad, signals);
    dho2::vector<float> x1 = x;
    if (opt.step(model, x1, batch) != dho2::step_status::taken) {
      error = "the fixture's K-FAC step was not taken";
      return;
    }
    for (index l = 0; l < opt.num_layers(); ++l) {
      const Eigen::MatrixXd a = factor_a(l) / as_double(batch_size);
      const Eigen::MatrixXd g = factor_g(l) / as_double(batch_size);
      const double da = (a - opt.factor_a(l)).norm() / opt.factor_a(l).norm();
      const double dg = (g - opt.factor_g(l)).norm() / opt.factor_g(l).norm();
      const Eigen::MatrixXd a_inv = invert(opt.factor_a(l), opt.damping_a(l));
      const Eigen::MatrixXd g_inv = invert(opt.factor_g(l), opt.damping_g(l));
      const double ia = (a_inv - opt.inverse_a(l)).norm() / opt.inverse_a(l).norm();
      const double ig = (g_inv - opt.inverse_g(l)).norm() / opt.inverse_g(l).norm();
      if (!(da < 1e-12 && dg < 1e-12 && ia < 1e-12 && ig < 1e-12)) {
        error = "layer " + std::to_string(l) +
                ": the benchmark's kernels do not reproduce dho2::kfac's factors and inverses "
                "(relative differences A " +
                std::to_string(da) + ", G " + std::to_string(dg) + ", A^-1 " + std::to_string(ia) +
                ", G^-1 " + std::to_string(ig) + "; expected < 1e-12)";
        return;
      }
    }
  }

  [[nodiscard]] index in(index l) const { return layers[static_cast<std::size_t>(l)] + 1; }
  [[nodiscard]] index out(index l) const { return layers[static_cast<std::size_t>(l) + 1]; }

  // Σⱼ āⱼāⱼᵀ and Σⱼ gⱼgⱼᵀ of layer l (unnormalised).
  [[nodiscard]] Eigen::MatrixXd factor_a(index l) const {
    const auto& a = signals.inputs[static_cast<std::size_t>(l)];
    Eigen::MatrixXd abar(a.rows() + 1, a.cols());
    abar.topRows(a.rows()) = a.cast<double>();
    abar.row(a.rows()).setOnes();
    Eigen::MatrixXd sum(abar.rows(), abar.rows());
    sum.noalias() = abar * abar.transpose();
    return sum;
  }
  [[nodiscard]] Eigen::MatrixXd factor_g(index l) const {
    const Eigen::MatrixXd g = signals.output_gradients[static_cast<std::size_t>(l)].cast<double>();
    Eigen::MatrixXd sum(g.rows(), g.rows());
    sum.noalias() = g * g.transpose();
    return sum;
  }
  static Eigen::MatrixXd invert(const Eigen::MatrixXd& f, double gamma) {
    Eigen::MatrixXd damped = f;
    damped.diagonal().array() += gamma;
    const Eigen::LLT<Eigen::MatrixXd> llt(damped);
    return llt.solve(Eigen::MatrixXd::Identity(f.rows(), f.cols()));
  }
};

layer_fixture& shared_layer_fixture() {
  static layer_fixture f;
  return f;
}

void BM_kfac_factor_sums(benchmark::State& state) {
  layer_fixture& f = shared_layer_fixture();
  if (!f.error.empty()) {
    state.SkipWithError(f.error.c_str());
    return;
  }
  const index l = state.range(0);
  const index in = f.in(l);
  const index out = f.out(l);
  const double decay = 0.95;
  const auto& inputs = f.signals.inputs[static_cast<std::size_t>(l)];
  const auto& grads = f.signals.output_gradients[static_cast<std::size_t>(l)];
  Eigen::MatrixXd abar(in, batch_size);
  Eigen::MatrixXd gbar(out, batch_size);
  Eigen::MatrixXd a_sum(in, in);
  Eigen::MatrixXd g_sum(out, out);
  Eigen::MatrixXd a = f.opt.factor_a(l);
  Eigen::MatrixXd g = f.opt.factor_g(l);
  const double scale = 1.0 / as_double(batch_size);
  for (auto _ : state) {
    abar.topRows(in - 1) = inputs.cast<double>();
    abar.row(in - 1).setOnes();
    a_sum.noalias() = abar * abar.transpose();
    gbar = grads.cast<double>();
    g_sum.noalias() = gbar * gbar.transpose();
    a = decay * a + ((1.0 - decay) * scale) * a_sum;
    g = decay * g + ((1.0 - decay) * scale) * g_sum;
    benchmark::DoNotOptimize(a.data());
    benchmark::DoNotOptimize(g.data());
    benchmark::ClobberMemory();
  }
  const double flops = 2.0 * as_double(batch_size) * as_double(in * in + out * out);
  state.counters["flops"] = benchmark::Counter(flops * static_cast<double>(state.iterations()),
                                               benchmark::Counter::kIsRate);
  state.counters["dim_a"] = as_double(in);
  state.counters["dim_g"] = as_double(out);
}
BENCHMARK(BM_kfac_factor_sums)
    ->ArgName("layer")
    ->DenseRange(0, 2)
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

void BM_kfac_inversion(benchmark::State& state) {
  layer_fixture& f = shared_layer_fixture();
  if (!f.error.empty()) {
    state.SkipWithError(f.error.c_str());
    return;
  }
  const index l = state.range(0);
  const Eigen::MatrixXd& a = f.opt.factor_a(l);
  const Eigen::MatrixXd& g = f.opt.factor_g(l);
  const double gamma_a = f.opt.damping_a(l);
  const double gamma_g = f.opt.damping_g(l);
  Eigen::MatrixXd a_inv;
  Eigen::MatrixXd g_inv;
  for (auto _ : state) {
    a_inv = layer_fixture::invert(a, gamma_a);
    g_inv = layer_fixture::invert(g, gamma_g);
    benchmark::DoNotOptimize(a_inv.data());
    benchmark::DoNotOptimize(g_inv.data());
    benchmark::ClobberMemory();
  }
  const double da = as_double(a.rows());
  const double dg = as_double(g.rows());
  const double flops = 7.0 / 3.0 * (da * da * da + dg * dg * dg);
  state.counters["flops"] = benchmark::Counter(flops * static_cast<double>(state.iterations()),
                                               benchmark::Counter::kIsRate);
  state.counters["dim_a"] = da;
  state.counters["dim_g"] = dg;
}
BENCHMARK(BM_kfac_inversion)
    ->ArgName("layer")
    ->DenseRange(0, 2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void BM_kfac_precondition(benchmark::State& state) {
  layer_fixture& f = shared_layer_fixture();
  if (!f.error.empty()) {
    state.SkipWithError(f.error.c_str());
    return;
  }
  const index l = state.range(0);
  const index in = f.in(l);
  const index out = f.out(l);
  index offset = 0;
  for (index k = 0; k < l; ++k) offset += f.in(k)*f.out(k);
  // [∇Wₗ ∇bₗ] is out × in, column-major, the bias gradient as its last column (the mlp layout).
  const Eigen::MatrixXd grad =
      Eigen::Map<const dho2::matrix<float>>(f.grad.data() + offset, out, in).cast<double>();
  const Eigen::MatrixXd& a_inv = f.opt.inverse_a(l);
  const Eigen::MatrixXd& g_inv = f.opt.inverse_g(l);
  Eigen::MatrixXd p(out, in);
  double inner = 0.0;
  for (auto _ : state) {
    p.noalias() = g_inv * grad * a_inv;
    inner = p.cwiseProduct(grad).sum();
    benchmark::DoNotOptimize(p.data());
    benchmark::DoNotOptimize(inner);
    benchmark::ClobberMemory();
  }
  const double o = as_double(out);
  const double i = as_double(in);
  const double flops = 2.0 * o * o * i + 2.0 * o * i * i;
  state.counters["flops"] = benchmark::Counter(flops * static_cast<double>(state.iterations()),
                                               benchmark::Counter::kIsRate);
}
BENCHMARK(BM_kfac_precondition)
    ->ArgName("layer")
    ->DenseRange(0, 2)
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

dho2::kfac_options step_options(int variant) {
  dho2::kfac_options o;
  constexpr index never = std::numeric_limits<index>::max() / 2;
  if (variant == 0) {  // every_step
    o.factor_every = 1;
    o.inverse_every = 1;
  } else if (variant == 2) {  // gradient_only
    o.factor_every = never;
    o.inverse_every = never;
  }
  return o;
}

void BM_kfac_step(benchmark::State& state) {
  const int variant = static_cast<int>(state.range(0));
  state.SetLabel(variant == 0 ? "every_step" : variant == 1 ? "defaults" : "gradient_only");
  const dho2::mlp<float> model(layers, dho2::activation::relu);
  dho2::vector<float> x = model.initialize(seed);
  const dho2::classification_batch<float> batch =
      dho2::testing::random_batch<float>(model.features(), model.classes(), batch_size, seed + 1,
                                         dho2::testing::input_distribution::uniform);
  dho2::kfac<float> opt(step_options(variant));
  if (opt.step(model, x, batch) != dho2::step_status::taken) {  // sizes, factors, inverses
    state.SkipWithError("the first K-FAC step was not taken");
    return;
  }
  const dho2::kfac_summary before = opt.summary();
  for (auto _ : state) {
    auto status = opt.step(model, x, batch);
    benchmark::DoNotOptimize(status);
    benchmark::DoNotOptimize(x.data());
    benchmark::ClobberMemory();
  }
  const dho2::kfac_summary& after = opt.summary();
  const index steps = after.steps - before.steps;
  if (steps != after.iterations - before.iterations || after.failed_inversions != 0) {
    state.SkipWithError("a step was skipped or an inversion failed");
    return;
  }
  const double per = 1e3 / as_double(steps);
  state.counters["gradient_ms"] = (after.gradient_seconds - before.gradient_seconds) * per;
  state.counters["factor_ms"] = (after.factor_seconds - before.factor_seconds) * per;
  state.counters["inverse_ms"] = (after.inverse_seconds - before.inverse_seconds) * per;
  state.counters["update_ms"] = (after.update_seconds - before.update_seconds) * per;
  state.counters["inversions_per_step"] =
      as_double(after.inverse_updates - before.inverse_updates) / as_double(steps);
  state.SetItemsProcessed(state.iterations() * batch_size);
}
BENCHMARK(BM_kfac_step)
    ->ArgName("variant")
    ->DenseRange(0, 2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void BM_adam_step(benchmark::State& state) {
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
  state.SetItemsProcessed(state.iterations() * batch_size);
}
BENCHMARK(BM_adam_step)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
