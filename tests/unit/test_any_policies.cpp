// Tests of the run-time policy wrappers dho2::any_transport (include/dho2/transport/any.hpp) and
// dho2::any_partitioner (include/dho2/partition/any.hpp): the transport conformance body through
// the wrapper at P = 1, 2, 3, 4; failures pass through unchanged; traffic of split groups is
// included in the parent's stats; a partitioner gives the wrapped one's offsets and errors; and a
// mode-S optimizer over the wrappers equals the same optimizer over the concrete policies.
#include <dho2/core/errors.hpp>
#include <dho2/fosi/optimizer.hpp>
#include <dho2/models/quadratic.hpp>
#include <dho2/partition/any.hpp>
#include <dho2/partition/block_aligned.hpp>
#include <dho2/partition/weighted.hpp>
#include <dho2/testing/transport_conformance.hpp>
#include <dho2/transport/any.hpp>
#include <dho2/transport/inproc.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <mutex>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace {

using namespace std::chrono_literals;

dho2::inproc_options short_timeout() { return {.timeout = std::chrono::duration<double>(10.0)}; }

}  // namespace

TEST_CASE("any_transport: the conformance body passes through the wrapper at P = 1, 2, 3, 4") {
  for (const int p : {1, 2, 3, 4}) {
    CAPTURE(p);
    std::mutex mutex;
    std::vector<std::string> failures;
    dho2::run_inproc(p, short_timeout(), [&](dho2::inproc_transport& handle) {
      dho2::any_transport t(std::move(handle));
      const auto found = dho2::testing::transport_conformance(t);
      const std::lock_guard lock(mutex);
      failures.insert(failures.end(), found.begin(), found.end());
    });
    std::string all;
    for (const auto& f : failures) all += f + "\n";
    INFO("expected no conformance failures through any_transport, got:\n", all);
    CHECK(failures.empty());
  }
  dho2::any_transport single;  // wraps single_process
  INFO("a default any_transport is one rank (single_process)");
  CHECK(single.size() == 1);
  CHECK(single.rank() == 0);
  CHECK(dho2::testing::transport_conformance(single).empty());
}

TEST_CASE("any_transport: stats include the groups split from it, target() finds the handle") {
  const int p = 3;
  std::vector<dho2::transport_stats> parent(p), child(p);
  std::vector<bool> found_target(p, false);
  dho2::run_inproc(p, short_timeout(), [&](dho2::inproc_transport& handle) {
    dho2::any_transport t(std::move(handle));
    const auto r = static_cast<std::size_t>(t.rank());
    found_target[r] = t.target<dho2::inproc_transport>() != nullptr;
    std::vector<double> v(10, 1.0);
    t.all_reduce_sum(std::span<double>(v));
    dho2::any_transport sub = t.split(t.rank() == 0 ? 0 : 1, 0);  // {0}, {1, 2}
    std::vector<float> w(4, 1.0F);
    sub.all_reduce_sum(std::span<float>(w));
    child[r] = sub.stats();
    parent[r] = t.stats();
  });
  for (std::size_t r = 0; r < 3; ++r) {
    CAPTURE(r);
    CHECK(found_target[r]);
    // The direct all-reduce over P = 3 reads (P − 1)·10 doubles; the sub-group of ranks 1 and 2
    // reads 1·4 floats; rank 0 is alone in its sub-group and moves nothing.
    const std::uint64_t own = 2 * 10 * 8;
    const std::uint64_t sub = r == 0 ? 0 : 4 * 4;
    CHECK(child[r].bytes_received == sub);
    INFO("expected the parent's stats to add the split group's traffic");
    CHECK(parent[r].bytes_received == own + sub);
    CHECK(parent[r].calls == 2 + child[r].calls);  // all-reduce and split, plus the child's calls
  }
  dho2::any_transport single;
  CHECK(single.target<dho2::inproc_transport>() == nullptr);
  CHECK(single.stats() == dho2::transport_stats{});
}

TEST_CASE("any_transport: a peer that leaves fails the others with the wrapped transport's error") {
  std::vector<std::string> messages(2);
  CHECK_THROWS_AS(dho2::run_inproc(2, short_timeout(),
                                   [&](dho2::inproc_transport& handle) {
                                     dho2::any_transport t(std::move(handle));
                                     if (t.rank() == 1) return;  // leaves the group
                                     std::vector<double> v(4, 1.0);
                                     try {
                                       t.all_reduce_sum(std::span<double>(v));
                                     } catch (const dho2::transport_error& e) {
                                       messages[0] = e.what();
                                       throw;
                                     }
                                   }),
                  dho2::transport_error);
  INFO("rank 0's message: ", messages[0]);
  CHECK(messages[0].find("peer 1 left the group") != std::string::npos);
}

