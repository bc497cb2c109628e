// The fixture of the distributed tests (mode S and mode A, schedules, mode S over asio and MPI):
// a small MLP problem, FOSI options that estimate within a few steps, P in-process ranks, the
// training loop on a rank's slices of the global batches, and the comparison with a reference.
#pragma once

#include <dho2/concepts/differentiable_model.hpp>
#include <dho2/fosi/options.hpp>
#include <dho2/data/batcher.hpp>
#include <dho2/data/synthetic.hpp>
#include <dho2/models/mlp.hpp>
#include <dho2/transport/inproc.hpp>

#include <Eigen/Core>
#include <doctest/doctest.h>

#include <chrono>
#include <cstddef>
#include <source_location>
#include <string_view>
#include <type_traits>
#include <vector>

namespace dho2_test {

/// A 6-5-3 tanh MLP (weight decay 1e-3) on a 400-sample teacher classification set, and its
/// initial parameters.
struct mlp_problem {
  dho2::mlp<double> model{{6, 5, 3}, dho2::activation::tanh, 1e-3};
  dho2::train_test_sets<double> data = dho2::make_teacher_classification<double>(400, 10, 6, 3, 5);
  Eigen::VectorXd x0 = model.initialize(9);
};

/// FOSI on k = 3 largest and l = 1 smallest eigenpairs, estimated before steps 2, 6, 10, …
/// (W = 3, T = 4) with 16 Lanczos steps; α = 0.2.
inline dho2::options fosi_test_options() {
  dho2::options o;
  o.k = 3;
  o.l = 1;
  o.warmup = 3;
  o.refresh_every = 4;
  o.lanczos_steps = 16;
  o.alpha = 0.2;
  return o;
}

/// Steps `opt` from `x` on the global batches 0, 1, …, steps − 1 of `batches` (on rank `rank`'s
/// slice of each when `ranks` > 1); returns `opt.last_loss()` after each step.
template <class Optimizer, class Model, class Batches>
std::vector<double> train_steps(Optimizer& opt, const Model& model, Eigen::VectorXd& x,
                                Batches& batches, int steps, int rank = 0, int ranks = 1) {
  dho2::model_batch_t<Model> batch{};
  std::vector<double> losses;
  for (int s = 0; s < steps; ++s) {
    batches.fill_batch(s, rank, ranks, batch);
    opt.step(model, x, batch);
    losses.push_back(opt.last_loss());
  }
  return losses;
}

/// Steps `opt` from `x` for `steps` steps over as many epochs of `data` as they take (a new
/// permutation at every epoch, seed 3), on rank `rank`'s slice of each global batch of
/// `global_batch` samples; returns `opt.last_loss()` after each step.
template <class Optimizer, class Model>
std::vector<double> train_epochs(Optimizer& opt, const Model& model, Eigen::VectorXd& x,
                                 const dho2::classification_set<double>& data,
                                 dho2::index global_batch, dho2::index steps, int rank = 0,
                                 int ranks = 1) {
  dho2::shuffling_batcher<double> batches(data, global_batch, 3);
  const dho2::index per_epoch = batches.num_batches();
  dho2::classification_batch<double> batch;
  std::vector<double> losses;
  for (dho2::index s = 0; s < steps; ++s) {
    if (s % per_epoch == 0) batches.begin_epoch(s / per_epoch);
    batches.fill_batch(s % per_epoch, rank, ranks, batch);
    opt.step(model, x, batch);
    losses.push_back(opt.last_loss());
  }
  return losses;
}

/// The load tests' run (inproc and MPI): 2,000 steps on global batches of 40 (5 samples per rank
/// at P = 8), heavy ball, FOSI estimated every 100 steps (20 estimates).
inline constexpr dho2::index load_steps = 2000;
inline constexpr dho2::index load_global_batch = 40;
inline dho2::options load_test_options() {
  dho2::options o = fosi_test_options();
  o.refresh_every = 100;
  return o;
}

/// Runs `body(transport)` on `ranks` in-process ranks (a rank waits at most `timeout` for its
/// peers) and returns what each rank's body returned, in rank order. Rethrows what a rank threw.
template <class Body>
auto on_inproc_ranks(int ranks, Body&& body,
                     std::chrono::seconds timeout = std::chrono::seconds(60)) {
  using result = std::invoke_result_t<Body&, dho2::inproc_transport&>;
  static_assert(!std::is_same_v<result, bool>, "ranks write their results concurrently");
  std::vector<result> results(static_cast<std::size_t>(ranks));
  dho2::run_inproc(ranks, {.timeout = timeout}, [&](dho2::inproc_transport& t) {
    const auto rank = static_cast<std::size_t>(t.rank());
    results[rank] = body(t);
  });
  return results;
}

/// max |a − b| over the entries.
inline double max_abs_diff(const Eigen::VectorXd& a, const Eigen::VectorXd& b) {
  return (a - b).cwiseAbs().maxCoeff();
}

/// Checks max |x − reference| < tol; a failure says `what` the difference is (e.g.
/// "max |x - x_single|"), its value, the bound and where the check was asked for.
inline void check_close(const Eigen::VectorXd& x, const Eigen::VectorXd& reference, double tol,
                        std::string_view what,
                        std::source_location at = std::source_location::current()) {
  const double diff = max_abs_diff(x, reference);
  INFO(what, " = ", diff, ", expected < ", tol, " (checked at ", std::string_view(at.file_name()),
       ":", at.line(), ")");
  CHECK(diff < tol);
}

}  // namespace dho2_test
