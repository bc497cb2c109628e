// Tests of dho2::simulated_link (include/dho2/transport/simulated_link.hpp): it models the
// transport concepts of what it wraps, passes the conformance body, gives bit-identical results
// to the wrapped transport, charges each call the α–β formula of its header (checked on the
// recorded simulated_seconds, computed here by hand, never on wall time), reports the charge in
// its stats and through any_transport, and validates α and β naming the field.
#include <dho2/core/errors.hpp>
#include <dho2/testing/transport_conformance.hpp>
#include <dho2/transport/any.hpp>
#include <dho2/transport/inproc.hpp>
#include <dho2/transport/simulated_link.hpp>
#include <dho2/transport/single_process.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstddef>
#include <limits>
#include <mutex>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace {

using link_of_inproc = dho2::simulated_link<dho2::inproc_transport>;

static_assert(dho2::transport<dho2::simulated_link<dho2::single_process>>);
static_assert(!dho2::polling_transport<dho2::simulated_link<dho2::single_process>>);
static_assert(dho2::polling_transport<link_of_inproc>);
static_assert(dho2::polling_transport<dho2::simulated_link<dho2::any_transport>>);

dho2::inproc_options short_timeout() { return {.timeout = std::chrono::duration<double>(10.0)}; }

// Small α and large β: every charge is at most a few µs, so the sleeps cost the suite nothing.
constexpr double alpha = 2e-6;
constexpr double beta = 4e9;

// Pseudo-random doubles that use all mantissa bits (sums round), different on every rank.
std::vector<double> rounding_values(int rank, std::size_t n) {
  std::vector<double> v(n);
  for (std::size_t i = 0; i < n; ++i) {
    v[i] = std::sin(1.0 + static_cast<double>(i) * 0.7 + rank * 1.3) * 1e3 / 7.0;
  }
  return v;
}

}  // namespace

TEST_CASE("simulated_link: the conformance body passes through the link at P = 1, 2, 3") {
  for (const int p : {1, 2, 3}) {
    CAPTURE(p);
    std::mutex mutex;
    std::vector<std::string> failures;
    dho2::run_inproc(p, short_timeout(), [&](dho2::inproc_transport& handle) {
      link_of_inproc t(std::move(handle), {.latency = 0.0, .bandwidth = 1e12});
      const auto found = dho2::testing::transport_conformance(t);
      const std::lock_guard lock(mutex);
      failures.insert(failures.end(), found.begin(), found.end());
    });
    std::string all;
    for (const auto& f : failures) all += f + "\n";
    INFO("expected no conformance failures through simulated_link, got:\n", all);
    CHECK(failures.empty());
  }
  dho2::simulated_link single(dho2::single_process{});
  INFO("a link over single_process is one rank and charges nothing");
  CHECK(dho2::testing::transport_conformance(single).empty());
  CHECK(single.stats().simulated_seconds == 0.0);
}

TEST_CASE("simulated_link: results are bit-identical to the wrapped transport's") {
  constexpr int p = 3;
  constexpr std::size_t n = 1001;
  const std::vector<dho2::index> offsets{0, 400, 400, 1001};  // uneven, one empty shard
  std::vector<int> same(p, 0);
  dho2::run_inproc(p, short_timeout(), [&](dho2::inproc_transport& handle) {
    link_of_inproc t(std::move(handle), {.latency = alpha, .bandwidth = beta});
    const int r = t.rank();
    const auto rs = static_cast<std::size_t>(r);
    const std::span<const dho2::index> off(offsets);
    bool ok = true;
    // all-reduce
    std::vector<double> direct = rounding_values(r, n), linked = direct;
    t.inner().all_reduce_sum(std::span<double>(direct));
    t.all_reduce_sum(std::span<double>(linked));
    ok = ok && direct == linked;
    // reduce-scatter
    const std::vector<double> in = rounding_values(r + 5, n);
    const auto shard = static_cast<std::size_t>(offsets[rs + 1] - offsets[rs]);
    std::vector<double> rs_direct(shard), rs_linked(shard);
    t.inner().reduce_scatter_sum(std::span<const double>(in), std::span<double>(rs_direct), off);
    t.reduce_scatter_sum(std::span<const double>(in), std::span<double>(rs_linked), off);
    ok = ok && rs_direct == rs_linked;
    // all-gather
    std::vector<double> ag_direct(n), ag_linked(n);
    t.inner().all_gather(std::span<const double>(rs_direct), std::span<double>(ag_direct), off);
    t.all_gather(std::span<const double>(rs_direct), std::span<double>(ag_linked), off);
    ok = ok && ag_direct == ag_linked;
    // broadcast
    std::vector<std::byte> b_direct(37, std::byte(r)), b_linked = b_direct;
    t.inner().broadcast(std::span<std::byte>(b_direct), 2);
    t.broadcast(std::span<std::byte>(b_linked), 2);
    ok = ok && b_direct == b_linked && b_linked[0] == std::byte(2);
    same[rs] = ok ? 1 : 0;
  });
  for (int r = 0; r < p; ++r) {
    INFO("rank ", r,
         ": expected every collective through the link to give the wrapped "
         "transport's bits");
    CHECK(same[static_cast<std::size_t>(r)] == 1);
  }
}

