// Tests of dho2::inproc_transport (include/dho2/transport/inproc.hpp): the shared conformance body
// (dho2::testing::transport_conformance) at P = 1, 2, 3, 4, 7 and with both all-reduce
// algorithms; the failure semantics (a rank that leaves, a rank that is late past the timeout,
// mismatched arguments, point-to-point failures, a poisoned world) with their messages and
// bounded times; traffic accounting; handle and option validation.
//
// Every multi-threaded test runs under a watchdog: a hang aborts the test binary with a message
// instead of blocking the suite.
#include <dho2/core/errors.hpp>
#include <dho2/testing/transport_conformance.hpp>
#include <dho2/transport/inproc.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <limits>
#include <mutex>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

// Runs `f` on another thread; aborts the whole binary if it has not finished within `limit`
// (a hang must fail the suite, not block it). Rethrows what `f` threw.
template <class F>
void with_watchdog(const char* what, F f, std::chrono::seconds limit = 20s) {
  auto done = std::async(std::launch::async, std::move(f));
  if (done.wait_for(limit) != std::future_status::ready) {
    std::fprintf(stderr, "WATCHDOG: '%s' did not finish within %lld s (a transport hang)\n", what,
                 static_cast<long long>(limit.count()));
    std::fflush(stderr);
    std::abort();
  }
  done.get();
}

double seconds_since(clock_type::time_point start) {
  return std::chrono::duration<double>(clock_type::now() - start).count();
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// True when `a` and `b` hold the same bit patterns.
bool same_bits(const std::vector<double>& a, const std::vector<double>& b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](double x, double y) {
    return std::bit_cast<std::uint64_t>(x) == std::bit_cast<std::uint64_t>(y);
  });
}

dho2::inproc_options short_timeout(double seconds) {
  dho2::inproc_options options;
  options.timeout = std::chrono::duration<double>(seconds);
  return options;
}

// Per-rank outcome of a fault test: the message of the transport_error it caught ("" if none)
// and how long the failing call took.
struct outcome {
  std::string message;
  double seconds = 0.0;
};

// Runs `call` on every rank (through run_inproc under the watchdog) and records what it threw.
template <class Call>
std::vector<outcome> outcomes(int p, const dho2::inproc_options& options, Call call) {
  std::vector<outcome> result(static_cast<std::size_t>(p));
  with_watchdog("fault test", [&] {
    dho2::run_inproc(p, options, [&](dho2::inproc_transport& t) {
      auto& mine = result[static_cast<std::size_t>(t.rank())];
      const auto start = clock_type::now();
      try {
        call(t);
      } catch (const dho2::transport_error& e) {
        mine.message = e.what();
      }
      mine.seconds = seconds_since(start);
    });
  });
  return result;
}

void check_conformance(int p, const dho2::inproc_options& options) {
  std::mutex mutex;
  std::vector<std::string> failures;
  with_watchdog("conformance", [&] {
    dho2::run_inproc(p, options, [&](dho2::inproc_transport& t) {
      const auto found = dho2::testing::transport_conformance(t);
      const std::lock_guard lock(mutex);
      failures.insert(failures.end(), found.begin(), found.end());
    });
  });
  std::string all;
  for (const auto& f : failures) all += f + "\n";
  INFO("P = ", p, ", failures:\n", all);
  CHECK(failures.empty());
}

}  // namespace

TEST_CASE("inproc transport: conformance at P = 1, 2, 3, 4, 7") {
  for (const int p : {1, 2, 3, 4, 7}) {
    CAPTURE(p);
    check_conformance(p, short_timeout(10.0));
  }
}

TEST_CASE("inproc transport: conformance with each all_reduce algorithm forced") {
  auto chunked = short_timeout(10.0);
  chunked.chunked_all_reduce_bytes = 0;  // every all-reduce chunked
  auto direct = short_timeout(10.0);
  direct.chunked_all_reduce_bytes = std::numeric_limits<std::size_t>::max();
  check_conformance(3, chunked);
  check_conformance(4, direct);
}

