// Run-time control: learning-rate schedules (closed forms; a scheduled run equals a loop that sets
// the rate by hand, bit for bit; a resumed run continues the schedule), early stopping with
// patience, keep_best, time_budget (agreed across ranks), gradient-norm clipping (closed form on a
// quadratic; equal to a model that clips its own gradient; P = 2 equals P = 1) and hand_loop
// (progress_bar and csv_history driven from a hand-written loop write what optimize writes).
//
// The tiny model is f(x) = ½‖x‖² (gradient x) with plain SGD, so each step multiplies x by
// (1 − η): with η = 0.5 from x₀ = (1, 0) and 2 batches per epoch the epochs' mean training losses
// are 0.3125, 0.01953125, 0.001220703125, 7.62939453125e-05, …
#include "distributed_fixture.hpp"
#include <dho2/base/heavy_ball.hpp>
#include <dho2/base/sgd.hpp>
#include <dho2/callbacks/callbacks.hpp>
#include <dho2/core/errors.hpp>
#include <dho2/data/batcher.hpp>
#include <dho2/fosi/optimizer.hpp>
#include <dho2/kfac/kfac.hpp>
#include <dho2/transport/inproc.hpp>

#include <doctest/doctest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <numbers>
#include <regex>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace {

using Eigen::VectorXd;

// f(x) = ½‖x‖² on R²; batches carry nothing.
struct tiny_model {
  using scalar_type = double;
  struct batch_type {
    dho2::index index = -1;
  };
  [[nodiscard]] dho2::index num_parameters() const { return 2; }
  double loss_and_gradient(dho2::const_vector_ref<double> x, const batch_type& /*batch*/,
                           dho2::vector_ref<double> g) const {
    g = x;
    return 0.5 * x.squaredNorm();
  }
};

struct tiny_batches {
  dho2::index batches = 2;
  [[nodiscard]] dho2::index num_batches() const { return batches; }
  void begin_epoch(dho2::index /*e*/) {}
  void fill_batch(dho2::index i, tiny_model::batch_type& b) const { b = {i}; }
};

using sgd_optimizer = dho2::optimizer<double, dho2::default_policies::with_base<dho2::sgd>>;

dho2::options no_curvature() {
  dho2::options o;
  o.use_curvature = false;
  return o;
}

// Records the learning rate in force before every step of a run (at on_begin, then after each
// step for the next one); pass it after the lr_schedule.
template <class Optimizer>
struct rate_probe {
  const Optimizer* opt;
  std::vector<double>* rates;
  void on_begin(const dho2::run_info& /*info*/) { rates->push_back(opt->learning_rate()); }
  void on_step(const dho2::step_info<double>& /*info*/) { rates->push_back(opt->learning_rate()); }
};

// The rate the schedule gave each of `steps` steps of a tiny run (SGD, base rate `base`).
template <class Schedule>
std::vector<double> rates_of(const Schedule& schedule, double base, int steps) {
  sgd_optimizer opt(no_curvature(), {.base = {.learning_rate = base}});
  dho2::lr_schedule lr(opt, schedule);
  std::vector<double> rates;
  tiny_batches batches{.batches = steps};
  VectorXd x = VectorXd::Unit(2, 0);
  opt.optimize(tiny_model{}, x, batches, 1, lr, rate_probe<sgd_optimizer>{&opt, &rates});
  rates.pop_back();  // the rate set after the last step is for a step not taken
  return rates;
}

void check_rates(const std::vector<double>& got, const std::vector<double>& expected) {
  REQUIRE(got.size() == expected.size());
  for (std::size_t t = 0; t < got.size(); ++t) {
    INFO("step ", t, ": rate ", got[t], ", expected the closed form ", expected[t]);
    CHECK(std::abs(got[t] - expected[t]) <= 1e-15 * expected[t]);
  }
}

std::filesystem::path temp_dir(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("dho2_runctl_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  return dir;
}

}  // namespace

