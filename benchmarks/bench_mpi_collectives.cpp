// Collectives of dho2::mpi_transport against the same raw MPI calls, side by side in one run
// (run under mpirun; every rank runs every benchmark, only rank 0 reports):
//
//   all_reduce_sum/ours/n:<n>         mpi_transport::all_reduce_sum of n floats, in place
//   all_reduce_sum/raw_MPI/n:<n>      MPI_Allreduce(MPI_IN_PLACE, …, MPI_FLOAT, MPI_SUM)
//   reduce_scatter_sum/ours/n:<n>     mpi_transport::reduce_scatter_sum onto even shards
//   reduce_scatter_sum/raw_MPI/n:<n>  MPI_Reduce_scatter with the same counts
//   all_gather/ours/n:<n>             mpi_transport::all_gather of even shards into n floats
//   all_gather/raw_MPI/n:<n>          MPI_Allgatherv with the same counts and displacements
//   <op>/paired/n:<n>                 ours and raw alternately in every iteration (see below)
//
// for n = 1e3, 1e5, 1e7 floats. "raw" runs on its own MPI_Comm_dup of MPI_COMM_WORLD, "ours" on
// the transport's duplicate; both use the same buffers.
//
// Lockstep: every benchmark has a fixed iteration count (->Iterations) and repetition count, so
// every rank runs exactly the same collectives; options that would let ranks decide differently
// (--benchmark_min_warmup_time, --benchmark_enable_random_interleaving) are removed from the
// command line. Each benchmark first runs its collective 3 times untimed; then each iteration is
// MPI_Barrier (on a third communicator, untimed), the collective timed with MPI_Wtime, and the
// maximum of the per-rank times over the ranks (untimed) as the iteration's manual time — the
// time of the collective as the slowest rank saw it. "paired" times ours and raw in every
// iteration (each after its own barrier, the order alternating), so both see the same machine
// load; its counters are the medians over the iterations (ours_time, raw_time, in seconds) and
// their ratio.
//
// Reported: medians over the repetitions (time per collective), bytes_per_second = n·4 bytes of
// the full vector per second (the algorithm bandwidth), and at the end a table of the medians of
// ours and raw and their ratio (target: ≤ 1.2), from the separate and from the paired runs.
//
// Options (removed before Google Benchmark sees the command line):
//   --dho2_sizes=1000,100000,10000000   vector lengths (floats)
//   --dho2_iterations=<N>               iterations per repetition for every size (default: 1000
//                                       below 1e4 floats, 100 below 1e6, else 10)
//   --dho2_repetitions=<R>              repetitions (default 5)
//   --dho2_timeout=<seconds>            "ours" with mpi_transport::set_timeout (its collectives
//                                       then run non-blocking, polled against the deadline);
//                                       default 0: no timeout, the blocking routines
//   --dho2_watchdog=<seconds>           "ours" with mpi_transport::set_watchdog (blocking
//                                       routines, watched by a thread); default 0: none
//
// Reproduce (from the build directory; as root add OMPI_ALLOW_RUN_AS_ROOT=1 and
// OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 to the environment):
//   mpirun -np 2 --oversubscribe benchmarks/bench_mpi_collectives
//
// Built by cmake/dho2Mpi.cmake (target bench_mpi_collectives, with DHO2_WITH_MPI_BENCHMARK
// defined). Compiled without that definition (e.g. by a generic bench_*.cpp glob without MPI),
// the file is a stub that says so and exits 0.
#ifndef DHO2_WITH_MPI_BENCHMARK

#include <cstdio>

int main() {
  std::puts(
      "bench_mpi_collectives: built without dho2::mpi (configure with DHO2_WITH_MPI=ON and "
      "use the target from cmake/dho2Mpi.cmake); nothing to run");
  return 0;
}

#else

#include "bench_context.hpp"
#include <dho2/mpi.hpp>