TEST_CASE("any_partitioner: the wrapped partitioner's offsets and errors") {
  const dho2::any_partitioner even;
  CHECK(even.partition(10, 3) == std::vector<dho2::index>{0, 4, 7, 10});
  const dho2::any_partitioner weighted(dho2::weighted_partitioner({1.0, 3.0}));
  CHECK(weighted.partition(8, 2) == dho2::weighted_partitioner({1.0, 3.0}).partition(8, 2));
  const dho2::any_partitioner blocks(dho2::block_aligned_partitioner({4, 4, 2}));
  CHECK(blocks.partition(10, 2) == std::vector<dho2::index>{0, 4, 10});
  INFO("a weighted partitioner with 2 weights must reject 3 ranks through the wrapper");
  CHECK_THROWS_WITH_AS(weighted.partition(8, 3), doctest::Contains("weighted_partitioner ranks"),
                       dho2::invalid_options);
}

TEST_CASE("any_transport + any_partitioner: mode S over the wrappers equals the concrete types") {
  // Ten FOSI steps on a quadratic at P = 3 with uneven shards, once with the wrappers and once
  // with inproc_transport + weighted_partitioner: the same arithmetic in the same order, so the
  // parameters must agree bit for bit.
  const dho2::index n = 40;
  dho2::vector<double> eigenvalues(n);
  for (dho2::index i = 0; i < n; ++i)
    eigenvalues(i) = 1.0 + 49.0 * static_cast<double>(i) / (n - 1);
  const dho2::quadratic<double> model(eigenvalues, 7);
  dho2::options opts;
  opts.k = 3;
  opts.warmup = 3;
  opts.refresh_every = 4;
  const dho2::weighted_partitioner part({1.0, 2.0, 3.0});
  const auto run = [&](auto make_policies) {
    std::vector<dho2::vector<double>> result(3);
    dho2::run_inproc(3, short_timeout(), [&](dho2::inproc_transport& handle) {
      auto policies = make_policies(std::move(handle));
      const int rank = policies.transport.rank();
      dho2::optimizer<double, decltype(policies)> opt(opts, std::move(policies));
      dho2::vector<double> x = model.initial_point();
      for (int s = 0; s < 10; ++s) opt.step(model, dho2::vector_ref<double>(x), {});
      result[static_cast<std::size_t>(rank)] = x;
    });
    return result;
  };
  const auto wrapped = run([&](dho2::inproc_transport h) {
    using P = dho2::default_policies::with_transport<dho2::any_transport>::with_partitioner<
        dho2::any_partitioner>;
    return P{.partitioner = dho2::any_partitioner(part),
             .transport = dho2::any_transport(std::move(h))};
  });
  const auto concrete = run([&](dho2::inproc_transport h) {
    using P = dho2::default_policies::with_transport<dho2::inproc_transport>::with_partitioner<
        dho2::weighted_partitioner>;
    return P{.partitioner = part, .transport = std::move(h)};
  });
  for (std::size_t r = 0; r < 3; ++r) {
    CAPTURE(r);
    INFO("expected identical parameters through the wrappers");
    CHECK((wrapped[r] - concrete[r]).cwiseAbs().maxCoeff() == 0.0);
    CHECK((wrapped[r] - wrapped[0]).cwiseAbs().maxCoeff() == 0.0);
  }
}

TEST_CASE("optimizer: offsets from a partitioner that breaks its contract are rejected") {
  // A user-written partitioner that returns the wrong number of offsets, a wrong end or
  // decreasing offsets must be reported naming the offending entry, before any state is sized
  // from it.
  struct broken {
    std::vector<dho2::index> result;
    [[nodiscard]] std::vector<dho2::index> partition(dho2::index, int) const { return result; }
  };
  dho2::vector<double> eigenvalues = dho2::vector<double>::LinSpaced(6, 1.0, 6.0);
  const dho2::quadratic<double> model(eigenvalues, 3);
  using P = dho2::default_policies::with_partitioner<dho2::any_partitioner>;
  const std::pair<std::vector<dho2::index>, const char*> cases[] = {
      {{0, 3, 6}, "partitioner offsets size = 3"},
      {{1, 6}, "partitioner offsets[0] = 1"},
      {{0, 5}, "partitioner offsets[ranks] = 5"}};
  for (const auto& [offsets, message] : cases) {
    CAPTURE(message);
    dho2::optimizer<double, P> opt({}, P{.partitioner = dho2::any_partitioner(broken{offsets})});
    dho2::vector<double> x = model.initial_point();
    const dho2::vector<double> before = x;
    CHECK_THROWS_WITH_AS(opt.step(model, dho2::vector_ref<double>(x), {}),
                         doctest::Contains(message), dho2::invalid_options);
    INFO("the parameters must be untouched by a rejected step");
    CHECK(x == before);
  }
}