TEST_CASE("lr_schedule: the rate in force at each step is the closed form") {
  SUBCASE("step_decay γ = 0.5 every 3 steps from 0.5") {
    check_rates(rates_of(dho2::step_decay{.gamma = 0.5, .every = 3}, 0.5, 8),
                {0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.125, 0.125});
  }
  SUBCASE("cosine_annealing from 1 to 0.1 over 4 steps, then held at 0.1") {
    const double c = std::cos(std::numbers::pi / 4);  // cos(π/4) = √2/2
    check_rates(rates_of(dho2::cosine_annealing{.period = 4, .min_learning_rate = 0.1}, 1.0, 6),
                {1.0, 0.1 + 0.9 * (1 + c) / 2, 0.55, 0.1 + 0.9 * (1 - c) / 2, 0.1, 0.1});
  }
  SUBCASE("linear_warmup from 0.25 to the full rate 1 over 4 steps") {
    check_rates(rates_of(dho2::linear_warmup{.steps = 4, .start_factor = 0.25}, 1.0, 6),
                {0.25, 0.4375, 0.625, 0.8125, 1.0, 1.0});
  }
  SUBCASE("warm-up over 2 steps from half the rate, then step decay counted from step 2") {
    const dho2::warmup_then schedule{dho2::linear_warmup{.steps = 2, .start_factor = 0.5},
                                     dho2::step_decay{.gamma = 0.5, .every = 2}};
    check_rates(rates_of(schedule, 1.0, 7), {0.5, 0.75, 1.0, 1.0, 0.5, 0.5, 0.25});
  }
  SUBCASE("the rates actually used: x shrinks by (1 − η_t) at step t") {
    sgd_optimizer opt(no_curvature(), {.base = {.learning_rate = 0.5}});
    dho2::lr_schedule lr(opt, dho2::step_decay{.gamma = 0.5, .every = 1});
    tiny_batches batches{.batches = 3};
    VectorXd x = VectorXd::Unit(2, 0);
    opt.optimize(tiny_model{}, x, batches, 1, lr);
    CHECK_MESSAGE(x(0) == 0.5 * 0.75 * 0.875, "x₃ = (1 − 0.5)(1 − 0.25)(1 − 0.125), got ", x(0));
  }
}

TEST_CASE(
    "lr_schedule: K-FAC's rate follows the schedule, and equals a loop that sets it by hand") {
  const dho2_test::mlp_problem p;
  const dho2::step_decay schedule{.gamma = 0.5, .every = 2};
  dho2::kfac<double> scheduled(dho2::kfac_options{.learning_rate = 0.1});
  dho2::shuffling_batcher<double> batches(p.data.train, 80, 5);
  VectorXd x = p.x0;
  std::vector<double> rates;
  scheduled.optimize(p.model, x, batches, 1, dho2::lr_schedule(scheduled, schedule),
                     rate_probe<dho2::kfac<double>>{&scheduled, &rates});
  rates.pop_back();
  check_rates(rates, {0.1, 0.1, 0.05, 0.05, 0.025});

  dho2::kfac<double> by_hand(dho2::kfac_options{.learning_rate = 0.1});
  dho2::shuffling_batcher<double> hand_batches(p.data.train, 80, 5);
  dho2::classification_batch<double> batch;
  VectorXd y = p.x0;
  hand_batches.begin_epoch(0);
  for (dho2::index i = 0; i < hand_batches.num_batches(); ++i) {
    by_hand.set_learning_rate(0.1 * std::pow(0.5, static_cast<double>(i / 2)));
    hand_batches.fill_batch(i, 0, 1, batch);
    by_hand.step(p.model, y, batch);
  }
  CHECK_MESSAGE(x == y, "max |x_scheduled − x_by_hand| = ", dho2_test::max_abs_diff(x, y),
                ", expected 0");
}

