// The FOSI optimizer update alone (no curvature estimate, no real gradient) for n = 269,322 float
// parameters (the 784-256-256-10 MLP's count), against the Adam update it extends and against
// the memory bandwidth of the machine.
//
//   BM_triad/shard:P/times:T    a = b + s·c on T·n/P floats: the bandwidth reference (12 bytes
//                               per entry). T = 1: the size of one vector of the update; T = 5:
//                               three vectors of 5n/P floats, the footprint of the fused update at
//                               K = 10 (V 10 floats per entry, g, m, v, delta, x one each).
//   BM_adam_update_raw/shard:P  dho2::adam::step + x += delta on n/P entries (a P-rank shard):
//                               exactly what optimizer::update does with K = 0.
//   BM_fosi_update_raw/k:K/shard:P/fused:F
//                               newton_subspace::step with Adam (F = 1: the fused update through
//                               adam's step kernel; F = 0: the same base with its kernel hidden,
//                               the unfused path) + x += delta, K orthonormal columns in V
//                               (n/P × K, float), FOSI-Adam's scale s = 1 (clip 1).
//   BM_adam_update              dho2::optimizer<float>::step with use_curvature = false on
//                               `precomputed_gradient_model` (below), n entries.
//   BM_fosi_adam_update/k:K     the same optimizer and model with use_curvature = true and K = k.
//
// The targets read from one run: fused FOSI update within 1.15× of its byte floor
// (bytes_per_step / BM_triad's bytes_per_second at the same shard and footprint, times:5), and
// ≤ 2.3× the Adam update
// on a 2-rank shard (BM_fosi_update_raw/k:10/shard:2/fused:1 over BM_adam_update_raw/shard:2).
// The curvature of the optimizer rows is installed through the public API, outside the timing:
// options.warmup = 1 puts the only estimate before step 0, which the fixture takes once; the
// model's Hessian is diagonal with K outlying eigenvalues, so the estimate retains all K pairs.
// Fixtures are built once per argument set and reused across repetitions (the steady state of a
// long run).
//
// Bytes per step ("bytes_per_step"; bytes_per_second = SetBytesProcessed), counting every read
// and every write of an m-vector of floats once per pass, as the code is written (b = 4 bytes, V
// is stored m × K, m the entries updated):
//   adam kernel: m, v read and written, g read, delta written, one pass       24m
//   x += delta                                                                 12m
//   => BM_adam_update_raw: 36m. Through the optimizer add the model's gradient copy (8m) and
//      the finiteness check of the gradient (4m): BM_adam_update 48m.
//   fused FOSI (newton_subspace::step with a step kernel):
//     (1) c = Vᵀg                        V 4Km + g 4m
//     (2) g₂ = g − Vc, adam, p += Vᵀb     V 4Km + g 4m + state 16m + delta 4m (block in cache)
//     (3) delta −= V coef                V 4Km + delta 8m
//   => 12Km + 36m, plus x += delta 12m: BM_fosi_update_raw fused 12Km + 48m (168m at K = 10).
//   unfused (s = 1): Vᵀg 4Km + 4m; g −= Vc 4Km + 8m; adam 24m; Vᵀdelta 4Km + 4m;
//     delta −= V coef 4Km + 8m => 16Km + 48m, plus x += delta: 16Km + 60m (220m at K = 10).
//   Through the optimizer the fused update adds 12m: BM_fosi_adam_update 12Km + 60m.
// V alone is 4K bytes per entry, more than Adam's whole update at K ≥ 9: the floor of a FOSI
// update is the bytes of three passes over V, not a multiple of Adam's.
#include "bench_context.hpp"
#include <dho2/dho2.hpp>
#include <dho2/testing/without_step_kernel.hpp>

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
  report_bytes(state, 48.0 * as_double(num_params));
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
  report_bytes(state, (60.0 + 12.0 * as_double(k)) * n);
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

