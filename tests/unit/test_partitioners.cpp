// Tests of the partitioners (include/dho2/partition/): even_partitioner, weighted_partitioner and
// block_aligned_partitioner. For every n in {1, 2, 7, 10, 1000} and P in {1, 2, 3, 4, 7, 16}
// (including P > n) the offsets are valid shard boundaries; then each policy's own promise:
// even sizes differ by at most one, weighted sizes are within 1 of n·w_r/Σw, block-aligned
// boundaries are block boundaries nearest to the ideal targets n·r/P; and the error messages.
#include <dho2/core/errors.hpp>
#include <dho2/models/mlp.hpp>
#include <dho2/partition/block_aligned.hpp>
#include <dho2/partition/even.hpp>
#include <dho2/partition/weighted.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <numeric>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace {

constexpr dho2::index sizes_n[] = {1, 2, 7, 10, 1000};
constexpr int sizes_p[] = {1, 2, 3, 4, 7, 16};

template <class V>
std::string show(const std::vector<V>& v) {
  std::ostringstream os;
  os << "{";
  for (std::size_t i = 0; i < v.size(); ++i) os << (i > 0 ? ", " : "") << v[i];
  os << "}";
  return os.str();
}

// The partitioner concept's postcondition: P + 1 non-decreasing offsets, front 0, back n.
void check_valid(const std::vector<dho2::index>& offsets, dho2::index n, int p) {
  CAPTURE(show(offsets));
  REQUIRE(offsets.size() == static_cast<std::size_t>(p) + 1);
  CHECK(offsets.front() == 0);
  CHECK(offsets.back() == n);
  CHECK(std::is_sorted(offsets.begin(), offsets.end()));
}

std::vector<dho2::index> shard_sizes(const std::vector<dho2::index>& offsets) {
  std::vector<dho2::index> sizes(offsets.size() - 1);
  for (std::size_t r = 0; r + 1 < offsets.size(); ++r) sizes[r] = offsets[r + 1] - offsets[r];
  return sizes;
}

// The message of the invalid_options `f` throws ("" if none).
template <class F>
std::string invalid_message(F f) {
  try {
    f();
  } catch (const dho2::invalid_options& e) {
    return e.what();
  }
  return "";
}

// Blocks of lengths 3, 1, 4, 1, 5, 9, 2, 6, 0, 5, ... (a zero-length block included), the last
// one cut so that they sum to n.
std::vector<dho2::index> sample_blocks(dho2::index n) {
  constexpr dho2::index pattern[] = {3, 1, 4, 1, 5, 9, 2, 6, 0, 5, 3, 5, 8, 9, 7, 9};
  std::vector<dho2::index> blocks;
  dho2::index total = 0;
  for (std::size_t k = 0; total < n; ++k) {
    const dho2::index b = std::min(pattern[k % 16], n - total);
    blocks.push_back(b);
    total += b;
  }
  return blocks;
}

// Checks that every offset is a block boundary nearest to its ideal target n·r/P.
void check_block_aligned(const std::vector<dho2::index>& blocks,
                         const std::vector<dho2::index>& offsets, dho2::index n, int p) {
  std::vector<dho2::index> bounds(blocks.size() + 1, 0);
  std::partial_sum(blocks.begin(), blocks.end(), bounds.begin() + 1);
  const std::set<dho2::index> boundary_set(bounds.begin(), bounds.end());
  CAPTURE(show(blocks));
  CAPTURE(show(offsets));
  for (int r = 0; r <= p; ++r) {
    CAPTURE(r);
    const dho2::index off = offsets[static_cast<std::size_t>(r)];
    CHECK(boundary_set.count(off) == 1);
    const dho2::index target_scaled = n * r;  // target n·r/P, compared scaled by P
    const dho2::index mine = std::abs(off * p - target_scaled);
    for (const dho2::index b : bounds) CHECK(mine <= std::abs(b * p - target_scaled));
  }
}

}  // namespace

TEST_CASE("partition: even_partitioner gives valid offsets and sizes that differ by at most one") {
  const dho2::even_partitioner even;
  for (const dho2::index n : sizes_n) {
    for (const int p : sizes_p) {
      CAPTURE(n);
      CAPTURE(p);
      const auto offsets = even.partition(n, p);
      check_valid(offsets, n, p);
      const auto sizes = shard_sizes(offsets);
      const auto [lo, hi] = std::minmax_element(sizes.begin(), sizes.end());
      CHECK(*hi - *lo <= 1);
      CHECK(*hi == (n + p - 1) / p);
    }
  }
}

