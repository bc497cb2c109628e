/// @file
/// The `polling_transport` concept: a `transport` that can tell, without waiting, whether a
/// point-to-point message has arrived, for the schedules (docs/algorithm.md, "Schedules"):
/// trainers that must not stall for a slow curvature group, and curvature ranks that idle between
/// requests without running into the receive timeout.
///
/// A type `T` models `polling_transport` when it models `dho2::transport` and, for `t` a `T&`,
/// `peer` a rank of the group other than this one and `tag` a message tag:
///  1. `t.poll(peer, tag)` returns (convertible to `bool`) whether the next message from `peer`
///     with `tag` has arrived, so that a `recv(bytes, peer, tag)` now would not wait for it to
///     be sent. It never waits for a message that has not started to arrive; it may wait (within
///     the transport's timeout) for the rest of one that has;
///  2. it consumes nothing: after `true`, the message is still the next one `recv` returns;
///  3. a lost peer or a broken connection makes it throw `dho2::transport_error`, as `recv`
///     would, so a loop that polls until a message arrives ends when the peer is gone.
///
/// Not required: that `poll` ever returns `true` for a message that was never sent; fairness
/// between tags. Shipped models: `inproc_transport`, `mpi_transport` (`MPI_Iprobe`),
/// `asio_transport`, and `any_transport` when the transport it wraps is one (see
/// `any_transport::can_poll`). `dho2::wait_for_message` is the polling wait the optimizer uses.
#pragma once

#include <dho2/concepts/transport.hpp>

#include <algorithm>
#include <chrono>
#include <concepts>
#include <thread>

namespace dho2 {

/// A transport that can poll for a message without waiting (see the file comment).
template <class T>
concept polling_transport = transport<T> && requires(T& t, int peer) {
  { t.poll(peer, peer) } -> std::convertible_to<bool>;
};

/// Whether `t` can poll now: `t.can_poll()` for a transport that decides at run time (such as
/// `any_transport`), else whether `T` models `polling_transport`.
template <transport T>
[[nodiscard]] bool can_poll(const T& t) {
  if constexpr (requires { t.can_poll(); }) {
    return static_cast<bool>(t.can_poll());
  } else {
    return polling_transport<T>;
  }
}

/// Waits until the next message from `peer` with `tag` has arrived — without a time limit while
/// the peer is alive, since `poll` throws `transport_error` once it is lost — by polling with a
/// back-off from 50 µs to 5 ms. Returns at once if `t` cannot poll (`can_poll`), leaving the
/// wait to the `recv` that follows (and to its timeout).
template <transport T>
void wait_for_message(T& t, int peer, int tag) {
  if constexpr (requires { t.poll(peer, tag); }) {
    if (!can_poll(t)) return;
    auto pause = std::chrono::microseconds(50);
    while (!t.poll(peer, tag)) {
      std::this_thread::sleep_for(pause);
      pause = std::min(2 * pause, std::chrono::microseconds(5000));
    }
  }
}

}  // namespace dho2
