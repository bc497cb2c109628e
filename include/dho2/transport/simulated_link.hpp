/// @file
/// `dho2::simulated_link`: a transport decorator that makes any transport behave, in time, like a
/// slower network — a *simulation* of the communication-bound regime on one machine. It forwards
/// every call to the transport it wraps (results, errors and determinism are that transport's,
/// bit for bit) and then charges the call the time an α–β link would take, by sleeping.
///
/// The link model (Hockney's: a message of b bytes takes α + b/β), with α =
/// `simulated_link_options::latency` (seconds per message), β = `bandwidth` (bytes per second), P
/// ranks in the group, n elements of s bytes, and ⌈log₂P⌉ the rounds of a tree (0 for P = 1).
/// Each collective is charged the time of the algorithm a bandwidth-optimal implementation uses
/// (Thakur, Rabenseifner and Gropp, "Optimization of Collective Communication Operations in
/// MPICH", 2005; Patarasuk and Yuan, "Bandwidth optimal all-reduce algorithms for clusters of
/// workstations", 2009):
///
/// | call                     | algorithm                    | charged seconds                |
/// |--------------------------|------------------------------|--------------------------------|
/// | `all_reduce_sum` (n)     | ring: reduce-scatter, gather | 2(P − 1)α + 2(P − 1)/P · n·s/β |
/// | `reduce_scatter_sum` (n) | ring                         | (P − 1)α + (P − 1) · m·s/β     |
/// | `all_gather` (n)         | ring                         | (P − 1)α + (P − 1) · m·s/β     |
/// | `broadcast` (b bytes)    | binomial tree                | ⌈log₂P⌉ · (α + b/β)            |
/// | `barrier`, `split`       | dissemination                | ⌈log₂P⌉ · α                    |
/// | `send`, `recv` (b bytes) | one message                  | α + b/β (on each side)         |
///
/// where m is the largest shard of the partition `offsets` (in a ring every step moves one shard
/// per rank, so the largest sets the pace): with even shards m = n/P and the two ring rows read
/// (P − 1)α + (P − 1)/P · n·s/β. Every rank of a group is charged the same time for a collective
/// (the formulas depend only on what all ranks agree on), so simulated ranks stay in step. The
/// model ignores contention, topology, protocol switches and overlap with computation; it is a
/// lower bound of what such a link would cost, and its value is what the stats report.
///
/// How the time is spent: after the wrapped call returns, the rank *sleeps* for the charged time
/// (`std::this_thread::sleep_for`), rather than busy-waiting, so that the core is free for the
/// other ranks — in-process ranks are threads, and with fewer cores than ranks a busy-wait would
/// steal the compute time of the ranks that are not waiting, which is not what a slow link does.
/// The time is charged in addition to the real call's own (on shared memory the real transfer is
/// negligible, and what remains of it is waiting for slower peers, which a real link would also
/// see). Sleeps overshoot by the scheduler's granularity (tens of µs); the overshoot is carried
/// forward as credit, so a run of short charges costs their sum in wall time rather than one
/// overshoot each, and the wall time slept always covers the time charged so far.
///
/// Stats (`stats()`, a `dho2::simulated_link_stats`, which is a `dho2::transport_stats`): the
/// wrapped transport's counts (zero if it has no `stats()`), with `seconds` increased by the wall
/// time slept, plus `simulated_seconds`, the time charged (deterministic: the sum of the formulas
/// above over the calls made). A call that throws is not charged. Through `dho2::any_transport`
/// (whose `stats()` is a plain `transport_stats`) the sleeps show in `seconds`.
///
/// Example (4 threads on a simulated 1 Gbit/s link with 50 µs latency):
/// ```
/// dho2::run_inproc(4, [](dho2::inproc_transport& t) {
///   dho2::simulated_link link(std::move(t), {.latency = 50e-6, .bandwidth = 125e6});
///   using policies = dho2::default_policies::with_transport<decltype(link)>;
///   dho2::optimizer<float, policies> opt(options, policies{.transport = std::move(link)});
///   // … train; opt.policies().transport.stats().simulated_seconds is the link time charged
/// });
/// ```
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/concepts/polling_transport.hpp>
#include <dho2/core/types.hpp>
#include <dho2/detail/validate.hpp>
#include <dho2/transport/transport_stats.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <span>
#include <thread>
#include <utility>

namespace dho2 {

/// The α–β link a `dho2::simulated_link` charges its calls for, and the cost of each call (the
/// formulas of `<dho2/transport/simulated_link.hpp>`). The defaults are a 10 Gbit/s Ethernet
/// link: α = 20 µs, β = 1.25·10⁹ bytes/s.
struct simulated_link_options {
  /// α: seconds per message (finite and ≥ 0).
  double latency = 20e-6;
  /// β: bytes per second (finite and > 0).
  double bandwidth = 1.25e9;