TEST_CASE("inproc transport: both all_reduce algorithms give the same bits on every rank") {
  const int p = 4;
  const std::size_t n = 5003;
  const auto run = [&](std::size_t threshold) {
    auto options = short_timeout(10.0);
    options.chunked_all_reduce_bytes = threshold;
    std::vector<std::vector<double>> results(p);
    with_watchdog("algorithms", [&] {
      dho2::run_inproc(p, options, [&](dho2::inproc_transport& t) {
        std::vector<double> v(n);
        for (std::size_t i = 0; i < n; ++i) {
          v[i] = dho2::testing::detail::conformance_noise(t.rank(), i) * (1.0 + t.rank());
        }
        t.all_reduce_sum(std::span<double>(v));
        results[static_cast<std::size_t>(t.rank())] = std::move(v);
      });
    });
    return results;
  };
  const auto chunked = run(0);
  const auto direct = run(std::numeric_limits<std::size_t>::max());
  for (int r = 0; r < p; ++r) {
    CAPTURE(r);
    const auto& a = chunked[static_cast<std::size_t>(r)];
    const auto& b = direct[static_cast<std::size_t>(r)];
    REQUIRE(a.size() == n);
    REQUIRE(b.size() == n);
    CHECK(same_bits(a, chunked[0]));
    CHECK(same_bits(a, b));
  }
}

TEST_CASE("inproc transport: a rank that leaves fails its peers' all_reduce_sum at once") {
  const double timeout = 2.0;
  // delay 0: the peers enter all_reduce_sum after rank 2 left; 100 ms: they are already waiting.
  for (const auto delay : {0ms, 100ms}) {
    CAPTURE(delay.count());
    const auto result = outcomes(4, short_timeout(timeout), [&](dho2::inproc_transport& t) {
      if (t.rank() == 2) {
        std::this_thread::sleep_for(delay);
        return;  // the handle is destroyed by run_inproc: rank 2 leaves the group
      }
      std::vector<double> v(10, 1.0);
      t.all_reduce_sum(std::span<double>(v));
    });
    for (int r : {0, 1, 3}) {
      const auto& o = result[static_cast<std::size_t>(r)];
      CAPTURE(r);
      CAPTURE(o.message);
      CHECK(contains(o.message, "inproc all_reduce_sum"));
      CHECK(contains(o.message, "world size 4"));
      CHECK(contains(o.message, "peer 2 left the group"));
      CHECK(o.seconds < timeout + 1.0);
    }
    CHECK(result[2].message.empty());
  }
}

TEST_CASE("inproc transport: a rank late past the timeout makes the others time out") {
  const double timeout = 0.3;
  double late_call = -1.0;  // how long the late rank's own call took (written by rank 1 only)
  const auto result = outcomes(3, short_timeout(timeout), [&](dho2::inproc_transport& t) {
    if (t.rank() == 1) std::this_thread::sleep_for(900ms);
    const auto start = clock_type::now();
    try {
      std::vector<float> v(5, 1.0f);
      t.all_reduce_sum(std::span<float>(v));
    } catch (const dho2::transport_error&) {
      if (t.rank() == 1) late_call = seconds_since(start);
      throw;
    }
  });
  for (int r : {0, 2}) {
    const auto& o = result[static_cast<std::size_t>(r)];
    CAPTURE(r);
    CAPTURE(o.message);
    CHECK(contains(o.message, "inproc all_reduce_sum"));
    CHECK(contains(o.message, "world size 3"));
    CHECK(contains(o.message, "timed out after 0.3 s waiting for peer"));
    CHECK(o.seconds >= timeout * 0.9);
    CHECK(o.seconds < timeout + 1.5);
  }
  // The late rank finds the world already failed: it throws at once.
  CAPTURE(result[1].message);
  CHECK(late_call >= 0.0);
  CHECK(late_call < 0.25);
  CHECK(contains(result[1].message, "failed earlier"));
  CHECK(contains(result[1].message, "timed out after 0.3 s"));
}

