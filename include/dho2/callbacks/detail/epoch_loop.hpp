// The epoch driver shared by `dho2::optimizer::optimize` and `dho2::kfac::optimize`: epochs over a
// batch source from a resume position, this rank's slice of each batch, the callbacks' step and
// epoch hooks, and a stop agreed across ranks.
#pragma once

#include <dho2/detail/internal_header_check.hpp>

#include <dho2/callbacks/events.hpp>
#include <dho2/concepts/batch_source.hpp>
#include <dho2/core/data_position.hpp>
#include <dho2/core/step_status.hpp>
#include <dho2/core/summary.hpp>
#include <dho2/core/types.hpp>

#include <chrono>
#include <limits>
#include <optional>
#include <utility>

namespace dho2::detail {

struct epoch_loop_result {
  index epochs = 0;  // epochs completed (counted from 0, so the last completed epoch + 1)
  double final_loss = std::numeric_limits<double>::quiet_NaN();  // its mean training loss
  bool stopped = false;  // a callback asked to stop, or a step reported step_status::stopped
  stop_cause cause{};    // why, when the callbacks' agreed stop it was
};

// A rank's stop request and whether it is an interruption (a callback's stop_reason() says
// `interrupted`); agreed across ranks by the driver's agree_on_stop (true on every rank when true
// on any).
struct stop_vote {
  bool asked = false;
  bool interrupted = false;
};

// This rank's vote: `asked`, and what the first callback giving a cause says.
template <class... Callbacks>
stop_vote vote_of(bool asked, stop_cause& cause, const Callbacks&... callbacks) {
  stop_vote v{asked, false};
  if (!asked) return v;
  bool found = false;
  [[maybe_unused]] const auto take = [&](const auto& c) {
    if (found) return;
    if (std::optional<stop_cause> why = cause_of(c)) {
      cause = std::move(*why);
      found = true;
    }
  };
  (take(callbacks), ...);
  v.interrupted = found && cause.termination == termination_type::interrupted;
  return v;
}

// The cause every rank reports after the agreed vote `v` (this rank's own when it has one that
// matches, else a generic one).
inline stop_cause agreed_cause(const stop_vote& v, const stop_vote& mine, stop_cause local) {
  if (v.interrupted && !mine.interrupted) {
    return {termination_type::interrupted, "interrupted: another rank received a signal"};
  }
  if (!mine.asked) return {};
  return local;
}

// Agrees this rank's stop request `asked` with the other ranks (the driver's agree_on_stop) and,
// when the agreed answer is to stop, records the cause in `out`; returns that answer.
template <class Driver, class... Callbacks>
bool agree_stop(Driver& d, bool asked, epoch_loop_result& out, const Callbacks&... callbacks) {
  stop_cause local;
  const stop_vote mine = vote_of(asked, local, callbacks...);
  const stop_vote agreed = d.agree_on_stop(mine);
  if (agreed.asked) out.cause = agreed_cause(agreed, mine, std::move(local));
  return agreed.asked;
}

// Runs epochs start.epoch … epochs − 1 of `batches` (from batch start.batch of the first). The
// driver `d` provides: `step(batch)` → step_status; `last_loss()`, `last_step_estimated()`,
// `iterations()`; `agree_on_stop(stop_vote)` (collective when distributed); `slice_rank()`,
// `slice_ranks()`; `halted()` (a numerical stop); `at_batch(epoch, i)` (bookkeeping before the
// step). An epoch cut short is not counted.
template <class S, class Driver, class Batches, class Batch, class... Callbacks>
epoch_loop_result run_epochs(Driver& d, vector_ref<S> x, Batches& batches, Batch& batch,
                             index epochs, data_position start,
                             std::chrono::steady_clock::time_point run_start,
                             Callbacks&... callbacks) {
  const auto since_start = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start).count();
  };
  const index per_epoch = batches.num_batches();
  epoch_loop_result out;
  if (start.batch >= per_epoch) start = {start.epoch + 1, 0};
  bool stop = false;
  for (index e = start.epoch; e < epochs && !stop; ++e) {
    batches.begin_epoch(e);
    double loss_sum = 0.0;
    index loss_count = 0;
    const index first = e == start.epoch ? start.batch : 0;
    index done = first;
    for (index i = first; i < per_epoch && !stop; ++i) {
      d.at_batch(e, i);
      fill_slice(batches, i, d.slice_rank(), d.slice_ranks(), batch);
      const index iteration = d.iterations();
      const step_status st = d.step(batch);
      ++done;
      if (st == step_status::taken) {
        loss_sum += d.last_loss();
        ++loss_count;
      }
      const step_info<S> info{
          e, i, per_epoch, iteration, d.last_loss(), st, d.last_step_estimated(), since_start(), x};
      bool asked = (detail::call_on_step(callbacks, info) | ... | false);
      // A stop asked on one rank must stop every rank, or the others would wait in the next
      // collective; agreed only when some callback can ask at a step.
      if constexpr ((detail::can_stop_on_step<Callbacks, step_info<S>> || ...)) {
        asked = agree_stop(d, asked, out, callbacks...);
        if (asked) (detail::call_on_stop(callbacks, info, out.cause), ...);
      }
      stop = asked || st == step_status::stopped;
    }
    if (d.halted() || done < per_epoch) break;  // an epoch cut short is not a completed epoch
    epoch_info<S> info{e,
                       epochs,
                       d.iterations(),
                       loss_count > 0 ? loss_sum / static_cast<double>(loss_count)
                                      : std::numeric_limits<double>::quiet_NaN(),
                       since_start(),
                       x,
                       {}};
    out.epochs = e + 1;
    out.final_loss = info.train_loss;
    if (agree_stop(d, (detail::call_on_epoch_end(callbacks, info) | ... | false), out,
                   callbacks...)) {
      stop = true;
    }
  }
  out.stopped = stop;
  return out;
}

}  // namespace dho2::detail
