/// @file
/// `dho2::transport_stats`: what one rank's transport handle moved and how long it spent doing so,
/// for reports and benchmarks. Every shipped transport keeps one per handle and exposes it as
/// `stats()`; each transport documents exactly which bytes its algorithms count.
#pragma once

#include <cstdint>

namespace dho2 {

/// Traffic and time of one rank's transport handle since it was created (or last reset).
///
/// Counting rules shared by every transport:
///  - only payload is counted (the elements or bytes of the caller's buffers); control data
///    (lengths, offsets, headers, barrier and split handshakes) is not;
///  - a rank never counts data it copies to itself (its own shard, its own contribution);
///  - `bytes_sent` counts payload that leaves this rank (for a shared-memory transport: bytes of
///    this rank's buffers that other ranks read), `bytes_received` payload that reaches it (bytes
///    this rank read from other ranks' buffers). Summed over the ranks of a group, both totals are
///    equal;
///  - a call that throws adds its time and its call but no bytes.
struct transport_stats {
  /// Payload bytes that left this rank (see the counting rules above).
  std::uint64_t bytes_sent = 0;
  /// Payload bytes that reached this rank from other ranks.
  std::uint64_t bytes_received = 0;
  /// Wall-clock seconds spent inside transport calls, waiting for peers included.
  double seconds = 0.0;
  /// Number of transport calls (collectives and point-to-point), including calls that threw.
  std::uint64_t calls = 0;

  /// Adds another handle's (or period's) counts to these.
  constexpr transport_stats& operator+=(const transport_stats& other) noexcept {
    bytes_sent += other.bytes_sent;
    bytes_received += other.bytes_received;
    seconds += other.seconds;
    calls += other.calls;
    return *this;
  }

  /// The field-wise sum of `a` and `b` (e.g. totals over the ranks of a group).
  [[nodiscard]] friend constexpr transport_stats operator+(transport_stats a,
                                                           const transport_stats& b) noexcept {
    a += b;
    return a;
  }

  /// Field-wise equality.
  friend constexpr bool operator==(const transport_stats&, const transport_stats&) = default;
};

}  // namespace dho2
