// Tests of how a run ends early on its own: the bound on consecutive skipped steps
// (options::max_consecutive_skips, kfac_options::max_consecutive_skips: a diverged run ends with
// numerical_failure instead of "completed"), and signals (signal_guard, stop_on_signal: the step
// is finished, every rank stops at the same step, on_stop runs there, the termination is
// interrupted; a second signal ends the process at once).
#include <dho2/admm/consensus.hpp>
#include <dho2/base/sgd.hpp>
#include <dho2/callbacks/callbacks.hpp>
#include <dho2/callbacks/stop_on_signal.hpp>
#include <dho2/data/batcher.hpp>
#include <dho2/data/synthetic.hpp>
#include <dho2/fosi/optimizer.hpp>
#include <dho2/kfac/kfac.hpp>
#include <dho2/models/mlp.hpp>
#include <dho2/transport/inproc.hpp>

#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <csignal>
#include <limits>
#include <optional>
#include <string>
#include <vector>

namespace {

// f(x) = ½‖x‖² on R², whose loss and gradient are NaN at the step calls listed in `bad` (by the
// batch's iteration number, which the batch source below fills in).
struct flaky_model {
  using scalar_type = double;
  struct batch_type {
    dho2::index call = -1;
  };
  std::vector<dho2::index> bad;
  [[nodiscard]] dho2::index num_parameters() const { return 2; }
  double loss_and_gradient(dho2::const_vector_ref<double> x, const batch_type& b,
                           dho2::vector_ref<double> g) const {
    for (const dho2::index t : bad) {
      if (t == b.call) {
        g.setConstant(std::numeric_limits<double>::quiet_NaN());
        return std::numeric_limits<double>::quiet_NaN();
      }
    }
    g = x;
    return 0.5 * x.squaredNorm();
  }
};

// `per_epoch` batches per epoch; batch i of epoch e is call e·per_epoch + i.
struct counting_batches {
  dho2::index per_epoch = 10;
  dho2::index epoch = 0;
  [[nodiscard]] dho2::index num_batches() const { return per_epoch; }
  void begin_epoch(dho2::index e) { epoch = e; }
  void fill_batch(dho2::index i, flaky_model::batch_type& b) const {
    b.call = epoch * per_epoch + i;
  }
};

using sgd_optimizer = dho2::optimizer<double, dho2::default_policies::with_base<dho2::sgd>>;

sgd_optimizer make_sgd(dho2::index bound) {
  dho2::options o;
  o.use_curvature = false;
  o.max_consecutive_skips = bound;
  return sgd_optimizer(o, {.base = {.learning_rate = 0.5}});
}

// Calls [from, to).
std::vector<dho2::index> calls(dho2::index from, dho2::index to) {
  std::vector<dho2::index> v;
  for (dho2::index t = from; t < to; ++t) v.push_back(t);
  return v;
}

// Records what on_stop saw.
struct stop_recorder {
  int* calls = nullptr;
  dho2::index* iteration = nullptr;
  dho2::termination_type* termination = nullptr;
  void on_stop(const dho2::step_info<double>& info, const dho2::stop_cause& why) const {
    ++*calls;
    *iteration = info.iteration;
    *termination = why.termination;
  }
};

// Raises `sig` in the process after step call `at` (a signal arriving mid-run).
struct raise_at {
  dho2::index at = 0;
  int sig = SIGTERM;
  void on_step(const dho2::step_info<double>& info) const {
    if (info.iteration == at) std::raise(sig);
  }
};

}  // namespace

TEST_CASE("interrupt: a diverged run stops after max_consecutive_skips skipped steps") {
  const flaky_model model{calls(3, 1000)};  // finite for calls 0, 1, 2; NaN ever after
  counting_batches batches;
  auto opt = make_sgd(5);
  dho2::vector<double> x = dho2::vector<double>::Unit(2, 0);
  const dho2::summary s = opt.optimize(model, x, batches, 10);
  CHECK_MESSAGE(s.termination == dho2::termination_type::numerical_failure,
                "expected numerical_failure, got ", dho2::to_string(s.termination));
  // Calls 3..7 are skipped; the fifth (call 7) stops the run.
  CHECK_MESSAGE(s.iterations == 8, "expected 8 step calls (3 taken, 5 skipped), got ",
                s.iterations);
  CHECK(s.skipped_nonfinite_loss == 5);
  CHECK(s.steps == 3);
  CHECK_MESSAGE(s.message.find("options.max_consecutive_skips = 5") != std::string::npos,
                "the message names the option: ", s.message);
  CHECK_MESSAGE(s.message.find("diverged") != std::string::npos, s.message);
  // Three SGD steps of η = 0.5 halve x three times; nothing after.
  CHECK(x(0) == 0.125);
  CHECK(x(1) == 0.0);
  CHECK(opt.stopped());
}

