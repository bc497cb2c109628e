// Schedules (docs/algorithm.md, "Schedules"): background and split estimates equal the synchronous
// schedule when staleness is 0, are deterministic for a fixed staleness, and report the staleness
// they saw.
#include "distributed_fixture.hpp"
#include <dho2/data/batcher.hpp>
#include <dho2/dho2.hpp>
#include <dho2/schedule/background.hpp>
#include <dho2/schedule/split.hpp>
#include <dho2/transport/inproc.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
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

// A gate that Hessian-vector products wait at until the training loop opens it. If the
// training loop never gets there (it stalled waiting for the estimate), the gate opens itself
// after 30 s and says so, so a broken schedule fails the test instead of hanging it.
class gate {
 public:
  void wait() {
    std::unique_lock lock(mutex_);
    if (!cv_.wait_for(lock, std::chrono::seconds(30), [&] { return open_; })) {
      forced_ = true;
      open_ = true;
      cv_.notify_all();
    }
  }
  [[nodiscard]] bool forced() {
    const std::lock_guard lock(mutex_);
    return forced_;
  }
  void open() {
    const std::lock_guard lock(mutex_);
    open_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool open_ = false;
  bool forced_ = false;
};

// The problem's MLP, whose Hessian-vector products wait at a gate: a curvature estimate (on a
// background thread or on the curvature ranks) as slow as the test wants, with no timing.
struct gated_mlp {
  using scalar_type = double;
  using batch_type = dho2::classification_batch<double>;
  const dho2::mlp<double>* inner;
  gate* hvp_gate;

  [[nodiscard]] dho2::index num_parameters() const { return inner->num_parameters(); }
  [[nodiscard]] dho2::index batch_size(const batch_type& b) const { return inner->batch_size(b); }
  double loss_and_gradient(dho2::const_vector_ref<double> x, const batch_type& b,
                           dho2::vector_ref<double> g) const {
    return inner->loss_and_gradient(x, b, g);
  }
  void hessian_vector_product(dho2::const_vector_ref<double> x, const batch_type& b,
                              dho2::const_vector_ref<double> v, dho2::vector_ref<double> hv) const {
    hvp_gate->wait();
    inner->hessian_vector_product(x, b, v, hv);
  }
};

// Opens the gate after step call `after` (0-based): the trainers must get there while the
// estimate due before step 4 (snapshot of step 2, staleness 2) is blocked.
struct open_gate_after {
  gate* hvp_gate;
  dho2::index after;
  void on_step(const dho2::step_info<double>& info) const {
    if (info.iteration == after) hvp_gate->open();
  }
};

// One epoch under `schedule` with keep_previous, the HVPs held until step 9 is done; every rank
// of `ranks` (1: one process) runs it; returns rank 0's summary. A trainer that waited for the
// estimate would never open the gate, which then opens itself after 30 s: the check on
// `gate::forced` fails the test.
template <class Schedule>
dho2::summary late_run(Schedule schedule, int ranks) {
  const problem p;
  gate hvp_gate;
  const gated_mlp model{&p.model, &hvp_gate};
  const open_gate_after opener{&hvp_gate, 9};
  schedule.on_late = dho2::late_estimate_policy::keep_previous;
  const auto run = [&](auto policies) {
    dho2::optimizer<double, decltype(policies)> opt(schedule_options(), std::move(policies));
    dho2::shuffling_batcher<double> batches(p.data.train, global_batch, 3);
    VectorXd x = p.x0;
    return opt.optimize(model, x, batches, 1, opener);
  };
  using one = dho2::default_policies::with_schedule<Schedule>;
  if (ranks == 1) {
    dho2::summary s = run(one{.base = {.learning_rate = 0.01}, .schedule = schedule});
    CHECK_MESSAGE(!hvp_gate.forced(),
                  "training stalled: it did not reach step 9 while the "
                  "estimate was held, so the gate opened itself after 30 s");
    return s;
  }
  using many = typename one::template with_transport<dho2::inproc_transport>;
  auto summaries = dho2_test::on_inproc_ranks(
      ranks,
      [&](dho2::inproc_transport& t) {
        return run(
            many{.base = {.learning_rate = 0.01}, .schedule = schedule, .transport = std::move(t)});
      },
      std::chrono::seconds(60));
  CHECK_MESSAGE(!hvp_gate.forced(),
                "the trainers stalled: they did not reach step 9 while the "
                "estimate was held, so the gate opened itself after 30 s");
  return summaries[0];
}

// What every late run shows: the first estimate (snapshot of step 2, due before step 4) came
// after the gate opened (after step 9), so it was late and put in use with staleness >= 8; the
// estimate due before step 7 was not started (one in flight at a time); training went on to the
// end of the epoch (16 steps), every step taken.
void check_late(const dho2::summary& s) {
  CHECK(s.iterations == 16);
  CHECK(s.steps == 16);
  CHECK(s.late_estimates >= 1);
  CHECK(s.skipped_estimates >= 1);
  REQUIRE(!s.estimates.empty());
  CHECK(s.estimates[0].step == 2);
  INFO("staleness of the first estimate: ", s.estimates[0].staleness, ", expected >= 8");
  CHECK(s.estimates[0].staleness >= 8);
  CHECK(s.max_staleness >= 8);
  CHECK(s.estimates[0].retained > 0);
}

}  // namespace

