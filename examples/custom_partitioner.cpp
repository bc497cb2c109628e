// A user-written partitioner plugged into dho2::optimizer: shards made of whole parameter blocks
// (an MLP's weight matrices and bias vectors) balanced by a cost per block rather than by the
// number of parameters. The example checks that bad input is rejected, trains a small MLP on
// synthetic teacher data on 3 in-process ranks (threads over dho2::inproc_transport, each taking
// its slice of the same global batches) and on 1 rank, and exits with 1 unless both runs give the
// same parameters and losses to round-off: in mode S the partition decides where the optimizer
// state lives and who computes what, never the result.
//
// Run: cmake --build <build> --target custom_partitioner && <build>/examples/custom_partitioner
// (CTest: ctest --test-dir <build> -R example.custom_partitioner).
#include <dho2/data/batcher.hpp>
#include <dho2/data/synthetic.hpp>
#include <dho2/dho2.hpp>
#include <dho2/models/mlp.hpp>
#include <dho2/transport/inproc.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace {

// Throws dho2::invalid_options in DHO2's format: "<field> = <value>. Violated constraint: <rule>".
template <class T>
void require(bool ok, const std::string& field, const T& value, const std::string& rule) {
  if (ok) return;
  std::ostringstream out;
  out << "cost_balanced_partitioner " << field << " = " << value
      << ". Violated constraint: " << rule;
  throw dho2::invalid_options(out.str());
}

/// Shards of whole parameter blocks, balanced by cost. Block j has length n_j and cost c_j (any
/// unit: measured work per step, memory, ...). With the cumulative costs C_0 = 0 ≤ C_1 ≤ … ≤
/// C_m = C and the block boundaries B_j = n_0 + … + n_{j−1}, the boundary between ranks r − 1 and
/// r (r = 1, …, P − 1) is the B_j whose C_j is nearest to r·C/P, searched from the previous
/// boundary on (the lower j on a tie), so offsets never decrease. A rank gets an empty shard when
/// one block costs more than about C/P or P exceeds the number of blocks.
///
/// Requirements: one cost per block, lengths ≥ 0, costs finite and ≥ 0 with a positive sum
/// (checked at construction); at `partition(n, P)`, P ≥ 1 and the lengths sum to n. Otherwise
/// `dho2::invalid_options` naming the field, e.g. "cost_balanced_partitioner costs[1] = -1.
/// Violated constraint: finite and >= 0".
class cost_balanced_partitioner {
 public:
  /// Partitioner for the given block lengths (in parameter order) and their costs.
  cost_balanced_partitioner(std::vector<dho2::index> blocks, std::vector<double> costs)
      : blocks_(std::move(blocks)), costs_(std::move(costs)) {
    require(costs_.size() == blocks_.size(), "costs.size()", costs_.size(),
            "equal to the number of blocks, " + std::to_string(blocks_.size()));
    for (std::size_t j = 0; j < blocks_.size(); ++j) {
      const std::string at = std::to_string(j);
      require(blocks_[j] >= 0, "blocks[" + at + "]", blocks_[j], ">= 0");
      require(std::isfinite(costs_[j]) && costs_[j] >= 0.0, "costs[" + at + "]", costs_[j],
              "finite and >= 0");
    }
    const double total = std::accumulate(costs_.begin(), costs_.end(), 0.0);
    require(std::isfinite(total) && total > 0.0, "sum of the costs", total, "finite and > 0");
  }

  /// For a `dho2::mlp` (blocks W1, b1, W2, b2, …): cost 1 per weight, `bias_cost` per bias.
  template <class S>
  static cost_balanced_partitioner for_mlp(const dho2::mlp<S>& model, double bias_cost) {
    std::vector<dho2::index> blocks = model.parameter_blocks();
    std::vector<double> costs;
    for (std::size_t j = 0; j < blocks.size(); ++j) {
      costs.push_back(static_cast<double>(blocks[j]) * (j % 2 == 0 ? 1.0 : bias_cost));
    }
    return {std::move(blocks), std::move(costs)};
  }

  /// Offsets of the `ranks` + 1 shard boundaries (see the class comment).
  [[nodiscard]] std::vector<dho2::index> partition(dho2::index n, int ranks) const {
    require(ranks >= 1, "ranks", ranks, ">= 1");
    const dho2::index sum = std::accumulate(blocks_.begin(), blocks_.end(), dho2::index{0});
    require(n == sum, "n", n, "equal to the sum of the block lengths, " + std::to_string(sum));
    std::vector<dho2::index> bound(blocks_.size() + 1, 0);  // B_j
    std::vector<double> total(blocks_.size() + 1, 0.0);     // C_j
    std::partial_sum(blocks_.begin(), blocks_.end(), bound.begin() + 1);
    std::partial_sum(costs_.begin(), costs_.end(), total.begin() + 1);
    std::vector<dho2::index> offsets(static_cast<std::size_t>(ranks) + 1, n);
    offsets[0] = 0;
    std::size_t best = 0;
    for (int r = 1; r < ranks; ++r) {
      const double target = total.back() * r / ranks;
      for (std::size_t j = best + 1; j < total.size(); ++j) {
        if (std::abs(total[j] - target) < std::abs(total[best] - target)) best = j;
      }
      offsets[static_cast<std::size_t>(r)] = bound[best];
    }
    return offsets;
  }

