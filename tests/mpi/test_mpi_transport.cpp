// Multi-rank tests of dho2::mpi_transport (a doctest program with its own main; run it under
// `mpirun -np P`, CTest registers P = 1 2 3 4 as mpi.transport.np<P>).
//
// Every rank runs every test case in the same order and every collective unconditionally (only
// non-fatal CHECKs, no REQUIRE), so a failure on one rank never desynchronises the others.
// Rank 0 prints doctest's full report; the other ranks print only their failures (doctest's
// --minimal), each prefixed with "rank r of P" through INFO. The exit code is non-zero on every
// rank if any rank failed (see mpi_doctest_main.hpp).
#include "mpi_doctest_main.hpp"
#include <dho2/mpi.hpp>
#include <dho2/testing/transport_conformance.hpp>

#include <boost/mpi/collectives.hpp>
#include <boost/mpi/communicator.hpp>
#include <doctest/doctest.h>
#include <mpi.h>

#include <climits>
#include <cstddef>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace {

// Runs the conformance body on `t` and reports every failure it returns.
void run_conformance(dho2::mpi_transport& t, const std::string& label) {
  const auto failures = dho2::testing::transport_conformance(t);
  for (const auto& f : failures) FAIL_CHECK(label << ": " << f);
  const std::string summary =
      label + ": " + std::to_string(failures.size()) + " conformance failures";
  CHECK_MESSAGE(failures.empty(), summary);
}

// The message of the transport_error `f` throws, or "" (and a failed check) if it throws none.
template <class F>
std::string error_of(F&& f) {
  try {
    std::forward<F>(f)();
  } catch (const dho2::transport_error& e) {
    return e.what();
  } catch (const std::exception& e) {
    FAIL_CHECK("expected dho2::transport_error, caught another exception: " << e.what());
    return {};
  }
  FAIL_CHECK("expected dho2::transport_error, nothing was thrown");
  return {};
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

std::string rank_label() {
  const boost::mpi::communicator world;
  return "rank " + std::to_string(world.rank()) + " of " + std::to_string(world.size());
}

std::vector<std::byte> pattern(std::size_t n, int seed) {
  std::vector<std::byte> bytes(n);
  for (std::size_t i = 0; i < n; ++i) {
    bytes[i] = static_cast<std::byte>((static_cast<std::size_t>(seed) * 29U + i * 7U) & 0xffU);
  }
  return bytes;
}

}  // namespace

TEST_CASE("mpi_transport passes the transport conformance suite on MPI_COMM_WORLD") {
  INFO(rank_label());
  dho2::mpi_transport t;
  const boost::mpi::communicator world;
  CHECK(t.rank() == world.rank());
  CHECK(t.size() == world.size());
  run_conformance(t, "world");
}

TEST_CASE("mpi_transport conforms on a user sub-communicator and on its own split groups") {
  INFO(rank_label());
  const boost::mpi::communicator world;
  // Odd sizes on purpose: ranks 0, 3, 6, ... against the others.
  const boost::mpi::communicator user = world.split(world.rank() % 3 == 0 ? 0 : 1);
  dho2::mpi_transport from_user(user);
  CHECK(from_user.size() == user.size());
  CHECK(from_user.rank() == user.rank());
  run_conformance(from_user, "user sub-communicator");

  dho2::mpi_transport t;
  dho2::mpi_transport half = t.split(t.rank() < (t.size() + 1) / 2 ? 7 : -3, -t.rank());
  run_conformance(half, "split(two halves, key = -rank)");
}

TEST_CASE("the transport's communicator is a congruent duplicate of the user's") {
  INFO(rank_label());
  const boost::mpi::communicator world;
  dho2::mpi_transport t(world);
  int result = -1;
  CHECK(MPI_Comm_compare(world, t.native_handle(), &result) == MPI_SUCCESS);
  const std::string compared = "MPI_Comm_compare gave " + std::to_string(result) +
                               ", MPI_CONGRUENT is " + std::to_string(MPI_CONGRUENT);
  CHECK_MESSAGE(result == MPI_CONGRUENT, compared);
  CHECK(t.native_handle() != static_cast<MPI_Comm>(world));

  // Errors return codes on the duplicate; the user's handler is untouched.
  MPI_Errhandler handler = MPI_ERRHANDLER_NULL;
  CHECK(MPI_Comm_get_errhandler(t.native_handle(), &handler) == MPI_SUCCESS);
  CHECK(handler == MPI_ERRORS_RETURN);
  if (handler != MPI_ERRHANDLER_NULL) MPI_Errhandler_free(&handler);

  // A split with one colour and equal keys is congruent to its parent, but again a new context.
  dho2::mpi_transport same = t.split(0, 0);
  result = -1;
  CHECK(MPI_Comm_compare(t.native_handle(), same.native_handle(), &result) == MPI_SUCCESS);
  CHECK(result == MPI_CONGRUENT);

  // Moving hands the communicator over; the moved-from transport throws on use.
  const MPI_Comm before = t.native_handle();
  dho2::mpi_transport moved(std::move(t));
  CHECK(moved.native_handle() == before);
  CHECK(t.native_handle() == MPI_COMM_NULL);                      // NOLINT(bugprone-use-after-move)
  const std::string moved_from = error_of([&] { t.barrier(); });  // NOLINT(bugprone-use-after-move)
  CHECK(contains(moved_from, "mpi barrier"));
  CHECK(contains(moved_from, "moved from"));
  moved.barrier();
}