TEST_CASE("lr_schedule: a scheduled run equals a loop that sets the rate by hand, bit for bit") {
  // FOSI with curvature (estimates before steps 2, 6, …) on the MLP problem, Adam base.
  const dho2_test::mlp_problem p;
  const dho2::options o = dho2_test::fosi_test_options();
  const double base = 0.02;
  const dho2::warmup_then schedule{dho2::linear_warmup{.steps = 5, .start_factor = 0.1},
                                   dho2::cosine_annealing{.period = 8, .min_learning_rate = 1e-4}};
  constexpr dho2::index epochs = 2;

  dho2::optimizer<double> scheduled(o, {.base = {.learning_rate = base}});
  dho2::shuffling_batcher<double> batches(p.data.train, 50, 5);
  VectorXd x = p.x0;
  scheduled.optimize(p.model, x, batches, epochs, dho2::lr_schedule(scheduled, schedule));

  dho2::optimizer<double> by_hand(o, {.base = {.learning_rate = base}});
  dho2::shuffling_batcher<double> hand_batches(p.data.train, 50, 5);
  VectorXd y = p.x0;
  dho2::classification_batch<double> batch;
  dho2::index t = 0;
  for (dho2::index e = 0; e < epochs; ++e) {
    hand_batches.begin_epoch(e);
    for (dho2::index i = 0; i < hand_batches.num_batches(); ++i, ++t) {
      // The closed form of warm-up then cosine, written out; the loop sets the schedule's own
      // value (the closed form up to rounding), so that the runs can agree bit for bit.
      const double closed =
          t < 5 ? base * (0.1 + 0.9 * static_cast<double>(t) / 5.0)
          : t - 5 >= 8
              ? 1e-4
              : 1e-4 + (base - 1e-4) *
                           (1.0 + std::cos(std::numbers::pi * static_cast<double>(t - 5) / 8.0)) /
                           2.0;
      const double rate = schedule(base, t);
      if (std::abs(rate - closed) > 1e-15 * closed) {
        FAIL_CHECK("step ", t, ": the schedule gives ", rate, ", the closed form ", closed);
      }
      by_hand.set_learning_rate(rate);
      hand_batches.fill_batch(i, 0, 1, batch);
      by_hand.step(p.model, y, batch);
    }
  }
  REQUIRE(t > 13);  // the run reaches the cosine floor
  CHECK(scheduled.get_summary().curvature_estimates > 0);
  CHECK_MESSAGE(x == y, "max |x_scheduled − x_by_hand| = ", dho2_test::max_abs_diff(x, y),
                ", expected 0");
  CHECK(scheduled.learning_rate() == by_hand.learning_rate());
}

TEST_CASE("lr_schedule: a run resumed from a checkpoint continues the schedule (P = 2, mode S)") {
  // Uninterrupted: 2 epochs with the schedule. Resumed: 7 steps by hand with lr.apply(), a
  // checkpoint (the rate then differs from the configured one), a fresh optimizer with the
  // configured rate loads it — the ranks' agreement and the checkpoint's identity accept it —
  // and optimize finishes the 2 epochs with a fresh schedule. Same parameters, bit for bit.
  const dho2_test::mlp_problem p;
  const dho2::options o = dho2_test::fosi_test_options();
  using policies = dho2::policies<dho2::heavy_ball>::with_transport<dho2::inproc_transport>;
  const dho2::step_decay schedule{.gamma = 0.5, .every = 3};
  const auto dir = temp_dir("resume");
  const auto make = [&](dho2::inproc_transport& t) {
    return std::make_unique<dho2::optimizer<double, policies>>(
        o, policies{.base = {.learning_rate = 0.05}, .transport = std::move(t)});
  };
  const auto uninterrupted = dho2_test::on_inproc_ranks(2, [&](dho2::inproc_transport& t) {
    const auto opt = make(t);
    dho2::shuffling_batcher<double> batches(p.data.train, 40, 7);
    VectorXd x = p.x0;
    opt->optimize(p.model, x, batches, 2, dho2::lr_schedule(*opt, schedule));
    return x;
  });
  const auto saved_rates = dho2_test::on_inproc_ranks(2, [&](dho2::inproc_transport& t) {
    const int rank = t.rank();
    const auto first = make(t);
    dho2::lr_schedule lr(*first, schedule);
    dho2::shuffling_batcher<double> batches(p.data.train, 40, 7);
    dho2::classification_batch<double> batch;
    VectorXd x = p.x0;
    batches.begin_epoch(0);
    for (dho2::index i = 0; i < 7; ++i) {
      lr.apply();
      batches.fill_batch(i, rank, 2, batch);
      first->step(p.model, x, batch);
    }
    first->save_checkpoint(dir, x, {0, 7});
    return first->learning_rate();
  });
  const auto resumed = dho2_test::on_inproc_ranks(2, [&](dho2::inproc_transport& t) {
    const auto second = make(t);
    dho2::shuffling_batcher<double> batches(p.data.train, 40, 7);
    VectorXd y = VectorXd::Zero(p.x0.size());
    second->load_checkpoint(dir, y);
    second->optimize(p.model, y, batches, 2, dho2::lr_schedule(*second, schedule));
    return y;
  });
  std::filesystem::remove_all(dir);
  for (std::size_t r = 0; r < 2; ++r) {
    INFO("rank ", r);
    CHECK_MESSAGE(saved_rates[r] == 0.05 * 0.25, "step 6's rate 0.0125 at the checkpoint, got ",
                  saved_rates[r]);
    CHECK_MESSAGE(resumed[r] == uninterrupted[r], "max |x_resumed − x_uninterrupted| = ",
                  dho2_test::max_abs_diff(resumed[r], uninterrupted[r]), ", expected 0");
  }
  CHECK(resumed[0] == resumed[1]);
}