TEST_CASE("schedules: background with staleness 0 is the synchronous schedule, bit for bit") {
  const problem p;
  const auto sync = run_one_process(p, dho2::synchronous_schedule{});
  const auto background = run_one_process(
      p,
      dho2::background_schedule{.max_staleness = 0, .on_late = dho2::late_estimate_policy::wait});
  CHECK(bitwise_equal(background.x, sync.x));
  CHECK(background.summary.curvature_estimates == 3);
  CHECK(background.summary.max_staleness == 0);
}

TEST_CASE("schedules: background with a fixed staleness is deterministic and reports it") {
  const problem p;
  const auto a = run_one_process(
      p,
      dho2::background_schedule{.max_staleness = 2, .on_late = dho2::late_estimate_policy::wait});
  const auto b = run_one_process(
      p,
      dho2::background_schedule{.max_staleness = 2, .on_late = dho2::late_estimate_policy::wait});
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
    const auto split = run_ranks(p,
                                 dho2::split_schedule{.curvature_group = curvature,
                                                      .max_staleness = 0,
                                                      .on_late = dho2::late_estimate_policy::wait},
                                 2 + curvature);
    INFO("2 trainers + ", curvature, " curvature ranks");
    dho2_test::check_close(split.x, sync.x, 1e-10, "max |x - x_sync|");
    CHECK(split.summary.curvature_estimates == 3);
  }
}

TEST_CASE("schedules: split with a fixed staleness is deterministic and matches background") {
  const problem p;
  const dho2::split_schedule split{
      .curvature_group = 2, .max_staleness = 2, .on_late = dho2::late_estimate_policy::wait};
  const auto a = run_ranks(p, split, 3);  // 1 trainer + 2 curvature ranks
  const auto b = run_ranks(p, split, 3);
  CHECK(bitwise_equal(a.x, b.x));
  CHECK(a.summary.max_staleness == 2);
  // The same stale curvature computed by a background thread of one process.
  const auto background = run_one_process(
      p,
      dho2::background_schedule{.max_staleness = 2, .on_late = dho2::late_estimate_policy::wait});
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

TEST_CASE("schedules: a late background estimate never stalls training (keep_previous)") {
  check_late(late_run(dho2::background_schedule{.max_staleness = 2}, 1));
}

TEST_CASE("schedules: a slow curvature group never stalls the trainers (split, keep_previous)") {
  SUBCASE("1 trainer, 1 curvature rank") {
    check_late(late_run(dho2::split_schedule{.curvature_group = 1, .max_staleness = 2}, 2));
  }
  SUBCASE("2 trainers, 2 curvature ranks") {
    check_late(late_run(dho2::split_schedule{.curvature_group = 2, .max_staleness = 2}, 4));
  }
}

TEST_CASE("schedules: keep_previous without lateness equals wait") {
  // Staleness 0 is never late: the estimate is waited for at the step that starts it.
  const problem p;
  dho2::split_schedule keep{.curvature_group = 1, .max_staleness = 0};
  keep.on_late = dho2::late_estimate_policy::keep_previous;
  const auto a = run_ranks(p, keep, 3);
  const auto b = run_ranks(
      p,
      dho2::split_schedule{
          .curvature_group = 1, .max_staleness = 0, .on_late = dho2::late_estimate_policy::wait},
      3);
  CHECK(bitwise_equal(a.x, b.x));
  CHECK(a.summary.late_estimates == 0);
  CHECK(a.summary.skipped_estimates == 0);
}