TEST_CASE("partition: weighted_partitioner sizes are proportional to the weights") {
  for (const dho2::index n : sizes_n) {
    for (const int p : sizes_p) {
      CAPTURE(n);
      CAPTURE(p);
      // Rising weights 1, 2, …; every third rank weighted 0; one dominant rank.
      std::vector<std::vector<double>> cases(3, std::vector<double>(static_cast<std::size_t>(p)));
      for (int r = 0; r < p; ++r) {
        const auto k = static_cast<std::size_t>(r);
        cases[0][k] = r + 1.0;
        cases[1][k] = r % 3 == 1 ? 0.0 : 0.5 + 0.1 * r;
        cases[2][k] = r == p / 2 ? 1e6 : 1e-3;
      }
      for (const auto& weights : cases) {
        CAPTURE(show(weights));
        const auto offsets = dho2::weighted_partitioner(weights).partition(n, p);
        check_valid(offsets, n, p);
        const double total = std::accumulate(weights.begin(), weights.end(), 0.0);
        const auto sizes = shard_sizes(offsets);
        for (std::size_t r = 0; r < sizes.size(); ++r) {
          CAPTURE(r);
          const double quota = static_cast<double>(n) * weights[r] / total;
          CHECK(std::abs(static_cast<double>(sizes[r]) - quota) < 1.0);
          if (weights[r] == 0.0) CHECK(sizes[r] == 0);
        }
      }
    }
  }
}

TEST_CASE("partition: weighted_partitioner with equal weights matches even_partitioner") {
  for (const dho2::index n : sizes_n) {
    for (const int p : sizes_p) {
      CAPTURE(n);
      CAPTURE(p);
      const dho2::weighted_partitioner equal(std::vector<double>(static_cast<std::size_t>(p), 2.5));
      CHECK(equal.partition(n, p) == dho2::even_partitioner{}.partition(n, p));
    }
  }
  // Largest remainder: quotas 10·{1, 1, 2}/4 = {2.5, 2.5, 5} → {3, 2, 5} (tie to the lower rank).
  CHECK(dho2::weighted_partitioner({1.0, 1.0, 2.0}).partition(10, 3) ==
        std::vector<dho2::index>{0, 3, 5, 10});
  // Quotas 7·{0.6, 0.3, 0.1} = {4.2, 2.1, 0.7} → {4, 2, 1}.
  CHECK(dho2::weighted_partitioner({0.6, 0.3, 0.1}).partition(7, 3) ==
        std::vector<dho2::index>{0, 4, 6, 7});
}

TEST_CASE("partition: weighted_partitioner rejects bad weights with named messages") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  CHECK(invalid_message([] {
          (void)dho2::weighted_partitioner({1.0, 2.0}).partition(10, 3);
        }) ==
        "weighted_partitioner ranks = 3. Violated constraint: equal to the number of weights, 2");
  CHECK(invalid_message([] {
          dho2::weighted_partitioner({1.0, -1.0});
        }) == "weighted_partitioner weights[1] = -1. Violated constraint: finite and >= 0");
  CHECK(invalid_message([&] {
          dho2::weighted_partitioner({nan, 1.0});
        }) == "weighted_partitioner weights[0] = nan. Violated constraint: finite and >= 0");
  CHECK(invalid_message([&] {
          dho2::weighted_partitioner({1.0, 1.0, inf});
        }) == "weighted_partitioner weights[2] = inf. Violated constraint: finite and >= 0");
  CHECK(invalid_message([] {
          dho2::weighted_partitioner({0.0, 0.0});
        }) ==
        "weighted_partitioner sum of the weights = 0. Violated constraint: finite and > 0 (at "
        "least one rank must have a positive weight)");
  CHECK(invalid_message([] {
          dho2::weighted_partitioner(std::vector<double>{});
        }).find("weighted_partitioner sum of the weights = 0") == 0);
}

