/// @file
/// `dho2::split_schedule`: c dedicated curvature ranks estimate on snapshots while the other
/// ranks train.
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/concepts/batch_source.hpp>
#include <dho2/concepts/polling_transport.hpp>
#include <dho2/concepts/schedule.hpp>
#include <dho2/core/eigen_estimate.hpp>
#include <dho2/core/types.hpp>
#include <dho2/detail/validate.hpp>
#include <dho2/schedule/detail/staleness.hpp>
#include <dho2/schedule/split_protocol.hpp>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace dho2 {

/// The last `curvature_group` ranks of the transport's group form a curvature group (their own
/// sub-group); the others train in mode S among themselves. At the reference's steps
/// t = W − 1 + jT the first trainer sends the parameters and the batch's position (epoch, batch)
/// to the curvature group, which rebuilds that global batch from its own copy of the data, runs
/// the distributed estimate on it (basis sharded over the c curvature ranks) and sends the
/// eigenpairs back, re-sharded to the trainers' partition: each curvature rank sends each trainer
/// only the columns they share, so no rank ever holds all of V (the messages:
/// `dho2/schedule/split_protocol.hpp`). Trainers put the new curvature in use before step
/// t + `max_staleness` when it has arrived. With `on_late = wait` they wait for it there, so
/// runs are deterministic for a fixed seed; with `max_staleness` = 0 the result equals the
/// synchronous schedule on the trainers to round-off. By default (`on_late = keep_previous`)
/// a curvature group that is not done by then does not stall the trainers: they go on with the
/// eigenpairs in use, look again before every step (the first trainer polls,
/// `dho2::polling_transport`, and tells the others), and put the estimate in use at the first step
/// it has arrived; an estimate due meanwhile is skipped. Between requests the curvature ranks wait
/// by polling, so no transport timeout limits how long trainers may train between estimates.
/// Checkpoints: the trainers call `optimizer::save_checkpoint`, the curvature ranks join from
/// inside `optimize`. Requires `optimizer::optimize` (it tells the curvature ranks which batch to
/// use) and mode S.
struct split_schedule {
  /// c: the number of dedicated curvature ranks (1 ≤ c < group size).
  int curvature_group = 1;
  /// Steps between the snapshot and the use of its curvature (s ≥ 0, s < T).
  index max_staleness = 4;
  /// When the estimate is not ready at step t + s: go on with the curvature in use and adopt it
  /// at the first later step it is ready (the default: never stalls; the summary counts it in
  /// `late_estimates` and reports its staleness), or wait for it (deterministic). The default
  /// needs a transport that can poll (`dho2::polling_transport`: every shipped transport).
  late_estimate_policy on_late = late_estimate_policy::keep_previous;

  /// One rank's part of the schedule.
  struct state {
    /// The request out to the curvature ranks, if any (trainers).
    std::optional<estimate_in_flight> pending;
    /// Whether this rank is a curvature rank.
    bool curvature_rank = false;
    /// Whether the curvature ranks were released (trainers).
    bool finished = false;
    /// Number of trainers (the job's size less c).
    int trainers = 0;
  };

  /// Throws `dho2::invalid_options` for bad fields (the group size is checked at the first
  /// step).
  void validate() const {
    detail::require(curvature_group >= 1, "split_schedule::curvature_group", curvature_group,
                    ">= 1");
    detail::require(
        on_late == late_estimate_policy::wait || on_late == late_estimate_policy::keep_previous,
        "split_schedule::on_late", static_cast<int>(on_late), "wait or keep_previous");
    detail::require(max_staleness >= 0, "split_schedule::max_staleness", max_staleness, ">= 0");
  }

  /// Checks the schedule fits the job, and splits it into trainers and curvature ranks.
  template <class Host>
  void setup(state& st, Host& host) const {
    static_assert(Host::shards_state, "DHO2: split_schedule requires mode S (synchronous_admm)");
    detail::check_staleness(max_staleness, host);
    auto& world = host.world();
    const int size = world.size();
    const int c = curvature_group;
    detail::require(c >= 1 && c < size, "split_schedule::curvature_group", c,
                    "1 <= c < transport size = " + std::to_string(size));
    if (on_late == late_estimate_policy::keep_previous) {
      detail::require(
          can_poll(world), "split_schedule::on_late", "keep_previous",
          "a transport that can poll (dho2::polling_transport); on_late = wait does not need one");
    }
    st.curvature_rank = world.rank() >= size - c;
    st.trainers = size - c;
    host.split_group(st.curvature_rank ? 1 : 0);
  }