TEST_CASE(
    "set_learning_rate: a rate that is not finite and positive is refused, naming the field") {
  sgd_optimizer opt(no_curvature(), {.base = {.learning_rate = 0.5}});
  for (const double bad : {0.0, -1.0, std::numeric_limits<double>::quiet_NaN(),
                           std::numeric_limits<double>::infinity()}) {
    CAPTURE(bad);
    CHECK_THROWS_WITH_AS(opt.set_learning_rate(bad),
                         doctest::Contains("policies.base.learning_rate"), dho2::invalid_options);
    CHECK(opt.learning_rate() == 0.5);
  }
  opt.set_learning_rate(0.125);
  CHECK(opt.learning_rate() == 0.125);
  CHECK(opt.policies().base.learning_rate == 0.125);

  dho2::kfac<double> k;
  CHECK_THROWS_WITH_AS(k.set_learning_rate(-0.1), doctest::Contains("kfac_options.learning_rate"),
                       dho2::invalid_options);
  k.set_learning_rate(0.3);
  CHECK(k.learning_rate() == 0.3);

  // The schedules validate their fields.
  CHECK_THROWS_WITH_AS(
      dho2::lr_schedule(opt, dho2::cosine_annealing{.period = 4, .min_learning_rate = 0.0}),
      doctest::Contains("cosine_annealing::min_learning_rate"), dho2::invalid_options);
  CHECK_THROWS_WITH_AS(dho2::lr_schedule(opt, dho2::step_decay{.gamma = 0.5, .every = 0}),
                       doctest::Contains("step_decay::every"), dho2::invalid_options);
  CHECK_THROWS_WITH_AS(dho2::lr_schedule(opt, dho2::linear_warmup{.steps = 3, .start_factor = 0}),
                       doctest::Contains("linear_warmup::start_factor"), dho2::invalid_options);
}

TEST_CASE("early_stopping: stops after `patience` epochs without an improvement by min_delta") {
  tiny_batches batches;
  SUBCASE("train_loss 0.3125, 0.0195 (better by > 0.05), 0.0012, 7.6e-5 (not): stops at 4") {
    sgd_optimizer opt(no_curvature(), {.base = {.learning_rate = 0.5}});
    VectorXd x = VectorXd::Unit(2, 0);
    dho2::early_stopping stop("train_loss", 2, 0.05);
    const dho2::summary s = opt.optimize(tiny_model{}, x, batches, 10, stop);
    CHECK(s.termination == dho2::termination_type::stopped_by_callback);
    CHECK(s.epochs == 4);
    CHECK(stop.stopped());
    CHECK(stop.stopped_epoch() == 4);
    CHECK(stop.best_epoch() == 2);
    CHECK(stop.best_value() == 0.01953125);
    CHECK(s.message == "no improvement of train_loss for 2 epochs (best 0.0195312 at epoch 2)");
  }
  SUBCASE("maximize a metric 1, 3, 2, 3, 2.5: best at epoch 2 (3 is no improvement on 3)") {
    sgd_optimizer opt(no_curvature(), {.base = {.learning_rate = 0.5}});
    VectorXd x = VectorXd::Unit(2, 0);
    const std::vector<double> values{1, 3, 2, 3, 2.5, 9};
    std::size_t call = 0;
    dho2::early_stopping stop("score", 3, 0.0, dho2::metric_direction::maximize);
    const dho2::summary s = opt.optimize(
        tiny_model{}, x, batches, 10,
        dho2::evaluate("score", [&](dho2::const_vector_ref<double>) { return values[call++]; }),
        stop);
    CHECK(s.epochs == 5);
    CHECK(stop.best_epoch() == 2);
    CHECK(stop.best_value() == 3.0);
  }
  SUBCASE("a missing metric neither improves nor counts; the run completes") {
    sgd_optimizer opt(no_curvature(), {.base = {.learning_rate = 0.5}});
    VectorXd x = VectorXd::Unit(2, 0);
    dho2::early_stopping stop("absent", 1);
    const dho2::summary s = opt.optimize(tiny_model{}, x, batches, 3, stop);
    CHECK(s.termination == dho2::termination_type::completed);
    CHECK(stop.best_epoch() == 0);
    CHECK_FALSE(stop.stopped());
  }
  CHECK_THROWS_WITH_AS(dho2::early_stopping("train_loss", 0), doctest::Contains("patience"),
                       dho2::invalid_options);
}