TEST_CASE("messages on the user's communicator never reach the transport (isolation)") {
  INFO(rank_label());
  const boost::mpi::communicator world;
  dho2::mpi_transport t(world);
  const int p = t.size();
  const int r = t.rank();
  const int next = (r + 1) % p;
  const int prev = (r - 1 + p) % p;
  const int tag = 7;

  // Sent first on the user's communicator with the same (peer, tag): if the contexts were
  // shared, MPI's ordering would match it to the transport's receive below.
  const auto user_message = pattern(3, 100 + r);
  MPI_Request request = MPI_REQUEST_NULL;
  CHECK(MPI_Isend(user_message.data(), 3, MPI_BYTE, next, tag, world, &request) == MPI_SUCCESS);
  const auto ours = pattern(5, 200 + r);
  t.send(std::span<const std::byte>(ours), next, tag);

  std::vector<std::byte> got(5);
  const std::string failure = [&]() -> std::string {
    try {
      t.recv(std::span<std::byte>(got), prev, tag);
    } catch (const std::exception& e) {
      return e.what();
    }
    return {};
  }();
  CHECK_MESSAGE(failure.empty(), failure);
  CHECK(got == pattern(5, 200 + prev));

  int pending = 1;
  MPI_Status status;
  CHECK(MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, t.native_handle(), &pending, &status) ==
        MPI_SUCCESS);
  CHECK_MESSAGE(pending == 0, "a message is pending on the transport's communicator");

  std::vector<std::byte> user_got(3);
  CHECK(MPI_Recv(user_got.data(), 3, MPI_BYTE, prev, tag, world, MPI_STATUS_IGNORE) == MPI_SUCCESS);
  CHECK(user_got == pattern(3, 100 + prev));
  CHECK(MPI_Wait(&request, MPI_STATUS_IGNORE) == MPI_SUCCESS);
  t.barrier();
}

TEST_CASE("recv with the wrong length throws transport_error naming the cause") {
  INFO(rank_label());
  dho2::mpi_transport t;
  const int p = t.size();
  const int r = t.rank();
  const int next = (r + 1) % p;
  const int prev = (r - 1 + p) % p;

  // Longer than the buffer: MPI_Recv itself fails (MPI_ERR_TRUNCATE). Small messages are sent
  // eagerly, so a ring of blocking sends completes before the receives are posted.
  const auto ten = pattern(10, r);
  t.send(std::span<const std::byte>(ten), next, 21);
  std::vector<std::byte> seven(7);
  const std::string longer = error_of([&] { t.recv(std::span<std::byte>(seven), prev, 21); });
  CHECK(contains(
      longer, "mpi recv [rank " + std::to_string(r) + ", world size " + std::to_string(p) + "]"));
  CHECK(contains(longer, "MPI_Recv"));
  CHECK(contains(longer, "MPI_ERR_TRUNCATE"));
  CHECK(contains(longer, "receive buffer of 7 bytes"));

  // Shorter than the buffer: MPI_Recv succeeds, the length check fails.
  const auto four = pattern(4, r);
  t.send(std::span<const std::byte>(four), next, 22);
  std::vector<std::byte> eight(8);
  const std::string shorter = error_of([&] { t.recv(std::span<std::byte>(eight), prev, 22); });
  CHECK(contains(shorter, "MPI_Recv length check"));
  CHECK(contains(shorter, "has 4 bytes, the receive buffer 8"));

  // The transport is still usable, and a throwing call counted no bytes.
  const auto before = t.stats();
  double one = 1.0;
  t.all_reduce_sum(std::span<double>(&one, 1));
  CHECK(one == p);
  CHECK(t.stats().calls == before.calls + 1);
}

