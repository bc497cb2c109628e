// Collectives of dho2::asio_transport over loopback TCP, the P ranks being threads of this
// process (each with its own transport, sockets and io_context):
//
//   BM_asio_all_reduce_sum/<n>/<P>      all_reduce_sum of n floats, in place
//   BM_asio_reduce_scatter_sum/<n>/<P>  reduce_scatter_sum of n floats onto even shards
//   BM_asio_all_gather/<n>/<P>          all_gather of even shards into n floats
//
// for n = 1e3, 1e5, 1e7 and P = 2, 4.
//
// How every rank performs the same number of collectives: one group of P ranks per P is created
// on first use and kept until exit. Rank 0 is the benchmark's own thread; ranks 1..P-1 are worker
// threads that wait for commands. At the start of each benchmark run (before the timed loop),
// rank 0 posts {operation, n, state.max_iterations} — Google Benchmark runs the timed loop exactly
// max_iterations times — and each worker runs that many collectives of its own while rank 0 runs
// the timed loop; after the loop (outside the timing) rank 0 waits until every worker has
// finished. The collectives themselves keep the ranks in step.
//
// Reported: real time per collective (the ranks block on each other, so CPU time means little);
// bytes_per_second = n·4 bytes of the vector per second (the algorithm bandwidth); sent_per_rank =
// payload bytes rank 0 sent per collective (transport_stats), ≈ 2·n·4·(P−1)/P for the ring
// all-reduce and n·4·(P−1)/P for reduce-scatter and all-gather. Loopback TCP on a shared machine:
// read the medians of repeated runs (--benchmark_repetitions=5 --benchmark_report_aggregates_only).
#include <dho2/asio.hpp>

#include <benchmark/benchmark.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

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
    full_.assign(n, 0.0F);
    shard_.assign(shard, 0.0F);
  }

  void run(dho2::asio_transport& t) {
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

unsigned short free_port() {
  boost::asio::io_context ctx;
  boost::asio::ip::tcp::acceptor a(
      ctx, boost::asio::ip::tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 0));
  return a.local_endpoint().port();
}

// P ranks on loopback: rank 0 here, ranks 1..P-1 in worker threads running posted commands.
class group {
 public:
  explicit group(int p) : p_(p) {
    const unsigned short port = free_port();
    const auto options = [&](int r) {
      dho2::asio_options o;
      o.rank = r;
      o.size = p;
      o.port = port;
      o.timeout = std::chrono::seconds(60);
      return o;
    };
    for (int r = 1; r < p; ++r) {
      workers_.emplace_back([this, r, o = options(r)] { work(o); });
    }
    rank0_ = std::make_unique<dho2::asio_transport>(options(0));
  }
  group(const group&) = delete;
  group& operator=(const group&) = delete;
  ~group() {
    post({});
    for (auto& w : workers_) w.join();
  }

  dho2::asio_transport& rank0() { return *rank0_; }
  [[nodiscard]] bool broken() const { return broken_ || rank0_->failed(); }

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

 private:
  void work(const dho2::asio_options& o) {
    std::unique_ptr<dho2::asio_transport> t;
    std::string failure;
    try {
      t = std::make_unique<dho2::asio_transport>(o);
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
        rank_buffers b(c.op, c.n, o.rank, o.size);
        for (std::int64_t i = 0; i < c.iterations; ++i) b.run(*t);
      } catch (const std::exception& e) {
        const std::lock_guard lock(mutex_);
        if (error_.empty()) error_ = "rank " + std::to_string(o.rank) + ": " + e.what();
      }
      const std::lock_guard lock(mutex_);
      ++done_;
      cv_.notify_all();
    }
  }

  int p_;
  std::unique_ptr<dho2::asio_transport> rank0_;
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
    g.rank0().reset_stats();
    g.post({op, n, static_cast<std::int64_t>(state.max_iterations)});
    try {
      for (auto _ : state) b.run(g.rank0());
    } catch (const std::exception& e) {
      error = std::string("rank 0: ") + e.what();
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

void BM_asio_all_reduce_sum(benchmark::State& state) {
  run_collective(state, operation::all_reduce_sum);
}
void BM_asio_reduce_scatter_sum(benchmark::State& state) {
  run_collective(state, operation::reduce_scatter_sum);
}
void BM_asio_all_gather(benchmark::State& state) { run_collective(state, operation::all_gather); }

void sizes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"n", "P"});
  for (const std::int64_t p : {2, 4}) {
    for (const std::int64_t n : {1000, 100000, 10000000}) b->Args({n, p});
  }
  b->UseRealTime()->Unit(benchmark::kMicrosecond);
}

}  // namespace

BENCHMARK(BM_asio_all_reduce_sum)->Apply(sizes);
BENCHMARK(BM_asio_reduce_scatter_sum)->Apply(sizes);
BENCHMARK(BM_asio_all_gather)->Apply(sizes);