TEST_CASE("keep_best: the parameters of the best epoch, exposed and restored on request") {
  tiny_batches batches;
  sgd_optimizer opt(no_curvature(), {.base = {.learning_rate = 0.5}});
  VectorXd x = VectorXd::Unit(2, 0);
  const std::vector<double> values{3, 1, 2, 5};  // best (smallest) at epoch 2
  std::size_t call = 0;
  dho2::keep_best<double> best("m");
  opt.optimize(tiny_model{}, x, batches, 4,
               dho2::evaluate("m", [&](dho2::const_vector_ref<double>) { return values[call++]; }),
               best);
  REQUIRE(best.has_best());
  CHECK(best.best_epoch() == 2);
  CHECK(best.best_value() == 1.0);
  CHECK_MESSAGE(best.best_parameters() == VectorXd::Unit(2, 0) * 0.0625,
                "x after epoch 2 is (1/16, 0), got ", best.best_parameters().transpose());
  CHECK(x(0) == std::pow(0.5, 8));  // optimize leaves the last iterate
  CHECK(best.restore(x));
  CHECK(x(0) == 0.0625);
  VectorXd wrong(3);
  CHECK_THROWS_AS(best.restore(wrong), dho2::invalid_options);
}

TEST_CASE("keep_best: in mode S every rank keeps the same copy") {
  const dho2_test::mlp_problem p;
  using policies = dho2::default_policies::with_transport<dho2::inproc_transport>;
  const auto kept = dho2_test::on_inproc_ranks(2, [&](dho2::inproc_transport& t) {
    dho2::optimizer<double, policies> opt(dho2_test::fosi_test_options(),
                                          policies{.transport = std::move(t)});
    dho2::shuffling_batcher<double> batches(p.data.train, 50, 5);
    VectorXd x = p.x0;
    dho2::keep_best<double> best;
    opt.optimize(p.model, x, batches, 3, best);
    return std::pair<dho2::index, VectorXd>{best.best_epoch(), best.best_parameters()};
  });
  CHECK(kept[0].first >= 1);
  CHECK(kept[0].first == kept[1].first);
  CHECK_MESSAGE(kept[0].second == kept[1].second,
                "max |best_0 − best_1| = ", dho2_test::max_abs_diff(kept[0].second, kept[1].second),
                ", expected 0");
}

