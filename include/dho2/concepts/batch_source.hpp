/// @file
/// The `batch_source` concept: where `optimizer::optimize` and `kfac::optimize` take their
/// batches from.
#pragma once

#include <dho2/core/types.hpp>

#include <concepts>

namespace dho2 {

/// A source of batches for `optimizer::optimize` and `kfac::optimize`: `num_batches()` per
/// epoch, `begin_epoch(epoch)` to (re)order the data, `fill_batch(i, batch)` to fill batch i of
/// the current epoch. `dho2::shuffling_batcher` models it (and also offers
/// `fill_batch(i, rank, ranks, batch)`, which the distributed loops use to fill a rank's slice).
template <class D, class Batch>
concept batch_source = requires(D& d, index i, Batch& batch) {
  { d.num_batches() } -> std::convertible_to<index>;
  d.begin_epoch(i);
  d.fill_batch(i, batch);
};

namespace detail {
// Fills rank `rank`'s slice of batch i when the source can slice, else the whole batch.
template <class Batches, class Batch>
void fill_slice(Batches& batches, index i, int rank, int ranks, Batch& batch) {
  if constexpr (requires { batches.fill_batch(i, index{0}, index{1}, batch); }) {
    batches.fill_batch(i, static_cast<index>(rank), static_cast<index>(ranks), batch);
  } else {
    batches.fill_batch(i, batch);
  }
}
}  // namespace detail

}  // namespace dho2
