// Mode S (DESIGN §2.4): every sharded computation over P in-process ranks equals the P = 1
// computation on the same global batches and seed, to round-off — gradient steps, a whole
// Lanczos estimate (eigenvalues and assembled eigenvectors), FOSI steps, ten training steps.
#include <dho2/data/batcher.hpp>
#include <dho2/data/synthetic.hpp>
#include <dho2/dho2.hpp>
#include <dho2/models/mlp.hpp>
#include <dho2/partition/block_aligned.hpp>
#include <dho2/partition/weighted.hpp>
#include <dho2/transport/inproc.hpp>

#include <doctest/doctest.h>

#include <mutex>
#include <string>
#include <vector>

namespace {

using Eigen::MatrixXd;
using Eigen::VectorXd;

struct problem {
  dho2::mlp<double> model{{6, 5, 3}, dho2::activation::tanh, 1e-3};
  dho2::train_test_sets<double> data = dho2::make_teacher_classification<double>(400, 10, 6, 3, 5);
  VectorXd x0 = model.initialize(9);
};

struct run_result {
  VectorXd x;
  VectorXd eigenvalues;
  MatrixXd eigenvectors;  // n × K, assembled from the shards
  dho2::index estimates = 0;
  dho2::index steps = 0;
  std::vector<double> losses;
};

dho2::options test_options(bool curvature) {
  dho2::options o;
  o.use_curvature = curvature;
  o.k = 3;
  o.l = 1;
  o.warmup = 3;
  o.refresh_every = 4;
  o.lanczos_steps = 16;
  o.alpha = 0.2;
  return o;
}

constexpr dho2::index global_batch = 29;  // uneven slices for every P > 1

// P = 1 reference on the whole global batches.
template <class Base>
run_result run_single(const problem& p, const dho2::options& o, const Base& base, int steps) {
  dho2::optimizer<double, dho2::default_policies::with_base<Base>> opt(o, {.base = base});
  dho2::shuffling_batcher<double> batches(p.data.train, global_batch, 17);
  dho2::classification_batch<double> b;
  run_result r{p.x0, {}, {}, 0, 0, {}};
  for (int t = 0; t < steps; ++t) {
    batches.fill_batch(t, b);
    opt.step(p.model, r.x, b);
    r.losses.push_back(opt.last_loss());
  }
  r.eigenvalues = opt.eigenvalues();
  r.eigenvectors = opt.eigenvectors();
  r.estimates = opt.get_summary().curvature_estimates;
  r.steps = opt.get_summary().steps;
  return r;
}

// P in-process ranks, each training on its slice of the same global batches.
template <class Base, class Partitioner = dho2::even_partitioner>
std::vector<run_result> run_sharded(const problem& p, const dho2::options& o, const Base& base,
                                    int steps, int ranks, Partitioner part = {}) {
  std::vector<run_result> results(static_cast<std::size_t>(ranks));
  std::mutex gather;
  std::vector<MatrixXd> shards(static_cast<std::size_t>(ranks));
  dho2::run_inproc(ranks, {.timeout = std::chrono::seconds(60)}, [&](dho2::inproc_transport& t) {
    const int rank = t.rank();
    using policies = typename dho2::default_policies::with_base<Base>::template with_transport<
        dho2::inproc_transport>::template with_partitioner<Partitioner>;
    dho2::optimizer<double, policies> opt(
        o, policies{.base = base, .partitioner = part, .transport = std::move(t)});
    dho2::shuffling_batcher<double> batches(p.data.train, global_batch, 17);
    dho2::classification_batch<double> b;
    run_result r{p.x0, {}, {}, 0, 0, {}};
    for (int s = 0; s < steps; ++s) {
      batches.fill_batch(s, rank, ranks, b);
      opt.step(p.model, r.x, b);
      r.losses.push_back(opt.last_loss());
    }
    r.eigenvalues = opt.eigenvalues();
    r.estimates = opt.get_summary().curvature_estimates;
    r.steps = opt.get_summary().steps;
    std::lock_guard lock(gather);
    shards[static_cast<std::size_t>(rank)] = opt.eigenvectors();
    results[static_cast<std::size_t>(rank)] = std::move(r);
  });
  // Assemble V from the shards, in rank order.
  dho2::index rows = 0;
  for (const auto& s : shards) rows += s.rows();
  MatrixXd v(rows, shards[0].cols());
  dho2::index at = 0;
  for (const auto& s : shards) {
    v.middleRows(at, s.rows()) = s;
    at += s.rows();
  }
  for (auto& r : results) r.eigenvectors = v;
  return results;
}

double max_rel_diff(const VectorXd& a, const VectorXd& b) {
  return (a - b).cwiseAbs().maxCoeff() / std::max(1.0, b.cwiseAbs().maxCoeff());
}

void check_equal(const run_result& single, const std::vector<run_result>& ranks, double tol) {
  for (std::size_t r = 0; r < ranks.size(); ++r) {
    INFO("rank ", r, " of ", ranks.size());
    CHECK(max_rel_diff(ranks[r].x, single.x) < tol);
    CHECK(ranks[r].estimates == single.estimates);
    CHECK(ranks[r].steps == single.steps);
    REQUIRE(ranks[r].losses.size() == single.losses.size());
    for (std::size_t s = 0; s < single.losses.size(); ++s) {
      CHECK(std::abs(ranks[r].losses[s] - single.losses[s]) < tol * std::abs(single.losses[s]));
    }
    REQUIRE(ranks[r].eigenvalues.size() == single.eigenvalues.size());
    if (single.eigenvalues.size() > 0) {
      CHECK(max_rel_diff(ranks[r].eigenvalues, single.eigenvalues) < tol);
    }
  }
  if (single.eigenvectors.size() > 0) {
    REQUIRE(ranks[0].eigenvectors.rows() == single.eigenvectors.rows());
    REQUIRE(ranks[0].eigenvectors.cols() == single.eigenvectors.cols());
    CHECK((ranks[0].eigenvectors - single.eigenvectors).cwiseAbs().maxCoeff() < 1e3 * tol);
  }
}

}  // namespace

