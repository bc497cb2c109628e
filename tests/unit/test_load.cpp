// Under load: 8 in-process ranks (threads, oversubscribing a 2-core machine) for 2,000 steps of
// mode S and of consensus ADMM. Nothing may deadlock (every wait has a timeout, so a hang fails
// with a transport_error instead of blocking the suite), mode S must still equal P = 1, and in
// mode A every rank must hold the same consensus point after each round.
#include "distributed_fixture.hpp"
#include <dho2/admm/consensus.hpp>
#include <dho2/base/heavy_ball.hpp>
#include <dho2/fosi/optimizer.hpp>
#include <dho2/transport/inproc.hpp>

#include <Eigen/Core>
#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <vector>

namespace {

constexpr int load_ranks = 8;
using dho2_test::load_global_batch;
using dho2_test::load_steps;

const dho2::heavy_ball load_base{.learning_rate = 0.05, .momentum = 0.9};

}  // namespace

TEST_CASE("load: 8 inproc ranks, 2000 steps of mode S equal P = 1 to round-off") {
  const dho2_test::mlp_problem p;
  const dho2::options o = dho2_test::load_test_options();
  using single_policies = dho2::default_policies::with_base<dho2::heavy_ball>;
  dho2::optimizer<double, single_policies> single(o, {.base = load_base});
  Eigen::VectorXd x_single = p.x0;
  const auto losses = dho2_test::train_epochs(single, p.model, x_single, p.data.train,
                                              load_global_batch, load_steps);

  using policies =
      dho2::default_policies::with_base<dho2::heavy_ball>::with_transport<dho2::inproc_transport>;
  const auto results = dho2_test::on_inproc_ranks(load_ranks, [&](dho2::inproc_transport& t) {
    const int rank = t.rank();
    dho2::optimizer<double, policies> opt(o, {.base = load_base, .transport = std::move(t)});
    Eigen::VectorXd x = p.x0;
    dho2_test::train_epochs(opt, p.model, x, p.data.train, load_global_batch, load_steps, rank,
                            load_ranks);
    CHECK(opt.get_summary().curvature_estimates == 20);
    return x;
  });
  INFO("training loss ", losses.front(), " -> ", losses.back());
  CHECK(losses.back() < losses.front());
  for (int r = 0; r < load_ranks; ++r) {
    INFO("rank ", r, " after ", load_steps, " steps");
    // Sums over 8 slices associate differently from one sum over the batch; 2,000 steps of a
    // contracting method keep that round-off at the 1e-12 level.
    dho2_test::check_close(results[static_cast<std::size_t>(r)], x_single, 1e-9,
                           "max |x_P8 - x_P1|");
  }
}

TEST_CASE("load: 8 inproc ranks, 2000 steps of consensus ADMM agree on z at every rank") {
  const dho2_test::mlp_problem p;
  const dho2::options o = dho2_test::load_test_options();
  using policies = dho2::default_policies::with_base<dho2::heavy_ball>::with_transport<
      dho2::inproc_transport>::with_admm<dho2::consensus_admm>;
  struct rank_run {
    Eigen::VectorXd z;
    dho2::index rounds = 0;
    double first_loss = 0.0, last_loss = 0.0;
    double last_primal = 0.0;
  };
  const dho2::consensus_admm admm{.rho = 1.0, .tau = 4};
  const auto results = dho2_test::on_inproc_ranks(load_ranks, [&](dho2::inproc_transport& t) {
    const int rank = t.rank();
    dho2::optimizer<double, policies> opt(
        o, {.base = load_base, .transport = std::move(t), .admm = admm});
    Eigen::VectorXd x = p.x0;
    const auto losses = dho2_test::train_epochs(opt, p.model, x, p.data.train, load_global_batch,
                                                load_steps, rank, load_ranks);
    const auto& rounds = opt.get_summary().admm_rounds;
    return rank_run{opt.consensus_point(), static_cast<dho2::index>(rounds.size()), losses.front(),
                    losses.back(), rounds.empty() ? -1.0 : rounds.back().primal_residual};
  });
  const rank_run& first = results.front();
  INFO("rounds ", first.rounds, ", last primal residual ", first.last_primal);
  CHECK(first.rounds == load_steps / 4);
  CHECK(std::isfinite(first.last_primal));
  for (int r = 0; r < load_ranks; ++r) {
    const auto& run = results[static_cast<std::size_t>(r)];
    INFO("rank ", r, ": expected the consensus point of rank 0 bit for bit");
    CHECK(run.z == first.z);
    CHECK(run.rounds == first.rounds);
    CHECK(std::isfinite(run.last_loss));
  }
}