TEST_CASE(
    "partition: block_aligned_partitioner puts every boundary on the nearest block boundary") {
  for (const dho2::index n : sizes_n) {
    for (const int p : sizes_p) {
      CAPTURE(n);
      CAPTURE(p);
      const std::vector<std::vector<dho2::index>> block_cases{
          sample_blocks(n), std::vector<dho2::index>(static_cast<std::size_t>(n), 1), {n}};
      for (const auto& blocks : block_cases) {
        const auto offsets = dho2::block_aligned_partitioner(blocks).partition(n, p);
        check_valid(offsets, n, p);
        check_block_aligned(blocks, offsets, n, p);
        // Non-empty shards never outnumber the non-empty blocks.
        const auto sizes = shard_sizes(offsets);
        const auto non_empty =
            std::count_if(sizes.begin(), sizes.end(), [](dho2::index s) { return s > 0; });
        CHECK(non_empty <=
              std::count_if(blocks.begin(), blocks.end(), [](dho2::index b) { return b > 0; }));
      }
      // Unit blocks: as even as the even partitioner (sizes differ by at most one).
      const auto unit = shard_sizes(
          dho2::block_aligned_partitioner(std::vector<dho2::index>(static_cast<std::size_t>(n), 1))
              .partition(n, p));
      const auto [lo, hi] = std::minmax_element(unit.begin(), unit.end());
      CHECK(*hi - *lo <= 1);
    }
  }
}

TEST_CASE("partition: block_aligned_partitioner with more ranks than blocks leaves shards empty") {
  const dho2::block_aligned_partitioner two({6, 4});
  CHECK(two.partition(10, 1) == std::vector<dho2::index>{0, 10});
  CHECK(two.partition(10, 2) == std::vector<dho2::index>{0, 6, 10});
  // Targets 2.5, 5, 7.5 → nearest boundaries 0, 6, 6 (or 10 for 7.5: |6 − 7.5| < |10 − 7.5|).
  CHECK(two.partition(10, 4) == std::vector<dho2::index>{0, 0, 6, 6, 10});
  const auto many = two.partition(10, 16);
  check_valid(many, 10, 16);
  CHECK(std::count(many.begin(), many.end(), 6) >= 1);
  CHECK(std::all_of(many.begin(), many.end(),
                    [](dho2::index o) { return o == 0 || o == 6 || o == 10; }));
  // Zero-length blocks are stepped over: boundaries {0, 0, 0, 10}; targets 2.5, 5 (a tie: the
  // lower), 7.5 → 0, 0, 10.
  CHECK(dho2::block_aligned_partitioner({0, 0, 10}).partition(10, 4) ==
        std::vector<dho2::index>{0, 0, 0, 10, 10});
}

TEST_CASE("partition: block_aligned_partitioner::for_model uses the model's parameter blocks") {
  const dho2::mlp<double> net({30, 20, 5}, dho2::activation::relu, 0.0);
  const auto part = dho2::block_aligned_partitioner::for_model(net);
  CHECK(part.blocks() == std::vector<dho2::index>{600, 20, 100, 5});
  // n = 725, P = 2: target 362.5, boundaries {0, 600, 620, 720, 725} → 600.
  CHECK(part.partition(725, 2) == std::vector<dho2::index>{0, 600, 725});
  // P = 4: targets 181.25, 362.5, 543.75 → 0, 600, 600.
  CHECK(part.partition(725, 4) == std::vector<dho2::index>{0, 0, 600, 600, 725});

  struct wrong_model {
    [[nodiscard]] std::vector<int> parameter_blocks() const { return {3, 4}; }
    [[nodiscard]] dho2::index num_parameters() const { return 8; }
  };
  CHECK(invalid_message([] { (void)dho2::block_aligned_partitioner::for_model(wrong_model{}); }) ==
        "block_aligned_partitioner n = 8. Violated constraint: equal to the sum of the block "
        "lengths, 7 (2 blocks)");
}

TEST_CASE("partition: block_aligned_partitioner error messages") {
  CHECK(invalid_message([] {
          (void)dho2::block_aligned_partitioner({4, 5}).partition(10, 2);
        }) ==
        "block_aligned_partitioner n = 10. Violated constraint: equal to the sum of the block "
        "lengths, 9 (2 blocks)");
  CHECK(invalid_message([] {
          dho2::block_aligned_partitioner({4, -5, 3});
        }) == "block_aligned_partitioner blocks[1] = -5. Violated constraint: >= 0");
  CHECK(invalid_message([] { (void)dho2::block_aligned_partitioner({4}).partition(4, 0); }) ==
        "block_aligned_partitioner ranks = 0. Violated constraint: >= 1");
}