TEST_CASE("simulated_link: each call is charged its alpha-beta formula") {
  // Hand-written formulas (the header's table) with α = 2 µs, β = 4·10⁹ B/s, at P = 3:
  // ⌈log₂3⌉ = 2 tree rounds.
  constexpr int p = 3;
  constexpr double pm1 = p - 1;
  struct charge {
    std::string call;
    double expected;
  };
  const std::vector<charge> expected{
      {"all_reduce_sum of 1000 doubles", 2 * pm1 * alpha + 2 * pm1 / p * 8000.0 / beta},
      {"all_reduce_sum of 10 floats", 2 * pm1 * alpha + 2 * pm1 / p * 40.0 / beta},
      // offsets {0, 5, 5, 12}: the largest shard has 7 entries
      {"reduce_scatter_sum, largest shard 7 doubles", pm1 * alpha + pm1 * 56.0 / beta},
      {"all_gather, largest shard 7 floats", pm1 * alpha + pm1 * 28.0 / beta},
      {"all_gather, even shards of 4 doubles", pm1 * alpha + pm1 / p * 96.0 / beta},
      {"broadcast of 1000 bytes", 2 * (alpha + 1000.0 / beta)},
      {"barrier", 2 * alpha},
      {"split", 2 * alpha},
      {"send or recv of 100 bytes", alpha + 100.0 / beta},
  };
  std::vector<std::vector<double>> charged(p);
  std::vector<dho2::simulated_link_stats> totals(p);
  std::vector<dho2::transport_stats> through_any(p);
  dho2::run_inproc(p, short_timeout(), [&](dho2::inproc_transport& handle) {
    link_of_inproc t(std::move(handle), {.latency = alpha, .bandwidth = beta});
    const int r = t.rank();
    auto& mine = charged[static_cast<std::size_t>(r)];
    double before = 0.0;
    const auto record = [&] {
      const double now = t.stats().simulated_seconds;
      mine.push_back(now - before);
      before = now;
    };
    std::vector<double> d(1000, 1.0);
    t.all_reduce_sum(std::span<double>(d));
    record();
    std::vector<float> f(10, 1.0F);
    t.all_reduce_sum(std::span<float>(f));
    record();
    const std::vector<dho2::index> uneven{0, 5, 5, 12};
    std::vector<double> out(static_cast<std::size_t>(uneven[static_cast<std::size_t>(r) + 1] -
                                                     uneven[static_cast<std::size_t>(r)]));
    t.reduce_scatter_sum(std::span<const double>(d.data(), 12), std::span<double>(out),
                         std::span<const dho2::index>(uneven));
    record();
    std::vector<float> fin(out.size(), 1.0F), fout(12);
    t.all_gather(std::span<const float>(fin), std::span<float>(fout),
                 std::span<const dho2::index>(uneven));
    record();
    const std::vector<dho2::index> even{0, 4, 8, 12};
    std::vector<double> din(4, 1.0), dout(12);
    t.all_gather(std::span<const double>(din), std::span<double>(dout),
                 std::span<const dho2::index>(even));
    record();
    std::vector<std::byte> bytes(1000);
    t.broadcast(std::span<std::byte>(bytes), 0);
    record();
    t.barrier();
    record();
    link_of_inproc sub = t.split(0, r);
    record();
    std::vector<std::byte> message(100);
    const int next = (r + 1) % p;
    const int prev = (r + p - 1) % p;
    t.send(std::span<const std::byte>(message), next, 5);  // inproc buffers: no deadlock
    record();
    t.recv(std::span<std::byte>(message), prev, 5);
    record();
    // The split group is on the same link, with its own stats.
    std::vector<double> one(1, 1.0);
    sub.all_reduce_sum(std::span<double>(one));
    CHECK(sub.stats().simulated_seconds == 2 * pm1 * alpha + 2 * pm1 / p * 8.0 / beta);
    CHECK(sub.options().latency == alpha);
    totals[static_cast<std::size_t>(r)] = t.stats();
    dho2::any_transport wrapped(std::move(t));
    through_any[static_cast<std::size_t>(r)] = wrapped.stats();
  });
  for (int r = 0; r < p; ++r) {
    const auto& mine = charged[static_cast<std::size_t>(r)];
    REQUIRE(mine.size() == expected.size() + 1);  // the send and the recv each
    double sum = 0.0;
    for (std::size_t i = 0; i <= expected.size(); ++i) {
      const charge& e = expected[std::min(i, expected.size() - 1)];
      INFO("rank ", r, ", ", e.call, ": charged ", mine[i], " s, expected ", e.expected, " s");
      CHECK(mine[i] == doctest::Approx(e.expected).epsilon(1e-12));
      sum += e.expected;
    }
    const dho2::simulated_link_stats& s = totals[static_cast<std::size_t>(r)];
    INFO("rank ", r, ": simulated ", s.simulated_seconds, " s, wall ", s.seconds, " s");
    CHECK(s.simulated_seconds == doctest::Approx(sum).epsilon(1e-12));
    CHECK(s.seconds >= s.simulated_seconds);  // the sleeps cover the charge
    CHECK(s.calls == 10);                     // the wrapped transport's counts pass through
    INFO("through any_transport the sleeps show in seconds");
    CHECK(through_any[static_cast<std::size_t>(r)].seconds == s.seconds);
  }
}