  /// Trainers: puts an arrived estimate in use when due, then asks for the one the reference's
  /// steps name.
  template <class Context>
  void before_step(state& st, Context& ctx) const {
    const index t = ctx.step();
    const bool due = ctx.reference_step_due();
    if (st.pending && t >= st.pending->ready_step) {
      if (ready(st, ctx)) {
        finish_pending(st, ctx);
      } else if (t == st.pending->ready_step) {
        ctx.count_late();  // late_estimate_policy::keep_previous: go on without it
      }
    }
    if (ctx.stopped() || !due) return;
    if (st.pending) {  // the previous estimate is still late: at most one is in flight
      ctx.count_skipped();
      return;
    }
    ctx.note_estimate_started();
    if (ctx.group().rank() == 0) {
      const data_position at = ctx.batch_position();
      send_request(st, ctx, {split_protocol::request_kind::estimate, t, at.epoch, at.batch});
      split_protocol::send_values(ctx.world(), ctx.point().data(), ctx.size(), st.trainers,
                                  split_protocol::tag::parameters);
    }
    st.pending = estimate_in_flight{t, t + max_staleness};
    if (max_staleness == 0) finish_pending(st, ctx);
  }

  /// Trainers: puts an estimate still in flight in use, then releases the curvature ranks.
  template <class Host>
  void finish(state& st, Host& host) const {
    if (st.finished || st.curvature_rank) return;
    if (st.pending) finish_pending(st, host);
    if (host.group().rank() == 0) send_request(st, host, {split_protocol::request_kind::finish});
    st.finished = true;
  }

  /// The request out to the curvature ranks, if any.
  [[nodiscard]] std::optional<estimate_in_flight> in_flight(const state& st) const {
    return st.pending;
  }
  /// False on the curvature ranks.
  [[nodiscard]] bool trains(const state& st) const noexcept { return !st.curvature_rank; }

  /// Trainers, before a checkpoint: trainer 0 tells the curvature ranks to join it.
  template <class Host>
  void announce_checkpoint(state& st, Host& host, const std::filesystem::path& dir) const {
    if (host.group().rank() != 0) return;
    const std::string path = dir.string();
    const auto length = static_cast<std::int64_t>(path.size());
    send_request(st, host, {split_protocol::request_kind::checkpoint, host.step(), length});
    for (int q = st.trainers; q < host.world().size(); ++q) {
      split_protocol::send_values(host.world(), path.data(), length, q,
                                  split_protocol::tag::checkpoint);
    }
  }

  /// The sizes of the trainers' and the curvature group, whose partitions a checkpoint names.
  template <class Host>
  [[nodiscard]] std::vector<int> layout_groups(const state& st, Host& host) const {
    return {st.trainers, host.world().size() - st.trainers};
  }

  /// Curvature ranks: serve estimate requests until the trainers are done.
  template <class Context, class Batches>
  void serve(state& st, Context& ctx, Batches& batches) const {
    using S = typename Context::scalar_type;
    ctx.note_estimate_started();
    auto& world = ctx.world();
    auto& group = ctx.group();
    const int c = group.size();
    const index n = ctx.size();
    const shard_layout shard = ctx.shard();
    const auto trainer_offsets = ctx.partition(st.trainers);
    vector<S> x(n);
    typename Context::batch_type batch{};
    index epoch = -1;
    for (;;) {
      // Idle until the next request: a polling wait is free of the transport's timeout, however
      // long the trainers train between estimates.
      wait_for_message(world, 0, static_cast<int>(split_protocol::tag::request));
      const auto request = split_protocol::receive<split_protocol::split_request>(
          world, 0, split_protocol::tag::request);
      if (request.kind == split_protocol::request_kind::finish) break;
      if (request.kind == split_protocol::request_kind::checkpoint) {
        std::string path(static_cast<std::size_t>(request.epoch_or_length), '\0');
        split_protocol::receive_values(world, path.data(), request.epoch_or_length, 0,
                                       split_protocol::tag::checkpoint);
        ctx.join_checkpoint(x, request.step, path);
        continue;
      }
      if (group.rank() == 0) {
        split_protocol::receive_values(world, x.data(), n, 0, split_protocol::tag::parameters);
      }
      group.broadcast(std::as_writable_bytes(std::span<S>(x.data(), static_cast<std::size_t>(n))),
                      0);
      if (request.epoch_or_length != epoch) {
        batches.begin_epoch(request.epoch_or_length);
        epoch = request.epoch_or_length;
      }
      detail::fill_slice(batches, request.batch, group.rank(), c, batch);
      estimate_communication comm;
      const eigen_estimate est = ctx.estimate_over_group(x, batch, comm);
      ctx.book_served(est, &comm);
      const index k = est.failed ? 0 : est.eigenvalues.size();
      if (group.rank() == 0) {
        const auto header = split_protocol::header_of(est, k);
        Eigen::VectorXd values(2 * k);
        if (k > 0) values << est.eigenvalues, est.residuals;
        for (int p = 0; p < st.trainers; ++p) {
          split_protocol::send(world, header, p, split_protocol::tag::result);
          if (k > 0) {
            split_protocol::send_values(world, values.data(), 2 * k, p,
                                        split_protocol::tag::values);
          }
        }
      }
      if (k == 0) continue;
      // Re-shard: send each trainer the columns of its shard that this rank holds.
      for (int p = 0; p < st.trainers; ++p) {
        const auto pi = static_cast<std::size_t>(p);
        const index lo = std::max(trainer_offsets[pi], shard.offset);
        const index hi = std::min(trainer_offsets[pi + 1], shard.offset + shard.size);
        if (lo >= hi) continue;
        split_protocol::send_values(world, est.eigenvectors.col(lo - shard.offset).data(),
                                    k * (hi - lo), p, split_protocol::tag::vectors);
      }
    }
  }

