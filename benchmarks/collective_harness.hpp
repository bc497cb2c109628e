// The harness of the transport collective benchmarks (bench_inproc_collectives,
// bench_asio_collectives): P ranks of one transport in one process, rank 0 being the benchmark's
// thread and ranks 1..P-1 worker threads, so that every rank runs the same number of
// collectives.
//
// How: one group of P ranks per (benchmark program, P) is created on first use and kept until
// the benchmarks are done (replaced after a failure; collective_main ends them). At the start of
// each benchmark run, rank 0 posts {operation, n, state.max_iterations} — Google Benchmark runs the
// timed loop exactly max_iterations times — then every rank allocates and first-touches its buffers
// and runs one untimed collective (so no rank's allocation falls in the timed loop), and each
// worker runs max_iterations collectives of its own while rank 0 runs the timed loop; after the
// loop (outside the timing) rank 0 waits until every worker has finished. The collectives
// themselves keep the ranks in step. A rank that fails leaves its group when the transport can
// (`leave()`), so that its peers fail at once.
//
// Reported by run_collective: real time per collective, bytes_per_second = n·4 bytes of the
// vector per second (the algorithm bandwidth), and sent_per_rank = payload bytes rank 0's
// transport counted as sent per collective (transport_stats).
#pragma once

#include <dho2/core/types.hpp>

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
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace dho2_bench {

/// The collective a benchmark run measures (quit ends the workers).
enum class operation { all_reduce_sum, reduce_scatter_sum, all_gather, quit };

/// Buffers of one rank for one operation and size (zeros: sums stay 0, no subnormals), and the
/// operation itself on even shards.
class rank_buffers {
 public:
  rank_buffers(operation op, std::size_t n, int rank, int p) : op_(op) {
    const auto up = static_cast<std::size_t>(p);
    offsets_.resize(up + 1);
    for (std::size_t c = 0; c <= up; ++c) {
      offsets_[c] = static_cast<dho2::index>(n / up * c + std::min(c, n % up));
    }
    const auto r = static_cast<std::size_t>(rank);
    full_.assign(n, 0.0F);
    shard_.assign(static_cast<std::size_t>(offsets_[r + 1] - offsets_[r]), 0.0F);
  }

  template <class Transport>
  void run(Transport& t) {
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

/// P ranks of a transport: rank 0 here, ranks 1..P-1 in worker threads running posted commands.
/// `make(r)` creates rank r's transport; it is called on the worker's own thread for r ≥ 1 (so
/// that transports which connect at construction can rendezvous) and on this thread for rank 0,
/// after the workers started.
template <class Transport>
class rank_group {
 public:
  using factory = std::function<std::unique_ptr<Transport>(int rank)>;

  rank_group(int p, factory make) : p_(p), make_(std::move(make)) {
    for (int r = 1; r < p; ++r) workers_.emplace_back([this, r] { work(r); });
    rank0_ = make_(0);
  }
  rank_group(const rank_group&) = delete;
  rank_group& operator=(const rank_group&) = delete;
  ~rank_group() {
    post({});
    for (auto& w : workers_) w.join();
  }

  Transport& rank0() { return *rank0_; }
  [[nodiscard]] bool broken() const { return broken_; }

  void post(operation op, std::size_t n, std::int64_t iterations) { post({op, n, iterations}); }

  /// Waits until every worker finished the last command; returns the first worker error, if any.
  std::string wait_done() {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [&] { return done_ == p_ - 1; });
    if (!error_.empty()) broken_ = true;
    return error_;
  }

  /// Rank 0 failed: leave the group (when the transport can) so that the workers fail at once.
  void fail_rank0() {
    broken_ = true;
    if constexpr (requires(Transport & t) { t.leave(); }) rank0_->leave();
  }

 private:
  struct command {
    operation op = operation::quit;
    std::size_t n = 0;
    std::int64_t iterations = 0;
  };

  void post(const command& c) {
    const std::lock_guard lock(mutex_);
    command_ = c;
    ++generation_;
    done_ = 0;
    cv_.notify_all();
  }

  void work(int rank) {
    std::unique_ptr<Transport> t;
    std::string failure;
    try {
      t = make_(rank);
    } catch (const std::exception& e) {
      failure = e.what();
    }
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
        if (!t) throw std::runtime_error(failure);
        rank_buffers b(c.op, c.n, rank, p_);
        for (std::int64_t i = 0; i <= c.iterations; ++i) b.run(*t);  // 1 untimed + iterations
      } catch (const std::exception& e) {
        if constexpr (requires(Transport & x) { x.leave(); }) {
          if (t) t->leave();
        }
        const std::lock_guard lock(mutex_);
        if (error_.empty()) error_ = "rank " + std::to_string(rank) + ": " + e.what();
      }
      const std::lock_guard lock(mutex_);
      ++done_;
      cv_.notify_all();
    }
  }

  int p_;
  factory make_;
  std::unique_ptr<Transport> rank0_;
  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable cv_;
  command command_;
  std::uint64_t generation_ = 0;
  int done_ = 0;
  std::string error_;
  bool broken_ = false;
};

/// Runs one benchmark of `op` on n = state.range(0) floats over P = state.range(1) ranks of a
/// group of P ranks made by `make(r)` (see rank_group). Groups are cached per transport type and
/// P, and replaced after a failure.
/// The cached groups of `Transport`, by P.
template <class Transport>
std::map<int, std::unique_ptr<rank_group<Transport>>>& group_cache() {
  static std::map<int, std::unique_ptr<rank_group<Transport>>> groups;
  return groups;
}

template <class Transport>
void run_collective(benchmark::State& state, operation op,
                    const std::function<typename rank_group<Transport>::factory(int p)>& make) {
  auto& groups = group_cache<Transport>();
  const auto n = static_cast<std::size_t>(state.range(0));
  const auto p = static_cast<int>(state.range(1));
  std::string error;
  try {
    auto& g = groups[p];
    if (!g || g->broken()) {
      g.reset();
      g = std::make_unique<rank_group<Transport>>(p, make(p));
    }
    rank_buffers b(op, n, 0, p);
    g->post(op, n, static_cast<std::int64_t>(state.max_iterations));
    try {
      b.run(g->rank0());  // untimed: every rank has allocated its buffers once this returns
      g->rank0().reset_stats();
      for (auto _ : state) b.run(g->rank0());
    } catch (const std::exception& e) {
      error = std::string("rank 0: ") + e.what();
      g->fail_rank0();
    }
    const std::string worker = g->wait_done();
    if (error.empty()) error = worker;
    if (error.empty()) {
      const auto iters = static_cast<double>(state.iterations());
      state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(n * sizeof(float)));
      state.counters["sent_per_rank"] =
          benchmark::Counter(static_cast<double>(g->rank0().stats().bytes_sent) / iters,
                             benchmark::Counter::kDefaults, benchmark::Counter::kIs1024);
    }
  } catch (const std::exception& e) {
    error = e.what();
  }
  if (!error.empty()) state.SkipWithError(error.c_str());
}

/// The main() of a collective benchmark program: runs the benchmarks, then ends the cached groups
/// of `Transport` (joining their worker threads) while main() is still running. Worker threads
/// left to static destruction would exit after the libraries' own exit handlers: OpenSSL, which
/// the asio transport's handshake uses, frees a thread's state when the thread exits, and after
/// its exit cleanup that state is lost (LeakSanitizer reports it).
template <class Transport>
int collective_main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  group_cache<Transport>().clear();
  benchmark::Shutdown();
  return 0;
}

}  // namespace dho2_bench
