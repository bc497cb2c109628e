// The FOSI optimizer update alone (no curvature estimate, no real gradient) for n = 269,322 float
// parameters (the 784-256-256-10 MLP's count), against the Adam update it extends.
//
//   BM_adam_update_raw        dho2::adam::step on a fixed random gradient + x += delta: exactly
//                             what optimizer::update does with K = 0, without the optimizer.
//   BM_adam_update            dho2::optimizer<float>::step with use_curvature = false on
//                             `precomputed_gradient_model` (below).
//   BM_fosi_adam_update/k:K   the same optimizer and model with use_curvature = true and K = k
//                             orthonormal columns in V (n x K), K in {1, 5, 10, 20}.
//   BM_fosi_projections/k:K   the four products with V that optimizer::update performs, alone,
//                             on an n x K float matrix, the layout of its basis_.
//
// Like for like: BM_adam_update and BM_fosi_adam_update time the same public call on the same
// model, so both include the model's gradient copy (8n bytes) and the optimizer's
// finiteness check of the gradient (detail::all_finite, 4n bytes); the target (FOSI-Adam
// update <= 1.25x Adam update) is the ratio of their medians at k = 10. The curvature is installed
// through the public API, outside the timing: options.warmup = 1 puts the only estimate
// (options.refresh_every is huge) before step 0, which the fixture takes once; the model's Hessian
// is diagonal with K outlying eigenvalues, so the estimate is cheap and retains all K pairs.
// Fixtures are built once per K and reused across repetitions (the timed loop is the steady state
// of a long run).
//
// Bytes per step ("bytes_per_step"; bytes_per_second = SetBytesProcessed), counting every read
// and every write of an n-vector of floats once per pass, as fosi/optimizer.hpp and
// base/adam.hpp are written (b = 4 bytes, V is stored n x K):
//   gradient copy in the model                 read 4n, write 4n               8n
//   grad_.allFinite()                          read 4n                         4n
//   adam::step: m = ..., v = ..., delta = ...  three passes of 2 reads + 1 write   36n
//   x += delta                                 2 reads + 1 write               12n
//   => Adam step through the optimizer: 60n; BM_adam_update_raw: 48n.
//   FOSI adds four passes over V (optimizer::update):
//   c = V g                                    V 4Kn + g 4n
//   g -= V^T c                                 V 4Kn + g read/write 8n
//   p = V delta                                V 4Kn + delta 4n
//   delta -= V^T coef                          V 4Kn + delta read/write 8n
//   => projections: 16Kn + 24n ("proj_bytes_per_step"); FOSI step: 84n + 16Kn.
// At K = 10 that is 244n vs 60n bytes (4.1x), so a bandwidth-bound FOSI-Adam step cannot come
// near 1.25x the Adam step with V in float and four passes over it.
#include "bench_context.hpp"
#include <dho2/dho2.hpp>

#include <Eigen/Core>
#include <benchmark/benchmark.h>

#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <string_view>

namespace {

using dho2::index;

constexpr std::uint64_t seed = 20240917;
// The parameter count of dho2::mlp<float> 784-256-256-10: 256*785 + 256*257 + 10*257.
constexpr index num_params = 269322;

const bool context_added = [] {
  benchmark::AddCustomContext("git_revision", dho2_bench::git_revision());
  benchmark::AddCustomContext("n", std::to_string(num_params));
  benchmark::AddCustomContext("k", "1,5,10,20 (BM_fosi_*); 0 (BM_adam_*)");
  benchmark::AddCustomContext("scalar", "float");
  benchmark::AddCustomContext("base", "adam");
  benchmark::AddCustomContext("eigen_simd", Eigen::SimdInstructionSetsInUse());
  benchmark::AddCustomContext("eigen_threads", std::to_string(Eigen::nbThreads()));
  return true;
}();

dho2::vector<float> random_normal(index n, std::uint64_t stream, float scale) {
  dho2::detail::xoshiro256 rng(seed + stream);
  dho2::vector<float> v(n);
  for (index i = 0; i < n; ++i) v(i) = scale * static_cast<float>(rng.normal());
  return v;
}

// A model with n parameters whose gradient is a fixed precomputed vector (copied out on every
// call) and whose Hessian is diag(d): K outliers 100 + 10r at spread-out coordinates, the rest
// in [0.5, 1].
struct precomputed_gradient_model {
  using scalar_type = float;
  struct batch_type {};

  dho2::vector<float> gradient;
  dho2::vector<float> diagonal;

  precomputed_gradient_model(index n, index outliers)
      : gradient(random_normal(n, 1, 1e-2F)),
        diagonal((random_normal(n, 2, 1.0F).array().abs().min(1.0F) * 0.5F + 0.5F).matrix()) {
    for (index r = 0; r < outliers; ++r) {
      diagonal((r * n) / outliers) = 100.0F + 10.0F * static_cast<float>(r);
    }
  }

  [[nodiscard]] index num_parameters() const noexcept { return gradient.size(); }

  float loss_and_gradient(dho2::const_vector_ref<float> /*x*/, const batch_type& /*batch*/,
                          dho2::vector_ref<float> g) const {
    g = gradient;
    return 1.0F;
  }

  void hessian_vector_product(dho2::const_vector_ref<float> /*x*/, const batch_type& /*batch*/,
                              dho2::const_vector_ref<float> v, dho2::vector_ref<float> hv) const {
    hv = diagonal.cwiseProduct(v);
  }
};
static_assert(dho2::hvp_model<precomputed_gradient_model>);

// An optimizer on `precomputed_gradient_model`, past its only curvature estimate when k > 0.
struct fixture {
  precomputed_gradient_model model;
  precomputed_gradient_model::batch_type batch{};
  dho2::vector<float> x;
  dho2::optimizer<float> opt;
  bool ok = true;