TEST_CASE("interrupt: a taken step resets the count, 0 turns the bound off") {
  // Runs of 4 bad calls separated by good ones never reach a bound of 5.
  std::vector<dho2::index> bad;
  for (dho2::index t = 0; t < 100; ++t) {
    if (t % 5 != 0) bad.push_back(t);
  }
  {
    const flaky_model model{bad};
    counting_batches batches;
    auto opt = make_sgd(5);
    dho2::vector<double> x = dho2::vector<double>::Unit(2, 0);
    const dho2::summary s = opt.optimize(model, x, batches, 10);
    CHECK_MESSAGE(s.termination == dho2::termination_type::completed,
                  "4 skips in a row must not trip a bound of 5: ", s.message);
    CHECK(s.iterations == 100);
    CHECK(s.skipped_steps() == 80);
  }
  {
    // Bound 4: the first run of 4 (calls 1..4) trips it.
    const flaky_model model{bad};
    counting_batches batches;
    auto opt = make_sgd(4);
    dho2::vector<double> x = dho2::vector<double>::Unit(2, 0);
    const dho2::summary s = opt.optimize(model, x, batches, 10);
    CHECK(s.termination == dho2::termination_type::numerical_failure);
    CHECK(s.iterations == 5);
  }
  {
    const flaky_model model{calls(0, 100)};
    counting_batches batches;
    auto opt = make_sgd(0);
    dho2::vector<double> x = dho2::vector<double>::Unit(2, 0);
    const dho2::summary s = opt.optimize(model, x, batches, 10);
    CHECK_MESSAGE(s.termination == dho2::termination_type::completed,
                  "max_consecutive_skips = 0 is no bound");
    CHECK(s.skipped_steps() == 100);
  }
}

TEST_CASE("interrupt: max_consecutive_skips < 0 is refused naming the field") {
  dho2::options o;
  o.max_consecutive_skips = -1;
  CHECK_THROWS_WITH_AS(o.validate(100), doctest::Contains("options.max_consecutive_skips"),
                       dho2::invalid_options);
  dho2::kfac_options k;
  k.max_consecutive_skips = -3;
  CHECK_THROWS_WITH_AS(k.validate(), doctest::Contains("kfac_options.max_consecutive_skips"),
                       dho2::invalid_options);
}