  /// Forgets the request in flight, as `load_checkpoint` does.
  void drop_in_flight(state& st) const { st.pending.reset(); }
  /// What a resumed run must share with the saver.
  [[nodiscard]] std::string identity() const {
    return "split_schedule c=" + std::to_string(curvature_group) +
           " s=" + std::to_string(max_staleness);
  }
  /// `max_staleness`.
  [[nodiscard]] constexpr index staleness() const noexcept { return max_staleness; }
  /// `curvature_group`.
  [[nodiscard]] constexpr int curvature_ranks() const noexcept { return curvature_group; }

 private:
  template <class Host>
  static void send_request(const state& st, Host& host, const split_protocol::split_request& r) {
    auto& world = host.world();
    for (int q = st.trainers; q < world.size(); ++q) {
      split_protocol::send(world, r, q, split_protocol::tag::request);
    }
  }

  // Whether the due estimate is to be put in use now: always under `wait` (finish_pending waits
  // for it); under keep_previous, whether it has arrived, as the first trainer sees it, so all
  // trainers agree.
  template <class Context>
  bool ready(const state& st, Context& ctx) const {
    if (on_late == late_estimate_policy::wait) return true;
    using transport_type = typename Context::transport_type;
    if constexpr (polling_transport<transport_type>) {
      std::uint8_t arrived = 0;
      if (ctx.group().rank() == 0) {
        arrived =
            ctx.world().poll(st.trainers, static_cast<int>(split_protocol::tag::result)) ? 1 : 0;
      }
      if (ctx.group().size() > 1) {
        ctx.communicate([&] {
          ctx.group().broadcast(std::as_writable_bytes(std::span<std::uint8_t>(&arrived, 1)), 0);
        });
      }
      return arrived != 0;
    } else {
      return true;  // not reached: setup requires a polling transport for keep_previous
    }
  }

  // Trainers: waits for the estimate (no time limit while the curvature ranks are alive; a lost
  // one makes the poll throw), receives this trainer's part and puts it in use.
  template <class Host>
  void finish_pending(state& st, Host& host) const {
    const index snapshot = st.pending->snapshot_step;
    st.pending.reset();
    auto& world = host.world();
    const int first = st.trainers;
    wait_for_message(world, first, static_cast<int>(split_protocol::tag::result));
    const auto header = split_protocol::receive<split_protocol::split_result_header>(
        world, first, split_protocol::tag::result);
    eigen_estimate est;
    const index k = header.pairs;
    est.num_largest = header.num_largest;
    est.num_smallest = header.num_smallest;
    est.iterations = header.iterations;
    est.hvps = header.hvps;
    est.breakdown = header.breakdown != 0;
    est.failed = header.failed != 0;
    est.seconds = header.seconds;
    est.hvp_seconds = header.hvp_seconds;
    est.basis_bytes = 0;  // the basis lived on the curvature ranks
    Eigen::VectorXd values(2 * k);
    if (k > 0) {
      split_protocol::receive_values(world, values.data(), 2 * k, first,
                                     split_protocol::tag::values);
    }
    est.eigenvalues = values.head(k);
    est.residuals = values.tail(k);
    const shard_layout shard = host.shard();
    est.eigenvectors.resize(k, shard.size);
    if (k > 0 && !est.failed) {
      const auto curv = host.partition(curvature_group);
      for (std::size_t q = 0; q + 1 < curv.size(); ++q) {
        const index lo = std::max(curv[q], shard.offset);
        const index hi = std::min(curv[q + 1], shard.offset + shard.size);
        if (lo >= hi) continue;
        split_protocol::receive_values(world, est.eigenvectors.col(lo - shard.offset).data(),
                                       k * (hi - lo), first + static_cast<int>(q),
                                       split_protocol::tag::vectors);
      }
    }
    host.put_in_use(std::move(est), snapshot);
  }
};

static_assert(schedule<split_schedule>);

}  // namespace dho2
