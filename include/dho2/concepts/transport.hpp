/// @file
/// The `transport` concept: collectives and point-to-point messages over the ranks of a group
/// (what the optimizer does with them: docs/algorithm.md, "Mode S" and "Mode A"; this concept:
/// docs/concepts/transport.md).
///
/// A type `T` models `transport` when, for `t` a `T&`, `ct` a `const T&`, `E` each of `float` and
/// `double`, and `offsets` a `std::span<const dho2::index>` of size()+1 non-decreasing shard
/// boundaries (front 0; rank r owns [offsets[r], offsets[r+1])):
///  1. `ct.rank()`, `ct.size()`: this rank's index in [0, size) and the group size (`int`);
///  2. `t.all_reduce_sum(std::span<E> values)`: in place, every rank gets the element-wise sum;
///  3. `t.reduce_scatter_sum(std::span<const E> in, std::span<E> out, offsets)`: `in` holds
///     offsets.back() entries on every rank; `out` (this rank's shard length) gets this rank's
///     shard of the element-wise sum over ranks;
///  4. `t.all_gather(std::span<const E> in, std::span<E> out, offsets)`: `in` is this rank's
///     shard; `out` (offsets.back() entries) gets every rank's shard in rank order;
///  5. `t.broadcast(std::span<std::byte> bytes, int root)`: every rank gets root's bytes
///     (all ranks pass the same length);
///  6. `t.barrier()`;
///  7. `t.split(int color, int key)` returns a `T` for the sub-group of ranks that passed the
///     same color, ranked by (key, old rank) — a collective over the parent group;
///  8. `t.send(std::span<const std::byte> bytes, int peer, int tag)` and
///     `t.recv(std::span<std::byte> bytes, int peer, int tag)`: point-to-point within the group;
///     the receiver knows the length; messages between a pair with one tag arrive in order.
///
/// Semantic requirements:
///  - collectives are called by every rank of the group in the same order with matching
///    lengths;
///  - sums are deterministic: the same inputs give bit-identical outputs on every rank and in
///    every run (e.g. a fixed reduction order);
///  - failures (a lost peer, a timeout, a malformed frame) throw `dho2::transport_error` naming the
///    routine and the cause, on every surviving rank, within a bounded time — never a hang.
///
/// What portable code (the optimizer, user policies) may rely on, and what it may not — the
/// shipped transports differ beyond this:
///  - `send` may block until the matching `recv` is posted (MPI's `MPI_Send` may; inproc and asio
///    buffer): never send to yourself, and never let two ranks both send to each other before
///    either receives;
///  - the buffers of one call must not overlap, except where a transport documents it (inproc's
///    reduce-scatter allows `out` inside `in`);
///  - tags are non-negative `int`s below 32768 (MPI guarantees at least that);
///  - after a `transport_error` the group is unusable: transports may poison it (inproc and asio
///    fail every later call at once; MPI may hang or abort), so the only portable reaction is to
///    stop using it and report;
///  - sums are deterministic per transport, but different transports (or algorithms of one
///    transport, chosen by size) may associate the additions differently, so results agree to
///    round-off across transports, bit for bit only within one.
///
/// Not required: thread safety (one transport object is used by one thread at a time).
/// Shipped models: `single_process` (one rank), `inproc_transport` (threads), `mpi_transport`
/// (Boost.MPI, `<dho2/mpi.hpp>`), `asio_transport` (TCP, `<dho2/asio.hpp>`); the decorator
/// `simulated_link<T>` (`<dho2/transport/simulated_link.hpp>`) charges any of them the time of an
/// α–β network link.
#pragma once

#include <dho2/core/types.hpp>

#include <concepts>
#include <cstddef>
#include <span>

namespace dho2 {

namespace detail {
template <class T, class E>
concept transport_collectives_for =
    requires(T& t, std::span<E> values, std::span<const E> in, std::span<const index> offsets) {
      t.all_reduce_sum(values);
      t.reduce_scatter_sum(in, values, offsets);
      t.all_gather(in, values, offsets);
    };
}  // namespace detail

/// Collectives and messages over a group of ranks (see the file comment).
template <class T>
concept transport =
    std::move_constructible<T> && detail::transport_collectives_for<T, float> &&
    detail::transport_collectives_for<T, double> &&
    requires(T& t, const T& ct, std::span<std::byte> bytes, std::span<const std::byte> cbytes,
             int peer) {
      { ct.rank() } -> std::convertible_to<int>;
      { ct.size() } -> std::convertible_to<int>;
      t.broadcast(bytes, peer);
      t.barrier();
      { t.split(peer, peer) } -> std::same_as<T>;
      t.send(cbytes, peer, peer);
      t.recv(bytes, peer, peer);
    };

}  // namespace dho2