  /// Throws `dho2::invalid_options` naming the field (`simulated_link_options::latency` or
  /// `simulated_link_options::bandwidth`) if α is not finite and ≥ 0 or β not finite and > 0.
  void validate() const {
    detail::require_finite_nonnegative("simulated_link_options::latency", latency);
    detail::require_finite_positive("simulated_link_options::bandwidth", bandwidth);
  }

  /// ⌈log₂ `ranks`⌉: the rounds of a binomial tree or a dissemination barrier (0 for one rank).
  [[nodiscard]] static int tree_rounds(int ranks) noexcept {
    int rounds = 0;
    for (long long reach = 1; reach < ranks; reach *= 2) ++rounds;
    return rounds;
  }

  /// Ring all-reduce of `bytes` (n·s) over `ranks` (P): 2(P − 1)α + 2(P − 1)/P · n·s/β.
  [[nodiscard]] double all_reduce_seconds(int ranks, std::size_t bytes) const noexcept {
    if (ranks <= 1) return 0.0;
    const double p = ranks;
    return 2.0 * (p - 1.0) * latency + 2.0 * (p - 1.0) / p * static_cast<double>(bytes) / bandwidth;
  }
  /// Ring reduce-scatter or all-gather over `ranks` (P) whose largest shard has
  /// `largest_shard_bytes` (m·s): (P − 1)α + (P − 1) · m·s/β.
  [[nodiscard]] double ring_seconds(int ranks, std::size_t largest_shard_bytes) const noexcept {
    if (ranks <= 1) return 0.0;
    const double p = ranks;
    return (p - 1.0) * latency + (p - 1.0) * static_cast<double>(largest_shard_bytes) / bandwidth;
  }
  /// Binomial-tree broadcast of `bytes` (b) over `ranks` (P): ⌈log₂P⌉ · (α + b/β).
  [[nodiscard]] double broadcast_seconds(int ranks, std::size_t bytes) const noexcept {
    return tree_rounds(ranks) * (latency + static_cast<double>(bytes) / bandwidth);
  }
  /// Dissemination barrier (and `split`) over `ranks` (P): ⌈log₂P⌉ · α.
  [[nodiscard]] double barrier_seconds(int ranks) const noexcept {
    return tree_rounds(ranks) * latency;
  }
  /// One message of `bytes` (b): α + b/β.
  [[nodiscard]] double message_seconds(std::size_t bytes) const noexcept {
    return latency + static_cast<double>(bytes) / bandwidth;
  }
};

/// The stats of a `dho2::simulated_link`: the wrapped transport's `dho2::transport_stats` (with
/// the sleeps in `seconds`) and the link time charged.
struct simulated_link_stats : transport_stats {
  /// Seconds of modelled link time charged (the sum of the α–β formulas over the calls made;
  /// the sleeps that realise it are part of `seconds`).
  double simulated_seconds = 0.0;
};

/// A `dho2::transport` that forwards every call to the transport `T` it wraps and then sleeps
/// for the time the call would take on the α–β link of its `simulated_link_options` (see the file
/// comment for the formulas, why it sleeps, and what its stats hold). It is a policy like any
/// other transport (`policies::with_transport<dho2::simulated_link<T>>`), models
/// `dho2::polling_transport` when `T` does (`poll` forwards, uncharged: the charge falls on the
/// `recv`), and `split` returns the wrapped sub-group on a link with the same options. Move-only
/// when `T` is. A *simulation*: the data still moves at the wrapped transport's speed.
template <transport T>
class simulated_link {
 public:
  /// Wraps `inner` (moved in) on the link `options` (validated: throws `dho2::invalid_options`
  /// naming the field).
  explicit simulated_link(T inner, simulated_link_options options = {})
      : inner_(std::move(inner)), options_(options) {
    options_.validate();
  }

  /// The link's options.
  [[nodiscard]] const simulated_link_options& options() const noexcept { return options_; }
  /// The wrapped transport.
  [[nodiscard]] T& inner() noexcept { return inner_; }
  /// The wrapped transport.
  [[nodiscard]] const T& inner() const noexcept { return inner_; }

  /// The wrapped transport's rank.
  [[nodiscard]] int rank() const { return static_cast<int>(inner_.rank()); }
  /// The wrapped transport's group size.
  [[nodiscard]] int size() const { return static_cast<int>(inner_.size()); }