TEST_CASE("time_budget: a used-up budget stops the run, every rank stops at the same step") {
  SUBCASE("one rank, budget 0: stops after the first step") {
    tiny_batches batches;
    sgd_optimizer opt(no_curvature(), {.base = {.learning_rate = 0.5}});
    VectorXd x = VectorXd::Unit(2, 0);
    dho2::time_budget budget{std::chrono::seconds(0)};
    const dho2::summary s = opt.optimize(tiny_model{}, x, batches, 5, budget);
    CHECK(s.termination == dho2::termination_type::stopped_by_callback);
    CHECK(s.iterations == 1);
    CHECK(s.message.rfind("time budget of 0 s used up after ", 0) == 0);
    CHECK(budget.used_up());
    CHECK(budget.stopped_after_step() == 0);
  }
  SUBCASE("two ranks, rank 0's budget used up, rank 1's not: both stop after step 0") {
    using policies =
        dho2::default_policies::with_base<dho2::sgd>::with_transport<dho2::inproc_transport>;
    const auto runs = dho2_test::on_inproc_ranks(2, [&](dho2::inproc_transport& t) {
      const int rank = t.rank();
      dho2::optimizer<double, policies> opt(
          no_curvature(), policies{.base = {.learning_rate = 0.5}, .transport = std::move(t)});
      tiny_batches source;
      dho2::local_batches batches(source);  // every rank trains on the same batches, on purpose
      VectorXd x = VectorXd::Unit(2, 0);
      dho2::time_budget budget{rank == 0 ? std::chrono::hours(0) : std::chrono::hours(1)};
      const dho2::summary s = opt.optimize(tiny_model{}, x, batches, 5, budget);
      return std::pair<dho2::summary, VectorXd>{s, x};
    });
    for (const auto& [s, x] : runs) {
      CHECK(s.termination == dho2::termination_type::stopped_by_callback);
      CHECK_MESSAGE(s.iterations == 1, "every rank stops after step 0, got ", s.iterations);
      CHECK(x == runs[0].second);
    }
  }
  CHECK_THROWS_AS(dho2::time_budget(std::chrono::seconds(-1)), dho2::invalid_options);
}

namespace {

// The MLP whose gradient is clipped by the model itself (the oracle of options.max_gradient_norm:
// the optimizer without clipping on it must step the same); its HVP is the MLP's.
struct clipping_mlp {
  using scalar_type = double;
  using batch_type = dho2::classification_batch<double>;
  const dho2::mlp<double>* model;
  double max_norm;
  [[nodiscard]] dho2::index num_parameters() const { return model->num_parameters(); }
  double loss_and_gradient(dho2::const_vector_ref<double> x, const batch_type& batch,
                           dho2::vector_ref<double> g) const {
    const double loss = model->loss_and_gradient(x, batch, g);
    const double norm = std::sqrt(g.cast<double>().squaredNorm());
    if (norm > max_norm) g *= max_norm / norm;
    return loss;
  }
  void hessian_vector_product(dho2::const_vector_ref<double> x, const batch_type& batch,
                              dho2::const_vector_ref<double> v, dho2::vector_ref<double> hv) const {
    model->hessian_vector_product(x, batch, v, hv);
  }
};

}  // namespace