TEST_CASE("argument errors throw before any communication, on every rank") {
  INFO(rank_label());
  dho2::mpi_transport t;
  const int p = t.size();
  const int r = t.rank();
  std::vector<float> full(10);
  std::vector<float> shard(10);
  const std::vector<dho2::index> short_offsets(static_cast<std::size_t>(p), 0);
  const auto stats = t.stats();

  const std::string bad_offsets = error_of([&] {
    t.all_gather(std::span<const float>(shard), std::span<float>(full),
                 std::span<const dho2::index>(short_offsets));
  });
  CHECK(contains(bad_offsets, "mpi all_gather"));
  CHECK(contains(bad_offsets, "offsets.size() = " + std::to_string(p)));

  std::vector<dho2::index> offsets(static_cast<std::size_t>(p) + 1, 0);
  offsets.back() = 10;  // everything on the last rank
  const std::string bad_length = error_of([&] {
    t.reduce_scatter_sum(std::span<const float>(full).first(9), std::span<float>(shard),
                         std::span<const dho2::index>(offsets));
  });
  CHECK(contains(bad_length, "in.size() = 9 != offsets.back() = 10"));

  std::vector<std::byte> bytes(3);
  CHECK(contains(error_of([&] { t.broadcast(std::span<std::byte>(bytes), p); }), "root = "));
  CHECK(contains(error_of([&] { t.send(std::span<const std::byte>(bytes), p, 0); }), "peer = "));
  CHECK(contains(error_of([&] { t.recv(std::span<std::byte>(bytes), r, -1); }),
                 "tag = -1 is out of range"));
  CHECK(t.stats().bytes_sent == stats.bytes_sent);
  CHECK(t.stats().bytes_received == stats.bytes_received);

  // Counts above INT_MAX are rejected (checked on the helper: such buffers do not fit here).
  CHECK(dho2::detail::mpi_count_error(static_cast<std::size_t>(INT_MAX), "n").empty());
  const std::string too_big =
      dho2::detail::mpi_count_error(static_cast<std::size_t>(INT_MAX) + 1, "values.size()");
  CHECK(contains(too_big, "values.size() = 2147483648 exceeds INT_MAX"));

  t.barrier();  // every rank got here without communicating above
}

TEST_CASE("stats count the documented logical payload, balanced over the group") {
  INFO(rank_label());
  const boost::mpi::communicator world;
  dho2::mpi_transport t;
  const auto p = static_cast<std::size_t>(t.size());
  const auto r = static_cast<std::size_t>(t.rank());

  const std::size_t n = 1001;
  std::vector<float> v(n, 1.0F);
  t.all_reduce_sum(std::span<float>(v));
  const std::size_t chunk = n / p + (r < n % p ? 1 : 0);
  const std::size_t reduce_bytes = ((n - chunk) + (p - 1) * chunk) * sizeof(float);
  CHECK(t.stats().bytes_sent == reduce_bytes);
  CHECK(t.stats().bytes_received == reduce_bytes);
  CHECK(t.stats().calls == 1);
  CHECK(t.stats().seconds >= 0.0);

  t.reset_stats();
  std::vector<dho2::index> offsets(p + 1, 0);
  for (std::size_t q = 0; q < p; ++q) {
    offsets[q + 1] = offsets[q] + static_cast<dho2::index>(q % 2 == 0 ? 5 + q : 0);
  }
  const auto total = static_cast<std::size_t>(offsets.back());
  const auto mine = static_cast<std::size_t>(offsets[r + 1] - offsets[r]);
  std::vector<double> in(total, 2.0);
  std::vector<double> out(mine);
  t.reduce_scatter_sum(std::span<const double>(in), std::span<double>(out),
                       std::span<const dho2::index>(offsets));
  CHECK(t.stats().bytes_sent == (total - mine) * sizeof(double));
  CHECK(t.stats().bytes_received == (p - 1) * mine * sizeof(double));
  t.all_gather(std::span<const double>(out), std::span<double>(in),
               std::span<const dho2::index>(offsets));
  std::vector<std::byte> bytes(100);
  t.broadcast(std::span<std::byte>(bytes), static_cast<int>(p) - 1);
  t.barrier();
  CHECK(t.stats().calls == 4);

  const auto sent = boost::mpi::all_reduce(world, t.stats().bytes_sent, std::plus<>());
  const auto received = boost::mpi::all_reduce(world, t.stats().bytes_received, std::plus<>());
  CHECK(sent == received);
  CHECK(sent == 2 * (p - 1) * total * sizeof(double) + (p - 1) * 100);
}

TEST_CASE("many transports and splits are created and freed") {
  INFO(rank_label());
  dho2::mpi_transport t;
  for (int i = 0; i < 100; ++i) {
    dho2::mpi_transport sub = t.split(t.rank() % 2, i % 3 == 0 ? -t.rank() : t.rank());
    double x = 1.0;
    sub.all_reduce_sum(std::span<double>(&x, 1));
    CHECK(x == sub.size());
    dho2::mpi_transport again;
    sub = std::move(again);  // frees the split's communicator, adopts a new duplicate of world
    CHECK(sub.size() == t.size());
  }
  t.barrier();
}

TEST_CASE("construction requires a usable communicator") {
  INFO(rank_label());
  const boost::mpi::communicator world;
  // A split in which this rank takes no part yields a null Boost communicator.
  const boost::mpi::communicator none = world.split(MPI_UNDEFINED);
  CHECK_FALSE(static_cast<bool>(none));
  CHECK(contains(error_of([&] { dho2::mpi_transport bad(none); }), "MPI_COMM_NULL"));
}

int main(int argc, char** argv) {
  // Declared before the environment, destroyed after MPI_Finalize: its destructor must notice
  // and not call MPI_Comm_free.
  std::optional<dho2::mpi_transport> outlives_mpi;
  return dho2_test::run_mpi_doctest(
      argc, argv, "dho2 mpi",
      [&](const boost::mpi::communicator& world) { outlives_mpi.emplace(world); });
}