#include <benchmark/benchmark.h>
#include <boost/mpi/environment.hpp>
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace {

struct bench_options {
  std::vector<std::size_t> sizes{1000, 100000, 10000000};
  std::int64_t iterations = 0;  // 0: by size
  int repetitions = 5;
  double timeout_seconds = 0.0;   // mpi_transport::set_timeout for "ours" (0: none)
  double watchdog_seconds = 0.0;  // mpi_transport::set_watchdog for "ours" (0: none)
};

std::int64_t iterations_for(const bench_options& o, std::size_t n) {
  if (o.iterations > 0) return o.iterations;
  if (n < 10000) return 1000;
  if (n < 1000000) return 100;
  return 10;
}

// Removes our options (and the ones that break lockstep) from argv; returns what they said.
bench_options parse_options(int& argc, char** argv, bool root) {
  bench_options o;
  int kept = 1;
  const auto value = [](const std::string& arg, const std::string& name) -> const char* {
    return arg.rfind(name, 0) == 0 ? arg.c_str() + name.size() : nullptr;
  };
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (const char* v = value(arg, "--dho2_sizes=")) {
      o.sizes.clear();
      std::string list = v;
      std::size_t start = 0;
      while (start <= list.size()) {
        const std::size_t comma = std::min(list.find(',', start), list.size());
        if (comma > start) o.sizes.push_back(std::stoull(list.substr(start, comma - start)));
        start = comma + 1;
      }
    } else if (const char* it = value(arg, "--dho2_iterations=")) {
      o.iterations = std::stoll(it);
    } else if (const char* rep = value(arg, "--dho2_repetitions=")) {
      o.repetitions = std::stoi(rep);
    } else if (const char* timeout = value(arg, "--dho2_timeout=")) {
      o.timeout_seconds = std::stod(timeout);
    } else if (const char* watchdog = value(arg, "--dho2_watchdog=")) {
      o.watchdog_seconds = std::stod(watchdog);
    } else if (arg.rfind("--benchmark_min_warmup_time", 0) == 0 ||
               arg.rfind("--benchmark_enable_random_interleaving", 0) == 0) {
      if (root)
        std::printf("bench_mpi_collectives: ignoring %s (ranks must stay in lockstep)\n",
                    arg.c_str());
    } else if (!root && (arg.rfind("--benchmark_out", 0) == 0)) {
      // only rank 0 writes the output file
    } else {
      argv[kept++] = argv[i];
    }
  }
  argc = kept;
  argv[argc] = nullptr;
  return o;
}

// Reports nothing (ranks other than 0).
class null_reporter : public benchmark::BenchmarkReporter {
 public:
  bool ReportContext(const Context& /*context*/) override { return true; }
  void ReportRuns(const std::vector<Run>& /*reports*/) override {}
};

// The console reporter, also collecting the medians of each benchmark for the ratio table.
class ratio_reporter : public benchmark::ConsoleReporter {
 public:
  // No colours: mpirun forwards a rank's stdout through a pseudo-terminal even into a file.
  ratio_reporter() : ConsoleReporter(OO_Tabular) {}

  void ReportRuns(const std::vector<Run>& reports) override {
    for (const auto& run : reports) {
      if (run.run_type != Run::RT_Aggregate || run.aggregate_name != "median" ||
          run.error_occurred) {
        continue;
      }
      const std::string& name = run.run_name.function_name;  // "<op>/<kind>/n:<n>"
      const auto first = name.find('/');
      const auto second = name.find('/', first + 1);
      if (first == std::string::npos || second == std::string::npos) continue;
      row& r = rows_[name.substr(0, first) + name.substr(second)];
      const std::string kind = name.substr(first + 1, second - first - 1);
      const double seconds =
          run.GetAdjustedRealTime() / benchmark::GetTimeUnitMultiplier(run.time_unit);
      if (kind == "ours") r.ours = seconds;
      if (kind == "raw_MPI") r.raw = seconds;
      if (kind == "paired") {
        r.paired_ours = counter(run, "ours_time");
        r.paired_raw = counter(run, "raw_time");
        r.paired_ratio = counter(run, "ratio");
      }
    }
    ConsoleReporter::ReportRuns(reports);
  }

  // The table of medians: separate benchmarks, and the interleaved (paired) measurement.
  void print_ratios() const {
    std::printf(
        "\nmedians per collective, ours / raw MPI (target ratio <= 1.2); 'paired' alternates ours "
        "and raw\nin every iteration (robust to load changes), its ratio is the median over "
        "repetitions of\nmedian(ours) / median(raw) over iterations:\n");
    std::printf("  %-30s %12s %12s %7s | %12s %12s %7s\n", "collective", "ours us", "raw us",
                "ratio", "paired ours", "paired raw", "ratio");
    const auto cell = [](double v, const char* format) {
      char text[32];
      if (v > 0.0) {
        std::snprintf(text, sizeof text, format, v);
      } else {
        std::snprintf(text, sizeof text, "-");  // not run (e.g. filtered out)
      }
      return std::string(text);
    };
    for (const auto& [key, r] : rows_) {
      std::printf("  %-30s %12s %12s %7s | %12s %12s %7s\n", key.c_str(),
                  cell(r.ours * 1e6, "%.2f").c_str(), cell(r.raw * 1e6, "%.2f").c_str(),
                  cell(r.raw > 0.0 ? r.ours / r.raw : 0.0, "%.3f").c_str(),
                  cell(r.paired_ours * 1e6, "%.2f").c_str(),
                  cell(r.paired_raw * 1e6, "%.2f").c_str(), cell(r.paired_ratio, "%.3f").c_str());
    }
  }

