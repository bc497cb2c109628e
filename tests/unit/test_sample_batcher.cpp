// dho2::sample_batcher (include/dho2/data/sample_batcher.hpp) and the distributed batch-source
// rules (include/dho2/concepts/batch_source.hpp): rank slices are disjoint and cover the batch,
// every rank sees the same permutation (shuffling_batcher's), a mode S run over 2 in-process
// ranks equals 1 rank, and a source that cannot slice is accepted only when declared rank-local.
#include "distributed_fixture.hpp"
#include <dho2/concepts/batch_source.hpp>
#include <dho2/data/batcher.hpp>
#include <dho2/data/sample_batcher.hpp>
#include <dho2/fosi/optimizer.hpp>
#include <dho2/transport/inproc.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <span>
#include <vector>

namespace {

using Eigen::VectorXd;
using index_list = std::vector<dho2::index>;

// A fill that records the indices it is given.
struct record_indices {
  void operator()(std::span<const dho2::index> ids, index_list& out) const {
    out.assign(ids.begin(), ids.end());
  }
};

// Builds a classification batch from the rows of a data set (the user's fill of a real run).
struct copy_samples {
  const dho2::classification_set<double>* data;
  void operator()(std::span<const dho2::index> ids, dho2::classification_batch<double>& b) const {
    const auto n = static_cast<dho2::index>(ids.size());
    b.inputs.resize(data->num_features(), n);
    b.labels.resize(n);
    for (dho2::index j = 0; j < n; ++j) {
      b.inputs.col(j) = data->inputs.col(ids[static_cast<std::size_t>(j)]);
      b.labels(j) = data->labels(ids[static_cast<std::size_t>(j)]);
    }
  }
};

// A source without the rank-slice form.
struct whole_only {
  dho2::index num_batches() const { return 1; }
  void begin_epoch(dho2::index /*e*/) {}
  void fill_batch(dho2::index /*i*/, index_list& b) const { b.assign({0, 1}); }
};
// One that declares itself rank-local.
struct declared_local : whole_only {
  static constexpr bool rank_local_batches = true;
};

static_assert(dho2::slicing_batch_source<dho2::sample_batcher<record_indices>, index_list>);
static_assert(dho2::slicing_batch_source<dho2::shuffling_batcher<double>,
                                         dho2::classification_batch<double>>);
static_assert(dho2::batch_source<whole_only, index_list> &&
              !dho2::slicing_batch_source<whole_only, index_list> &&
              !dho2::rank_local_batch_source<whole_only, index_list>);
static_assert(dho2::rank_local_batch_source<declared_local, index_list>);
static_assert(dho2::rank_local_batch_source<dho2::local_batches<whole_only>, index_list>);
// Accepted when the run has one rank; distributed runs need slicing or rank-local sources (the
// rejection itself is the failtest batch_source_unsliced_distributed).
static_assert(dho2::detail::check_distributed_source<false, whole_only, index_list>());
static_assert(dho2::detail::check_distributed_source<true, declared_local, index_list>());
static_assert(
    dho2::detail::check_distributed_source<true, dho2::local_batches<whole_only>, index_list>());

}  // namespace