TEST_CASE("max_gradient_norm: the step acts on the gradient scaled to the bound") {
  SUBCASE("closed form: ‖(3, 4)‖ = 5 clipped to 1, SGD η = 0.5: x₁ = (3 − 0.3, 4 − 0.4)") {
    dho2::options o = no_curvature();
    o.max_gradient_norm = 1.0;
    sgd_optimizer opt(o, {.base = {.learning_rate = 0.5}});
    VectorXd x{{3.0, 4.0}};
    opt.step(tiny_model{}, x, tiny_model::batch_type{});
    CHECK(opt.last_gradient_norm() == 5.0);
    INFO("x₁ = ", x.transpose(), ", expected (2.7, 3.6)");
    CHECK(std::abs(x(0) - 2.7) <= 1e-15);
    CHECK(std::abs(x(1) - 3.6) <= 1e-15);
  }
  SUBCASE("a gradient within the bound is untouched: ‖(0.3, 0.4)‖ = 0.5 <= 1") {
    dho2::options o = no_curvature();
    o.max_gradient_norm = 1.0;
    sgd_optimizer opt(o, {.base = {.learning_rate = 0.5}});
    VectorXd x{{0.3, 0.4}};
    opt.step(tiny_model{}, x, tiny_model::batch_type{});
    CHECK(x == VectorXd{{0.15, 0.2}});
  }
  SUBCASE("off by default: last_gradient_norm is NaN") {
    sgd_optimizer opt(no_curvature(), {.base = {.learning_rate = 0.5}});
    VectorXd x{{3.0, 4.0}};
    opt.step(tiny_model{}, x, tiny_model::batch_type{});
    CHECK(std::isnan(opt.last_gradient_norm()));
    CHECK(x == VectorXd{{1.5, 2.0}});
  }
  SUBCASE("FOSI with curvature: equals the unclipped optimizer on a model that clips itself") {
    const dho2_test::mlp_problem p;
    dho2::options o = dho2_test::fosi_test_options();
    const double bound = 0.05;
    dho2::options clipped_options = o;
    clipped_options.max_gradient_norm = bound;
    dho2::optimizer<double> clipped(clipped_options);
    dho2::optimizer<double> reference(o);
    dho2::shuffling_batcher<double> a(p.data.train, 40, 3), b(p.data.train, 40, 3);
    VectorXd x = p.x0, y = p.x0;
    dho2_test::train_steps(clipped, p.model, x, a, 10);
    dho2_test::train_steps(reference, clipping_mlp{&p.model, bound}, y, b, 10);
    CHECK(clipped.get_summary().curvature_estimates > 0);
    CHECK_MESSAGE(clipped.last_gradient_norm() > bound,
                  "the test must clip: ‖g‖ = ", clipped.last_gradient_norm());
    CHECK_MESSAGE(x == y, "max |x_clipped − x_reference| = ", dho2_test::max_abs_diff(x, y),
                  ", expected 0");
  }
  SUBCASE("mode S: P = 2 equals P = 1 (the norm is global)") {
    const dho2_test::mlp_problem p;
    dho2::options o = dho2_test::fosi_test_options();
    o.max_gradient_norm = 0.05;
    dho2::optimizer<double> single(o);
    dho2::shuffling_batcher<double> batches(p.data.train, 29, 17);
    VectorXd x = p.x0;
    dho2_test::train_steps(single, p.model, x, batches, 10);
    const double norm = single.last_gradient_norm();
    REQUIRE(norm > 0.05);
    using policies = dho2::default_policies::with_transport<dho2::inproc_transport>;
    const auto ranks = dho2_test::on_inproc_ranks(2, [&](dho2::inproc_transport& t) {
      const int rank = t.rank();
      dho2::optimizer<double, policies> opt(o, policies{.transport = std::move(t)});
      dho2::shuffling_batcher<double> rank_batches(p.data.train, 29, 17);
      VectorXd y = p.x0;
      dho2_test::train_steps(opt, p.model, y, rank_batches, 10, rank, 2);
      return std::pair<double, VectorXd>{opt.last_gradient_norm(), y};
    });
    for (const auto& [rank_norm, y] : ranks) {
      CHECK(std::abs(rank_norm - norm) <= 1e-12 * norm);
      dho2_test::check_close(y, x, 1e-9, "max |x_P2 − x_P1|");
    }
  }
  SUBCASE("validated: finite and >= 0") {
    dho2::options o;
    o.max_gradient_norm = -1.0;
    CHECK_THROWS_WITH_AS(o.validate(10), doctest::Contains("options.max_gradient_norm"),
                         dho2::invalid_options);
    o.max_gradient_norm = std::numeric_limits<double>::infinity();
    CHECK_THROWS_AS(o.validate(10), dho2::invalid_options);
  }
}

namespace {

// The text with what depends on the clock masked: rates, elapsed times, the total duration.
std::string without_times(const std::string& text) {
  std::string out = std::regex_replace(text, std::regex("[0-9.]+ steps/s|- steps/s"), "R steps/s");
  out = std::regex_replace(out, std::regex("elapsed [^ \n]+"), "elapsed T");
  out = std::regex_replace(out, std::regex("steps, [^ \n]+\n"), "steps, T\n");
  return out;
}

// A CSV file's text with its 4th column (elapsed_s) masked.
std::string csv_without_times(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::string line, out;
  while (std::getline(in, line)) {
    std::vector<std::string> cells;
    std::stringstream ss(line);
    std::string cell;
    while (std::getline(ss, cell, ',')) cells.push_back(cell);
    if (cells.size() >= 4 && cells[3] != "elapsed_s") cells[3] = "T";
    for (std::size_t i = 0; i < cells.size(); ++i) out += (i > 0 ? "," : "") + cells[i];
    out += "\n";
  }
  return out;
}

}  // namespace

