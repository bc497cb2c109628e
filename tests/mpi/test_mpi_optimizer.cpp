// Mode S and mode A under mpirun: every rank also computes the single-process run on the same
// global batches and checks that its distributed result equals it to round-off.
#include "../unit/distributed_fixture.hpp"
#include "mpi_doctest_main.hpp"
#include <dho2/data/batcher.hpp>
#include <dho2/mpi.hpp>

#include <boost/mpi/communicator.hpp>
#include <doctest/doctest.h>

namespace {

using Eigen::VectorXd;
using problem = dho2_test::mlp_problem;

constexpr int steps = 10;

template <class Base>
VectorXd single_process(const problem& p, const Base& base, dho2::index global_batch) {
  dho2::optimizer<double, dho2::default_policies::with_base<Base>> opt(
      dho2_test::fosi_test_options(), {.base = base});
  dho2::shuffling_batcher<double> batches(p.data.train, global_batch, 17);
  VectorXd x = p.x0;
  dho2_test::train_steps(opt, p.model, x, batches, steps);
  return x;
}

template <class Base, class Admm>
VectorXd over_mpi(const problem& p, const Base& base, Admm admm, dho2::index global_batch) {
  const boost::mpi::communicator world;
  using policies = typename dho2::default_policies::with_base<Base>::template with_transport<
      dho2::mpi_transport>::template with_admm<Admm>;
  dho2::optimizer<double, policies> opt(
      dho2_test::fosi_test_options(),
      policies{.base = base, .transport = dho2::mpi_transport(world), .admm = admm});
  dho2::shuffling_batcher<double> batches(p.data.train, global_batch, 17);
  VectorXd x = p.x0;
  dho2_test::train_steps(opt, p.model, x, batches, steps, world.rank(), world.size());
  return x;
}

}  // namespace

TEST_CASE("mpi: mode S, ten FOSI-Adam steps with estimates, equal P = 1") {
  const problem p;
  const dho2::adam base{.learning_rate = 0.01};
  const VectorXd reference = single_process(p, base, 29);
  const VectorXd x = over_mpi(p, base, dho2::synchronous_admm{}, 29);
  dho2_test::check_close(x, reference, 1e-9, "max |x - x_single|");
}

TEST_CASE("mpi: consensus ADMM with tau = 1 and rho = 0 equals P = 1 for a linear base step") {
  // Equal slices (24 samples over 1, 2, 3 or 4 ranks): the mean of the ranks' heavy-ball FOSI
  // steps is the step on the mean gradient.
  const boost::mpi::communicator world;
  if (24 % world.size() != 0) return;
  const problem p;
  const dho2::heavy_ball base{.learning_rate = 0.05, .momentum = 0.9};
  const VectorXd reference = single_process(p, base, 24);
  const VectorXd x = over_mpi(p, base, dho2::consensus_admm{.rho = 0.0, .tau = 1}, 24);
  dho2_test::check_close(x, reference, 1e-9, "max |x - x_single|");
}

int main(int argc, char** argv) {
  return dho2_test::run_mpi_doctest(argc, argv, "dho2 mpi optimizer");
}