TEST_CASE("inproc transport: mismatched arguments fail on every rank, then the world is poisoned") {
  const auto options = short_timeout(5.0);
  const auto every_rank = [](const std::vector<outcome>& result, const std::string& routine,
                             const std::string& cause) {
    for (std::size_t r = 0; r < result.size(); ++r) {
      CAPTURE(r);
      CAPTURE(result[r].message);
      CHECK(contains(result[r].message, "inproc " + routine));
      CHECK(contains(result[r].message, cause));
      CHECK(result[r].seconds < 2.0);
    }
  };
  SUBCASE("lengths") {
    every_rank(outcomes(3, options,
                        [](dho2::inproc_transport& t) {
                          std::vector<double> v(t.rank() == 1 ? 11 : 10, 1.0);
                          t.all_reduce_sum(std::span<double>(v));
                        }),
               "all_reduce_sum", "length mismatch: rank 0 passed 10 elements, rank 1 passed 11");
  }
  SUBCASE("element types") {
    every_rank(outcomes(2, options,
                        [](dho2::inproc_transport& t) {
                          if (t.rank() == 0) {
                            std::vector<double> v(4, 1.0);
                            t.all_reduce_sum(std::span<double>(v));
                          } else {
                            std::vector<float> v(4, 1.0f);
                            t.all_reduce_sum(std::span<float>(v));
                          }
                        }),
               "all_reduce_sum",
               "element type mismatch: rank 0 passed double, rank 1 passed float");
  }
  SUBCASE("routines") {
    const auto result = outcomes(3, options, [](dho2::inproc_transport& t) {
      if (t.rank() == 2) {
        t.barrier();
      } else {
        std::vector<double> v(4, 1.0);
        t.all_reduce_sum(std::span<double>(v));
      }
    });
    for (const auto& o : result) {
      CAPTURE(o.message);
      CHECK(contains(o.message,
                     "ranks called different collectives: rank 0 all_reduce_sum "
                     "(phase 1), rank 2 barrier (phase 1)"));
    }
  }
  SUBCASE("offsets invalid on one rank, offsets differing, broadcast roots") {
    every_rank(outcomes(2, options,
                        [](dho2::inproc_transport& t) {
                          const std::vector<dho2::index> good{0, 2, 4};
                          const std::vector<dho2::index> bad{0, 3, 2};
                          std::vector<double> in(4, 1.0);
                          std::vector<double> out(2);
                          t.reduce_scatter_sum(std::span<const double>(in), std::span<double>(out),
                                               t.rank() == 1 ? bad : good);
                        }),
               "reduce_scatter_sum", "invalid arguments on rank 1: offsets decrease at 2");
    every_rank(
        outcomes(2, options,
                 [](dho2::inproc_transport& t) {
                   const std::vector<dho2::index> offsets = t.rank() == 0
                                                                ? std::vector<dho2::index>{0, 1, 4}
                                                                : std::vector<dho2::index>{0, 3, 4};
                   std::vector<double> in(1);  // both ranks' own shards have length 1
                   std::vector<double> out(4);
                   t.all_gather(std::span<const double>(in), std::span<double>(out), offsets);
                 }),
        "all_gather", "offsets mismatch between rank 0 and rank 1");
    every_rank(outcomes(3, options,
                        [](dho2::inproc_transport& t) {
                          std::vector<std::byte> bytes(8);
                          t.broadcast(std::span<std::byte>(bytes), t.rank() == 0 ? 0 : 1);
                        }),
               "broadcast", "root mismatch: rank 0 passed root 0, rank 1 passed root 1");
  }
  SUBCASE("every later call throws at once") {
    const auto result = outcomes(3, options, [](dho2::inproc_transport& t) {
      std::vector<double> v(t.rank() == 2 ? 3 : 2, 1.0);
      try {
        t.all_reduce_sum(std::span<double>(v));
      } catch (const dho2::transport_error&) {
      }
      t.barrier();
    });
    for (const auto& o : result) {
      CAPTURE(o.message);
      CHECK(contains(o.message, "inproc barrier"));
      CHECK(contains(o.message, "failed earlier and is unusable: length mismatch"));
      CHECK(o.seconds < 2.0);
    }
  }
}

TEST_CASE("inproc transport: a failure inside a sub-group leaves the parent group usable") {
  std::vector<std::string> messages(4);
  std::vector<double> sums(4, 0.0);
  with_watchdog("split failure", [&] {
    dho2::run_inproc(4, short_timeout(5.0), [&](dho2::inproc_transport& t) {
      const auto r = static_cast<std::size_t>(t.rank());
      {
        auto sub = t.split(t.rank() % 2, t.rank());
        std::vector<double> v(t.rank() == 3 ? 2 : 1, 1.0);  // mismatch only in colour 1
        try {
          sub.all_reduce_sum(std::span<double>(v));
        } catch (const dho2::transport_error& e) {
          messages[r] = e.what();
        }
      }
      double one = 1.0;
      t.all_reduce_sum(std::span<double>(&one, 1));
      sums[r] = one;
    });
  });
  CHECK(messages[0].empty());
  CHECK(messages[2].empty());
  CHECK(contains(messages[1], "[rank 0, world size 2]: length mismatch"));
  CHECK(contains(messages[3], "[rank 1, world size 2]: length mismatch"));
  CHECK(sums == std::vector<double>(4, 4.0));
}

