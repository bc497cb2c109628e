/// @file
/// `shuffling_batcher<S>`: seeded, reproducible mini-batches of a `classification_set<S>`, one
/// fresh permutation per epoch, and the rank slicing of a global batch used by data-parallel
/// training (`slice_bounds`).
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/core/errors.hpp>
#include <dho2/core/types.hpp>
#include <dho2/data/classification_batch.hpp>
#include <dho2/data/classification_set.hpp>
#include <dho2/data/detail/epoch_order.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace dho2 {

/// A contiguous range [offset, offset + size) of a batch.
struct batch_slice {
  /// Position of the first sample of the slice within the batch.
  index offset = 0;
  /// Number of samples in the slice (may be 0).
  index size = 0;
};

/// The slice of a batch of `batch_size` samples that rank `rank` of `ranks` holds.
///
/// With q = batch_size / ranks and r = batch_size % ranks, ranks 0..r−1 get q + 1 samples and the
/// others q, in rank order: slice sizes differ by at most one, the slices are contiguous and
/// disjoint, and their concatenation over rank 0..ranks−1 is the whole batch in order. When
/// batch_size < ranks the last ranks get empty slices (size 0); that is allowed, and such a rank
/// contributes nothing but still takes part in collectives. Throws `invalid_options` unless
/// batch_size >= 0, ranks >= 1 and 0 <= rank < ranks.
[[nodiscard]] inline batch_slice slice_bounds(index batch_size, index rank, index ranks) {
  if (batch_size < 0) {
    throw invalid_options("batch_size = " + std::to_string(batch_size) +
                          ". Violated constraint: batch_size >= 0");
  }
  if (ranks < 1) {
    throw invalid_options("ranks = " + std::to_string(ranks) + ". Violated constraint: ranks >= 1");
  }
  if (rank < 0 || rank >= ranks) {
    throw invalid_options("rank = " + std::to_string(rank) +
                          ". Violated constraint: 0 <= rank < ranks (= " + std::to_string(ranks) +
                          ")");
  }
  const index q = batch_size / ranks;
  const index r = batch_size % ranks;
  return {rank * q + (rank < r ? rank : r), q + (rank < r ? 1 : 0)};
}

/// Draws mini-batches of a `classification_set<S>` in a seeded random order that changes every
/// epoch.
///
/// `begin_epoch(e)` computes the order of epoch e as a Fisher–Yates shuffle of 0..N−1 driven by a
/// `detail::xoshiro256` stream whose seed is derived only from (seed, e): any epoch can be
/// regenerated directly, without replaying earlier ones (what resuming from a checkpoint needs),
/// and the order is the same on every platform. Global batch i of the epoch holds samples
/// perm[i·B], ..., perm[i·B + B − 1]. There are ⌊N / B⌋ batches per epoch: the last partial batch
/// is dropped (its samples differ from epoch to epoch, so none is ignored for good), which keeps
/// every batch the same size; a set with fewer samples than one batch is an error.
///
/// For data-parallel training every rank builds the same batcher (same set, seed and batch size)
/// and fills only its slice of each global batch (`fill_batch(i, rank, ranks, out)`, see
/// `slice_bounds`); the union of the slices over the ranks is the global batch, in order.
///
/// The batcher keeps a pointer to the set, which must outlive it and keep its size (constructing
/// from a temporary is a compile error); the samples are copied into each batch when it is filled.
template <model_scalar S>
class shuffling_batcher {
 public:
  /// A batcher over `data` with batches of `batch_size` samples; the permutation of epoch 0 is
  /// ready. Throws `invalid_options` unless batch_size >= 1, and `data_error` if `data` is
  /// inconsistent (see `classification_set::validate`) or has fewer samples than one batch.
  shuffling_batcher(const classification_set<S>& data, index batch_size, std::uint64_t seed)
      : data_(&data), batch_size_(batch_size), seed_(seed) {
    if (batch_size < 1) {
      throw invalid_options("batch_size = " + std::to_string(batch_size) +
                            ". Violated constraint: batch_size >= 1");
    }
    data.validate("shuffling_batcher: data set");
    if (data.size() < batch_size) {
      throw data_error("shuffling_batcher: data set has " + std::to_string(data.size()) +
                       " samples, fewer than one batch of " + std::to_string(batch_size) +
                       " samples");
    }
    begin_epoch(0);
  }

