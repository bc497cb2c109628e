/// @file
/// The `schedule` concept: who estimates curvature, and when.
///
/// Role: the optimizer knows how to run an estimate (Lanczos on Hessian-vector products over
/// the working group) and how to put one in use; a schedule decides *when* an estimate starts,
/// *where* it runs (inline on every rank, on a second thread, on dedicated ranks), and when its
/// result is put in use. The optimizer calls the schedule at step boundaries through a
/// `dho2::curvature_context` (see `dho2/fosi/curvature_context.hpp`) and knows nothing else of
/// it. A schedule that re-estimates when the curvature has drifted, or one that estimates on a
/// remote service, is a policy of this kind, written without touching the optimizer.
///
/// Two levels, as for base optimizers: the policy object holds copyable hyper-parameters; its
/// run state (an estimate in flight, a thread, a sub-group) lives in `C::state`. A type `C`
/// models `schedule` when:
///  1. `typename C::state` is default constructible and movable;
///  2. `c.before_step(st, ctx)` on a `const C&` (ctx a `curvature_context`) runs before every
///     training step while curvature is in use: it may start an estimate
///     (`ctx.estimate_now()` inline, `ctx.detached_estimate()` for another thread), put a
///     finished one in use (`ctx.put_in_use(est, snapshot_step)`), or do nothing;
///  3. `c.finish(st, ctx)` puts an estimate still in flight in use and releases whatever the
///     schedule started (idempotent);
///  4. `c.in_flight(st)` returns the `dho2::estimate_in_flight` still to be put in use, if any
///     (checkpoints refuse to save meanwhile).
///
/// Not required, used when present:
///  - `c.validate()`: throws `dho2::invalid_options` for bad fields (at construction);
///  - `c.setup(st, host)`: at the first step's collective set-up, after the ranks agreed on the
///    options: check the schedule fits the job (throw `invalid_options` alike on every rank),
///    split the job into groups (`host.split_group(color)`);
///  - `c.trains(st)`: false on ranks that only serve estimates; the optimizer's `optimize` then
///    calls `c.serve(st, ctx, batches)` on them instead of training;
///  - `c.announce_checkpoint(st, host, dir)`: on the trainers, before a checkpoint is saved
///    (to bring serving ranks into it);
///  - `c.layout_groups(st, host)`: the sizes of every group of the job, whose partitions the
///    checkpoint identity hashes (default: the working group);
///  - `c.identity()`: a `std::string` of the fields a resumed run must share with the saver.
///
/// Semantic requirements: every rank of the working group makes the same decisions at the same
/// step (decide from values all ranks agree on); at most one estimate is in flight; runs are
/// deterministic for a fixed seed as long as no estimate is put in use at a time that depends
/// on the clock. Shipped models: `synchronous_schedule`, `background_schedule`,
/// `split_schedule`. A conforming minimal type: `dho2::testing::schedule_archetype`.
#pragma once

#include <dho2/core/types.hpp>

#include <concepts>
#include <optional>
#include <type_traits>

namespace dho2 {

/// What trainers do when an estimate made on a snapshot is not ready when it is due.
enum class late_estimate_policy {
  /// Wait until it arrives: runs are deterministic for a fixed seed and staleness.
  wait,
  /// Go on with the curvature in use; adopt the estimate at the first step it is ready (the
  /// schedules' default: curvature never stalls training).
  keep_previous,
};

/// An estimate started on the snapshot before step `snapshot_step`, to be put in use before
/// step `ready_step`.
struct estimate_in_flight {
  /// The step whose parameters the estimate was started on.
  index snapshot_step = 0;
  /// The step before which it is put in use (at the latest, under `late_estimate_policy::wait`).
  index ready_step = 0;
};

/// Decides who estimates curvature, and when (see the file comment for `before_step` and
/// `finish`, which the optimizer checks against its own context).
template <class C>
concept schedule = std::copy_constructible<C> && std::default_initializable<typename C::state> &&
    std::movable<typename C::state> && requires(const C& c, const typename C::state& st) {
  { c.in_flight(st) } -> std::same_as<std::optional<estimate_in_flight>>;
};

namespace detail {
template <class C>
constexpr bool check_schedule() {
  if constexpr (!requires { typename C::state; }) {
    static_assert(requires { typename C::state; },
                  "DHO2: schedule requires the member type `C::state` (its run state)");
    return false;
  } else if constexpr (!(std::default_initializable<typename C::state> &&
                         std::movable<typename C::state>)) {
    static_assert(std::default_initializable<typename C::state> &&
                      std::movable<typename C::state>,
                  "DHO2: schedule requires `C::state` to be default constructible and movable");
    return false;
  } else {
    constexpr bool ok = requires(const C& c, const typename C::state& st) {
      { c.in_flight(st) } -> std::same_as<std::optional<estimate_in_flight>>;
    };
    static_assert(ok, "DHO2: schedule requires `c.in_flight(state)` (const) returning "
                      "std::optional<dho2::estimate_in_flight>");
    return ok && std::copy_constructible<C>;
  }
}
}  // namespace detail

/// True when `step` is W − 1 + jT for some j ≥ 0: the reference's estimate indices, which the
/// shipped schedules share.
[[nodiscard]] constexpr bool reference_estimate_step(index step, index warmup,
                                                     index refresh_every) noexcept {
  const index first = warmup - 1;
  return step >= first && (step - first) % refresh_every == 0;
}

}  // namespace dho2

/// Fails compilation with a message starting "DHO2:" naming the first requirement of
/// `dho2::schedule<C>` that `C` does not meet (`before_step` and `finish` are checked by the
/// optimizer against its context).
#define DHO2_REQUIRE_SCHEDULE(C) \
  static_assert(::dho2::detail::check_schedule<C>(), "DHO2: see the message above")