 private:
  struct row {
    double ours = 0.0;  // seconds
    double raw = 0.0;
    double paired_ours = 0.0;
    double paired_raw = 0.0;
    double paired_ratio = 0.0;
  };

  static double counter(const Run& run, const std::string& name) {
    const auto it = run.counters.find(name);
    return it == run.counters.end() ? 0.0 : it->second.value;
  }

  std::map<std::string, row> rows_;  // "<op>/n:<n>"
};

void check_mpi(int rc, const char* routine) {
  if (rc != MPI_SUCCESS) throw std::runtime_error(std::string(routine) + " failed");
}

// Runs `op` a fixed number of times untimed (first-touch and connection costs), then once per
// iteration with the lockstep protocol of the file comment.
template <class Op>
void lockstep_loop(benchmark::State& state, MPI_Comm sync, std::size_t n, Op op) {
  for (int i = 0; i < 3; ++i) op();
  for (auto _ : state) {
    check_mpi(MPI_Barrier(sync), "MPI_Barrier");
    const double start = MPI_Wtime();
    op();
    double elapsed = MPI_Wtime() - start;
    check_mpi(MPI_Allreduce(MPI_IN_PLACE, &elapsed, 1, MPI_DOUBLE, MPI_MAX, sync), "MPI_Allreduce");
    state.SetIterationTime(elapsed);
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(n * sizeof(float)));
}

double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  const auto mid = v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2);
  std::nth_element(v.begin(), mid, v.end());
  return *mid;
}

// Like lockstep_loop, but every iteration times `ours` and `raw` separately (each after its own
// barrier, the order alternating between iterations, each the maximum over the ranks); the
// iteration time is their sum. Counters: the medians over the iterations and their ratio.
template <class Ours, class Raw>
void paired_loop(benchmark::State& state, MPI_Comm sync, Ours ours, Raw raw) {
  for (int i = 0; i < 3; ++i) {
    ours();
    raw();
  }
  std::vector<double> ours_times;
  std::vector<double> raw_times;
  bool ours_first = true;
  for (auto _ : state) {
    double times[2] = {0.0, 0.0};  // ours, raw
    for (int half = 0; half < 2; ++half) {
      const bool is_ours = (half == 0) == ours_first;
      check_mpi(MPI_Barrier(sync), "MPI_Barrier");
      const double start = MPI_Wtime();
      if (is_ours) {
        ours();
      } else {
        raw();
      }
      times[is_ours ? 0 : 1] = MPI_Wtime() - start;
    }
    check_mpi(MPI_Allreduce(MPI_IN_PLACE, times, 2, MPI_DOUBLE, MPI_MAX, sync), "MPI_Allreduce");
    ours_times.push_back(times[0]);
    raw_times.push_back(times[1]);
    state.SetIterationTime(times[0] + times[1]);
    ours_first = !ours_first;
  }
  const double m_ours = median(ours_times);
  const double m_raw = median(raw_times);
  state.counters["ours_time"] = m_ours;
  state.counters["raw_time"] = m_raw;
  state.counters["ratio"] = m_raw > 0.0 ? m_ours / m_raw : 0.0;
}

// Everything the benchmarks share: the transport, the raw and sync communicators, buffers.
struct bench_world {
  dho2::mpi_transport transport;
  MPI_Comm raw = MPI_COMM_NULL;
  MPI_Comm sync = MPI_COMM_NULL;

  bench_world() {
    check_mpi(MPI_Comm_dup(MPI_COMM_WORLD, &raw), "MPI_Comm_dup");
    check_mpi(MPI_Comm_dup(MPI_COMM_WORLD, &sync), "MPI_Comm_dup");
  }
  bench_world(const bench_world&) = delete;
  bench_world& operator=(const bench_world&) = delete;
  ~bench_world() {
    MPI_Comm_free(&raw);
    MPI_Comm_free(&sync);
  }
};

// Buffers and even shards of n floats over P ranks.
struct shards {
  std::vector<dho2::index> offsets;
  std::vector<int> counts;
  std::vector<int> displacements;
  std::vector<float> full;
  std::vector<float> mine;

  shards(std::size_t n, int rank, int size) {
    const auto p = static_cast<std::size_t>(size);
    offsets.resize(p + 1);
    for (std::size_t q = 0; q <= p; ++q) {
      offsets[q] = static_cast<dho2::index>(n / p * q + std::min(q, n % p));
    }
    for (std::size_t q = 0; q < p; ++q) {
      counts.push_back(static_cast<int>(offsets[q + 1] - offsets[q]));
      displacements.push_back(static_cast<int>(offsets[q]));
    }
    full.assign(n, 0.0F);  // zeros: the sums stay 0 (no overflow, no subnormals)
    mine.assign(static_cast<std::size_t>(counts[static_cast<std::size_t>(rank)]), 0.0F);
  }
};

