// Mode S and mode A under mpirun: every rank also computes the single-process run on the same
// global batches and checks that its distributed result equals it to round-off.
#define DOCTEST_CONFIG_IMPLEMENT
#include <dho2/data/batcher.hpp>
#include <dho2/data/synthetic.hpp>
#include <dho2/models/mlp.hpp>
#include <dho2/mpi.hpp>

#include <doctest/doctest.h>

#include <boost/mpi.hpp>
#include <functional>
#include <iostream>
#include <string>

namespace {

using Eigen::VectorXd;

struct problem {
  dho2::mlp<double> model{{6, 5, 3}, dho2::activation::tanh, 1e-3};
  dho2::train_test_sets<double> data = dho2::make_teacher_classification<double>(400, 10, 6, 3, 5);
  VectorXd x0 = model.initialize(9);
};

dho2::options fosi_options() {
  dho2::options o;
  o.k = 3;
  o.l = 1;
  o.warmup = 3;
  o.refresh_every = 4;
  o.lanczos_steps = 16;
  o.alpha = 0.2;
  return o;
}

constexpr int steps = 10;

template <class Base>
VectorXd single_process(const problem& p, const Base& base, dho2::index global_batch) {
  dho2::optimizer<double, dho2::default_policies::with_base<Base>> opt(fosi_options(),
                                                                      {.base = base});
  dho2::shuffling_batcher<double> batches(p.data.train, global_batch, 17);
  dho2::classification_batch<double> b;
  VectorXd x = p.x0;
  for (int s = 0; s < steps; ++s) {
    batches.fill_batch(s, b);
    opt.step(p.model, x, b);
  }
  return x;
}

template <class Base, class Admm>
VectorXd over_mpi(const problem& p, const Base& base, Admm admm, dho2::index global_batch) {
  const boost::mpi::communicator world;
  using policies = typename dho2::default_policies::with_base<Base>::template with_transport<
      dho2::mpi_transport>::template with_admm<Admm>;
  dho2::optimizer<double, policies> opt(
      fosi_options(), policies{.base = base, .transport = dho2::mpi_transport(world), .admm = admm});
  dho2::shuffling_batcher<double> batches(p.data.train, global_batch, 17);
  dho2::classification_batch<double> b;
  VectorXd x = p.x0;
  for (int s = 0; s < steps; ++s) {
    batches.fill_batch(s, world.rank(), world.size(), b);
    opt.step(p.model, x, b);
  }
  return x;
}

}  // namespace

TEST_CASE("mpi: mode S, ten FOSI-Adam steps with estimates, equal P = 1") {
  const problem p;
  const dho2::adam base{.learning_rate = 0.01};
  const VectorXd reference = single_process(p, base, 29);
  const VectorXd x = over_mpi(p, base, dho2::synchronous_admm{}, 29);
  INFO("max |x - x_single| = ", (x - reference).cwiseAbs().maxCoeff());
  CHECK((x - reference).cwiseAbs().maxCoeff() < 1e-9);
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
  INFO("max |x - x_single| = ", (x - reference).cwiseAbs().maxCoeff());
  CHECK((x - reference).cwiseAbs().maxCoeff() < 1e-9);
}

int main(int argc, char** argv) {
  int failed_ranks = 0;
  {
    const boost::mpi::environment env(argc, argv);
    const boost::mpi::communicator world;
    doctest::Context context;
    context.applyCommandLine(argc, argv);
    if (world.rank() != 0) {
      context.setOption("minimal", true);
      context.setOption("no-version", true);
      context.setOption("no-colors", true);
    }
    const int result = context.run();
    if (context.shouldExit()) return result;
    failed_ranks = boost::mpi::all_reduce(world, result != 0 ? 1 : 0, std::plus<>());
    if (world.rank() == 0) {
      std::cout << "[dho2 mpi optimizer] " << world.size() << " ranks, "
                << (failed_ranks == 0 ? std::string("all passed")
                                      : std::to_string(failed_ranks) + " rank(s) failed")
                << std::endl;
    }
  }
  return failed_ranks == 0 ? 0 : 1;
}