TEST_CASE("inproc transport: point-to-point failures") {
  SUBCASE("the sender left without sending") {
    const auto result = outcomes(2, short_timeout(2.0), [](dho2::inproc_transport& t) {
      if (t.rank() == 0) return;
      std::vector<std::byte> bytes(4);
      t.recv(std::span<std::byte>(bytes), 0, 5);
    });
    CAPTURE(result[1].message);
    CHECK(contains(result[1].message, "inproc recv [rank 1, world size 2]"));
    CHECK(contains(result[1].message,
                   "peer 0 left the group without sending the message "
                   "with tag 5"));
    CHECK(result[1].seconds < 2.0);
  }
  SUBCASE("nothing is ever sent") {
    const auto result = outcomes(2, short_timeout(0.2), [](dho2::inproc_transport& t) {
      std::vector<std::byte> bytes(4);
      t.recv(std::span<std::byte>(bytes), 1 - t.rank(), 7);
    });
    for (const auto& o : result) {
      CAPTURE(o.message);
      CHECK(contains(o.message, "inproc recv"));
      CHECK(contains(o.message, "timed out after 0.2 s waiting for a message from peer"));
      CHECK(o.seconds < 1.5);
    }
  }
  SUBCASE("wrong length") {
    const auto result = outcomes(2, short_timeout(2.0), [](dho2::inproc_transport& t) {
      if (t.rank() == 0) {
        std::vector<std::byte> bytes(4);
        t.send(std::span<const std::byte>(bytes), 1, 0);
        t.barrier();  // fails once rank 1 has poisoned the world
      } else {
        std::vector<std::byte> bytes(8);
        t.recv(std::span<std::byte>(bytes), 0, 0);
      }
    });
    CAPTURE(result[1].message);
    CHECK(contains(result[1].message,
                   "the message from peer 0 with tag 0 has 4 bytes, the "
                   "receive buffer 8"));
    CHECK(contains(result[0].message, "inproc barrier"));
  }
  SUBCASE("peer out of range") {
    const auto result = outcomes(2, short_timeout(2.0), [](dho2::inproc_transport& t) {
      if (t.rank() == 0) {
        std::vector<std::byte> bytes(4);
        t.send(std::span<const std::byte>(bytes), 2, 0);
      }
    });
    CHECK(contains(result[0].message, "peer 2 is out of range [0, 2)"));
  }
}

TEST_CASE("inproc transport: stats count the bytes each rank reads and lends, and the calls") {
  const int p = 3;
  const std::vector<dho2::index> offsets{0, 2, 2, 7};  // shards of 2, 0 and 5 elements
  for (const std::size_t threshold : {std::numeric_limits<std::size_t>::max(), std::size_t{0}}) {
    CAPTURE(threshold);
    auto options = short_timeout(5.0);
    options.chunked_all_reduce_bytes = threshold;
    std::vector<dho2::transport_stats> stats(p);
    with_watchdog("stats", [&] {
      dho2::run_inproc(p, options, [&](dho2::inproc_transport& t) {
        std::vector<double> v(10, 1.0);
        t.all_reduce_sum(std::span<double>(v));
        std::vector<double> full(7, 1.0);
        const auto r = static_cast<std::size_t>(t.rank());
        std::vector<double> shard(static_cast<std::size_t>(offsets[r + 1] - offsets[r]));
        t.reduce_scatter_sum(std::span<const double>(full), std::span<double>(shard), offsets);
        t.all_gather(std::span<const double>(shard), std::span<double>(full), offsets);
        std::vector<std::byte> bytes(100);
        t.broadcast(std::span<std::byte>(bytes), 0);
        t.barrier();
        stats[r] = t.stats();
      });
    });
    const bool chunked = threshold == 0;
    const std::uint64_t chunk[3] = {4, 3, 3};  // even split of the 10 all-reduce elements
    const std::uint64_t shard[3] = {2, 0, 5};
    dho2::transport_stats total;
    for (std::size_t r = 0; r < 3; ++r) {
      CAPTURE(r);
      // (P − 1)·n·8 = 2·10·8 bytes, or (P − 1)·chunk + (n − chunk) elements when chunked.
      const std::uint64_t all_reduce =
          chunked ? (2 * chunk[r] + 10 - chunk[r]) * 8 : std::uint64_t{160};
      const std::uint64_t root = r == 0 ? 200 : 0;
      const std::uint64_t leaf = r == 0 ? 0 : 100;
      CHECK(stats[r].bytes_received == all_reduce + 2 * shard[r] * 8 + (7 - shard[r]) * 8 + leaf);
      CHECK(stats[r].bytes_sent == all_reduce + (7 - shard[r]) * 8 + 2 * shard[r] * 8 + root);
      CHECK(stats[r].calls == 5);
      CHECK(stats[r].seconds > 0.0);
      total += stats[r];
    }
    CHECK(total.bytes_sent == total.bytes_received);
  }
}