  /// Forwards, then charges a ring all-reduce of the vector.
  template <class E>
  void all_reduce_sum(std::span<E> values) {
    inner_.all_reduce_sum(values);
    charge(options_.all_reduce_seconds(size(), values.size_bytes()));
  }
  /// Forwards, then charges a ring reduce-scatter paced by the largest shard of `offsets`.
  template <class E>
  void reduce_scatter_sum(std::span<const E> in, std::span<E> out, std::span<const index> offsets) {
    inner_.reduce_scatter_sum(in, out, offsets);
    charge(options_.ring_seconds(size(), largest_shard(offsets) * sizeof(E)));
  }
  /// Forwards, then charges a ring all-gather paced by the largest shard of `offsets`.
  template <class E>
  void all_gather(std::span<const E> in, std::span<E> out, std::span<const index> offsets) {
    inner_.all_gather(in, out, offsets);
    charge(options_.ring_seconds(size(), largest_shard(offsets) * sizeof(E)));
  }
  /// Forwards, then charges a binomial-tree broadcast of the bytes.
  void broadcast(std::span<std::byte> bytes, int root) {
    inner_.broadcast(bytes, root);
    charge(options_.broadcast_seconds(size(), bytes.size()));
  }
  /// Forwards, then charges a dissemination barrier.
  void barrier() {
    inner_.barrier();
    charge(options_.barrier_seconds(size()));
  }
  /// Forwards (a collective over this group), then charges a dissemination barrier; the
  /// sub-group is on a link with the same options, with its own (zero) stats.
  [[nodiscard]] simulated_link split(int color, int key) {
    simulated_link child(inner_.split(color, key), options_);
    charge(options_.barrier_seconds(size()));
    return child;
  }
  /// Forwards, then charges one message.
  void send(std::span<const std::byte> bytes, int peer, int tag) {
    inner_.send(bytes, peer, tag);
    charge(options_.message_seconds(bytes.size()));
  }
  /// Forwards, then charges one message.
  void recv(std::span<std::byte> bytes, int peer, int tag) {
    inner_.recv(bytes, peer, tag);
    charge(options_.message_seconds(bytes.size()));
  }
  /// The wrapped transport's `poll` (not charged).
  [[nodiscard]] bool poll(int peer, int tag) requires polling_transport<T> {
    return static_cast<bool>(inner_.poll(peer, tag));
  }
  /// Whether the wrapped transport can poll now (`dho2::can_poll`).
  [[nodiscard]] bool can_poll() const { return dho2::can_poll(inner_); }

  /// The wrapped transport's stats (zero if it has none) with `seconds` increased by the wall
  /// time slept here, and `simulated_seconds`, the link time charged (see the file comment).
  [[nodiscard]] simulated_link_stats stats() const {
    simulated_link_stats s;
    if constexpr (requires { inner_.stats(); }) {
      static_cast<transport_stats&>(s) = static_cast<transport_stats>(inner_.stats());
    }
    s.seconds += slept_seconds_;
    s.simulated_seconds = charged_seconds_;
    return s;
  }
  /// Sets every counter of `stats()` to zero (the wrapped transport's too, if it can); the
  /// credit of past oversleeping is kept.
  void reset_stats() noexcept {
    if constexpr (requires { inner_.reset_stats(); }) inner_.reset_stats();
    slept_seconds_ = 0.0;
    charged_seconds_ = 0.0;
  }

 private:
  // m·(element size) needs m, the largest shard of a partition (0 for an empty one).
  static std::size_t largest_shard(std::span<const index> offsets) noexcept {
    index largest = 0;
    for (std::size_t r = 0; r + 1 < offsets.size(); ++r) {
      largest = std::max(largest, offsets[r + 1] - offsets[r]);
    }
    return static_cast<std::size_t>(largest);
  }

  // Books `seconds` of link time and sleeps until the wall time slept covers all time charged
  // (the owed time goes negative by each sleep's overshoot, absorbing the next charges).
  void charge(double seconds) {
    charged_seconds_ += seconds;
    owed_seconds_ += seconds;
    if (owed_seconds_ <= 0.0) return;
    const auto start = std::chrono::steady_clock::now();
    std::this_thread::sleep_for(std::chrono::duration<double>(owed_seconds_));
    const double slept =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    slept_seconds_ += slept;
    owed_seconds_ -= slept;
  }

  T inner_;
  simulated_link_options options_;
  double charged_seconds_ = 0.0;  // link time charged (the formulas), since the last reset
  double slept_seconds_ = 0.0;    // wall time slept, since the last reset
  double owed_seconds_ = 0.0;     // charged but not yet slept (negative: credit from overshoot)
};

}  // namespace dho2