TEST_CASE("interrupt: the count of skipped steps survives a checkpoint") {
  const flaky_model model{calls(2, 1000)};
  const auto dir = std::filesystem::temp_directory_path() /
                   ("dho2_interrupt_ckpt_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  dho2::vector<double> x = dho2::vector<double>::Unit(2, 0);
  counting_batches batches;
  auto first = make_sgd(6);
  for (dho2::index t = 0; t < 5; ++t) {
    flaky_model::batch_type b{t};
    first.step(model, x, b);
  }
  first.save_checkpoint(dir, x, {0, 5});
  // A fresh optimizer resumed there stops after 3 more skips (2 + 3 + ... = 6 in a row).
  auto second = make_sgd(6);
  dho2::vector<double> y = dho2::vector<double>::Zero(2);
  second.load_checkpoint(dir, y);
  const dho2::summary s = second.optimize(model, y, batches, 1);
  std::filesystem::remove_all(dir);
  CHECK(s.termination == dho2::termination_type::numerical_failure);
  CHECK_MESSAGE(s.iterations == 8, "3 skipped calls before the checkpoint, 3 after: got ",
                s.iterations);
}

TEST_CASE("interrupt: K-FAC stops a diverged run after max_consecutive_skips") {
  const dho2::mlp<double> model({4, 3, 2}, dho2::activation::tanh);
  const auto sets = dho2::make_teacher_classification<double>(64, 8, 4, 2, 3);
  dho2::shuffling_batcher<double> batches(sets.train, 16, 1);
  dho2::kfac_options o;
  o.max_consecutive_skips = 3;
  dho2::kfac<double> opt(o);
  dho2::vector<double> x = model.initialize(1);
  x(0) = std::numeric_limits<double>::quiet_NaN();  // every loss is NaN
  const dho2::summary s = opt.optimize(model, x, batches, 5);
  CHECK(s.termination == dho2::termination_type::numerical_failure);
  CHECK_MESSAGE(s.iterations == 3, "expected 3 step calls, got ", s.iterations);
  CHECK_MESSAGE(s.message.find("kfac_options.max_consecutive_skips = 3") != std::string::npos,
                s.message);
}

TEST_CASE("interrupt: a signal finishes the step, runs on_stop there and ends 'interrupted'") {
  const flaky_model model{};
  counting_batches batches;
  auto opt = make_sgd(20);
  dho2::vector<double> x = dho2::vector<double>::Unit(2, 0);
  int stops = 0;
  dho2::index stopped_at = -1;
  auto why = dho2::termination_type::running;
  dho2::summary s;
  {
    const dho2::signal_guard guard;
    s = opt.optimize(model, x, batches, 10, raise_at{4, SIGTERM},
                     stop_recorder{&stops, &stopped_at, &why}, dho2::stop_on_signal{});
    CHECK(dho2::signal_guard::received() == SIGTERM);
  }
  CHECK_MESSAGE(s.termination == dho2::termination_type::interrupted, "expected interrupted, got ",
                dho2::to_string(s.termination));
  CHECK_MESSAGE(s.iterations == 5, "step call 4 (the fifth) is finished, then the run stops");
  CHECK(s.message == "interrupted by SIGTERM");
  CHECK(stops == 1);
  CHECK(stopped_at == 4);
  CHECK(why == dho2::termination_type::interrupted);
  CHECK(x(0) == 1.0 / 32.0);  // five halvings
}

TEST_CASE("interrupt: with `ready`, the stop waits for a step where it is true") {
  const flaky_model model{};
  counting_batches batches;
  auto opt = make_sgd(20);
  dho2::vector<double> x = dho2::vector<double>::Unit(2, 0);
  int stops = 0;
  dho2::index stopped_at = -1;
  auto why = dho2::termination_type::running;
  dho2::summary s;
  {
    const dho2::signal_guard guard;
    dho2::index seen = 0;
    dho2::stop_on_signal stop;
    stop.ready = [&seen] { return ++seen % 3 == 0; };  // true at calls 2, 5, 8, ...
    s = opt.optimize(model, x, batches, 10, raise_at{3, SIGINT},
                     stop_recorder{&stops, &stopped_at, &why}, stop);
  }
  CHECK(s.termination == dho2::termination_type::interrupted);
  CHECK(s.message == "interrupted by SIGINT");
  CHECK_MESSAGE(stopped_at == 5, "the signal came at call 3, ready() first true at call 5");
}

TEST_CASE("interrupt: an interruption on one rank stops every rank at the same step") {
  // No real signal: rank 1's callback asks to stop at call 6 and says it was interrupted.
  struct rank_interrupt {
    int rank = 0;
    mutable bool asked = false;
    bool on_step(const dho2::step_info<double>& info) const {
      asked = asked || (rank == 1 && info.iteration == 6);
      return asked;
    }
    [[nodiscard]] std::optional<dho2::stop_cause> stop_reason() const {
      if (!asked) return std::nullopt;
      return dho2::stop_cause{dho2::termination_type::interrupted, "interrupted on rank 1"};
    }
  };
  using policies = dho2::default_policies::with_base<dho2::sgd>::with_transport<
      dho2::inproc_transport>::with_admm<dho2::consensus_admm>;
  std::array<dho2::summary, 2> summaries;
  std::array<dho2::index, 2> stopped_at{-1, -1};
  dho2::run_inproc(2, {.timeout = std::chrono::seconds(30)}, [&](dho2::inproc_transport& t) {
    const int r = t.rank();
    dho2::options o;
    o.use_curvature = false;
    dho2::optimizer<double, policies> opt(
        o, policies{.base = {.learning_rate = 0.5}, .transport = std::move(t)});
    const flaky_model model{};
    // Every rank trains on the same (whole) batches, on purpose: declared rank-local.
    counting_batches counting;
    dho2::local_batches batches(counting);
    dho2::vector<double> x = dho2::vector<double>::Unit(2, 0);
    int stops = 0;
    auto why = dho2::termination_type::running;
    summaries[static_cast<std::size_t>(r)] =
        opt.optimize(model, x, batches, 10, rank_interrupt{r},
                     stop_recorder{&stops, &stopped_at[static_cast<std::size_t>(r)], &why});
  });
  for (int r = 0; r < 2; ++r) {
    const dho2::summary& s = summaries[static_cast<std::size_t>(r)];
    INFO("rank ", r, ": ", s.message);
    CHECK(s.termination == dho2::termination_type::interrupted);
    CHECK(s.iterations == 7);
    CHECK(stopped_at[static_cast<std::size_t>(r)] == 6);
  }
  CHECK(summaries[0].message == "interrupted: another rank received a signal");
  CHECK(summaries[1].message == "interrupted on rank 1");
}

TEST_CASE("interrupt: a second signal ends the process at once, the guard restores handlers") {
  // In a child process: the first SIGTERM is recorded, the second kills it with SIGTERM.
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    const dho2::signal_guard guard;
    std::raise(SIGTERM);
    if (dho2::signal_guard::received() != SIGTERM) ::_exit(3);
    std::raise(SIGTERM);
    ::_exit(4);  // not reached: the second signal ends the process
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  CHECK_MESSAGE(WIFSIGNALED(status), "expected the child to die by a signal, status ", status);
  if (WIFSIGNALED(status)) CHECK(WTERMSIG(status) == SIGTERM);

  // A guard puts back what it replaced, and only one lives at a time.
  struct sigaction before {};
  ::sigaction(SIGINT, nullptr, &before);
  {
    const dho2::signal_guard guard;
    CHECK_THROWS_AS(dho2::signal_guard{}, std::logic_error);
  }
  struct sigaction after {};
  ::sigaction(SIGINT, nullptr, &after);
  const bool restored = after.sa_handler == before.sa_handler;
  CHECK_MESSAGE(restored, "the guard's destructor must restore the previous SIGINT handler");
}
