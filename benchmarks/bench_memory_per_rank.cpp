// Curvature and optimizer-state bytes per rank in mode S, at P = 1, 2, 4, 8 in-process ranks, for
// the 784-256-256-10 float MLP with FOSI-Adam (k = 10, m = 40 Lanczos steps).
//
// What is measured: each rank's dho2::summary after one estimate and one step —
//   curvature_bytes: the larger of the Krylov basis it allocated during the estimate (m × shard
//                    doubles) and its eigenvectors (shard × K floats);
//   optimizer_state_bytes: its Adam moments and Newton velocity anchor (3 × shard floats).
// Both are sizes of buffers the optimizer actually allocated (not formulas). The counters report
// the maximum over ranks and `*_ratio` = P × (max per rank) / (P = 1 value): the target is ≤ 1.1.
// Time is not the point here (P > 2 is oversubscribed on a 2-core machine); one iteration each.
#include <dho2/data/batcher.hpp>
#include <dho2/data/synthetic.hpp>
#include <dho2/dho2.hpp>
#include <dho2/models/mlp.hpp>
#include <dho2/transport/inproc.hpp>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <mutex>

namespace {

struct per_rank_bytes {
  std::size_t curvature = 0;
  std::size_t state = 0;
};

per_rank_bytes measure(int ranks) {
  static const dho2::mlp<float> model({784, 256, 256, 10});
  static const auto data = dho2::make_teacher_classification<float>(512, 0, 784, 10, 1);
  static const dho2::vector<float> x0 = model.initialize(2);
  dho2::options o;
  o.k = 10;
  o.warmup = 1;
  o.lanczos_steps = 40;
  per_rank_bytes worst;
  std::mutex lock;
  dho2::run_inproc(ranks, [&](dho2::inproc_transport& t) {
    const int rank = t.rank();
    using policies = dho2::default_policies::with_transport<dho2::inproc_transport>;
    dho2::optimizer<float, policies> opt(o, policies{.transport = std::move(t)});
    dho2::shuffling_batcher<float> batches(data.train, 128, 3);
    dho2::classification_batch<float> b;
    batches.fill_batch(0, rank, ranks, b);
    dho2::vector<float> x = x0;
    opt.step(model, x, b);
    const auto& s = opt.get_summary();
    std::lock_guard g(lock);
    worst.curvature = std::max(worst.curvature, s.curvature_bytes);
    worst.state = std::max(worst.state, s.optimizer_state_bytes);
  });
  return worst;
}

void BM_memory_per_rank(benchmark::State& state) {
  const int ranks = static_cast<int>(state.range(0));
  static const per_rank_bytes single = measure(1);
  per_rank_bytes bytes;
  for (auto _ : state) {
    bytes = measure(ranks);
    benchmark::DoNotOptimize(bytes);
  }
  const double p = ranks;
  state.counters["curvature_bytes_per_rank"] = static_cast<double>(bytes.curvature);
  state.counters["state_bytes_per_rank"] = static_cast<double>(bytes.state);
  state.counters["curvature_ratio"] =
      p * static_cast<double>(bytes.curvature) / static_cast<double>(single.curvature);
  state.counters["state_ratio"] =
      p * static_cast<double>(bytes.state) / static_cast<double>(single.state);
}
BENCHMARK(BM_memory_per_rank)
    ->Arg(1)
    ->Arg(2)
    ->Arg(4)
    ->Arg(8)
    ->Iterations(1)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