TEST_CASE("hand_loop: progress_bar and csv_history driven by hand write what optimize writes") {
  const auto dir = temp_dir("hand_loop");
  std::filesystem::create_directories(dir);
  const auto norm = [](dho2::const_vector_ref<double> p) { return p.norm(); };
  constexpr dho2::index epochs = 3;

  std::ostringstream by_optimize;
  {
    sgd_optimizer opt(no_curvature(), {.base = {.learning_rate = 0.5}});
    tiny_batches batches;
    VectorXd x = VectorXd::Unit(2, 0);
    dho2::progress_bar bar(by_optimize, dho2::progress_mode::plain, 1);
    dho2::csv_history csv((dir / "optimize.csv").string());
    opt.optimize(tiny_model{}, x, batches, epochs, dho2::evaluate("norm", norm), csv, bar);
  }
  std::ostringstream by_hand;
  dho2::summary s;
  {
    sgd_optimizer opt(no_curvature(), {.base = {.learning_rate = 0.5}});
    tiny_batches batches;
    VectorXd x = VectorXd::Unit(2, 0);
    dho2::progress_bar bar(by_hand, dho2::progress_mode::plain, 1);
    dho2::csv_history csv((dir / "hand.csv").string());
    dho2::evaluate metric("norm", norm);
    dho2::hand_loop events({2, epochs, batches.num_batches()}, metric, csv, bar);
    tiny_model::batch_type batch;
    for (dho2::index e = 0; e < epochs; ++e) {
      batches.begin_epoch(e);
      for (dho2::index i = 0; i < batches.num_batches(); ++i) {
        batches.fill_batch(i, batch);
        const dho2::step_status st = opt.step(tiny_model{}, x, batch);
        CHECK_FALSE(events.after_step(opt, st, x));
      }
      CHECK_FALSE(events.end_epoch(opt, x));
    }
    s = events.end(opt.get_summary());
  }
  CHECK(s.termination == dho2::termination_type::completed);
  CHECK(s.epochs == epochs);
  CHECK(s.steps == 6);
  const std::string hand = without_times(by_hand.str());
  CAPTURE(by_hand.str());
  CHECK(hand == without_times(by_optimize.str()));
  CHECK(hand.find("epoch 1/3  train_loss 0.3125  elapsed T  norm 0.25\n") != std::string::npos);
  CHECK(hand.find("done: completed (all 3 epochs done)  3 epochs, 6 steps, T\n") !=
        std::string::npos);
  const std::string hand_csv = csv_without_times(dir / "hand.csv");
  CHECK(hand_csv == csv_without_times(dir / "optimize.csv"));
  CHECK(hand_csv.rfind("epoch,iterations,train_loss,elapsed_s,norm\n1,2,0.3125,T,0.25\n", 0) == 0);
  std::filesystem::remove_all(dir);
}

TEST_CASE("hand_loop: a stop asked by a hook is reported in the completed summary") {
  sgd_optimizer opt(no_curvature(), {.base = {.learning_rate = 0.5}});
  VectorXd x = VectorXd::Unit(2, 0);
  dho2::early_stopping stop("train_loss", 1, 0.1);
  std::ostringstream os;
  dho2::progress_bar bar(os, dho2::progress_mode::plain);
  dho2::hand_loop events({2, 10, 2}, stop, bar);
  tiny_model::batch_type batch;
  bool done = false;
  for (dho2::index e = 0; e < 10 && !done; ++e) {
    for (dho2::index i = 0; i < 2; ++i) {
      const dho2::step_status st = opt.step(tiny_model{}, x, batch);
      events.after_step(opt, st, x);
    }
    done = events.end_epoch(opt, x);
  }
  const dho2::summary s = events.end(opt.get_summary());
  // 0.3125, then 0.0195 (better by 0.29 > 0.1), then 0.0012 (better by 0.018 < 0.1): stop at 3.
  CHECK(s.epochs == 3);
  CHECK(s.termination == dho2::termination_type::stopped_by_callback);
  CHECK(s.message == stop.stop_reason()->message);
  CHECK(os.str().find("done: stopped_by_callback (no improvement of train_loss") !=
        std::string::npos);
}