template <class Base>
using without_kernel = dho2::testing::without_step_kernel<Base>;  // the unfused path

void BM_triad(benchmark::State& state) {
  const index m = num_params / state.range(0) * state.range(1);
  const dho2::vector<float> b = random_normal(m, 1, 1.0F);
  const dho2::vector<float> c = random_normal(m, 2, 1.0F);
  dho2::vector<float> a(m);
  for (auto _ : state) {
    a.noalias() = b + 0.5F * c;
    benchmark::DoNotOptimize(a.data());
    benchmark::ClobberMemory();
  }
  report_bytes(state, 12.0 * as_double(m));
}
BENCHMARK(BM_triad)
    ->ArgNames({"shard", "times"})
    ->Args({1, 1})
    ->Args({2, 1})
    ->Args({1, 5})
    ->Args({2, 5})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

void BM_adam_update_raw(benchmark::State& state) {
  const index m = num_params / state.range(0);
  const dho2::adam adam{};
  auto st = adam.init<float>(m);
  const dho2::vector<float> g = random_normal(m, 1, 1e-2F);
  dho2::vector<float> x = random_normal(m, 3, 1e-1F);
  dho2::vector<float> delta(m);
  for (auto _ : state) {
    adam.step(st, dho2::const_vector_ref<float>(g), dho2::vector_ref<float>(delta));
    x += delta;
    benchmark::DoNotOptimize(x.data());
    benchmark::ClobberMemory();
  }
  report_bytes(state, 36.0 * as_double(m));
}
BENCHMARK(BM_adam_update_raw)
    ->ArgName("shard")
    ->Arg(1)
    ->Arg(2)
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

// newton_subspace::step with Adam (fused, or unfused through without_kernel) on m = n/P entries.
template <class Base>
void fosi_update_raw(benchmark::State& state, const Base& base, double bytes_per_entry) {
  const index k = state.range(0);
  const index m = num_params / state.range(1);
  dho2::newton_subspace<float> ns;
  ns.basis.resize(m, k);
  for (index r = 0; r < k; ++r) {
    ns.basis.col(r) = random_normal(m, 10 + static_cast<std::uint64_t>(r), 1.0F);
    ns.basis.col(r).normalize();
  }
  ns.eigenvalues = Eigen::VectorXd::LinSpaced(k, 100.0, 10.0);
  ns.num_top = k;
  ns.refresh_inverses(0.0, dho2::adam::default_clip);
  ns.coefficients = Eigen::VectorXd::Zero(k);
  ns.anchor_projection = Eigen::VectorXd::Zero(k);
  dho2::options opts;
  auto st = base.template init<float>(m);
  dho2::vector<float> g = random_normal(m, 1, 1e-2F);
  dho2::vector<float> x = random_normal(m, 3, 1e-1F);
  dho2::vector<float> delta(m);
  const auto no_reduce = [](Eigen::VectorXd&) {};
  for (auto _ : state) {
    ns.step(opts, base, st, dho2::vector_ref<float>(g), delta, no_reduce);
    x += delta;
    benchmark::DoNotOptimize(x.data());
    benchmark::ClobberMemory();
  }
  report_bytes(state, bytes_per_entry * as_double(m));
  state.counters["k"] = as_double(k);
  state.counters["scale"] = ns.scale;
}

void BM_fosi_update_raw(benchmark::State& state) {
  const double k = as_double(state.range(0));
  if (state.range(2) != 0) {
    fosi_update_raw(state, dho2::adam{}, 12.0 * k + 48.0);
  } else {
    fosi_update_raw(state, without_kernel<dho2::adam>{}, 16.0 * k + 60.0);
  }
}
BENCHMARK(BM_fosi_update_raw)
    ->ArgNames({"k", "shard", "fused"})
    ->ArgsProduct({{10}, {1, 2}, {0, 1}})
    ->Args({1, 1, 1})
    ->Args({5, 1, 1})
    ->Args({20, 1, 1})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

}  // namespace
