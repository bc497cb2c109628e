// Collectives of dho2::inproc_transport (shared memory, the P ranks being threads of this
// process on one dho2::inproc_world), against single-thread memory-bound floors in the same run:
//
//   BM_inproc_all_reduce_sum/n:<n>/P:<P>      all_reduce_sum of n floats, in place
//   BM_inproc_reduce_scatter_sum/n:<n>/P:<P>  reduce_scatter_sum of n floats onto even shards
//   BM_inproc_all_gather/n:<n>/P:<P>          all_gather of even shards into n floats
//   BM_floor_serial_sum/n:<n>/P:<P>           FLOOR, not a collective: one thread forms
//                                             out = v_0 + v_1 + ... + v_{P-1} of P vectors of n
//                                             floats with std::copy + std::transform: the least
//                                             memory traffic (P·n·4 bytes read, n·4 written) any
//                                             reduction of P vectors needs, on one core
//   BM_floor_serial_copy/n:<n>                FLOOR, not a collective: one thread copies n floats
//                                             (std::copy), the least traffic of gathering n floats
//
// for n = 1e3, 1e4, 1e5, 1e6, 1e7 and P = 2, 4. P = 4 is oversubscribed on a 2-core machine (4
// rank threads share the cores; the ranks wait on a condition variable, so a rank that is not
// running costs a context switch, not a spinning core): read its times as such.
//
// How every rank performs the same number of collectives: one inproc_world per P is created on
// first use and kept until exit. Rank 0 is the benchmark's own thread; ranks 1..P-1 are worker
// threads that wait for commands. At the start of each benchmark run (before the timed loop),
// rank 0 posts {operation, n, state.max_iterations} — Google Benchmark runs the timed loop exactly
// max_iterations times — then every rank allocates and first-touches its buffers and runs one
// untimed collective (so no rank's allocation falls in the timed loop), and each worker runs
// max_iterations collectives of its own while rank 0 runs the timed loop; after the loop (outside
// the timing) rank 0 waits until every worker has finished. The collectives themselves keep the
// ranks in step. A failing rank leaves the world, which fails its peers at once; the world is then
// replaced for the next benchmark.
//
// Reported: real time per collective (the ranks block on each other, so CPU time means little);
// bytes_per_second = n·4 bytes of the vector per second (the algorithm bandwidth, the same
// definition for the floors, so time ratios = inverse bandwidth ratios); sent_per_rank = bytes
// rank 0's buffers were read by peers per collective (transport_stats; see inproc.hpp for what
// it counts). The ratio collective / BM_floor_serial_sum at the same n and P says how far a
// reduction is from one core streaming the P inputs once; all_gather compares with
// BM_floor_serial_copy. Shared machine: read the medians of repeated runs
// (--benchmark_repetitions=5 --benchmark_report_aggregates_only=true). The CTest smoke run
// (--benchmark_min_time=0.01) takes about 2 s (a single collective at n = 1e7).
#include <dho2/transport/inproc.hpp>

#include "bench_context.hpp"

#include <benchmark/benchmark.h>

#include <algorithm>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

const bool context_added = [] {
  benchmark::AddCustomContext("git_revision", dho2_bench::git_revision());
  benchmark::AddCustomContext("transport", "inproc (rank threads of one process, shared memory)");
  benchmark::AddCustomContext("world_sizes", "P = 2, 4 (P = 4 oversubscribes a 2-core machine)");
  benchmark::AddCustomContext("hardware_threads",
                              std::to_string(std::thread::hardware_concurrency()));
  benchmark::AddCustomContext("chunked_all_reduce_bytes",
                              std::to_string(dho2::inproc_options{}.chunked_all_reduce_bytes));
  benchmark::AddCustomContext("scalar", "float");
  return true;
}();

enum class operation { all_reduce_sum, reduce_scatter_sum, all_gather, quit };