TEST_CASE("inproc transport: run_inproc rethrows the first exception after every rank ended") {
  std::vector<std::string> peers(3);
  const auto run = [&] {
    dho2::run_inproc(3, short_timeout(5.0), [&](dho2::inproc_transport& t) {
      if (t.rank() == 1) throw std::runtime_error("boom on rank 1");
      try {
        t.barrier();
      } catch (const dho2::transport_error& e) {
        peers[static_cast<std::size_t>(t.rank())] = e.what();
        throw;
      }
    });
  };
  std::string rethrown;
  with_watchdog("run_inproc rethrow", [&] {
    try {
      run();
    } catch (const std::runtime_error& e) {
      rethrown = e.what();
    }
  });
  CHECK(rethrown == "boom on rank 1");
  CHECK(contains(peers[0], "peer 1 left the group"));
  CHECK(contains(peers[2], "peer 1 left the group"));
}

TEST_CASE("inproc world: options, handles and moved-from handles are validated") {
  CHECK_THROWS_WITH_AS(dho2::inproc_world(0), "inproc_world size = 0. Violated constraint: >= 1",
                       dho2::invalid_options);
  CHECK_THROWS_WITH_AS(
      dho2::inproc_world(2, short_timeout(-1.0)),
      "inproc_options::timeout (seconds) = -1. Violated constraint: finite and > 0",
      dho2::invalid_options);
  CHECK_THROWS_AS(dho2::run_inproc(0, [](dho2::inproc_transport&) {}), dho2::invalid_options);

  const dho2::inproc_world world(1);
  CHECK_THROWS_WITH_AS((void)world.rank_handle(1),
                       "inproc rank_handle: rank 1 is out of range for world size 1",
                       dho2::transport_error);
  auto a = world.rank_handle(0);
  CHECK_THROWS_WITH_AS((void)world.rank_handle(0),
                       "inproc rank_handle [world size 1]: rank 0 already has a handle (each "
                       "rank is attached once)",
                       dho2::transport_error);
  std::vector<double> v{1.5, 2.5};
  a.all_reduce_sum(std::span<double>(v));
  CHECK(v == std::vector<double>{1.5, 2.5});
  const std::byte sent[3] = {std::byte{1}, std::byte{2}, std::byte{3}};
  std::byte received[3] = {};
  a.send(std::span<const std::byte>(sent), 0, 4);  // a rank may message itself
  a.recv(std::span<std::byte>(received), 0, 4);
  CHECK(std::memcmp(sent, received, 3) == 0);
  CHECK(world.failure().empty());

  const dho2::inproc_world other(1);
  auto b = other.rank_handle(0);
  auto c = std::move(b);
  CHECK(c.rank() == 0);
  CHECK(c.size() == 1);
  c.barrier();
  CHECK_THROWS_WITH_AS(b.barrier(),  // NOLINT(bugprone-use-after-move): checking moved-from
                       "inproc barrier [rank 0, world size 1]: this handle has left the group or "
                       "was moved from",
                       dho2::transport_error);
  c.leave();
  CHECK_THROWS_AS(c.barrier(), dho2::transport_error);
  CHECK(other.failure().empty());
}

namespace {

// An inproc transport with one deliberate defect, to check that transport_conformance notices.
struct faulty_transport {
  enum class fault { none, last_bit, gather_ignores_offsets, split_keeps_rank, tags_ignored };
  dho2::inproc_transport inner;
  fault defect = fault::none;

