/// @file
/// The `batch_source` concept: where `optimizer::optimize` and `kfac::optimize` take their
/// batches from, and what a distributed run asks more of it (`slicing_batch_source` or
/// `rank_local_batch_source`).
///
/// A type `D` models `batch_source<D, Batch>` when, for `d` a `D&`, `i` a `dho2::index` and
/// `batch` a `Batch&`:
///  1. `d.num_batches()` returns the batches per epoch (convertible to `dho2::index`);
///  2. `d.begin_epoch(i)` (re)orders the data for epoch i;
///  3. `d.fill_batch(i, batch)` fills batch i of the current epoch.
///
/// Used when present: `d.fill_batch(i, rank, ranks, batch)` fills only rank `rank`'s slice of
/// global batch i (`slicing_batch_source`); the slices of ranks 0 … ranks − 1 must be disjoint
/// and together be the global batch. The distributed loops call it, so each rank trains on its
/// slice.
///
/// Distributed runs: a source without the rank-slice form would give every rank the whole batch,
/// so in mode S every rank would train on the same samples. `optimize` therefore refuses it at
/// compile time (a "DHO2: batch_source:" message) whenever the transport is not
/// `dho2::single_process`, unless the source declares that its batches are this rank's as they
/// come (`rank_local_batch_source`: `D::rank_local_batches` is true; wrap one in
/// `dho2::local_batches`): a per-rank source (each rank built over its own data), or every rank
/// training on the whole batch on purpose.
#pragma once

#include <dho2/core/types.hpp>

#include <concepts>

namespace dho2 {

/// A source of batches for `optimizer::optimize` and `kfac::optimize`: `num_batches()` per
/// epoch, `begin_epoch(epoch)` to (re)order the data, `fill_batch(i, batch)` to fill batch i of
/// the current epoch. `dho2::shuffling_batcher` and `dho2::sample_batcher` model it (and also
/// offer `fill_batch(i, rank, ranks, batch)`, which the distributed loops use to fill a rank's
/// slice).
template <class D, class Batch>
concept batch_source = requires(D& d, index i, Batch& batch) {
  { d.num_batches() } -> std::convertible_to<index>;
  d.begin_epoch(i);
  d.fill_batch(i, batch);
};

/// A `batch_source` that also fills rank `rank`'s slice of global batch i:
/// `d.fill_batch(i, rank, ranks, batch)` (slices disjoint, covering the batch).
template <class D, class Batch>
concept slicing_batch_source = batch_source<D, Batch> && requires(D& d, index i, Batch& batch) {
  d.fill_batch(i, index{0}, index{1}, batch);
};

/// A `batch_source` whose `fill_batch(i, batch)` is already what this rank trains on at batch i
/// (declared by a `static constexpr bool rank_local_batches = true` member, as
/// `dho2::local_batches` does): the distributed loops use it whole on every rank.
template <class D, class Batch>
concept rank_local_batch_source = batch_source<D, Batch> && requires {
  requires D::rank_local_batches;
};

/// Declares a source's batches rank-local (see `rank_local_batch_source`): forwards to
/// `source`, which must outlive the wrapper. Use it for a source built over this rank's own
/// data, or when every rank is to train on the whole batch on purpose (in mode S every rank then
/// computes the same gradient: no faster than one rank).
template <class Source>
class local_batches {
 public:
  /// The distributed loops use each batch whole on this rank.
  static constexpr bool rank_local_batches = true;
  /// Wraps `source` (kept by reference).
  explicit local_batches(Source& source) noexcept : source_(&source) {}
  /// The wrapped source's `num_batches()`.
  [[nodiscard]] index num_batches() const { return static_cast<index>(source_->num_batches()); }
  /// The wrapped source's `begin_epoch(epoch)`.
  void begin_epoch(index epoch) { source_->begin_epoch(epoch); }
  /// The wrapped source's `fill_batch(i, batch)`.
  template <class Batch>
  void fill_batch(index i, Batch& batch) {
    source_->fill_batch(i, batch);
  }
  /// The wrapped source.
  [[nodiscard]] Source& source() const noexcept { return *source_; }

 private:
  Source* source_;
};

namespace detail {
// Fills rank `rank`'s slice of batch i when the source can slice, else (a rank-local source, or
// one rank) the whole batch.
template <class Batches, class Batch>
void fill_slice(Batches& batches, index i, int rank, int ranks, Batch& batch) {
  if constexpr (requires { batches.fill_batch(i, index{0}, index{1}, batch); }) {
    batches.fill_batch(i, static_cast<index>(rank), static_cast<index>(ranks), batch);
  } else {
    batches.fill_batch(i, batch);
  }
}

// True unless the run can have several ranks (`distributed`) and the source neither slices nor
// is declared rank-local; then a compile error names the fix.
template <bool distributed, class Batches, class Batch>
constexpr bool check_distributed_source() {
  constexpr bool ok = !distributed || slicing_batch_source<Batches, Batch> ||
                      rank_local_batch_source<Batches, Batch>;
  static_assert(ok,
                "DHO2: batch_source: with a transport that can have several ranks the source must "
                "fill each rank's slice (`fill_batch(i, rank, ranks, batch)`, as "
                "dho2::shuffling_batcher and dho2::sample_batcher do), or be declared rank-local "
                "(wrap it in dho2::local_batches) if every rank is meant to train on what "
                "`fill_batch(i, batch)` gives");
  return ok;
}
}  // namespace detail

}  // namespace dho2