TEST_CASE("simulated_link: tree rounds and one-rank groups charge nothing beyond the model") {
  const std::vector<std::pair<int, int>> rounds{{1, 0}, {2, 1}, {3, 2}, {4, 2},
                                                {5, 3}, {8, 3}, {9, 4}, {1000, 10}};
  for (const auto& [ranks, expected] : rounds) {
    INFO("ceil(log2(", ranks, ")) expected ", expected);
    CHECK(dho2::simulated_link_options::tree_rounds(ranks) == expected);
  }
  const dho2::simulated_link_options o{.latency = 1.0, .bandwidth = 1.0};
  CHECK(o.all_reduce_seconds(1, 1000) == 0.0);
  CHECK(o.ring_seconds(1, 1000) == 0.0);
  CHECK(o.broadcast_seconds(1, 1000) == 0.0);
  CHECK(o.barrier_seconds(1) == 0.0);
  CHECK(o.message_seconds(3) == 4.0);
  CHECK(o.all_reduce_seconds(4, 8) == 2 * 3 * 1.0 + 2 * 3.0 / 4.0 * 8.0);
}

TEST_CASE("simulated_link: latency and bandwidth are validated, naming the field") {
  const double inf = std::numeric_limits<double>::infinity();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (const double bad : {-1e-6, inf, nan}) {
    CAPTURE(bad);
    try {
      dho2::simulated_link link(dho2::single_process{}, {.latency = bad, .bandwidth = 1e9});
      FAIL("expected invalid_options for latency ", bad);
    } catch (const dho2::invalid_options& e) {
      CHECK(e.field() == "simulated_link_options::latency");
      CHECK(e.constraint() == "finite and >= 0");
    }
  }
  for (const double bad : {0.0, -1.0, inf, nan}) {
    CAPTURE(bad);
    try {
      dho2::simulated_link link(dho2::single_process{}, {.latency = 0.0, .bandwidth = bad});
      FAIL("expected invalid_options for bandwidth ", bad);
    } catch (const dho2::invalid_options& e) {
      CHECK(e.field() == "simulated_link_options::bandwidth");
      CHECK(e.constraint() == "finite and > 0");
    }
  }
  INFO("latency 0 is a valid (bandwidth-only) link");
  CHECK_NOTHROW(dho2::simulated_link(dho2::single_process{}, {.latency = 0.0, .bandwidth = 1.0}));
}