  /// Total cost of the blocks that start in [begin, end).
  [[nodiscard]] double cost(dho2::index begin, dho2::index end) const {
    double total = 0.0;
    dho2::index at = 0;  // start of block j
    for (std::size_t j = 0; j < blocks_.size(); at += blocks_[j++]) {
      if (begin <= at && at < end) total += costs_[j];
    }
    return total;
  }

 private:
  std::vector<dho2::index> blocks_;
  std::vector<double> costs_;
};

static_assert(dho2::partitioner<cost_balanced_partitioner>);

constexpr int steps = 20;
constexpr dho2::index global_batch = 32;  // slices of 11, 11 and 10 samples on 3 ranks

struct run {
  Eigen::VectorXd x, losses;  // final parameters; loss of every step on the global batch
  dho2::index shard = 0;      // parameters whose optimizer state this rank keeps
};

// The loop every rank runs: step t on this rank's slice of global batch t.
template <class Optimizer>
run train(Optimizer& opt, const dho2::mlp<double>& model,
          const dho2::classification_set<double>& data, const Eigen::VectorXd& x0, int rank,
          int ranks) {
  dho2::shuffling_batcher<double> batches(data, global_batch, 17);
  dho2::classification_batch<double> batch;
  run r{x0, Eigen::VectorXd(steps), 0};
  for (int t = 0; t < steps; ++t) {
    batches.fill_batch(t, rank, ranks, batch);
    opt.step(model, r.x, batch);
    r.losses[t] = opt.last_loss();
  }
  r.shard = opt.eigenvectors().rows();  // n_shard × K
  return r;
}

double max_rel_diff(const Eigen::VectorXd& a, const Eigen::VectorXd& b) {
  return (a - b).cwiseAbs().maxCoeff() / std::max(1.0, b.cwiseAbs().maxCoeff());
}

}  // namespace

int main() {
  // 1. Bad input is rejected with the offending field named.
  try {
    cost_balanced_partitioner bad({30, 5}, {30.0, -1.0});
    std::printf("FAILED: a negative cost was accepted\n");
    return 1;
  } catch (const dho2::invalid_options& e) {
    std::printf("rejected as expected: %s\n", e.what());
  }

  // 2. A 12-12-12-12-12-12-4 MLP (12 blocks, 832 parameters); a weight entry costs 1 and a bias
  // entry 0.25 (made-up costs: measure your own).
  const dho2::mlp<double> model({12, 12, 12, 12, 12, 12, 4}, dho2::activation::tanh, 1e-3);
  const auto data = dho2::make_teacher_classification<double>(640, 0, 12, 4, 5);
  const Eigen::VectorXd x0 = model.initialize(9);
  const auto part = cost_balanced_partitioner::for_mlp(model, 0.25);
  // FOSI with 3 + 1 curvature directions, estimated before steps 4 and 14.
  const dho2::options opts{.k = 3, .l = 1, .warmup = 5, .refresh_every = 10, .alpha = 0.2};
  const dho2::adam adam{.learning_rate = 0.01};

  // 3. The oracle: one rank (the default single_process transport) on whole global batches.
  dho2::optimizer<double> single_opt(opts, {.base = adam});
  const run single = train(single_opt, model, data.train, x0, 0, 1);

  // 4. Three ranks, each a thread with its own optimizer built on cost_balanced_partitioner.
  using policies = dho2::default_policies::with_partitioner<
      cost_balanced_partitioner>::with_transport<dho2::inproc_transport>;
  std::vector<run> runs(3);  // each thread writes only its own entry
  dho2::run_inproc(3, {.timeout = std::chrono::seconds(60)}, [&](dho2::inproc_transport& t) {
    const int rank = t.rank();
    dho2::optimizer<double, policies> opt(
        opts, {.base = adam, .partitioner = part, .transport = std::move(t)});
    runs[static_cast<std::size_t>(rank)] = train(opt, model, data.train, x0, rank, 3);
  });

  // 5. Each rank kept the shard the partitioner gave it and ended where the single rank did.
  const dho2::index n = model.num_parameters();
  const auto offsets = part.partition(n, 3);
  constexpr double tolerance = 1e-9;  // relative, as in tests/unit/test_mode_s.cpp
  bool shards_ok = true;
  double diff = 0.0;
  for (std::size_t r = 0; r < runs.size(); ++r) {
    const dho2::index begin = offsets[r], end = offsets[r + 1];
    std::printf("rank %zu: parameters [%lld, %lld), shard of %lld, cost %g of %g\n", r,
                static_cast<long long>(begin), static_cast<long long>(end),
                static_cast<long long>(runs[r].shard), part.cost(begin, end), part.cost(0, n));
    shards_ok = shards_ok && runs[r].shard == end - begin;
    diff = std::max(
        {diff, max_rel_diff(runs[r].x, single.x), max_rel_diff(runs[r].losses, single.losses)});
  }
  std::printf("loss %.4f -> %.4f in %d steps (%lld curvature estimates)\n", single.losses[0],
              single.losses[steps - 1], steps,
              static_cast<long long>(single_opt.get_summary().curvature_estimates));
  std::printf("max relative difference, 3 ranks vs 1 rank (parameters, losses): %.3g\n", diff);
  if (!shards_ok || !(diff < tolerance)) {
    std::printf(
        "FAILED: expected each rank to keep its partitioner shard and to match the "
        "1-rank run to a relative %g\n",
        tolerance);
    return 1;
  }
  return 0;
}