TEST_CASE("sample_batcher: rank slices are disjoint, in order, and cover each global batch") {
  dho2::sample_batcher batcher(53, 10, 7, record_indices{});
  CHECK(batcher.num_batches() == 5);
  for (const dho2::index epoch : {0, 3}) {
    batcher.begin_epoch(epoch);
    const index_list& perm = batcher.permutation();
    index_list sorted = perm;
    std::sort(sorted.begin(), sorted.end());
    for (dho2::index j = 0; j < 53; ++j) CHECK(sorted[static_cast<std::size_t>(j)] == j);
    for (dho2::index i = 0; i < batcher.num_batches(); ++i) {
      index_list whole;
      batcher.fill_batch(i, whole);
      const index_list want(perm.begin() + i * 10, perm.begin() + i * 10 + 10);
      CHECK(whole == want);
      for (const dho2::index ranks : {1, 2, 3, 4, 7, 12}) {
        CAPTURE(ranks);
        index_list joined;
        for (dho2::index r = 0; r < ranks; ++r) {
          index_list slice;
          batcher.fill_batch(i, r, ranks, slice);
          CHECK(slice.size() == static_cast<std::size_t>(dho2::slice_bounds(10, r, ranks).size));
          joined.insert(joined.end(), slice.begin(), slice.end());
        }
        INFO("expected the rank slices, concatenated in rank order, to be the global batch");
        CHECK(joined == want);
      }
    }
  }
  CHECK_THROWS_AS(batcher.fill_batch(5, *std::make_unique<index_list>()), dho2::invalid_options);
  CHECK_THROWS_AS(dho2::sample_batcher(5, 0, 1, record_indices{}), dho2::invalid_options);
  CHECK_THROWS_AS(dho2::sample_batcher(5, 6, 1, record_indices{}), dho2::data_error);
}

TEST_CASE("sample_batcher: every rank sees the same permutation, shuffling_batcher's") {
  const dho2_test::mlp_problem p;
  dho2::shuffling_batcher<double> reference(p.data.train, 40, 11);
  dho2::sample_batcher a(p.data.train.size(), 40, 11, record_indices{});
  dho2::sample_batcher b(p.data.train.size(), 40, 11, record_indices{});
  dho2::sample_batcher other_seed(p.data.train.size(), 40, 12, record_indices{});
  for (const dho2::index epoch : {0, 1, 5}) {
    reference.begin_epoch(epoch);
    a.begin_epoch(epoch);
    b.begin_epoch(epoch);
    other_seed.begin_epoch(epoch);
    CHECK(a.permutation() == b.permutation());
    CHECK(a.permutation() == reference.permutation());
    CHECK(a.permutation() != other_seed.permutation());
  }
  // Epoch 1 again after epoch 5: regenerated from (seed, epoch) alone.
  const index_list one = (a.begin_epoch(1), a.permutation());
  a.begin_epoch(5);
  a.begin_epoch(1);
  CHECK(a.permutation() == one);
}

TEST_CASE("sample_batcher: optimize in mode S on 2 in-process ranks equals 1 rank") {
  const dho2_test::mlp_problem p;
  const copy_samples fill{&p.data.train};
  dho2::optimizer<double> single(dho2_test::fosi_test_options());
  dho2::sample_batcher one(p.data.train.size(), 40, 3, fill);
  VectorXd x1 = p.x0;
  single.optimize(p.model, x1, one, 1);
  REQUIRE(single.get_summary().steps == 10);
  REQUIRE(single.get_summary().curvature_estimates == 2);

  using policies = dho2::default_policies::with_transport<dho2::inproc_transport>;
  const auto results = dho2_test::on_inproc_ranks(2, [&](dho2::inproc_transport& t) {
    dho2::optimizer<double, policies> opt(dho2_test::fosi_test_options(),
                                          policies{.transport = std::move(t)});
    dho2::sample_batcher mine(p.data.train.size(), 40, 3, fill);
    VectorXd x = p.x0;
    opt.optimize(p.model, x, mine, 1);
    return x;
  });
  for (const VectorXd& x : results) dho2_test::check_close(x, x1, 1e-12, "max |x_P2 - x_P1|");
  // Each rank trained on half of each batch: a run where both took the whole batch would also
  // match, so check the slices really differ.
  index_list r0;
  index_list r1;
  dho2::sample_batcher ids(p.data.train.size(), 40, 3, record_indices{});
  ids.fill_batch(0, 0, 2, r0);
  ids.fill_batch(0, 1, 2, r1);
  CHECK(r0.size() == 20);
  CHECK(r1.size() == 20);
  CHECK(std::find_first_of(r0.begin(), r0.end(), r1.begin(), r1.end()) == r0.end());
}