void register_all(bench_world& w, const bench_options& o) {
  const int rank = w.transport.rank();
  const int size = w.transport.size();
  // Registers <op>/ours, <op>/raw_MPI and <op>/paired for n floats.
  const auto add = [&](const std::string& op, std::size_t n, auto ours, auto raw) {
    const std::string suffix = "/n:" + std::to_string(n);
    const auto finish = [&](benchmark::internal::Benchmark* b) {
      b->Iterations(iterations_for(o, n))
          ->Repetitions(o.repetitions)
          ->ReportAggregatesOnly(true)
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
    };
    finish(benchmark::RegisterBenchmark((op + "/ours" + suffix).c_str(),
                                        [&w, n, rank, size, ours](benchmark::State& state) {
                                          shards s(n, rank, size);
                                          lockstep_loop(state, w.sync, n, [&] { ours(w, s); });
                                        }));
    finish(benchmark::RegisterBenchmark((op + "/raw_MPI" + suffix).c_str(),
                                        [&w, n, rank, size, raw](benchmark::State& state) {
                                          shards s(n, rank, size);
                                          lockstep_loop(state, w.sync, n, [&] { raw(w, s); });
                                        }));
    finish(benchmark::RegisterBenchmark(
        (op + "/paired" + suffix).c_str(), [&w, n, rank, size, ours, raw](benchmark::State& state) {
          shards s(n, rank, size);
          paired_loop(
              state, w.sync, [&] { ours(w, s); }, [&] { raw(w, s); });
        }));
  };
  for (const std::size_t n : o.sizes) {
    add(
        "all_reduce_sum", n,
        [](bench_world& bw, shards& s) { bw.transport.all_reduce_sum(std::span<float>(s.full)); },
        [](bench_world& bw, shards& s) {
          check_mpi(MPI_Allreduce(MPI_IN_PLACE, s.full.data(), static_cast<int>(s.full.size()),
                                  MPI_FLOAT, MPI_SUM, bw.raw),
                    "MPI_Allreduce");
        });
    add(
        "reduce_scatter_sum", n,
        [](bench_world& bw, shards& s) {
          bw.transport.reduce_scatter_sum(std::span<const float>(s.full), std::span<float>(s.mine),
                                          std::span<const dho2::index>(s.offsets));
        },
        [](bench_world& bw, shards& s) {
          check_mpi(MPI_Reduce_scatter(s.full.data(), s.mine.data(), s.counts.data(), MPI_FLOAT,
                                       MPI_SUM, bw.raw),
                    "MPI_Reduce_scatter");
        });
    add(
        "all_gather", n,
        [](bench_world& bw, shards& s) {
          bw.transport.all_gather(std::span<const float>(s.mine), std::span<float>(s.full),
                                  std::span<const dho2::index>(s.offsets));
        },
        [](bench_world& bw, shards& s) {
          check_mpi(MPI_Allgatherv(s.mine.data(), static_cast<int>(s.mine.size()), MPI_FLOAT,
                                   s.full.data(), s.counts.data(), s.displacements.data(),
                                   MPI_FLOAT, bw.raw),
                    "MPI_Allgatherv");
        });
  }
}

}  // namespace

int main(int argc, char** argv) {
  const boost::mpi::environment env(argc, argv);
  int rank = 0;
  int size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  const bool root = rank == 0;
  const bench_options options = parse_options(argc, argv, root);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("git_revision", dho2_bench::git_revision());
  benchmark::AddCustomContext("transport", "mpi (Boost.MPI, a duplicate of MPI_COMM_WORLD)");
  benchmark::AddCustomContext("world_size", std::to_string(size));
  benchmark::AddCustomContext("scalar", "float");
  if (root) {
    std::printf("bench_mpi_collectives: %d ranks, sizes", size);
    for (const std::size_t n : options.sizes) std::printf(" %zu", n);
    std::printf(" floats, %d repetitions\n", options.repetitions);
  }
  {
    bench_world world;
    world.transport.set_timeout(
        std::chrono::milliseconds(static_cast<long long>(options.timeout_seconds * 1000.0)));
    world.transport.set_watchdog(
        std::chrono::milliseconds(static_cast<long long>(options.watchdog_seconds * 1000.0)));
    register_all(world, options);
    if (root) {
      ratio_reporter reporter;
      benchmark::RunSpecifiedBenchmarks(&reporter);
      reporter.print_ratios();
    } else {
      null_reporter reporter;
      benchmark::RunSpecifiedBenchmarks(&reporter);
    }
    benchmark::Shutdown();
  }
  return 0;
}

#endif  // DHO2_WITH_MPI_BENCHMARK
