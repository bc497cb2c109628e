// Schedules (DESIGN §2.6): background and split estimates equal the synchronous schedule when
// staleness is 0, are deterministic for a fixed staleness, and report the staleness they saw.
#include "distributed_fixture.hpp"
#include <dho2/data/batcher.hpp>
#include <dho2/dho2.hpp>
#include <dho2/schedule/background.hpp>
#include <dho2/schedule/split.hpp>
#include <dho2/transport/inproc.hpp>

#include <doctest/doctest.h>

#include <utility>

namespace {

using Eigen::VectorXd;
using problem = dho2_test::mlp_problem;

dho2::options schedule_options() {
  dho2::options o = dho2_test::fosi_test_options();
  o.l = 0;
  o.refresh_every = 5;
  return o;
}

constexpr dho2::index global_batch = 24;

struct outcome {
  VectorXd x;
  dho2::summary summary;
};

// `optimize` for one epoch (16 steps, estimates before steps 2, 7, 12).
template <class Optimizer>
outcome one_epoch(Optimizer& opt, const problem& p) {
  dho2::shuffling_batcher<double> batches(p.data.train, global_batch, 3);
  outcome out{p.x0, {}};
  out.summary = opt.optimize(p.model, out.x, batches, 1);
  return out;
}

// One process, one epoch.
template <class Schedule>
outcome run_one_process(const problem& p, Schedule schedule) {
  using policies = dho2::default_policies::with_schedule<Schedule>;
  dho2::optimizer<double, policies> opt(
      schedule_options(), policies{.base = {.learning_rate = 0.01}, .schedule = schedule});
  return one_epoch(opt, p);
}

// `ranks` in-process ranks, one epoch; returns rank 0's outcome (a trainer).
template <class Schedule>
outcome run_ranks(const problem& p, Schedule schedule, int ranks) {
  using policies = dho2::default_policies::with_schedule<Schedule>::template with_transport<
      dho2::inproc_transport>;
  auto outcomes = dho2_test::on_inproc_ranks(ranks, [&](dho2::inproc_transport& t) {
    dho2::optimizer<double, policies> opt(
        schedule_options(),
        policies{.base = {.learning_rate = 0.01}, .schedule = schedule, .transport = std::move(t)});
    return one_epoch(opt, p);
  });
  return std::move(outcomes[0]);
}

bool bitwise_equal(const VectorXd& a, const VectorXd& b) { return (a.array() == b.array()).all(); }

}  // namespace

TEST_CASE("schedules: background with staleness 0 is the synchronous schedule, bit for bit") {
  const problem p;
  const auto sync = run_one_process(p, dho2::synchronous_schedule{});
  const auto background = run_one_process(p, dho2::background_schedule{.max_staleness = 0});
  CHECK(bitwise_equal(background.x, sync.x));
  CHECK(background.summary.curvature_estimates == 3);
  CHECK(background.summary.max_staleness == 0);
}

TEST_CASE("schedules: background with a fixed staleness is deterministic and reports it") {
  const problem p;
  const auto a = run_one_process(p, dho2::background_schedule{.max_staleness = 2});
  const auto b = run_one_process(p, dho2::background_schedule{.max_staleness = 2});
  const auto sync = run_one_process(p, dho2::synchronous_schedule{});
  CHECK(bitwise_equal(a.x, b.x));
  CHECK_FALSE(bitwise_equal(a.x, sync.x));  // stale curvature is a different run
  CHECK(a.summary.max_staleness == 2);
  REQUIRE(a.summary.estimates.size() == 3);
  for (const auto& e : a.summary.estimates) CHECK(e.staleness == 2);
  CHECK(a.summary.estimates[0].step == 2);
}

TEST_CASE("schedules: split with staleness 0 equals synchronous on the trainers") {
  const problem p;
  const auto sync = run_ranks(p, dho2::synchronous_schedule{}, 2);
  for (int curvature : {1, 2}) {
    const auto split = run_ranks(
        p, dho2::split_schedule{.curvature_group = curvature, .max_staleness = 0}, 2 + curvature);
    INFO("2 trainers + ", curvature, " curvature ranks");
    dho2_test::check_close(split.x, sync.x, 1e-10, "max |x - x_sync|");
    CHECK(split.summary.curvature_estimates == 3);
  }
}

TEST_CASE("schedules: split with a fixed staleness is deterministic and matches background") {
  const problem p;
  const dho2::split_schedule split{.curvature_group = 2, .max_staleness = 2};
  const auto a = run_ranks(p, split, 3);  // 1 trainer + 2 curvature ranks
  const auto b = run_ranks(p, split, 3);
  CHECK(bitwise_equal(a.x, b.x));
  CHECK(a.summary.max_staleness == 2);
  // The same stale curvature computed by a background thread of one process.
  const auto background = run_one_process(p, dho2::background_schedule{.max_staleness = 2});
  dho2_test::check_close(a.x, background.x, 1e-10, "max |x_split - x_background|");
}

TEST_CASE("schedules: invalid layouts are refused with the field named") {
  const problem p;
  SUBCASE("staleness must be below T") {
    CHECK_THROWS_WITH_AS(run_one_process(p, dho2::background_schedule{.max_staleness = 5}),
                         doctest::Contains("schedule staleness = 5. Violated constraint: < "
                                           "options.refresh_every = 5"),
                         dho2::invalid_options);
  }
  SUBCASE("the background schedule needs one process") {
    CHECK_THROWS_WITH_AS(run_ranks(p, dho2::background_schedule{.max_staleness = 1}, 2),
                         doctest::Contains("transport size = 2. Violated constraint: 1"),
                         dho2::invalid_options);
  }
  SUBCASE("the split schedule needs a trainer") {
    CHECK_THROWS_WITH_AS(run_ranks(p, dho2::split_schedule{.curvature_group = 2}, 2),
                         doctest::Contains("split_schedule::curvature_group = 2"),
                         dho2::invalid_options);
  }
}