  /// Deleted: the batcher would keep a pointer to a destroyed temporary.
  shuffling_batcher(const classification_set<S>&&, index, std::uint64_t) = delete;

  /// Computes the sample order of `epoch` (>= 0) from (seed, epoch) alone. Throws
  /// `invalid_options` if epoch < 0.
  void begin_epoch(index epoch) {
    if (epoch < 0) {
      throw invalid_options("epoch = " + std::to_string(epoch) +
                            ". Violated constraint: epoch >= 0");
    }
    detail::epoch_order(perm_, data_->size(), seed_, epoch);
    epoch_ = epoch;
  }

  /// Number of full batches per epoch, ⌊size / batch_size⌋ (the last partial batch is dropped).
  [[nodiscard]] index num_batches() const noexcept { return data_->size() / batch_size_; }

  /// Samples per global batch.
  [[nodiscard]] index batch_size() const noexcept { return batch_size_; }

  /// The seed the permutations derive from.
  [[nodiscard]] std::uint64_t seed() const noexcept { return seed_; }

  /// The current epoch (the last argument of `begin_epoch`, 0 after construction).
  [[nodiscard]] index epoch() const noexcept { return epoch_; }

  /// The sample order of the current epoch: a permutation of 0..size−1.
  [[nodiscard]] const std::vector<index>& permutation() const noexcept { return perm_; }

  /// The data set the batches are drawn from.
  [[nodiscard]] const classification_set<S>& data() const noexcept { return *data_; }

  /// Global batch `i` of the current epoch, 0 <= i < num_batches().
  [[nodiscard]] classification_batch<S> batch(index i) const {
    classification_batch<S> out;
    fill_batch(i, out);
    return out;
  }

  /// Writes global batch `i` of the current epoch into `out`, reusing its storage when the shape
  /// is unchanged. Throws `invalid_options` unless 0 <= i < num_batches().
  void fill_batch(index i, classification_batch<S>& out) const { fill_batch(i, 0, 1, out); }

  /// Rank `rank`'s slice (see `slice_bounds`) of global batch `i` of the current epoch.
  [[nodiscard]] classification_batch<S> batch(index i, index rank, index ranks) const {
    classification_batch<S> out;
    fill_batch(i, rank, ranks, out);
    return out;
  }

  /// Writes rank `rank`'s contiguous slice of global batch `i` into `out` (possibly empty when
  /// batch_size < ranks), reusing its storage when the shape is unchanged. Throws
  /// `invalid_options` for a bad batch index or rank (see `slice_bounds`).
  void fill_batch(index i, index rank, index ranks, classification_batch<S>& out) const {
    if (i < 0 || i >= num_batches()) {
      throw invalid_options("batch index = " + std::to_string(i) +
                            ". Violated constraint: 0 <= batch index < num_batches (= " +
                            std::to_string(num_batches()) + ")");
    }
    const batch_slice s = slice_bounds(batch_size_, rank, ranks);
    out.inputs.resize(data_->num_features(), s.size);
    out.labels.resize(s.size);
    const index first = i * batch_size_ + s.offset;
    for (index j = 0; j < s.size; ++j) {
      const index src = perm_[static_cast<std::size_t>(first + j)];
      out.inputs.col(j) = data_->inputs.col(src);
      out.labels(j) = data_->labels(src);
    }
  }

 private:
  const classification_set<S>* data_;
  index batch_size_;
  std::uint64_t seed_;
  index epoch_ = 0;
  std::vector<index> perm_;
};

}  // namespace dho2
