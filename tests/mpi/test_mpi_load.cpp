// Under load over MPI: the load tests of tests/unit/test_load.cpp under `mpirun --oversubscribe
// -np 8` (8 processes on a 2-core machine): 2,000 steps of mode S equal the single-process run
// that every rank also computes, and 2,000 steps of consensus ADMM leave every rank with the
// same consensus point (rank 0's, broadcast, compared bit for bit). A hang fails through the
// CTest timeout.
#include "../unit/distributed_fixture.hpp"
#include "mpi_doctest_main.hpp"
#include <dho2/base/heavy_ball.hpp>
#include <dho2/mpi.hpp>

#include <boost/mpi/communicator.hpp>
#include <doctest/doctest.h>

#include <cmath>
#include <cstddef>
#include <span>

namespace {

using Eigen::VectorXd;
const dho2::heavy_ball load_base{.learning_rate = 0.05, .momentum = 0.9};

}  // namespace

TEST_CASE("mpi load: 2000 steps of mode S equal P = 1") {
  const boost::mpi::communicator world;
  const dho2_test::mlp_problem p;
  const dho2::options o = dho2_test::load_test_options();
  dho2::optimizer<double, dho2::default_policies::with_base<dho2::heavy_ball>> single(
      o, {.base = load_base});
  VectorXd reference = p.x0;
  dho2_test::train_epochs(single, p.model, reference, p.data.train, dho2_test::load_global_batch,
                          dho2_test::load_steps);

  using policies =
      dho2::default_policies::with_base<dho2::heavy_ball>::with_transport<dho2::mpi_transport>;
  dho2::optimizer<double, policies> opt(
      o, {.base = load_base, .transport = dho2::mpi_transport(world)});
  VectorXd x = p.x0;
  dho2_test::train_epochs(opt, p.model, x, p.data.train, dho2_test::load_global_batch,
                          dho2_test::load_steps, world.rank(), world.size());
  INFO("rank ", world.rank(), " of ", world.size());
  CHECK(opt.get_summary().curvature_estimates == 20);
  dho2_test::check_close(x, reference, 1e-9, "max |x_mpi - x_single|");
}

TEST_CASE("mpi load: 2000 steps of consensus ADMM agree on z at every rank") {
  const boost::mpi::communicator world;
  const dho2_test::mlp_problem p;
  using policies = dho2::default_policies::with_base<dho2::heavy_ball>::with_transport<
      dho2::mpi_transport>::with_admm<dho2::consensus_admm>;
  dho2::optimizer<double, policies> opt(dho2_test::load_test_options(),
                                        {.base = load_base,
                                         .transport = dho2::mpi_transport(world),
                                         .admm = dho2::consensus_admm{.rho = 1.0, .tau = 4}});
  VectorXd x = p.x0;
  const auto losses =
      dho2_test::train_epochs(opt, p.model, x, p.data.train, dho2_test::load_global_batch,
                              dho2_test::load_steps, world.rank(), world.size());
  const auto& rounds = opt.get_summary().admm_rounds;
  CHECK(static_cast<dho2::index>(rounds.size()) == dho2_test::load_steps / 4);
  CHECK(std::isfinite(losses.back()));
  VectorXd z0 = opt.consensus_point();
  dho2::mpi_transport check(world);
  check.broadcast(
      std::as_writable_bytes(std::span<double>(z0.data(), static_cast<std::size_t>(z0.size()))), 0);
  INFO("rank ", world.rank(), ": expected rank 0's consensus point bit for bit");
  CHECK(opt.consensus_point() == z0);
}

int main(int argc, char** argv) { return dho2_test::run_mpi_doctest(argc, argv, "dho2 mpi load"); }
