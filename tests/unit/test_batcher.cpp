// Tests of shuffling_batcher and slice_bounds (include/dho2/data/batcher.hpp): one permutation per
// epoch, reproducible from (seed, epoch), rank slices that concatenate to the global batch.
#include <dho2/data/batcher.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

namespace {

// n samples of 3 features; sample j has features (j, -j, 0.5) and label j % classes, so a batch
// column tells which sample it is.
dho2::classification_set<double> numbered_set(dho2::index n, int classes = 4) {
  dho2::classification_set<double> set;
  set.num_classes = classes;
  set.inputs.resize(3, n);
  set.labels.resize(n);
  for (dho2::index j = 0; j < n; ++j) {
    set.inputs(0, j) = static_cast<double>(j);
    set.inputs(1, j) = -static_cast<double>(j);
    set.inputs(2, j) = 0.5;
    set.labels(j) = static_cast<int>(j % classes);
  }
  return set;
}

// Sample numbers of the columns of a batch, checking each column and label matches its sample.
std::vector<dho2::index> sample_ids(const dho2::classification_set<double>& set,
                                    const dho2::classification_batch<double>& b) {
  REQUIRE(b.labels.size() == b.inputs.cols());
  REQUIRE(b.inputs.rows() == set.num_features());
  std::vector<dho2::index> ids;
  for (dho2::index j = 0; j < b.size(); ++j) {
    const auto id = static_cast<dho2::index>(b.inputs(0, j));
    CHECK(b.inputs.col(j) == set.inputs.col(id));
    CHECK(b.labels(j) == set.labels(id));
    ids.push_back(id);
  }
  return ids;
}

std::vector<dho2::index> iota(dho2::index n) {
  std::vector<dho2::index> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), dho2::index{0});
  return v;
}

}  // namespace

TEST_CASE("batcher: every epoch is a permutation and its batches cover it in order") {
  const auto set = numbered_set(103);
  dho2::shuffling_batcher<double> batcher(set, 10, 42);
  CHECK(batcher.num_batches() == 10);  // 103 / 10: the last 3 samples of each epoch are dropped
  CHECK(batcher.batch_size() == 10);
  CHECK(batcher.seed() == 42);
  for (dho2::index epoch = 0; epoch < 5; ++epoch) {
    CAPTURE(epoch);
    batcher.begin_epoch(epoch);
    CHECK(batcher.epoch() == epoch);
    std::vector<dho2::index> sorted = batcher.permutation();
    std::sort(sorted.begin(), sorted.end());
    CHECK(sorted == iota(103));
    std::vector<dho2::index> seen;
    for (dho2::index i = 0; i < batcher.num_batches(); ++i) {
      const auto b = batcher.batch(i);
      CHECK(b.size() == 10);
      const auto ids = sample_ids(set, b);
      seen.insert(seen.end(), ids.begin(), ids.end());
    }
    const auto& perm = batcher.permutation();
    CHECK(seen == std::vector<dho2::index>(perm.begin(), perm.begin() + 100));
  }
}

TEST_CASE("batcher: epochs differ, the same seed repeats, any epoch regenerates directly") {
  const auto set = numbered_set(200);
  dho2::shuffling_batcher<double> a(set, 16, 7);
  dho2::shuffling_batcher<double> b(set, 16, 7);
  dho2::shuffling_batcher<double> other_seed(set, 16, 8);
  CHECK(a.permutation() == b.permutation());
  CHECK(a.permutation() != other_seed.permutation());
  CHECK(a.permutation() != iota(200));

  std::vector<std::vector<dho2::index>> perms;
  for (dho2::index e = 0; e < 6; ++e) {
    a.begin_epoch(e);
    perms.push_back(a.permutation());
  }
  for (std::size_t i = 0; i < perms.size(); ++i) {
    for (std::size_t j = i + 1; j < perms.size(); ++j) CHECK(perms[i] != perms[j]);
  }
  // Resume: a fresh batcher jumping straight to epoch 4 sees the same order, batch for batch.
  b.begin_epoch(4);
  CHECK(b.permutation() == perms[4]);
  a.begin_epoch(4);
  for (dho2::index i = 0; i < a.num_batches(); ++i) {
    CHECK(a.batch(i).inputs == b.batch(i).inputs);
  }
  // The batch size does not change the order, only how it is cut.
  dho2::shuffling_batcher<double> c(set, 50, 7);
  c.begin_epoch(4);
  CHECK(c.permutation() == perms[4]);
}

TEST_CASE("batcher: the order is pinned (a change would break resuming old runs)") {
  const auto set = numbered_set(10);
  dho2::shuffling_batcher<double> batcher(set, 4, 2024);
  batcher.begin_epoch(3);
  const std::vector<dho2::index> expected = {1, 8, 6, 0, 2, 4, 9, 7, 3, 5};
  CHECK(batcher.permutation() == expected);
}

