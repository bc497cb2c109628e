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
// How every rank performs the same number of collectives: see collective_harness.hpp (rank 0 is
// the benchmark's thread, ranks 1..P-1 workers of one inproc_world per P; one untimed collective
// first; a failing rank leaves the world, which fails its peers at once).
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
#include "bench_context.hpp"
#include "collective_harness.hpp"
#include <dho2/transport/inproc.hpp>

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

using dho2_bench::operation;

// Rank r's handle on the world of P ranks (the world lives as long as the group's factory).
dho2_bench::rank_group<dho2::inproc_transport>::factory inproc_ranks(int p) {
  auto world = std::make_shared<dho2::inproc_world>(p);
  return [world](int r) { return std::make_unique<dho2::inproc_transport>(world->rank_handle(r)); };
}

void run_collective(benchmark::State& state, operation op) {
  dho2_bench::run_collective<dho2::inproc_transport>(state, op, inproc_ranks);
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

int main(int argc, char** argv) {
  return dho2_bench::collective_main<dho2::inproc_transport>(argc, argv);
}