// Buffers of one rank for one operation and size, and the operation itself.
class rank_buffers {
 public:
  rank_buffers(operation op, std::size_t n, int rank, int p) : op_(op) {
    const auto up = static_cast<std::size_t>(p);
    offsets_.resize(up + 1);
    for (std::size_t c = 0; c <= up; ++c) {
      offsets_[c] = static_cast<dho2::index>(n / up * c + std::min(c, n % up));
    }
    const auto r = static_cast<std::size_t>(rank);
    const auto shard = static_cast<std::size_t>(offsets_[r + 1] - offsets_[r]);
    full_.assign(n, 0.0F);  // zeros: the sums stay 0 (no overflow, no subnormals)
    shard_.assign(shard, 0.0F);
  }

  void run(dho2::inproc_transport& t) {
    switch (op_) {
      case operation::all_reduce_sum: t.all_reduce_sum(std::span<float>(full_)); break;
      case operation::reduce_scatter_sum:
        t.reduce_scatter_sum(std::span<const float>(full_), std::span<float>(shard_),
                             std::span<const dho2::index>(offsets_));
        break;
      case operation::all_gather:
        t.all_gather(std::span<const float>(shard_), std::span<float>(full_),
                     std::span<const dho2::index>(offsets_));
        break;
      case operation::quit: break;
    }
  }

 private:
  operation op_;
  std::vector<dho2::index> offsets_;
  std::vector<float> full_;
  std::vector<float> shard_;
};

struct command {
  operation op = operation::quit;
  std::size_t n = 0;
  std::int64_t iterations = 0;
};

// P ranks of one inproc_world: rank 0 here, ranks 1..P-1 in worker threads running posted
// commands (one untimed collective, then `iterations` more).
class group {
 public:
  explicit group(int p) : p_(p), world_(p) {
    rank0_ = std::make_unique<dho2::inproc_transport>(world_.rank_handle(0));
    for (int r = 1; r < p; ++r) {
      workers_.emplace_back([this, t = world_.rank_handle(r)]() mutable { work(t); });
    }
  }
  group(const group&) = delete;
  group& operator=(const group&) = delete;
  ~group() {
    post({});
    for (auto& w : workers_) w.join();
  }

  dho2::inproc_transport& rank0() { return *rank0_; }
  [[nodiscard]] bool broken() const { return broken_ || !world_.failure().empty(); }

  void post(const command& c) {
    const std::lock_guard lock(mutex_);
    command_ = c;
    ++generation_;
    done_ = 0;
    cv_.notify_all();
  }

  // Waits until every worker finished the last command; returns the first worker error, if any.
  std::string wait_done() {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [&] { return done_ == p_ - 1; });
    if (!error_.empty()) broken_ = true;
    return error_;
  }

  // Rank 0 failed: leave the world so that the workers fail at once instead of timing out.
  void fail_rank0() {
    broken_ = true;
    rank0_->leave();
  }

 private:
  void work(dho2::inproc_transport& t) {
    std::uint64_t seen = 0;
    for (;;) {
      command c;
      {
        std::unique_lock lock(mutex_);
        cv_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        c = command_;
      }
      if (c.op == operation::quit) return;
      try {
        rank_buffers b(c.op, c.n, t.rank(), t.size());
        for (std::int64_t i = 0; i <= c.iterations; ++i) b.run(t);  // 1 untimed + iterations
      } catch (const std::exception& e) {
        t.leave();  // the peers fail at once; the group is replaced for the next benchmark
        const std::lock_guard lock(mutex_);
        if (error_.empty()) error_ = "rank " + std::to_string(t.rank()) + ": " + e.what();
      }
      const std::lock_guard lock(mutex_);
      ++done_;
      cv_.notify_all();
    }
  }

  int p_;
  dho2::inproc_world world_;
  std::unique_ptr<dho2::inproc_transport> rank0_;
  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable cv_;
  command command_;
  std::uint64_t generation_ = 0;
  int done_ = 0;
  std::string error_;
  bool broken_ = false;
};

