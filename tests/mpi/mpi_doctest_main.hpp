// The doctest runner of the MPI test programs: include it in the one file of the program that
// defines main() (it implements doctest there), and return run_mpi_doctest(...) from main().
//
// Every rank runs every test case; rank 0 prints doctest's full report, the other ranks only
// their failures (--minimal). The exit code is non-zero on every rank if any rank failed (the
// failures are counted over MPI_COMM_WORLD), and rank 0 prints one summary line.
#pragma once

#ifndef DOCTEST_CONFIG_IMPLEMENT
#define DOCTEST_CONFIG_IMPLEMENT
#endif

#include <boost/mpi/collectives.hpp>
#include <boost/mpi/communicator.hpp>
#include <boost/mpi/environment.hpp>
#include <doctest/doctest.h>

#include <functional>
#include <iostream>
#include <string>
#include <string_view>
#include <utility>

namespace dho2_test {

// Initialises MPI, runs the test cases and finalises MPI; `program` names the program in the
// summary line. `before_finalize(world)` runs on every rank after the tests, just before MPI is
// finalised (e.g. to create an object that must outlive MPI).
template <class BeforeFinalize>
int run_mpi_doctest(int argc, char** argv, std::string_view program,
                    BeforeFinalize&& before_finalize) {
  int failed_ranks = 0;
  {
    const boost::mpi::environment env(argc, argv);
    const boost::mpi::communicator world;
    doctest::Context context;
    context.applyCommandLine(argc, argv);
    if (world.rank() != 0) {
      context.setOption("minimal", true);
      context.setOption("no-version", true);
      context.setOption("no-colors", true);
    }
    const int result = context.run();
    if (context.shouldExit()) return result;
    failed_ranks = boost::mpi::all_reduce(world, result != 0 ? 1 : 0, std::plus<>());
    if (world.rank() == 0) {
      std::cout << "[" << program << "] " << world.size() << " ranks, "
                << (failed_ranks == 0 ? std::string("all passed")
                                      : std::to_string(failed_ranks) + " rank(s) failed")
                << std::endl;
    }
    std::forward<BeforeFinalize>(before_finalize)(world);
  }
  return failed_ranks == 0 ? 0 : 1;
}

// The same with nothing to do before MPI is finalised.
inline int run_mpi_doctest(int argc, char** argv, std::string_view program) {
  return run_mpi_doctest(argc, argv, program, [](const boost::mpi::communicator&) {});
}

}  // namespace dho2_test
