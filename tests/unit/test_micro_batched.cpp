// Gradient accumulation (include/dho2/models/micro_batched.hpp): a batch given as micro-batches
// has the loss, gradient and Hessian-vector product of the whole batch (to round-off, double),
// unequal micro-batches weighted by their sizes, and FOSI steps on it equal those on the whole
// batch.
#include "distributed_fixture.hpp"
#include <dho2/concepts/batch_source.hpp>
#include <dho2/concepts/hvp_model.hpp>
#include <dho2/data/batcher.hpp>
#include <dho2/fosi/optimizer.hpp>
#include <dho2/models/micro_batched.hpp>
#include <dho2/transport/inproc.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

namespace {

using Eigen::VectorXd;
using batch = dho2::classification_batch<double>;
using accumulated = dho2::micro_batched<dho2::mlp<double>>;

static_assert(dho2::hvp_model<accumulated>);
static_assert(dho2::batch_source<dho2::micro_batches<dho2::shuffling_batcher<double>>,
                                 accumulated::batch_type>);
static_assert(dho2::slicing_batch_source<dho2::micro_batches<dho2::shuffling_batcher<double>>,
                                         accumulated::batch_type>);

// Columns [from, to) of `b`.
batch columns(const batch& b, dho2::index from, dho2::index to) {
  return {b.inputs.middleCols(from, to - from), b.labels.segment(from, to - from)};
}

struct evaluation {
  double loss;
  VectorXd g;
  VectorXd hv;
};

template <class M>
evaluation evaluate(const M& model, const VectorXd& x, const dho2::model_batch_t<M>& b,
                    const VectorXd& v) {
  evaluation e{0.0, VectorXd(x.size()), VectorXd(x.size())};
  e.loss = model.loss_and_gradient(x, b, e.g);
  model.hessian_vector_product(x, b, v, e.hv);
  return e;
}

void check_same(const evaluation& got, const evaluation& want, const std::string& what) {
  INFO(what);
  INFO("loss ", got.loss, ", expected ", want.loss);
  CHECK(std::abs(got.loss - want.loss) <= 1e-14 * std::abs(want.loss));
  dho2_test::check_close(got.g, want.g, 1e-14, "max |g_micro - g_whole|");
  dho2_test::check_close(got.hv, want.hv, 1e-14, "max |Hv_micro - Hv_whole|");
}

}  // namespace

TEST_CASE("micro_batched: loss, gradient and HVP equal the whole batch's, sizes weigh") {
  const dho2_test::mlp_problem p;
  const accumulated model(p.model);
  dho2::shuffling_batcher<double> batches(p.data.train, 30, 5);
  const batch whole = batches.batch(0);
  const VectorXd v = VectorXd::LinSpaced(p.x0.size(), -1.0, 1.0);
  const evaluation want = evaluate(p.model, p.x0, whole, v);

  // 4 parts of 30 samples: 8, 8, 7, 7 (unequal).
  dho2::micro_batches parts(batches, 4);
  accumulated::batch_type micro;
  parts.fill_batch(0, micro);
  REQUIRE(micro.size() == 4);
  CHECK(micro[0].labels.size() == 8);
  CHECK(micro[3].labels.size() == 7);
  CHECK(model.batch_size(micro) == 30);
  check_same(evaluate(model, p.x0, micro, v), want, "4 micro-batches from micro_batches");

  // Very unequal parts (3 and 27) and an empty one (skipped).
  const accumulated::batch_type uneven{columns(whole, 0, 3), columns(whole, 3, 3),
                                       columns(whole, 3, 30)};
  check_same(evaluate(model, p.x0, uneven, v), want, "micro-batches of 3, 0 and 27 samples");

  // Equal weights (what a model without batch_size gets) would be wrong here: the test can fail.
  const evaluation a = evaluate(p.model, p.x0, uneven[0], v);
  const evaluation b = evaluate(p.model, p.x0, uneven[2], v);
  CHECK(std::abs(0.5 * (a.loss + b.loss) - want.loss) > 1e-6);

  // Structure and parameter blocks are the inner model's.
  CHECK(model.structure() == p.model.structure());
  CHECK(model.parameter_blocks() == p.model.parameter_blocks());
  // No samples at all: loss 0, zero gradient.
  VectorXd g = VectorXd::Ones(p.x0.size());
  CHECK(model.loss_and_gradient(p.x0, {}, g) == 0.0);
  CHECK(g.isZero(0.0));
}

TEST_CASE("micro_batched: FOSI steps on micro-batches equal steps on the whole batches") {
  const dho2_test::mlp_problem p;
  const accumulated model(p.model);
  dho2::options o = dho2_test::fosi_test_options();
  o.warmup = 1;  // an estimate (HVPs on the accumulated batch) before step 0, then 4, 8
  dho2::shuffling_batcher<double> batches(p.data.train, 30, 5);
  dho2::micro_batches parts(batches, 3);
  dho2::optimizer<double> whole_opt(o);
  dho2::optimizer<double> micro_opt(o);
  VectorXd x_whole = p.x0;
  VectorXd x_micro = p.x0;
  batch b;
  accumulated::batch_type micro;
  for (int s = 0; s < 9; ++s) {
    batches.fill_batch(s, b);
    parts.fill_batch(s, micro);
    whole_opt.step(p.model, x_whole, b);
    micro_opt.step(model, x_micro, micro);
    CHECK(std::abs(micro_opt.last_loss() - whole_opt.last_loss()) <=
          1e-12 * std::abs(whole_opt.last_loss()));
  }
  REQUIRE(micro_opt.get_summary().curvature_estimates == 3);
  CHECK(micro_opt.get_summary().hvp == dho2::hvp_source::model);
  dho2_test::check_close(micro_opt.eigenvalues(), whole_opt.eigenvalues(), 1e-10,
                         "max |eigenvalue_micro - eigenvalue_whole|");
  dho2_test::check_close(x_micro, x_whole, 1e-12, "max |x_micro - x_whole| after 9 steps");
}

TEST_CASE("micro_batched: optimize in mode S on 2 ranks, 3 micro-batches each, equals 1 rank") {
  // Rank r's micro-batches are slices 3r, 3r + 1, 3r + 2 of 6 of each global batch of 40 (7, 7,
  // 7, 7, 6, 6 samples): over both ranks exactly the global batch, each sample once.
  const dho2_test::mlp_problem p;
  const accumulated model(p.model);
  dho2::optimizer<double> single(dho2_test::fosi_test_options());
  dho2::shuffling_batcher<double> whole(p.data.train, 40, 3);
  VectorXd x1 = p.x0;
  single.optimize(p.model, x1, whole, 1);
  REQUIRE(single.get_summary().curvature_estimates == 2);

  using policies = dho2::default_policies::with_transport<dho2::inproc_transport>;
  const auto results = dho2_test::on_inproc_ranks(2, [&](dho2::inproc_transport& t) {
    dho2::optimizer<double, policies> opt(dho2_test::fosi_test_options(),
                                          policies{.transport = std::move(t)});
    dho2::shuffling_batcher<double> batches(p.data.train, 40, 3);
    dho2::micro_batches parts(batches, 3);
    VectorXd x = p.x0;
    opt.optimize(model, x, parts, 1);
    return x;
  });
  for (const VectorXd& x : results) {
    dho2_test::check_close(x, x1, 1e-12, "max |x_P2_micro - x_P1_whole|");
  }
}