group& group_of(int p) {
  static std::map<int, std::unique_ptr<group>> groups;
  auto& g = groups[p];
  if (!g || g->broken()) {
    g.reset();
    g = std::make_unique<group>(p);
  }
  return *g;
}

void run_collective(benchmark::State& state, operation op) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const auto p = static_cast<int>(state.range(1));
  std::string error;
  try {
    group& g = group_of(p);
    rank_buffers b(op, n, 0, p);
    g.post({op, n, static_cast<std::int64_t>(state.max_iterations)});
    try {
      b.run(g.rank0());  // untimed: every rank has allocated its buffers once this returns
      g.rank0().reset_stats();
      for (auto _ : state) b.run(g.rank0());
    } catch (const std::exception& e) {
      error = std::string("rank 0: ") + e.what();
      g.fail_rank0();
    }
    const std::string worker = g.wait_done();
    if (error.empty()) error = worker;
    if (error.empty()) {
      const auto iters = static_cast<double>(state.iterations());
      state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(n * sizeof(float)));
      state.counters["sent_per_rank"] =
          benchmark::Counter(static_cast<double>(g.rank0().stats().bytes_sent) / iters,
                             benchmark::Counter::kDefaults, benchmark::Counter::kIs1024);
    }
  } catch (const std::exception& e) {
    error = e.what();
  }
  if (!error.empty()) state.SkipWithError(error.c_str());
}

void BM_inproc_all_reduce_sum(benchmark::State& state) {
  run_collective(state, operation::all_reduce_sum);
}
void BM_inproc_reduce_scatter_sum(benchmark::State& state) {
  run_collective(state, operation::reduce_scatter_sum);
}
void BM_inproc_all_gather(benchmark::State& state) { run_collective(state, operation::all_gather); }

// FLOOR: out = v_0 + ... + v_{P-1} on this thread alone, summed in rank order like the transport.
void BM_floor_serial_sum(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const auto p = static_cast<std::size_t>(state.range(1));
  const std::vector<std::vector<float>> inputs(p, std::vector<float>(n, 0.0F));
  std::vector<float> out(n, 0.0F);
  for (auto _ : state) {
    std::copy(inputs[0].begin(), inputs[0].end(), out.begin());
    for (std::size_t q = 1; q < p; ++q) {
      std::transform(out.begin(), out.end(), inputs[q].begin(), out.begin(), std::plus<>());
    }
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(n * sizeof(float)));
}

// FLOOR: a copy of n floats on this thread alone.
void BM_floor_serial_copy(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const std::vector<float> in(n, 0.0F);
  std::vector<float> out(n, 0.0F);
  for (auto _ : state) {
    std::copy(in.begin(), in.end(), out.begin());
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(n * sizeof(float)));
}

constexpr std::int64_t sizes_list[] = {1000, 10000, 100000, 1000000, 10000000};

void sizes_and_ranks(benchmark::internal::Benchmark* b) {
  b->ArgNames({"n", "P"});
  for (const std::int64_t p : {2, 4}) {
    for (const std::int64_t n : sizes_list) b->Args({n, p});
  }
  b->UseRealTime()->Unit(benchmark::kMicrosecond);
}

void sizes_only(benchmark::internal::Benchmark* b) {
  b->ArgName("n");
  for (const std::int64_t n : sizes_list) b->Arg(n);
  b->UseRealTime()->Unit(benchmark::kMicrosecond);
}

}  // namespace

BENCHMARK(BM_inproc_all_reduce_sum)->Apply(sizes_and_ranks);
BENCHMARK(BM_inproc_reduce_scatter_sum)->Apply(sizes_and_ranks);
BENCHMARK(BM_inproc_all_gather)->Apply(sizes_and_ranks);
BENCHMARK(BM_floor_serial_sum)->Apply(sizes_and_ranks);
BENCHMARK(BM_floor_serial_copy)->Apply(sizes_only);