TEST_CASE("batcher: slice_bounds splits a batch evenly, remainder to the first ranks") {
  for (const dho2::index ranks : {1, 2, 3, 4, 7}) {
    for (dho2::index bs = 0; bs <= 30; ++bs) {
      CAPTURE(ranks);
      CAPTURE(bs);
      dho2::index next = 0;
      dho2::index smallest = bs;
      dho2::index largest = 0;
      for (dho2::index r = 0; r < ranks; ++r) {
        const dho2::batch_slice s = dho2::slice_bounds(bs, r, ranks);
        CHECK(s.offset == next);
        CHECK(s.size >= 0);
        if (r > 0) CHECK(s.size <= dho2::slice_bounds(bs, r - 1, ranks).size);
        next += s.size;
        smallest = std::min(smallest, s.size);
        largest = std::max(largest, s.size);
      }
      CHECK(next == bs);
      CHECK(largest - smallest <= 1);
    }
  }
  CHECK(dho2::slice_bounds(10, 0, 4).size == 3);
  CHECK(dho2::slice_bounds(10, 1, 4).offset == 3);
  CHECK(dho2::slice_bounds(10, 3, 4).offset == 8);
  CHECK(dho2::slice_bounds(10, 3, 4).size == 2);
  CHECK(dho2::slice_bounds(2, 5, 7).size == 0);  // more ranks than samples: empty slices
  CHECK_THROWS_AS((void)dho2::slice_bounds(10, 4, 4), dho2::invalid_options);
  CHECK_THROWS_AS((void)dho2::slice_bounds(10, -1, 4), dho2::invalid_options);
  CHECK_THROWS_AS((void)dho2::slice_bounds(10, 0, 0), dho2::invalid_options);
  CHECK_THROWS_AS((void)dho2::slice_bounds(-1, 0, 1), dho2::invalid_options);
}

TEST_CASE("batcher: rank slices concatenate to the global batch for 1, 2, 3, 4 and 7 ranks") {
  const auto set = numbered_set(60);
  for (const dho2::index bs : {1, 2, 3, 5, 8, 13}) {
    dho2::shuffling_batcher<double> batcher(set, bs, 99);
    batcher.begin_epoch(2);
    for (const dho2::index ranks : {1, 2, 3, 4, 7}) {
      CAPTURE(bs);
      CAPTURE(ranks);
      for (const dho2::index i : {dho2::index{0}, batcher.num_batches() - 1}) {
        const auto global = sample_ids(set, batcher.batch(i));
        std::vector<dho2::index> joined;
        dho2::classification_batch<double> part;
        for (dho2::index r = 0; r < ranks; ++r) {
          batcher.fill_batch(i, r, ranks, part);
          CHECK(part.size() == dho2::slice_bounds(bs, r, ranks).size);  // may be 0 if bs < ranks
          const auto ids = sample_ids(set, part);
          joined.insert(joined.end(), ids.begin(), ids.end());
          CHECK(part.inputs == batcher.batch(i, r, ranks).inputs);
        }
        CHECK(joined == global);
      }
    }
  }
}

TEST_CASE("batcher: fill_batch reuses the storage of a batch of the same shape") {
  const auto set = numbered_set(50);
  dho2::shuffling_batcher<double> batcher(set, 8, 1);
  dho2::classification_batch<double> out;
  batcher.fill_batch(0, out);
  const double* inputs = out.inputs.data();
  const int* labels = out.labels.data();
  batcher.fill_batch(3, out);
  CHECK(out.inputs.data() == inputs);
  CHECK(out.labels.data() == labels);
  CHECK(out.inputs == batcher.batch(3).inputs);
}

TEST_CASE("batcher: bad arguments and a data set smaller than one batch") {
  const auto set = numbered_set(5);
  std::string message;
  try {
    dho2::shuffling_batcher<double> batcher(set, 8, 0);
  } catch (const dho2::data_error& e) {
    message = e.what();
  }
  CAPTURE(message);
  CHECK(message.find("5 samples") != std::string::npos);
  CHECK(message.find("batch of 8") != std::string::npos);

  CHECK_NOTHROW(dho2::shuffling_batcher<double>(set, 5, 0));  // exactly one batch is enough
  CHECK_THROWS_AS(dho2::shuffling_batcher<double>(set, 0, 0), dho2::invalid_options);
  dho2::shuffling_batcher<double> batcher(set, 2, 0);
  CHECK(batcher.num_batches() == 2);
  CHECK_THROWS_AS((void)batcher.batch(2), dho2::invalid_options);
  CHECK_THROWS_AS((void)batcher.batch(-1), dho2::invalid_options);
  CHECK_THROWS_AS((void)batcher.batch(0, 3, 3), dho2::invalid_options);
  CHECK_THROWS_AS(batcher.begin_epoch(-1), dho2::invalid_options);

  auto broken = numbered_set(10, 3);
  broken.labels(4) = 3;
  CHECK_THROWS_AS(dho2::shuffling_batcher<double>(broken, 2, 0), dho2::data_error);
}
