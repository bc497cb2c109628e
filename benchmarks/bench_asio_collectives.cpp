// Collectives of dho2::asio_transport over loopback TCP, the P ranks being threads of this
// process (each with its own transport, sockets and io_context):
//
//   BM_asio_all_reduce_sum/<n>/<P>      all_reduce_sum of n floats, in place
//   BM_asio_reduce_scatter_sum/<n>/<P>  reduce_scatter_sum of n floats onto even shards
//   BM_asio_all_gather/<n>/<P>          all_gather of even shards into n floats
//
// for n = 1e3, 1e5, 1e7 and P = 2, 4.
//
// How every rank performs the same number of collectives: see collective_harness.hpp (rank 0 is
// the benchmark's thread, ranks 1..P-1 workers that each build their transport and join the
// rendezvous; one untimed collective first).
//
// Reported: real time per collective (the ranks block on each other, so CPU time means little);
// bytes_per_second = n·4 bytes of the vector per second (the algorithm bandwidth); sent_per_rank =
// payload bytes rank 0 sent per collective (transport_stats), ≈ 2·n·4·(P−1)/P for the ring
// all-reduce and n·4·(P−1)/P for reduce-scatter and all-gather. Loopback TCP on a shared machine:
// read the medians of repeated runs (--benchmark_repetitions=5 --benchmark_report_aggregates_only).
#include "bench_context.hpp"
#include "collective_harness.hpp"
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

using dho2_bench::operation;

const bool context_added = [] {
  benchmark::AddCustomContext("git_revision", dho2_bench::git_revision());
  benchmark::AddCustomContext("transport", "asio (TCP over loopback, rank threads of one process)");
  benchmark::AddCustomContext("world_sizes", "P = 2, 4 (P = 4 oversubscribes a 2-core machine)");
  benchmark::AddCustomContext("hardware_threads",
                              std::to_string(std::thread::hardware_concurrency()));
  benchmark::AddCustomContext("scalar", "float");
  return true;
}();

unsigned short free_port() {
  boost::asio::io_context ctx;
  boost::asio::ip::tcp::acceptor a(
      ctx, boost::asio::ip::tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 0));
  return a.local_endpoint().port();
}

// Rank r of P ranks on loopback, meeting at a free port (each rank connects at construction).
dho2_bench::rank_group<dho2::asio_transport>::factory asio_ranks(int p) {
  const unsigned short port = free_port();
  return [p, port](int r) {
    dho2::asio_options o;
    o.rank = r;
    o.size = p;
    o.port = port;
    o.timeout = std::chrono::seconds(60);
    return std::make_unique<dho2::asio_transport>(o);
  };
}

void run_collective(benchmark::State& state, operation op) {
  dho2_bench::run_collective<dho2::asio_transport>(state, op, asio_ranks);
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

int main(int argc, char** argv) {
  return dho2_bench::collective_main<dho2::asio_transport>(argc, argv);
}
