// The schedule and consensus-policy archetypes (include/dho2/testing/policy_archetypes.hpp) drive
// the optimizer through nothing but their concepts' documented members, and give the results of
// the shipped policies they mimic, bit for bit.
#include "distributed_fixture.hpp"
#include <dho2/data/batcher.hpp>
#include <dho2/dho2.hpp>
#include <dho2/testing/policy_archetypes.hpp>

#include <doctest/doctest.h>

namespace {

using Eigen::VectorXd;

// `steps` steps of FOSI on the test MLP's first batches; returns the parameters.
template <class Policies>
VectorXd train(const dho2::options& opts, int steps, dho2::summary* out = nullptr) {
  const dho2_test::mlp_problem p;
  dho2::optimizer<double, Policies> opt(opts);
  VectorXd x = p.x0;
  dho2::shuffling_batcher<double> batches(p.data.train, 24, 3);
  dho2_test::train_steps(opt, p.model, x, batches, steps);
  if (out != nullptr) *out = opt.get_summary();
  return x;
}

}  // namespace

TEST_CASE(
    "schedule_archetype: one estimate before step W - 1, as synchronous with T past the run") {
  dho2::options opts = dho2_test::fosi_test_options();
  opts.warmup = 3;
  opts.refresh_every = 1000;
  dho2::summary s;
  const VectorXd a =
      train<dho2::default_policies::with_schedule<dho2::testing::schedule_archetype>>(opts, 12, &s);
  const VectorXd b = train<dho2::default_policies>(opts, 12);
  CHECK_MESSAGE(s.curvature_estimates == 1,
                "expected exactly one estimate, got " << s.curvature_estimates);
  CHECK_MESSAGE(a == b, "expected the archetype's parameters to equal synchronous_schedule's");
}

TEST_CASE("admm_solver_archetype: on one rank, the steps of synchronous_admm bit for bit") {
  const dho2::options opts = dho2_test::fosi_test_options();
  const VectorXd a =
      train<dho2::default_policies::with_admm<dho2::testing::admm_solver_archetype>>(opts, 12);
  const VectorXd b = train<dho2::default_policies>(opts, 12);
  CHECK_MESSAGE(a == b, "expected the archetype's parameters to equal synchronous_admm's");
}
