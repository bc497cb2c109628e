// Tests of dho2::asio_transport (include/dho2/transport/asio.hpp): the transport conformance suite
// over TCP on loopback at P = 1, 2, 3, 4 (ranks are threads of this process, each with its own
// transport), the ring all-reduce's bytes and determinism, and the failure behaviours: a peer
// destroyed mid-collective, a silent peer, a hostile client of the rendezvous port, mismatched
// collectives, a missing rank, and bad options / environment. Every multi-rank test runs under a
// watchdog that turns a hang into an abort with a message.
#include "raw_tcp_peer.hpp"
#include <dho2/asio.hpp>
#include <dho2/testing/transport_conformance.hpp>
#include <dho2/transport/detail/asio_auth.hpp>
#include <dho2/transport/detail/asio_frame.hpp>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <future>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

namespace net = boost::asio;
using tcp = boost::asio::ip::tcp;
using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

double seconds_since(clock_type::time_point start) {
  return std::chrono::duration<double>(clock_type::now() - start).count();
}

// A port that was free a moment ago (the kernel's choice for an ephemeral bind).
unsigned short free_port() {
  net::io_context ctx;
  tcp::acceptor a(ctx, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
  return a.local_endpoint().port();
}

// Runs `f` on another thread; if it does not finish within `limit`, prints `what` and aborts
// (a hang must be a failure with a message, never a stuck test run).
template <class F>
auto with_watchdog(std::chrono::seconds limit, const char* what, F f) {
  auto fut = std::async(std::launch::async, std::move(f));
  if (fut.wait_for(limit) != std::future_status::ready) {
    std::fprintf(stderr, "WATCHDOG: %s did not finish within %lld s (a hang); aborting\n", what,
                 static_cast<long long>(limit.count()));
    std::fflush(stderr);
    std::abort();
  }
  return fut.get();
}

// What one rank thread saw.
struct rank_result {
  std::string error;  // what() of the exception that ended the rank, "" if none
  bool transport_error = false;
  double seconds = -1.0;  // set by bodies that time their failing call
  std::vector<std::string> failures;
  dho2::transport_stats stats;
};

dho2::asio_options options_for(int rank, int size, unsigned short port) {
  dho2::asio_options o;
  o.rank = rank;
  o.size = size;
  o.port = port;
  o.timeout = 10s;
  o.connect_timeout = 10s;
  return o;
}

// Runs `body(transport, result)` on P threads, rank r with `tweak(options_for(r, P, port))`.
std::vector<rank_result> run_group(
    int p, const std::function<void(dho2::asio_options&)>& tweak,
    const std::function<void(dho2::asio_transport&, rank_result&)>& body) {
  const unsigned short port = free_port();
  std::vector<rank_result> results(static_cast<std::size_t>(p));
  std::vector<std::thread> threads;
  for (int r = 0; r < p; ++r) {
    threads.emplace_back([&, r] {
      rank_result& res = results[static_cast<std::size_t>(r)];
      try {
        auto o = options_for(r, p, port);
        tweak(o);
        dho2::asio_transport t(o);
        try {
          body(t, res);
        } catch (...) {
          res.stats = t.stats();
          throw;
        }
        res.stats = t.stats();
      } catch (const dho2::transport_error& e) {
        res.error = e.what();
        res.transport_error = true;
      } catch (const std::exception& e) {
        res.error = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  return results;
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// The transport_error message `f` throws ("" if none).
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const dho2::transport_error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

static_assert(dho2::transport<dho2::asio_transport>);

TEST_CASE("asio_transport: transport conformance over loopback at P = 1, 2, 3, 4") {
  for (const int p : {1, 2, 3, 4}) {
    CAPTURE(p);
    const auto results = with_watchdog(60s, "conformance", [p] {
      return run_group(
          p, [](dho2::asio_options&) {},
          [](dho2::asio_transport& t, rank_result& res) {
            res.failures = dho2::testing::transport_conformance(t);
          });
    });
    dho2::transport_stats total;
    for (const auto& res : results) {
      CHECK(res.error == "");
      for (const auto& f : res.failures) FAIL_CHECK(f);
      total += res.stats;
    }
    // Payload counted once by its sender and once by its receiver.
    CHECK(total.bytes_sent == total.bytes_received);
    if (p > 1) CHECK(total.bytes_sent > 0);
  }
}

TEST_CASE(
    "asio_transport: the ring all-reduce is bit-identical on every rank and moves "
    "2n(P-1)/P elements per rank") {
  constexpr int p = 3;
  constexpr std::size_t n = 300001;  // not a multiple of P
  const auto value = [](int r, std::size_t i) {
    return static_cast<float>(std::sin(0.001 * static_cast<double>(i) + r) * (1.0 + r));
  };
  std::vector<std::vector<float>> out(p);
  const auto results = with_watchdog(60s, "ring all-reduce", [&] {
    return run_group(
        p, [](dho2::asio_options&) {},
        [&](dho2::asio_transport& t, rank_result&) {
          std::vector<float> v(n);
          for (std::size_t i = 0; i < n; ++i) v[i] = value(t.rank(), i);
          t.all_reduce_sum(std::span<float>(v));
          out[static_cast<std::size_t>(t.rank())] = std::move(v);
        });
  });
  for (const auto& res : results) REQUIRE(res.error == "");
  CHECK(out[1] == out[0]);
  CHECK(out[2] == out[0]);
  std::size_t far = 0;
  for (std::size_t i = 0; i < n; ++i) {
    double exact = 0.0;
    double mag = 0.0;
    for (int r = 0; r < p; ++r) {
      exact += value(r, i);
      mag += std::abs(value(r, i));
    }
    if (std::abs(out[0][i] - exact) > 4.0 * p * 1.2e-7 * mag) ++far;
  }
  CHECK(far == 0);
  // Chunk c of the even split; rank r sends n - c_r (reduce-scatter) + n - c_{r+1} (all-gather).
  const auto chunk = [&](std::size_t c) { return n / p + (c < n % p ? 1 : 0); };
  for (std::size_t r = 0; r < p; ++r) {
    CAPTURE(r);
    const std::size_t sent = 2 * n - chunk(r) - chunk((r + 1) % p);
    const std::size_t received = 2 * n - chunk((r + p - 1) % p) - chunk(r);
    CHECK(results[r].stats.bytes_sent == sent * sizeof(float));
    CHECK(results[r].stats.bytes_received == received * sizeof(float));
    CHECK(results[r].stats.calls == 1);
  }
}

TEST_CASE("asio_transport: a peer destroyed mid-collective fails the others within the timeout") {
  constexpr int p = 4;
  std::atomic<clock_type::rep> closing{0};  // when rank 2 starts destroying its transport
  std::array<double, p> after_close{};
  const auto results = with_watchdog(30s, "peer destroyed mid-collective", [&] {
    return run_group(
        p, [](dho2::asio_options& o) { o.timeout = 2s; },
        [&](dho2::asio_transport& t, rank_result& res) {
          std::vector<float> v(200000, 1.0F);
          t.all_reduce_sum(std::span<float>(v));  // everyone is connected and working
          if (t.rank() == 2) {
            std::this_thread::sleep_for(300ms);  // the others are now blocked in the collective
            closing = clock_type::now().time_since_epoch().count();
            return;  // destroys rank 2's transport
          }
          const auto start = clock_type::now();
          try {
            t.all_reduce_sum(std::span<float>(v));
          } catch (...) {
            res.seconds = seconds_since(start);
            after_close[static_cast<std::size_t>(t.rank())] =
                seconds_since(clock_type::time_point(clock_type::duration(closing.load())));
            // Poisoned: the next call throws at once.
            const auto again = clock_type::now();
            const std::string msg = error_of([&] { t.barrier(); });
            if (!contains(msg, "unusable after an earlier failure") || seconds_since(again) > 0.1) {
              res.failures.push_back("not poisoned: " + msg);
            }
            throw;
          }
        });
  });
  for (int r = 0; r < p; ++r) {
    const auto& res = results[static_cast<std::size_t>(r)];
    CAPTURE(r);
    CAPTURE(res.error);
    INFO("rank " << r << " time to error: " << res.seconds << " s in the call, "
                 << after_close[static_cast<std::size_t>(r)]
                 << " s after rank 2 began closing: " << res.error);
    for (const auto& f : res.failures) FAIL_CHECK(f);
    if (r == 2) {
      CHECK(res.error == "");
      continue;
    }
    CHECK(res.transport_error);
    CHECK(contains(res.error, "asio all_reduce_sum [rank " + std::to_string(r)));
    CHECK(res.seconds > 0.0);
    CHECK(res.seconds < 2.0);  // EOF, not the 2 s timeout
    CHECK(after_close[static_cast<std::size_t>(r)] < 1.0);
  }
  // Rank 2's neighbours see its connection close; the others learn the cause by abort frames.
  CHECK(contains(results[1].error, "peer 2 (127.0.0.1:"));
  CHECK(contains(results[3].error, "peer 2 (127.0.0.1:"));
}

TEST_CASE(
    "asio_transport: a silent peer turns into a 'no data' timeout, and the cause reaches it") {
  const auto results = with_watchdog(30s, "silent peer", [] {
    std::promise<void> rank0_failed;
    auto failed = rank0_failed.get_future().share();
    return run_group(
        2, [](dho2::asio_options& o) { o.timeout = 1s; },
        [&](dho2::asio_transport& t, rank_result& res) {
          std::vector<double> v(10, 1.0);
          if (t.rank() == 1) {
            failed.wait();  // connected, alive, but silent while rank 0 waits
            const auto start = clock_type::now();
            try {
              // Rank 0 wrote its vector before it gave up, so this first call may complete;
              // the next one reads rank 0's abort frame.
              t.all_reduce_sum(std::span<double>(v));
              t.all_reduce_sum(std::span<double>(v));
            } catch (...) {
              res.seconds = seconds_since(start);
              throw;
            }
            return;
          }
          const auto start = clock_type::now();
          try {
            t.all_reduce_sum(std::span<double>(v));
          } catch (...) {
            res.seconds = seconds_since(start);
            rank0_failed.set_value();
            throw;
          }
          rank0_failed.set_value();
        });
  });
  INFO("rank 0 time to error: " << results[0].seconds << " s: " << results[0].error);
  INFO("rank 1 time to error: " << results[1].seconds << " s: " << results[1].error);
  CHECK(results[0].transport_error);
  CHECK(
      contains(results[0].error, "asio all_reduce_sum [rank 0, world size 2]: peer 1 (127.0.0.1:"));
  CHECK(contains(results[0].error, "): no data for 1.0 s"));
  CHECK(results[0].seconds >= 0.95);
  CHECK(results[0].seconds < 1.9);
  // Rank 0's abort frame tells rank 1 why, at once.
  CHECK(results[1].transport_error);
  CHECK(contains(results[1].error, "peer 0 (127.0.0.1:"));
  CHECK(contains(results[1].error, "failed: asio all_reduce_sum [rank 0, world size 2]"));
  CHECK(results[1].seconds < 0.5);
}

TEST_CASE("asio_transport: recv of a message that never comes times out") {
  const auto results = with_watchdog(30s, "recv timeout", [] {
    return run_group(
        2, [](dho2::asio_options& o) { o.timeout = 500ms; },
        [](dho2::asio_transport& t, rank_result& res) {
          std::array<std::byte, 8> buf{};
          const auto start = clock_type::now();
          try {
            t.recv(buf, 1 - t.rank(), 7);  // both wait; nobody sends
          } catch (...) {
            res.seconds = seconds_since(start);
            throw;
          }
        });
  });
  // The first rank to time out aborts the other, which then fails at once with the cause.
  int timed_out = 0;
  for (const auto& res : results) {
    CHECK(res.transport_error);
    CHECK(contains(res.error, "asio recv"));
    CHECK(res.seconds < 1.0);
    if (contains(res.error, "no data for 0.5 s")) ++timed_out;
  }
  CHECK(timed_out >= 1);
}

TEST_CASE("asio_transport: ranks that call different collectives or lengths get a clear error") {
  SUBCASE("different routines") {
    const auto results = with_watchdog(30s, "mismatched routines", [] {
      return run_group(
          2, [](dho2::asio_options&) {},
          [](dho2::asio_transport& t, rank_result&) {
            std::vector<double> v(4, 1.0);
            if (t.rank() == 0) {
              t.all_reduce_sum(std::span<double>(v));
            } else {
              t.broadcast(std::as_writable_bytes(std::span<double>(v)), 0);
            }
          });
    });
    CHECK(contains(results[1].error,
                   "expected a collective frame of broadcast #1 step 0, got a "
                   "collective frame of all_reduce_sum #1 step 0 (the ranks "
                   "called collectives in different orders)"));
    CHECK(results[0].transport_error);
  }
  SUBCASE("different lengths") {
    const auto results = with_watchdog(30s, "mismatched lengths", [] {
      return run_group(
          2, [](dho2::asio_options&) {},
          [](dho2::asio_transport& t, rank_result&) {
            std::vector<float> v(t.rank() == 0 ? 5 : 6, 1.0F);
            t.all_reduce_sum(std::span<float>(v));
          });
    });
    for (const auto& res : results) {
      CHECK(res.transport_error);
      CHECK(contains(res.error, "asio all_reduce_sum"));
    }
    const bool named = contains(results[0].error, "(the ranks passed different lengths)") ||
                       contains(results[1].error, "(the ranks passed different lengths)");
    CHECK(named);
  }
  SUBCASE("bad offsets fail locally and the peer learns it at once") {
    const auto results = with_watchdog(30s, "bad offsets", [] {
      return run_group(
          2, [](dho2::asio_options& o) { o.timeout = 5s; },
          [](dho2::asio_transport& t, rank_result& res) {
            std::vector<double> in(4, 1.0);
            std::vector<double> out(2);
            const std::vector<dho2::index> good{0, 2, 4};
            const std::vector<dho2::index> bad{0, 3, 4};
            const auto start = clock_type::now();
            try {
              t.reduce_scatter_sum(std::span<const double>(in), std::span<double>(out),
                                   t.rank() == 0 ? bad : good);
            } catch (...) {
              res.seconds = seconds_since(start);
              throw;
            }
          });
    });
    CHECK(contains(results[0].error,
                   "asio reduce_scatter_sum [rank 0, world size 2]: out.size() = 2 != this "
                   "rank's shard length 3"));
    CHECK(contains(results[1].error, "peer 0 (127.0.0.1:"));
    CHECK(results[1].seconds < 1.0);
  }
}

namespace {

// A raw TCP client of rank 0's rendezvous port (the hostile peer), connected with retries.
using raw_client = dho2_test::raw_tcp_peer;

// Rank 0 of a world of 2 on `port`, in a thread; returns its error. A hostile client is refused
// and rank 0 keeps waiting for rank 1 until connect_timeout (1.5 s), then fails naming the refusal.
std::future<rank_result> rank0_async(unsigned short port) {
  return std::async(std::launch::async, [port] {
    rank_result res;
    auto o = options_for(0, 2, port);
    o.timeout = 2s;
    o.connect_timeout = 1500ms;
    o.on_refusal = [](const std::string&, const std::string&) {};  // no std::clog line
    const auto start = clock_type::now();
    try {
      dho2::asio_transport t(o);
      std::vector<float> v(4, 1.0F);
      t.all_reduce_sum(std::span<float>(v));
    } catch (const dho2::transport_error& e) {
      res.error = e.what();
      res.transport_error = true;
    } catch (const std::exception& e) {
      res.error = e.what();
    }
    res.seconds = seconds_since(start);
    return res;
  });
}

std::array<unsigned char, 32> header_bytes(dho2::detail::asio_wire::kind k, std::uint64_t length,
                                           dho2::detail::asio_wire::op o = {},
                                           std::uint64_t seq = 0) {
  dho2::detail::asio_wire::header h;
  h.type = k;
  h.routine = o;
  h.seq = seq;
  h.length = length;
  if (k == dho2::detail::asio_wire::kind::collective)
    h.element = dho2::detail::asio_wire::dtype::f32;
  return dho2::detail::asio_wire::encode(h);
}

}  // namespace

TEST_CASE("asio_transport: rank 0 refuses a hostile client of the rendezvous port") {
  namespace wire = dho2::detail::asio_wire;
  constexpr std::uint64_t huge = std::uint64_t{1} << 40;  // 1 TiB: must never be allocated

  SUBCASE("garbage") {
    const auto port = free_port();
    auto rank0 = rank0_async(port);
    std::string back;
    const auto res = with_watchdog(30s, "garbage client", [&] {
      raw_client c(port);
      const std::string junk = "GET / HTTP/1.1\r\nHost: dho2\r\n\r\n  ";
      c.send(std::span(reinterpret_cast<const unsigned char*>(junk.data()), junk.size()));
      back = c.rest();
      return rank0.get();
    });
    CHECK(contains(back, "bad magic"));  // the abort frame rank 0 sent before closing
    INFO("rank 0: " << res.seconds << " s: " << res.error);
    CHECK(res.transport_error);
    CHECK(contains(res.error,
                   "asio rendezvous [rank 0, world size 2]: only 0 of 1 ranks joined within "
                   "connect_timeout = 1.5 s (missing: 1); refused 1 connection: 127.0.0.1:"));
    CHECK(contains(res.error, ": bad magic 0x20544547 (not a DHO2 frame)"));
  }
  SUBCASE("an auth offer with a huge length") {
    const auto port = free_port();
    auto rank0 = rank0_async(port);
    const auto res = with_watchdog(30s, "huge offer", [&] {
      raw_client c(port);
      c.send(header_bytes(wire::kind::auth, huge));
      return rank0.get();
    });
    INFO("rank 0: " << res.seconds << " s: " << res.error);
    CHECK(contains(res.error, "an auth frame has 1099511627776 bytes, expected 44"));
  }
  SUBCASE("a message frame with a huge length instead of a hello") {
    const auto port = free_port();
    auto rank0 = rank0_async(port);
    const auto res = with_watchdog(30s, "huge message", [&] {
      raw_client c(port);
      c.send(header_bytes(wire::kind::message, huge));
      return rank0.get();
    });
    CHECK(contains(res.error, "expected an auth frame, got a message frame with tag 0"));
  }
  SUBCASE("a wrong protocol version") {
    const auto port = free_port();
    auto rank0 = rank0_async(port);
    const auto res = with_watchdog(30s, "old version", [&] {
      raw_client c(port);
      auto h = header_bytes(wire::kind::auth, 44);
      h[4] = 99;
      c.send(h);
      return rank0.get();
    });
    CHECK(contains(res.error, "protocol version 99, this rank speaks 2"));
  }
  SUBCASE("a rank out of range") {
    const auto port = free_port();
    auto rank0 = rank0_async(port);
    const auto res = with_watchdog(30s, "bad rank", [&] {
      raw_client c(port);
      dho2::detail::asio_auth::offer o;
      o.rank = 5;
      o.size = 2;
      c.send(header_bytes(wire::kind::auth, dho2::detail::asio_auth::offer_size));
      c.send(dho2::detail::asio_auth::encode_offer(o));
      return rank0.get();
    });
    CHECK(contains(res.error, "claims rank 5, out of range [1, 2)"));
  }
  SUBCASE("a joined peer that sends a collective frame with a huge length") {
    const auto port = free_port();
    auto rank0 = rank0_async(port);
    const auto res = with_watchdog(30s, "huge collective frame", [&] {
      raw_client c(port);
      c.authenticate(1, 2);
      wire::hello h;
      h.rank = 1;
      h.size = 2;
      h.port = 1;  // never used: rank 1 has no higher ranks to accept
      h.options = dho2::detail::asio_fingerprint(dho2::detail::asio_settings{});
      h.little_endian = std::endian::native == std::endian::little ? 1 : 0;
      c.send(header_bytes(wire::kind::hello, wire::hello_size));
      c.send(wire::encode_hello(h));
      std::array<unsigned char, 32 + 8 + 2 * 20> table{};
      net::read(c.socket, net::buffer(table));  // joined: rank 0 now runs its all_reduce_sum
      c.send(header_bytes(wire::kind::collective, huge, wire::op::all_reduce_sum, 1));
      return rank0.get();
    });
    INFO("rank 0: " << res.seconds << " s: " << res.error);
    CHECK(contains(res.error, "asio all_reduce_sum [rank 0, world size 2]: peer 1 (127.0.0.1:"));
    CHECK(contains(res.error,
                   "a collective frame of all_reduce_sum #1 step 0 has "
                   "1099511627776 bytes, expected 16 (the ranks passed different "
                   "lengths)"));
  }
}

TEST_CASE("asio_transport: ranks whose options differ fail the rendezvous") {
  const auto results = with_watchdog(30s, "different options", [] {
    return run_group(
        2, [](dho2::asio_options& o) { o.direct_all_reduce_bytes = o.rank == 0 ? 8192 : 0; },
        [](dho2::asio_transport&, rank_result&) {});
  });
  CHECK(contains(results[0].error, "asio rendezvous [rank 0, world size 2]: connection from "));
  CHECK(contains(results[0].error,
                 "options differ from rank 0's (direct_all_reduce_bytes or "
                 "max_frame_bytes)"));
  CHECK(contains(results[1].error, "peer 0 (127.0.0.1:"));
}

TEST_CASE("asio_transport: a rank that never starts fails the rendezvous within connect_timeout") {
  const auto results = with_watchdog(30s, "missing rank", [] {
    const unsigned short port = free_port();
    std::vector<rank_result> res(2);
    std::vector<std::thread> threads;
    for (int r = 0; r < 2; ++r) {  // ranks 0 and 1 of 3; rank 2 never comes
      threads.emplace_back([&, r] {
        auto o = options_for(r, 3, port);
        o.connect_timeout = 500ms;
        const auto start = clock_type::now();
        try {
          dho2::asio_transport t(o);
        } catch (const dho2::transport_error& e) {
          res[static_cast<std::size_t>(r)].error = e.what();
        }
        res[static_cast<std::size_t>(r)].seconds = seconds_since(start);
      });
    }
    for (auto& t : threads) t.join();
    return res;
  });
  INFO("rank 0: " << results[0].seconds << " s: " << results[0].error);
  INFO("rank 1: " << results[1].seconds << " s: " << results[1].error);
  CHECK(contains(results[0].error,
                 "asio rendezvous [rank 0, world size 3]: only 1 of 2 ranks "
                 "joined within connect_timeout = 0.5 s (missing: 2)"));
  // Rank 1 learns rank 0's diagnosis from its abort frame.
  CHECK(contains(results[1].error, "peer 0 (127.0.0.1:"));
  CHECK(contains(results[1].error, "(missing: 2)"));
  CHECK(results[0].seconds < 1.5);
  CHECK(results[1].seconds < 1.5);
}

TEST_CASE("asio_transport: messages to itself, tags out of order, and moved-from objects") {
  const auto results = with_watchdog(30s, "self messages", [] {
    return run_group(
        2, [](dho2::asio_options&) {},
        [](dho2::asio_transport& t, rank_result& res) {
          const std::array<std::byte, 3> a{std::byte{1}, std::byte{2}, std::byte{3}};
          const std::array<std::byte, 1> b{std::byte{9}};
          t.send(a, t.rank(), 4);
          t.send(b, t.rank(), 5);
          std::array<std::byte, 1> gb{};
          std::array<std::byte, 3> ga{};
          t.recv(gb, t.rank(), 5);
          t.recv(ga, t.rank(), 4);
          if (ga != a || gb != b) res.failures.push_back("self messages differ");
          dho2::asio_transport moved = std::move(t);
          const std::string msg = error_of([&] { t.barrier(); });  // NOLINT
          if (!contains(msg, "moved from")) res.failures.push_back("moved-from: " + msg);
          moved.barrier();
          if (moved.stats().bytes_sent != 0) res.failures.push_back("self bytes counted");
        });
  });
  for (const auto& res : results) {
    CHECK(res.error == "");
    for (const auto& f : res.failures) FAIL_CHECK(f);
  }
}

TEST_CASE("asio_options: validate() and from_environment() name the bad field or variable") {
  const auto message = [](const std::function<void()>& f) -> std::string {
    try {
      f();
    } catch (const dho2::invalid_options& e) {
      return e.what();
    }
    return "";
  };
  dho2::asio_options o;
  o.size = 2;
  o.rank = 1;
  CHECK(contains(message([&] { o.validate(); }),
                 "asio_options::port = 0. Violated constraint: in 1..65535 when size > 1"));
  o.port = 5000;
  o.rank = 2;
  CHECK(contains(message([&] { o.validate(); }), "asio_options::rank = 2. Violated constraint"));
  o.rank = 0;
  o.bind_address = "not-an-address";
  CHECK(
      contains(message([&] { o.validate(); }), "asio_options::bind_address = \"not-an-address\""));
  CHECK(contains(message([&] { dho2::asio_transport t(o); }), "asio_options::bind_address"));

  struct env_var {
    const char* name;
    std::optional<std::string> saved;
  };
  std::vector<env_var> saved;
  for (const char* name :
       {"DHO2_RANK", "DHO2_WORLD_SIZE", "DHO2_RENDEZVOUS", "DHO2_BIND_ADDRESS"}) {
    const char* v = std::getenv(name);
    saved.push_back({name, v ? std::optional<std::string>(v) : std::nullopt});
    unsetenv(name);
  }
  const auto set = [](const char* name, const char* value) {
    if (value) {
      setenv(name, value, 1);
    } else {
      unsetenv(name);
    }
  };
  const auto env_error = [&](const char* rank, const char* size, const char* rendezvous) {
    set("DHO2_RANK", rank);
    set("DHO2_WORLD_SIZE", size);
    set("DHO2_RENDEZVOUS", rendezvous);
    return message([] { (void)dho2::asio_options::from_environment(); });
  };
  CHECK(contains(env_error("0", nullptr, "h:1"),
                 "DHO2_WORLD_SIZE = <unset>. Violated constraint: the number of ranks"));
  CHECK(contains(env_error("0", "zero", "h:1"), "DHO2_WORLD_SIZE = \"zero\". Violated constraint"));
  CHECK(contains(env_error("0", "0", "h:1"), "DHO2_WORLD_SIZE = \"0\""));
  CHECK(contains(env_error(nullptr, "4", "h:1"),
                 "DHO2_RANK = <unset>. Violated constraint: set to this process's rank, an "
                 "integer in [0, DHO2_WORLD_SIZE = 4)"));
  CHECK(contains(env_error("4", "4", "h:1"), "DHO2_RANK = \"4\""));
  CHECK(contains(env_error("1x", "4", "h:1"), "DHO2_RANK = \"1x\""));
  CHECK(contains(env_error("1", "4", nullptr), "DHO2_RENDEZVOUS = <unset>. Violated constraint"));
  CHECK(contains(env_error("1", "4", "localhost"), "DHO2_RENDEZVOUS = \"localhost\""));
  CHECK(contains(env_error("1", "4", "localhost:99999"), "DHO2_RENDEZVOUS = \"localhost:99999\""));
  CHECK(contains(env_error("1", "4", ":5000"), "DHO2_RENDEZVOUS = \":5000\""));
  CHECK(contains(env_error("1", "4", "::1:5000"), "DHO2_RENDEZVOUS = \"::1:5000\""));
  CHECK(env_error("1", "4", "node7:5000") == "");
  {
    const auto ok = dho2::asio_options::from_environment();
    CHECK(ok.rank == 1);
    CHECK(ok.size == 4);
    CHECK(ok.host == "node7");
    CHECK(ok.port == 5000);
  }
  CHECK(env_error("0", "2", "[::1]:6000") == "");
  CHECK(dho2::asio_options::from_environment().host == "::1");
  CHECK(env_error("0", "1", nullptr) == "");  // one rank needs no rendezvous
  set("DHO2_BIND_ADDRESS", "nowhere");
  CHECK(contains(env_error("0", "2", "h:1"), "DHO2_BIND_ADDRESS = \"nowhere\""));
  for (const auto& e : saved) set(e.name, e.saved ? e.saved->c_str() : nullptr);
}

TEST_CASE("asio wire: hello check, table, split records and abort scan on hand-made bytes") {
  namespace wire = dho2::detail::asio_wire;
  const std::uint32_t fp = 0xA1B2C3D4U;
  wire::hello h;
  h.rank = 2;
  h.size = 3;
  h.port = 40000;
  h.little_endian = std::endian::native == std::endian::little ? 1 : 0;
  h.family = 0;
  h.options = fp;
  CHECK(wire::hello_defect(h, 2, 3, fp) == "");
  CHECK(wire::hello_defect(h, 1, 3, fp) ==
        "hello of rank 2 of 3 after authenticating as rank 1 of 3");
  CHECK(wire::hello_defect(h, 2, 4, fp) ==
        "hello of rank 2 of 3 after authenticating as rank 2 of 4");
  auto e = h;
  e.little_endian = static_cast<std::uint8_t>(1 - h.little_endian);
  CHECK(wire::hello_defect(e, 2, 3, fp) == "byte order differs from rank 0's");
  CHECK(contains(wire::hello_defect(h, 2, 3, fp + 1), "options differ from rank 0's"));
  e = h;
  e.family = 5;
  CHECK(wire::hello_defect(e, 2, 3, fp) == "malformed hello (port 40000, address family 5)");
  e = h;
  e.port = 0;
  e.family = 6;
  CHECK(wire::hello_defect(e, 2, 3, fp) == "malformed hello (port 0, address family 6)");

  // Table of P = 2: token 0x0807060504030201, rank 0's entry zero, rank 1 at port 0x1234,
  // family 4, 10.0.0.9; the reserved byte (set to 0x77 here) is ignored and written back as 0.
  std::vector<unsigned char> tb(48, 0);
  for (unsigned char i = 0; i < 8; ++i) tb[i] = static_cast<unsigned char>(i + 1);
  tb[28] = 0x34;
  tb[29] = 0x12;
  tb[30] = 4;
  tb[31] = 0x77;
  tb[32] = 10;
  tb[35] = 9;
  const auto t = wire::decode_table(tb);
  REQUIRE(t.has_value());
  CHECK(t->token == 0x0807060504030201ULL);
  REQUIRE(t->entries.size() == 2);
  CHECK(t->entries[1].port == 0x1234);
  CHECK(t->entries[1].family == 4);
  CHECK(t->entries[1].address[0] == 10);
  CHECK(t->entries[1].address[3] == 9);
  CHECK(wire::usable(t->entries[1]));
  CHECK_FALSE(wire::usable(t->entries[0]));  // port 0, family 0
  tb[31] = 0;
  CHECK(wire::encode_table(*t) == tb);
  CHECK_FALSE(wire::decode_table(std::span(tb).first(47)).has_value());
  CHECK_FALSE(wire::decode_table(std::span(tb).first(7)).has_value());
  CHECK(wire::decode_table(std::span(tb).first(8))->entries.empty());

  // Split records of parent ranks 0, 1, 2 with (color, key, port) = (5, 9, 1), (6, 0, 2),
  // (5, -1, 3): group 5 is rank 2 (key -1) then rank 0 (key 9).
  // (Filled by index into a sized vector: GCC 12 at -O3 reports a bogus -Wstringop-overflow
  // for vector::insert of the encoded arrays.)
  const wire::split_record records[] = {{5, 9, 1}, {6, 0, 2}, {5, -1, 3}};
  std::vector<unsigned char> rec(std::size(records) * wire::split_record_size);
  for (std::size_t i = 0; i < std::size(records); ++i) {
    const auto b = wire::encode_split_record(records[i]);
    std::copy(b.begin(), b.end(), rec.begin() + static_cast<std::ptrdiff_t>(i * b.size()));
  }
  CHECK(rec[24] == 5);
  CHECK(rec[28] == 0xFF);  // key -1, little-endian two's complement
  CHECK(rec[31] == 0xFF);
  CHECK(rec[32] == 3);
  const auto g = wire::split_group(rec, 5);
  REQUIRE(g.size() == 2);
  CHECK((g[0].rank == 2 && g[0].key == -1 && g[0].port == 3));
  CHECK((g[1].rank == 0 && g[1].key == 9 && g[1].port == 1));
  CHECK(wire::split_group(rec, 7).empty());

  // Abort scan: a message of 3 bytes, then an abort "bye"; a cut-off or foreign frame ends it.
  const auto frame = [](wire::kind k, std::string_view payload) {
    wire::header fh;
    fh.type = k;
    fh.length = payload.size();
    const auto hb = wire::encode(fh);
    // Filled by index: GCC 12 -O3 reports a bogus -Warray-bounds on a vector insert here.
    std::vector<unsigned char> f(hb.size() + payload.size());
    for (std::size_t i = 0; i < hb.size(); ++i) f[i] = hb[i];
    for (std::size_t i = 0; i < payload.size(); ++i) {
      f[hb.size() + i] = static_cast<unsigned char>(payload[i]);
    }
    return f;
  };
  auto bytes = frame(wire::kind::message, "abc");
  const auto abort_frame = frame(wire::kind::abort, "bye");
  bytes.insert(bytes.end(), abort_frame.begin(), abort_frame.end());
  const auto found = wire::find_abort(bytes);
  REQUIRE(found.has_value());
  CHECK(std::string(found->begin(), found->end()) == "bye");
  CHECK_FALSE(wire::find_abort(std::span(bytes).first(bytes.size() - 1)).has_value());
  bytes[0] ^= 1U;  // bad magic on the first frame
  CHECK_FALSE(wire::find_abort(bytes).has_value());
}

TEST_CASE(
    "asio_options: the world size is capped alike in code and environment, messages bounded") {
  const auto message = [](const std::function<void()>& f) -> std::string {
    try {
      f();
    } catch (const dho2::invalid_options& e) {
      return e.what();
    }
    return "";
  };
  dho2::asio_options o;
  o.size = dho2::asio_options::max_size + 1;
  o.port = 5000;
  CHECK(message([&] { o.validate(); }) ==
        "asio_options::size = 65537. Violated constraint: in [1, 65536]");
  o.size = dho2::asio_options::max_size;
  CHECK(message([&] { o.validate(); }) == "");

  std::vector<std::pair<const char*, std::optional<std::string>>> saved;
  for (const char* name : {"DHO2_RANK", "DHO2_WORLD_SIZE", "DHO2_RENDEZVOUS", "DHO2_BIND_ADDRESS",
                           "DHO2_SECRET_FILE"}) {
    const char* v = std::getenv(name);
    saved.emplace_back(name, v ? std::optional<std::string>(v) : std::nullopt);
    unsetenv(name);
  }
  setenv("DHO2_RANK", "0", 1);
  setenv("DHO2_RENDEZVOUS", "127.0.0.1:5000", 1);
  setenv("DHO2_WORLD_SIZE", "999999999999", 1);
  CHECK(message([] { (void)dho2::asio_options::from_environment(); }) ==
        "DHO2_WORLD_SIZE = \"999999999999\". Violated constraint: the number of ranks, an integer "
        "in [1, 65536]");
  setenv("DHO2_WORLD_SIZE", "65537", 1);
  CHECK(contains(message([] { (void)dho2::asio_options::from_environment(); }),
                 "DHO2_WORLD_SIZE = \"65537\""));
  // A huge value is echoed cut to 200 bytes, with its length.
  const std::string huge(100000, '9');
  setenv("DHO2_WORLD_SIZE", huge.c_str(), 1);
  const std::string m = message([] { (void)dho2::asio_options::from_environment(); });
  INFO("message of " << m.size() << " bytes: " << m.substr(0, 300));
  CHECK(m.size() < 400);
  CHECK(contains(m, "... (100000 bytes)"));
  for (const auto& [name, value] : saved) {
    if (value) {
      setenv(name, value->c_str(), 1);
    } else {
      unsetenv(name);
    }
  }
}

TEST_CASE("asio_transport: the missing ranks of a large job are listed in a bounded message") {
  // Rank 0 of 40 alone: before, the message listed every missing rank (a world size in the
  // millions made it megabytes long).
  const std::string error = with_watchdog(30s, "rank 0 of 40 alone", [] {
    auto o = options_for(0, 40, free_port());
    o.connect_timeout = 300ms;
    return error_of([&] { dho2::asio_transport t(o); });
  });
  INFO(error);
  CHECK(contains(error,
                 "only 0 of 39 ranks joined within connect_timeout = 0.3 s (missing: 1, 2, 3, 4, "
                 "5, 6, 7, 8, 9, 10, ... (39 in all))"));
  CHECK(error.size() < 300);
}
