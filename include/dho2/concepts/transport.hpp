/// @file
/// The `transport` concept: collectives over the ranks of a job (DESIGN §3).
///
/// A type `T` models `transport` when, on a `T&` named `t`:
///  1. `t.rank()` and `t.size()` return this rank's index in [0, size) and the number of ranks,
///     convertible to `int`;
///  2. `t.all_reduce_sum(values)` with `values` a `std::span<double>` replaces `values` on every
///     rank by the element-wise sum over all ranks (a collective: every rank calls it in the
///     same order with the same length).
///
/// Semantic requirements: collectives are deterministic (the same inputs give bit-identical
/// outputs on every rank and every run), and a failure throws `dho2::transport_error` naming the
/// routine and the cause on every surviving rank, within a bounded time.
///
/// This is the part the single-process optimizer needs; the distributed transports (in-process
/// threads, MPI, TCP) refine it with reduce-scatter, all-gather, broadcast and sub-groups.
/// `dho2::single_process` is the no-op model.
#pragma once

#include <concepts>
#include <span>

namespace dho2 {

/// Collectives over the ranks of a job (see the file comment).
template <class T>
concept transport = requires(T& t, std::span<double> values) {
  { t.rank() } -> std::convertible_to<int>;
  { t.size() } -> std::convertible_to<int>;
  t.all_reduce_sum(values);
};

}  // namespace dho2
