/// @file
/// `dho2::background_schedule`: one process; curvature is estimated by a second thread on a
/// snapshot while training goes on.
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/concepts/schedule.hpp>
#include <dho2/core/eigen_estimate.hpp>
#include <dho2/detail/validate.hpp>
#include <dho2/schedule/detail/staleness.hpp>

#include <chrono>
#include <future>
#include <optional>
#include <string>
#include <utility>

namespace dho2 {

/// At the reference's steps t = W − 1 + jT, the parameters and the curvature batch are copied and
/// a second thread runs the estimator on them; the result is put in use before step
/// t + `max_staleness` if the thread is done, and until then the previous curvature stays in
/// use. By default (`on_late = keep_previous`) training never waits for the thread: a late
/// estimate is put in use at the first later step at which it is done, and the summary reports
/// its staleness. With `on_late = wait` it is put in use before step t + `max_staleness`
/// exactly (waiting for the thread if it is not done), so a run is deterministic for a fixed
/// seed.
/// `max_staleness` = 0 is the synchronous schedule. One process only (one rank); the model's
/// const member functions must be safe to call from two threads at once, as
/// `dho2::differentiable_model` requires, and the model must outlive the run.
struct background_schedule {
  /// Steps between the snapshot and the use of its curvature (s ≥ 0, s < T).
  index max_staleness = 4;
  /// When the estimate is not ready at step t + s: go on with the curvature in use and adopt it
  /// at the first later step it is ready (the default: never stalls; the summary counts it in
  /// `late_estimates` and reports its staleness), or wait for it (deterministic).
  late_estimate_policy on_late = late_estimate_policy::keep_previous;

  /// The estimate in flight on the second thread, if any.
  struct state {
    /// When it was started and is due.
    std::optional<estimate_in_flight> pending;
    /// Its result.
    std::future<eigen_estimate> result;
  };

  /// Throws `dho2::invalid_options` for bad fields.
  void validate() const {
    detail::require(
        on_late == late_estimate_policy::wait || on_late == late_estimate_policy::keep_previous,
        "background_schedule::on_late", static_cast<int>(on_late), "wait or keep_previous");
    detail::require(max_staleness >= 0, "background_schedule::max_staleness", max_staleness,
                    ">= 0");
  }
  /// Checks the staleness against T, and that the job is one process.
  template <class Host>
  void setup(state& /*st*/, Host& host) const {
    detail::check_staleness(max_staleness, host);
    const int world = host.world().size();
    detail::require(world == 1, "transport size", world,
                    "1 (background_schedule runs on one process; use split_schedule)");
  }
  /// Puts a due estimate in use, then starts the one the reference's steps name.
  template <class Context>
  void before_step(state& st, Context& ctx) const {
    const index t = ctx.step();
    const bool due = ctx.reference_step_due();
    if (st.pending && t >= st.pending->ready_step) {
      if (ready(st)) {
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
    if (max_staleness == 0) {
      ctx.estimate_now();
      return;
    }
    st.result = std::async(std::launch::async, ctx.detached_estimate());
    st.pending = estimate_in_flight{t, t + max_staleness};
  }
  /// Waits for an estimate in flight and puts it in use.
  template <class Host>
  void finish(state& st, Host& host) const {
    if (st.pending) finish_pending(st, host);
  }
  /// The estimate in flight, if any.
  [[nodiscard]] std::optional<estimate_in_flight> in_flight(const state& st) const {
    return st.pending;
  }
  /// Drops an estimate in flight (waiting for its thread), as `load_checkpoint` does.
  void drop_in_flight(state& st) const {
    st.pending.reset();
    st.result = {};
  }
  /// What a resumed run must share with the saver.
  [[nodiscard]] std::string identity() const {
    return "background_schedule s=" + std::to_string(max_staleness);
  }
  /// `max_staleness`.
  [[nodiscard]] constexpr index staleness() const noexcept { return max_staleness; }

 private:
  bool ready(const state& st) const {
    if (on_late == late_estimate_policy::wait) return true;
    return st.result.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
  }
  template <class Host>
  static void finish_pending(state& st, Host& host) {
    const index snapshot = st.pending->snapshot_step;
    st.pending.reset();
    host.put_in_use(st.result.get(), snapshot);
  }
};

static_assert(schedule<background_schedule>);

}  // namespace dho2
