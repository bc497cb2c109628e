// A job that would hang forever without mpi_transport::set_watchdog: rank 0 enters an
// all-reduce its peers never join, and the others wait in a recv nobody sends. With a watchdog of
// 1 s every rank writes "... did not complete within timeout = 1.0 s ..." to stderr and ends its
// process (exit code 70), and mpirun ends the job. CTest (mpi.watchdog.np2, .np3) passes when that
// line appears; a hang fails it at its TIMEOUT.
#include <dho2/mpi.hpp>

#include <boost/mpi/environment.hpp>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <span>

int main(int argc, char** argv) {
  const boost::mpi::environment env(argc, argv, false);
  dho2::mpi_transport t;
  t.set_watchdog(std::chrono::milliseconds(1000));
  if (t.rank() == 0) {
    std::array<double, 4> values{1.0, 2.0, 3.0, 4.0};
    t.all_reduce_sum(std::span<double>(values));
  } else {
    std::array<std::byte, 8> bytes{};
    t.recv(std::span<std::byte>(bytes), 0, 7);
  }
  std::fprintf(stderr, "mpi_watchdog_probe: rank %d returned from a call that cannot complete\n",
               t.rank());
  return 1;
}
