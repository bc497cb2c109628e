// Multi-rank tests of dho2::mpi_transport's deadline (`set_timeout`) and of the cross-rank
// settings check over MPI (a doctest program with its own main; CTest runs it as
// mpi.deadline.np<P> for P = 2, 3).
//
// With a timeout, ranks that call collectives in different orders (or with arguments the peers
// cannot match) must get a transport_error within a bound instead of hanging; ranks that agree
// must get the same results as without one. Results are compared over MPI_COMM_WORLD, which the
// transports under test never use.
#include "mpi_doctest_main.hpp"
#include <dho2/core/job_settings.hpp>
#include <dho2/mpi.hpp>
#include <dho2/testing/transport_conformance.hpp>

#include <boost/mpi/collectives.hpp>
#include <boost/mpi/communicator.hpp>
#include <doctest/doctest.h>
#include <mpi.h>

#include <chrono>
#include <cstddef>
#include <functional>
#include <span>
#include <string>
#include <vector>

namespace {

using namespace std::chrono_literals;

std::string rank_label() {
  const boost::mpi::communicator world;
  return "rank " + std::to_string(world.rank()) + " of " + std::to_string(world.size());
}

// What a rank's call sequence ended with, and how long it took.
struct ending {
  std::string error;  // "" when every call returned
  double seconds = 0.0;
};

template <class F>
ending timed_ending(F&& f) {
  const auto t0 = std::chrono::steady_clock::now();
  ending e;
  try {
    f();
  } catch (const dho2::transport_error& x) {
    e.error = x.what();
  }
  e.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return e;
}

// Every rank's call sequence `calls(t)` on a fresh transport with a 1.5 s timeout must end
// within 10 s on every rank, and at least one rank must report the timeout naming the routine.
template <class Calls>
void check_bounded(const std::string& label, Calls calls) {
  INFO(rank_label() << ": " << label);
  const boost::mpi::communicator world;
  if (world.size() < 2) return;
  dho2::mpi_transport t(world);
  t.set_timeout(1500ms);
  const ending mine = timed_ending([&] { calls(t); });
  CHECK_MESSAGE(mine.seconds < 10.0,
                "expected the calls to end within 10 s (timeout 1.5 s), took " << mine.seconds);
  const bool timed_out =
      mine.error.find("did not complete within timeout = 1.5 s") != std::string::npos;
  if (!mine.error.empty()) {
    CHECK_MESSAGE(timed_out, "expected a timeout message, got: " << mine.error);
    // The transport is unusable afterwards, and says why at once.
    const ending later = timed_ending([&] { t.barrier(); });
    CHECK(later.error.find("unusable since an earlier call timed out") != std::string::npos);
    CHECK(later.seconds < 1.0);
  }
  int any = 0;
  boost::mpi::all_reduce(world, timed_out ? 1 : 0, any, std::plus<int>());
  CHECK_MESSAGE(any > 0, "expected at least one rank to report the timeout");
}

}  // namespace

TEST_CASE("deadline: collectives called in different orders end within the bound") {
  check_bounded("all_reduce_sum on rank 0, broadcast on the others", [](dho2::mpi_transport& t) {
    std::vector<double> v(4, 1.0);
    std::vector<std::byte> bytes(32);
    if (t.rank() == 0) {
      t.all_reduce_sum(std::span<double>(v));
      t.broadcast(std::span<std::byte>(bytes), 0);
    } else {
      t.broadcast(std::span<std::byte>(bytes), 0);
      t.all_reduce_sum(std::span<double>(v));
    }
  });
  check_bounded("a barrier the last rank never joins", [](dho2::mpi_transport& t) {
    if (t.rank() != t.size() - 1) t.barrier();
  });
  check_bounded("an all_gather the last rank skips", [](dho2::mpi_transport& t) {
    if (t.rank() == t.size() - 1) return;
    std::vector<dho2::index> offsets;
    for (int r = 0; r <= t.size(); ++r) offsets.push_back(r);
    const double mine = t.rank();
    std::vector<double> all(static_cast<std::size_t>(t.size()));
    t.all_gather(std::span<const double>(&mine, 1), std::span<double>(all), offsets);
  });
  check_bounded("a recv of a message never sent", [](dho2::mpi_transport& t) {
    if (t.rank() != 0) return;
    std::vector<std::byte> bytes(8);
    t.recv(std::span<std::byte>(bytes), 1, 7);
  });
}

TEST_CASE("deadline: with a timeout, matched calls conform and give the same results") {
  INFO(rank_label());
  const boost::mpi::communicator world;
  dho2::mpi_transport t(world);
  t.set_timeout(30s);
  CHECK(t.timeout() == 30s);
  const auto failures = dho2::testing::transport_conformance(t);
  for (const auto& f : failures) CHECK_MESSAGE(false, f);
  dho2::mpi_transport half = t.split(t.rank() % 2, 0);
  CHECK(half.timeout() == 30s);  // inherited by split
  std::vector<float> v(1000, static_cast<float>(t.rank() + 1));
  t.all_reduce_sum(std::span<float>(v));
  const float expected = static_cast<float>(t.size() * (t.size() + 1) / 2);
  CHECK(v.front() == expected);
  CHECK(v.back() == expected);
}

TEST_CASE("check_settings_agree over MPI names each rank's value on every rank") {
  INFO(rank_label());
  const boost::mpi::communicator world;
  dho2::mpi_transport t(world);
  t.set_timeout(30s);
  const dho2::job_settings mine{{"batch", "20"}, {"epochs", t.rank() == 1 ? "5" : "3"}};
  std::string field;
  std::string value;
  try {
    dho2::check_settings_agree(t, std::span<const dho2::job_setting>(mine));
  } catch (const dho2::invalid_options& e) {
    field = std::string(e.field());
    value = std::string(e.value());
  }
  if (t.size() == 1) {
    CHECK(field.empty());
  } else if (t.size() == 2) {
    CHECK(field == "epochs");
    CHECK(value == "3 on rank 0, 5 on rank 1");
  } else {
    CHECK(field == "epochs");
    std::string others = "0";
    for (int r = 2; r < t.size(); ++r) others += ", " + std::to_string(r);
    CHECK(value == "3 on ranks " + others + "; 5 on rank 1");
  }
}

int main(int argc, char** argv) {
  return dho2_test::run_mpi_doctest(argc, argv, "dho2 mpi deadline",
                                    [](const boost::mpi::communicator&) {});
}
