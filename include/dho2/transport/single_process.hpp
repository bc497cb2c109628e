/// @file
/// `dho2::single_process`: the transport of a group with one rank. Every collective is the
/// identity (a copy where input and output differ).
#pragma once

#include <dho2/concepts/transport.hpp>
#include <dho2/core/errors.hpp>

#include <algorithm>
#include <cstddef>
#include <span>
#include <string>

namespace dho2 {

/// One rank, no communication.
struct single_process {
  /// Always 0.
  [[nodiscard]] int rank() const noexcept { return 0; }
  /// Always 1.
  [[nodiscard]] int size() const noexcept { return 1; }
  /// The sum over one rank is the input itself.
  template <class E>
  void all_reduce_sum(std::span<E> /*values*/) noexcept {}
  /// Copies `in` (the whole vector is this rank's shard) into `out`.
  template <class E>
  void reduce_scatter_sum(std::span<const E> in, std::span<E> out,
                          std::span<const index> /*offsets*/) {
    std::copy(in.begin(), in.begin() + static_cast<std::ptrdiff_t>(out.size()), out.begin());
  }
  /// Copies `in` into `out`.
  template <class E>
  void all_gather(std::span<const E> in, std::span<E> out, std::span<const index> /*offsets*/) {
    std::copy(in.begin(), in.end(), out.begin());
  }
  /// Nothing to send.
  void broadcast(std::span<std::byte> /*bytes*/, int /*root*/) noexcept {}
  /// Nothing to wait for.
  void barrier() noexcept {}
  /// A group of one splits into itself.
  [[nodiscard]] single_process split(int /*color*/, int /*key*/) const noexcept { return {}; }
  /// There is no peer: throws `dho2::transport_error`.
  void send(std::span<const std::byte> /*bytes*/, int peer, int /*tag*/) const {
    throw transport_error("single_process::send: no peer " + std::to_string(peer) +
                          " in a group of one");
  }
  /// There is no peer: throws `dho2::transport_error`.
  void recv(std::span<std::byte> /*bytes*/, int peer, int /*tag*/) const {
    throw transport_error("single_process::recv: no peer " + std::to_string(peer) +
                          " in a group of one");
  }
};

static_assert(transport<single_process>);

}  // namespace dho2