  static dho2::options make_options(index k) {
    dho2::options o;
    o.use_curvature = k > 0;
    o.k = k > 0 ? k : 1;
    o.warmup = 1;
    o.refresh_every = std::numeric_limits<index>::max() / 2;
    o.lanczos_steps = k > 0 ? 2 * k + 4 : 0;  // the outliers converge in far fewer steps
    return o;
  }

  explicit fixture(index k)
      : model(num_params, k), x(random_normal(num_params, 3, 1e-1F)), opt(make_options(k)) {
    ok = opt.step(model, x, batch) == dho2::step_status::taken && opt.eigenvectors().cols() == k;
  }
};

fixture& fixture_for(index k) {
  static std::map<index, std::unique_ptr<fixture>> cache;
  auto& slot = cache[k];
  if (!slot) slot = std::make_unique<fixture>(k);
  return *slot;
}

double as_double(index v) { return static_cast<double>(v); }

void report_bytes(benchmark::State& state, double bytes_per_step) {
  state.counters["bytes_per_step"] = bytes_per_step;
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes_per_step) * state.iterations());
}

void BM_adam_update_raw(benchmark::State& state) {
  const dho2::adam adam{};
  auto st = adam.init<float>(num_params);
  const dho2::vector<float> g = random_normal(num_params, 1, 1e-2F);
  dho2::vector<float> x = random_normal(num_params, 3, 1e-1F);
  dho2::vector<float> delta(num_params);
  for (auto _ : state) {
    adam.step(st, dho2::const_vector_ref<float>(g), dho2::vector_ref<float>(delta));
    x += delta;
    benchmark::DoNotOptimize(x.data());
    benchmark::ClobberMemory();
  }
  report_bytes(state, 48.0 * as_double(num_params));
}
BENCHMARK(BM_adam_update_raw)->Unit(benchmark::kMicrosecond)->UseRealTime();

void BM_adam_update(benchmark::State& state) {
  fixture& f = fixture_for(0);
  if (!f.ok) {
    state.SkipWithError("the Adam warm-up step was not taken");
    return;
  }
  for (auto _ : state) {
    auto status = f.opt.step(f.model, f.x, f.batch);
    benchmark::DoNotOptimize(status);
    benchmark::DoNotOptimize(f.x.data());
    benchmark::ClobberMemory();
  }
  report_bytes(state, 60.0 * as_double(num_params));
}
BENCHMARK(BM_adam_update)->Unit(benchmark::kMicrosecond)->UseRealTime();

void BM_fosi_adam_update(benchmark::State& state) {
  const index k = state.range(0);
  fixture& f = fixture_for(k);
  if (!f.ok) {
    state.SkipWithError("the warm-up did not install K orthonormal rows in V");
    return;
  }
  const index estimates = f.opt.get_summary().curvature_estimates;
  for (auto _ : state) {
    auto status = f.opt.step(f.model, f.x, f.batch);
    benchmark::DoNotOptimize(status);
    benchmark::DoNotOptimize(f.x.data());
    benchmark::ClobberMemory();
  }
  if (f.opt.get_summary().curvature_estimates != estimates) {
    state.SkipWithError("a curvature estimate ran inside the timed loop");
    return;
  }
  const double n = as_double(num_params);
  report_bytes(state, (84.0 + 16.0 * as_double(k)) * n);
  state.counters["proj_bytes_per_step"] = (24.0 + 16.0 * as_double(k)) * n;
  state.counters["k"] = as_double(k);
}
BENCHMARK(BM_fosi_adam_update)
    ->ArgName("k")
    ->Arg(1)
    ->Arg(5)
    ->Arg(10)
    ->Arg(20)
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

// The products with V of optimizer::update (fosi/optimizer.hpp), written as it writes them, so
// their bandwidth can be read without the Adam part: c = V g; g -= V^T c; p = V delta;
// delta -= V^T coef. The small K-vectors are in double there and cast to float, as here.
void BM_fosi_projections(benchmark::State& state) {
  const index k = state.range(0);
  dho2::matrix<float> basis(num_params, k);
  for (index r = 0; r < k; ++r) {
    basis.col(r) = random_normal(num_params, 10 + static_cast<std::uint64_t>(r), 1.0F);
  }
  const dho2::vector<float> g0 = random_normal(num_params, 1, 1e-2F);
  dho2::vector<float> g = g0;
  dho2::vector<float> delta = random_normal(num_params, 4, 1e-3F);
  const Eigen::VectorXd coef = Eigen::VectorXd::Constant(k, 1e-9);
  for (auto _ : state) {
    Eigen::VectorXd c = (basis.transpose() * g).cast<double>();
    g.noalias() -= basis * (1e-9 * c).cast<float>();
    Eigen::VectorXd p = (basis.transpose() * delta).cast<double>();
    delta.noalias() -= basis * (coef + 1e-9 * p).cast<float>();
    benchmark::DoNotOptimize(g.data());
    benchmark::DoNotOptimize(delta.data());
    benchmark::ClobberMemory();
  }
  report_bytes(state, (24.0 + 16.0 * as_double(k)) * as_double(num_params));
  state.counters["k"] = as_double(k);
}
BENCHMARK(BM_fosi_projections)
    ->ArgName("k")
    ->Arg(1)
    ->Arg(5)
    ->Arg(10)
    ->Arg(20)
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

}  // namespace