  [[nodiscard]] int rank() const noexcept { return inner.rank(); }
  [[nodiscard]] int size() const noexcept { return inner.size(); }
  template <class E>
  void all_reduce_sum(std::span<E> values) {
    inner.all_reduce_sum(values);
    // A different rounding on the last rank: not bit-identical across ranks.
    if (defect == fault::last_bit && rank() == size() - 1 && !values.empty()) {
      values[0] = std::nextafter(values[0], std::numeric_limits<E>::max());
    }
  }
  template <class E>
  void reduce_scatter_sum(std::span<const E> in, std::span<E> out,
                          std::span<const dho2::index> offsets) {
    inner.reduce_scatter_sum(in, out, offsets);
  }
  template <class E>
  void all_gather(std::span<const E> in, std::span<E> out, std::span<const dho2::index> offsets) {
    if (defect != fault::gather_ignores_offsets) {
      inner.all_gather(in, out, offsets);
      return;
    }
    // Gathers as if the shards were even: wrong for uneven offsets.
    const auto n = static_cast<dho2::index>(out.size());
    std::vector<dho2::index> even(offsets.size());
    for (std::size_t r = 0; r < even.size(); ++r) {
      even[r] = n * static_cast<dho2::index>(r) / static_cast<dho2::index>(size());
    }
    const auto r = static_cast<std::size_t>(rank());
    std::vector<E> mine(static_cast<std::size_t>(even[r + 1] - even[r]), E{0});
    std::copy_n(in.begin(), std::min(in.size(), mine.size()), mine.begin());
    inner.all_gather(std::span<const E>(mine), out, std::span<const dho2::index>(even));
  }
  void broadcast(std::span<std::byte> bytes, int root) { inner.broadcast(bytes, root); }
  void barrier() { inner.barrier(); }
  faulty_transport split(int color, int key) {
    // Ignores the keys: sub-ranks follow the parent ranks.
    return {inner.split(color, defect == fault::split_keeps_rank ? rank() : key), defect};
  }
  void send(std::span<const std::byte> bytes, int peer, int tag) {
    inner.send(bytes, peer, defect == fault::tags_ignored ? 0 : tag);
  }
  void recv(std::span<std::byte> bytes, int peer, int tag) {
    inner.recv(bytes, peer, defect == fault::tags_ignored ? 0 : tag);
  }
};
static_assert(dho2::transport<faulty_transport>);

}  // namespace

TEST_CASE("inproc transport: transport_conformance reports deliberate defects") {
  using fault = faulty_transport::fault;
  const auto failures_with = [](fault defect) {
    std::mutex mutex;
    std::vector<std::string> failures;
    with_watchdog("conformance self-test", [&] {
      dho2::run_inproc(3, short_timeout(2.0), [&](dho2::inproc_transport& t) {
        faulty_transport f{std::move(t), defect};
        const auto found = dho2::testing::transport_conformance(f);
        const std::lock_guard lock(mutex);
        failures.insert(failures.end(), found.begin(), found.end());
      });
    });
    std::string all;
    for (const auto& s : failures) all += s + "\n";
    return all;
  };
  CHECK(failures_with(fault::none).empty());
  const auto last_bit = failures_with(fault::last_bit);
  CAPTURE(last_bit);
  CHECK(contains(last_bit,
                 "[rank 0 of 3] determinism all_reduce_sum<float>: rank 2's result is "
                 "not bit-identical to this rank's"));
  CHECK(contains(last_bit,
                 "[rank 2 of 3] all_reduce_sum<double> n=1: sum over ranks of "
                 "1000*r + i + 0.25: element 0 expected 3000.75, found"));
  const auto gather = failures_with(fault::gather_ignores_offsets);
  CAPTURE(gather);
  CHECK(contains(gather,
                 "all_gather<float> uneven with empty shards: value(owner(i), i) "
                 "gathered in rank order: element"));
  const auto split = failures_with(fault::split_keeps_rank);
  CAPTURE(split);
  CHECK(contains(split,
                 "[rank 0 of 3] split(color = rank % 2, key = -rank): expected sub-rank 1 "
                 "of sub-size 2, found sub-rank 0 of sub-size 2"));
  const auto tags = failures_with(fault::tags_ignored);
  CAPTURE(tags);
  CHECK(contains(tags, "small messages on tags 1, 2, 3 (received out of tag order)"));
}
