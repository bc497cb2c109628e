/// @file
/// `dho2::sample_batcher<Fill>`: seeded, reproducible mini-batches of any data — N samples known
/// only by their indices — with the rank slicing of data-parallel training; the batch is built by
/// a user function from the indices it holds.
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/core/errors.hpp>
#include <dho2/core/types.hpp>
#include <dho2/data/batcher.hpp>
#include <dho2/data/detail/epoch_order.hpp>

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace dho2 {

/// A `batch_source` over `samples` samples of any kind: every epoch a fresh seeded permutation
/// of their indices, cut into ⌊samples / batch_size⌋ global batches (the last partial batch is
/// dropped), each filled by the user's `fill(indices, batch)` — `indices` a
/// `std::span<const dho2::index>` of the samples in the batch (or in this rank's slice), in batch
/// order, and `batch` the model's batch to overwrite.
///
/// The order is `dho2::shuffling_batcher`'s: epoch e's permutation is computed from (seed, e)
/// alone, so every rank built with the same arguments sees the same permutation, any epoch
/// regenerates directly (resuming from a checkpoint), and for the same N, batch size and seed the
/// two batchers draw the same samples. `fill_batch(i, rank, ranks, batch)` hands `fill` only rank
/// `rank`'s contiguous slice of global batch i (`dho2::slice_bounds`: disjoint slices, in rank
/// order, whose concatenation is the batch); a slice may be empty when batch_size < ranks, and
/// `fill` must then give an empty batch (the model's `batch_size` 0).
///
/// `Fill` is copied into the batcher; `fill` must be callable on a `Fill&` with the span and the
/// batch (checked by `fill_batch`'s constraint).
template <class Fill>
class sample_batcher {
 public:
  /// A batcher over `samples` samples with batches of `batch_size`, order seeded by `seed`, batches
  /// filled by `fill`; the permutation of epoch 0 is ready. Throws `invalid_options` unless
  /// batch_size >= 1, and `data_error` if samples < batch_size.
  sample_batcher(index samples, index batch_size, std::uint64_t seed, Fill fill)
      : samples_(samples), batch_size_(batch_size), seed_(seed), fill_(std::move(fill)) {
    if (batch_size < 1) {
      throw invalid_options("batch_size = " + std::to_string(batch_size) +
                            ". Violated constraint: batch_size >= 1");
    }
    if (samples < batch_size) {
      throw data_error("sample_batcher: " + std::to_string(samples) +
                       " samples, fewer than one batch of " + std::to_string(batch_size) +
                       " samples");
    }
    begin_epoch(0);
  }

  /// Computes the sample order of `epoch` (>= 0) from (seed, epoch) alone. Throws
  /// `invalid_options` if epoch < 0.
  void begin_epoch(index epoch) {
    if (epoch < 0) {
      throw invalid_options("epoch = " + std::to_string(epoch) +
                            ". Violated constraint: epoch >= 0");
    }
    detail::epoch_order(perm_, samples_, seed_, epoch);
    epoch_ = epoch;
  }

  /// Number of full batches per epoch, ⌊samples / batch_size⌋.
  [[nodiscard]] index num_batches() const noexcept { return samples_ / batch_size_; }
  /// Samples per global batch.
  [[nodiscard]] index batch_size() const noexcept { return batch_size_; }
  /// Number of samples N.
  [[nodiscard]] index samples() const noexcept { return samples_; }
  /// The seed the permutations derive from.
  [[nodiscard]] std::uint64_t seed() const noexcept { return seed_; }
  /// The current epoch (the last argument of `begin_epoch`, 0 after construction).
  [[nodiscard]] index epoch() const noexcept { return epoch_; }
  /// The sample order of the current epoch: a permutation of 0..samples−1.
  [[nodiscard]] const std::vector<index>& permutation() const noexcept { return perm_; }

  /// The indices of rank `rank`'s slice of global batch `i` of the current epoch. Throws
  /// `invalid_options` for a bad batch index or rank (see `slice_bounds`).
  [[nodiscard]] std::span<const index> indices(index i, index rank = 0, index ranks = 1) const {
    if (i < 0 || i >= num_batches()) {
      throw invalid_options("batch index = " + std::to_string(i) +
                            ". Violated constraint: 0 <= batch index < num_batches (= " +
                            std::to_string(num_batches()) + ")");
    }
    const batch_slice s = slice_bounds(batch_size_, rank, ranks);
    return std::span<const index>(perm_).subspan(
        static_cast<std::size_t>(i * batch_size_ + s.offset), static_cast<std::size_t>(s.size));
  }

  /// Fills `batch` with global batch `i` of the current epoch (`fill` on all its indices).
  template <class Batch>
  requires std::invocable<Fill&, std::span<const index>, Batch&> void fill_batch(index i,
                                                                                 Batch& batch) {
    fill_batch(i, 0, 1, batch);
  }

  /// Fills `batch` with rank `rank`'s slice of global batch `i` (`fill` on the slice's indices).
  template <class Batch>
  requires std::invocable<Fill&, std::span<const index>, Batch&> void fill_batch(index i,
                                                                                 index rank,
                                                                                 index ranks,
                                                                                 Batch& batch) {
    fill_(indices(i, rank, ranks), batch);
  }

 private:
  index samples_;
  index batch_size_;
  std::uint64_t seed_;
  Fill fill_;
  index epoch_ = 0;
  std::vector<index> perm_;
};

}  // namespace dho2