TEST_CASE("mode S: one gradient step equals P = 1 at P = 1 2 3 4 7") {
  const problem p;
  const auto o = test_options(false);
  const dho2::sgd base{.learning_rate = 0.1};
  const auto single = run_single(p, o, base, 1);
  for (int ranks : {1, 2, 3, 4, 7}) {
    INFO("P = ", ranks);
    check_equal(single, run_sharded(p, o, base, 1, ranks), 1e-13);
  }
}

TEST_CASE("mode S: Lanczos estimate and FOSI steps equal P = 1 at P = 1 2 3 4 7") {
  // W = 3: the estimate runs before step 2; three steps cover a base step, the estimate, and
  // a FOSI step with the new curvature.
  const problem p;
  const auto o = test_options(true);
  const dho2::adam base{.learning_rate = 0.01};
  const auto single = run_single(p, o, base, 3);
  REQUIRE(single.estimates == 1);
  REQUIRE(single.eigenvalues.size() == 4);
  for (int ranks : {1, 2, 3, 4, 7}) {
    INFO("P = ", ranks);
    check_equal(single, run_sharded(p, o, base, 3, ranks), 1e-10);
  }
}

TEST_CASE("mode S: ten training steps equal P = 1 at P = 1 2 3 4 7") {
  const problem p;
  const auto o = test_options(true);
  const dho2::heavy_ball base{.learning_rate = 0.05, .momentum = 0.9};
  const auto single = run_single(p, o, base, 10);
  REQUIRE(single.estimates == 2);
  for (int ranks : {1, 2, 3, 4, 7}) {
    INFO("P = ", ranks);
    check_equal(single, run_sharded(p, o, base, 10, ranks), 1e-9);
  }
}

TEST_CASE("mode S: weighted and block-aligned partitions give the same result") {
  const problem p;
  const auto o = test_options(true);
  const dho2::adam base{.learning_rate = 0.01};
  const auto single = run_single(p, o, base, 10);
  SUBCASE("weighted") {
    check_equal(single,
                run_sharded(p, o, base, 10, 3, dho2::weighted_partitioner{{1.0, 3.0, 0.5}}),
                1e-9);
  }
  SUBCASE("block_aligned, P above the number of blocks") {
    // 4 blocks (W1, b1, W2, b2) over 7 ranks: some shards are empty.
    const auto part = dho2::block_aligned_partitioner(p.model.parameter_blocks());
    check_equal(single, run_sharded(p, o, base, 10, 7, part), 1e-9);
  }
}

TEST_CASE("mode S: options or parameter counts that differ between ranks are refused by all") {
  const problem p;
  std::mutex lock;
  std::vector<std::string> messages(3);
  dho2::run_inproc(3, {.timeout = std::chrono::seconds(20)}, [&](dho2::inproc_transport& t) {
    const int rank = t.rank();
    auto o = test_options(true);
    if (rank == 2) o.k = 2;
    using policies = dho2::default_policies::with_transport<dho2::inproc_transport>;
    dho2::optimizer<double, policies> opt(o, policies{.transport = std::move(t)});
    dho2::shuffling_batcher<double> batches(p.data.train, global_batch, 17);
    dho2::classification_batch<double> b;
    batches.fill_batch(0, rank, 3, b);
    VectorXd x = p.x0;
    try {
      opt.step(p.model, x, b);
    } catch (const dho2::invalid_options& e) {
      std::lock_guard g(lock);
      messages[static_cast<std::size_t>(rank)] = e.what();
    }
    CHECK((x.array() == p.x0.array()).all());  // nothing changed
  });
  for (int r = 0; r < 3; ++r) {
    INFO("rank ", r, ": ", messages[static_cast<std::size_t>(r)]);
    CHECK(messages[static_cast<std::size_t>(r)].find("options.k = ") != std::string::npos);
    CHECK(messages[static_cast<std::size_t>(r)].find("identical on all 3 ranks") !=
          std::string::npos);
  }
  CHECK(messages[2].find("options.k = 2 on rank 2, 3 on rank 0") != std::string::npos);
}

TEST_CASE("mode S: a callback that stops on one rank stops every rank") {
  // Rank 1 alone asks to stop at its sixth step; without agreement the other ranks would wait in
  // the next collective until the transport's timeout.
  const problem p;
  struct stop_on_rank {
    int rank;
    bool on_step(const dho2::step_info<double>& info) const { return rank == 1 && info.iteration == 5; }
  };
  std::mutex lock;
  std::vector<dho2::summary> summaries(3);
  dho2::run_inproc(3, {.timeout = std::chrono::seconds(20)}, [&](dho2::inproc_transport& t) {
    const int rank = t.rank();
    using policies = dho2::default_policies::with_transport<dho2::inproc_transport>;
    dho2::optimizer<double, policies> opt(test_options(false), policies{.transport = std::move(t)});
    dho2::shuffling_batcher<double> batches(p.data.train, global_batch, 17);
    VectorXd x = p.x0;
    const auto s = opt.optimize(p.model, x, batches, 2, stop_on_rank{rank});
    std::lock_guard g(lock);
    summaries[static_cast<std::size_t>(rank)] = s;
  });
  for (const auto& s : summaries) {
    CHECK(s.termination == dho2::termination_type::stopped_by_callback);
    CHECK(s.iterations == 6);
    CHECK(s.epochs == 0);  // the first epoch was cut short
  }
}
