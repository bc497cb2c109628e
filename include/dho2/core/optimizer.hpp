/// @file
/// `dho2::optimizer`: FOSI (Sivan et al., ICLR 2024) composed from policies.
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/admm/consensus.hpp>
#include <dho2/callbacks/events.hpp>
#include <dho2/checkpoint/directory.hpp>
#include <dho2/checkpoint/optimizer_state.hpp>
#include <dho2/concepts/base_optimizer.hpp>
#include <dho2/concepts/batch_source.hpp>
#include <dho2/concepts/differentiable_model.hpp>
#include <dho2/concepts/hvp_model.hpp>
#include <dho2/concepts/polling_transport.hpp>
#include <dho2/core/options.hpp>
#include <dho2/core/policies.hpp>
#include <dho2/core/summary.hpp>
#include <dho2/curvature/finite_difference_hvp.hpp>
#include <dho2/detail/agreement.hpp>
#include <dho2/detail/finite.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <chrono>
#include <cmath>
#include <exception>
#include <filesystem>
#include <future>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace dho2 {

/// The FOSI optimizer for parameters of scalar `S`, composed from `Policies` (see
/// `dho2::policies`).
///
/// One step on gradient g, with V ∈ R^{K×n} the K = k + l retained eigenvectors (orthonormal rows)
/// and ρᵢ = 1/|λᵢ| (DESIGN §2.1):
/// \f[ c = V g,\quad g_2 = g - V^\top c,\quad u \leftarrow \mathrm{mom}(V^\top c, u),\quad
///     d = V^\top(\rho \odot V u), \f]
/// \f[ b = \mathrm{base.step}(g_2),\quad b \leftarrow b - V^\top (V b),\quad
///     \Delta x = s\,b - \alpha\, d, \f]
/// with s = clip(λ_max/λ_min over the retained top-k, 1, c). Before the first estimate V is empty
/// and the step is the base step, bit for bit. Curvature is (re-)estimated by the estimator on
/// Hessian-vector products (the model's own when it is a `dho2::hvp_model`, central finite
/// differences of gradients otherwise) before the steps the schedule names (by default
/// W − 1, W − 1 + T, …).
///
/// Guards (DESIGN §2.3): eigenpairs with |λ| < floor·max|λ| are dropped; a non-finite loss or
/// gradient skips the step or stops the run (`options::on_nonfinite`) without touching any state;
/// a failed estimate (non-finite HVP) keeps the previous curvature.
///
/// The velocity u is kept without a pass over n per step: between estimates u = δ·u₀ + Vᵀa with
/// a scalar δ, the anchor u₀ (stored at the last estimate) and K coefficients a, so V u =
/// δ·(V u₀) + a. This is the reference's full-vector recurrence rearranged, not an approximation.
///
/// Memory per rank: the base state and the anchor u₀ on this rank's shard, V (K × shard, in S),
/// and during an estimate the estimator's basis (Lanczos: m × shard doubles); all measured from
/// the allocated buffers and reported in the summary.
///
/// Use `step` to drive the loop yourself, or `optimize` for epochs with callbacks.
template <model_scalar S, class Policies = default_policies>
class optimizer {
 public:
  /// Parameter scalar.
  using scalar_type = S;
  /// The policy bundle.
  using policies_type = Policies;
  /// Base optimizer policy.
  using base_type = typename Policies::base_type;
  /// ADMM solver policy (`synchronous_admm`: mode S; `consensus_admm`: mode A).
  using admm_type = typename Policies::admm_type;
  /// True in mode A (consensus ADMM).
  static constexpr bool consensus = admm_type::consensus;

  static_assert(detail::check_base_optimizer<base_type, S>(),
                "DHO2: optimizer: Policies::base_type is not a base_optimizer for S");

  /// An optimizer with the given options and policy objects. Throws `dho2::invalid_options` for
  /// any field that is invalid whatever the model (the rest is checked at the first step).
  explicit optimizer(options opts = {}, Policies policies = {})
      : opts_(std::move(opts)), policies_(std::move(policies)) {
    if constexpr (requires { policies_.base.validate(); }) policies_.base.validate();
    if constexpr (requires { policies_.estimator.validate(); }) policies_.estimator.validate();
    if constexpr (requires { policies_.admm.validate(); }) policies_.admm.validate();
    if constexpr (requires { policies_.schedule.validate(); }) policies_.schedule.validate();
    validate_model_independent();
  }

  /// The options in force.
  [[nodiscard]] const options& get_options() const noexcept { return opts_; }
  /// The policy objects.
  [[nodiscard]] const Policies& policies() const noexcept { return policies_; }
  /// The run summary so far.
  [[nodiscard]] const summary& get_summary() const noexcept { return summary_; }
  /// Retained eigenvalues (largest first, then smallest), empty before the first estimate.
  [[nodiscard]] const Eigen::VectorXd& eigenvalues() const noexcept { return eigenvalues_; }
  /// Retained eigenvectors where this rank keeps state (its shard in mode S, the whole vector in
  /// mode A): length × K, column r is (this rank's part of) eigenvector r, as in
  /// `Eigen::SelfAdjointEigenSolver::eigenvectors()`.
  [[nodiscard]] const matrix<S>& eigenvectors() const noexcept { return basis_; }
  /// Base-step scale s in force.
  [[nodiscard]] double base_scale() const noexcept { return scale_; }
  /// Whether the run has stopped on a non-finite value (`nonfinite_policy::stop`).
  [[nodiscard]] bool stopped() const noexcept { return stopped_; }
  /// Mode A: the consensus point z of the last round (the parameters every rank restarts from).
  [[nodiscard]] const vector<S>& consensus_point() const noexcept { return z_; }
  /// Mode A: the current penalty ρ.
  [[nodiscard]] double penalty() const noexcept { return penalty_; }

  /// Forgets all run state (base state, curvature, velocity, counters; an estimate in flight is
  /// waited for and dropped); keeps options and policies. With several ranks, every rank must
  /// reset together: the next step repeats the collective set-up.
  void reset() {
    pending_.reset();
    group_.reset();
    initialized_ = false;
    stopped_ = false;
    finished_ = false;
    curvature_rank_ = false;
    requests_ = 0;
    resume_ = {};
    summary_ = {};
    basis_.resize(0, 0);
    eigenvalues_.resize(0);
    rho_.resize(0);
    scale_ = 1.0;
    anchor_.resize(0);
  }

  /// Puts an estimate still in flight in use and, under `split_schedule`, releases the
  /// curvature ranks (their `optimize` returns). `optimize` calls it at its end; call it
  /// yourself when you drive `step` directly on the trainers. Idempotent.
  void finish() {
    if (initialized_) finish_schedule();
  }

  /// Saves this rank's state to the checkpoint directory `dir` (created if needed) as a
  /// checkpoint of the current step, with the parameters `x` and the caller's `position` in the
  /// data (see `data_position`), and returns once every rank's file is written and the
  /// checkpoint is committed. A collective: every rank of the job calls it at the same step.
  ///
  /// What is saved (see `dho2/checkpoint/optimizer_state.hpp` for the sections): x as this rank
  /// holds it (all n entries; in mode S every rank holds the same x after the all-gather), the
  /// base optimizer's state, the Newton velocity (anchor, decay, coefficients), the retained
  /// eigenpairs (this rank's rows of V), the base-step scale, in mode A the consensus point,
  /// dual, penalty and local step counter, the summary, and the number of curvature requests
  /// made (the position in the estimator's RNG stream), so that `load_checkpoint` into a fresh
  /// optimizer with the same options and policies continues bit for bit. Files and commit
  /// protocol: `dho2/checkpoint/directory.hpp`; format: `dho2/checkpoint/file.hpp`.
  ///
  /// Under `split_schedule` the trainers call it (at the same step) and the curvature ranks,
  /// which are inside `optimize` serving estimates, join it when the first trainer tells them:
  /// every rank of the job writes its file (world rank numbering; a curvature rank saves its
  /// RNG stream position and summary) and the commit is agreed over the whole job.
  ///
  /// Preconditions, checked before any collective (so every rank throws alike): no curvature
  /// estimate is in flight (background or split schedule with staleness s > 0: not between the
  /// step that starts an estimate and the step it is put in use — save before or after;
  /// `estimate_in_flight()` tells; throws `checkpoint_error` naming the steps otherwise);
  /// `x.size()` is the parameter count and `position` is non-negative (else
  /// `invalid_options`). Before the first step it runs the first step's collective set-up.
  /// Throws `checkpoint_error` on every rank if any rank fails to write its file or rank 0 fails
  /// to commit; the previous checkpoint in `dir` then stays the committed one. Saving twice at
  /// one step replaces that step's files.
  void save_checkpoint(const std::filesystem::path& dir, const_vector_ref<S> x,
                       data_position position = {}) {
    prepare_checkpoint(dir, x);
    detail::require(position.epoch >= 0, "data_position.epoch", position.epoch, ">= 0");
    detail::require(position.batch >= 0, "data_position.batch", position.batch, ">= 0");
    if (pending_) {
      throw checkpoint_error(
          "checkpoint directory '" + dir.string() + "': cannot save after step call " +
          std::to_string(summary_.iterations) + ": the curvature estimate of the snapshot " +
          "before step " + std::to_string(pending_->snapshot_step) + " is in flight until step " +
          std::to_string(pending_->ready_step) + "; save at a step where no estimate is in flight");
    }
    if constexpr (placement == curvature_placement::dedicated_ranks) {
      if (comm().rank() == 0) announce_checkpoint(dir);
    }
    commit_checkpoint(dir, capture(x, position), summary_.iterations);
  }

  /// Loads the checkpoint committed in `dir` (see `save_checkpoint`) into this optimizer and
  /// `x`, and returns the data position saved with it. A collective: every rank calls it. The
  /// optimizer must have the options and policies of the job that saved (its world size, rank,
  /// partition and parameter count too); a fresh optimizer then continues exactly as the saved
  /// one would have. Throws `checkpoint_error` on every rank, changing neither the optimizer's
  /// state nor `x` nor any file, when any rank's manifest or file is missing or defective (the
  /// message names the file and the defect: wrong magic, unknown version, checksum mismatch,
  /// truncation, a missing section, a size that does not match, or n, world size, rank,
  /// partition or options different from this job's); `invalid_options` for a wrong `x.size()`.
  /// Before the first step it runs the first step's collective set-up. Under `split_schedule`
  /// every rank calls it, the curvature ranks before their `optimize`. An estimate in flight is
  /// dropped. The next `optimize` call resumes at the
  /// returned position (see `resume_position`); a loop driving `step` itself resumes its batcher
  /// there (`begin_epoch(position.epoch)`, then batch `position.batch`).
  data_position load_checkpoint(const std::filesystem::path& dir, vector_ref<S> x) {
    prepare_checkpoint(dir, x);
    snapshot_type snap;
    std::string error;
    try {
      const checkpoint_identity job = checkpoint_id(summary_.iterations);
      const checkpoint_reader manifest = read_checkpoint_manifest(dir);
      manifest.expect(job, false);
      const index step = manifest.identity().step;
      const checkpoint_reader file(checkpoint_rank_file(dir, job.rank, step));
      file.expect(job, true);
      if (file.identity().step != step) {
        file.fail("step " + std::to_string(file.identity().step) + " differs from the step " +
                  std::to_string(step) + " the manifest commits");
      }
      snap.read(file, n_, state_.size, consensus);
    } catch (const std::exception& e) {
      error = e.what();
    }
    if (!all_ranks_succeeded(error.empty())) {
      throw checkpoint_error(error.empty() ? "checkpoint directory '" + dir.string() +
                                                 "': not loaded: another rank could not load "
                                                 "its file"
                                           : error);
    }
    const data_position position = snap.position;
    restore(std::move(snap), x);
    resume_ = position;
    return position;
  }

  /// Where the next `optimize` call starts: the data position of the last `load_checkpoint`
  /// until that call, epoch 0 batch 0 otherwise.
  [[nodiscard]] data_position resume_position() const noexcept { return resume_; }

  /// Whether a curvature estimate started on a snapshot is still to be put in use (background
  /// schedule with staleness s > 0, for the s steps after it starts; under `split_schedule`, a
  /// request out to the curvature ranks). `save_checkpoint` refuses to save meanwhile. Every rank
  /// of the group sees the same value at the same step.
  [[nodiscard]] bool estimate_in_flight() const noexcept { return pending_.has_value(); }

  /// Under `split_schedule`: whether this rank is one of the dedicated curvature ranks (known
  /// after the first step or `optimize` call).
  [[nodiscard]] bool is_curvature_rank() const noexcept { return curvature_rank_; }

  /// Releases the curvature ranks if `finish` was not called (errors are swallowed: a
  /// destructor must not throw; call `finish` to see them).
  ~optimizer() {
    try {
      finish();
    } catch (...) {  // NOLINT(bugprone-empty-catch): nothing useful to do in a destructor
    }
  }
  /// Not copyable or movable: a background estimate refers to the optimizer that started it.
  optimizer(const optimizer&) = delete;
  /// Not copyable or movable.
  optimizer& operator=(const optimizer&) = delete;

  /// One FOSI step on `batch`, estimating curvature on the same batch when the schedule says so.
  template <differentiable_model M>
  step_status step(const M& model, vector_ref<S> x, const model_batch_t<M>& batch) {
    return step(model, x, batch, batch);
  }

  /// One FOSI step on `batch`; a curvature estimate due before it uses `curvature_batch`.
  /// Throws `dho2::invalid_options` (changing nothing) when the options do not fit the model or
  /// `x` has the wrong length; never throws for numerical trouble (see `step_status`).
  template <differentiable_model M>
  step_status step(const M& model, vector_ref<S> x, const model_batch_t<M>& batch,
                   const model_batch_t<M>& curvature_batch) {
    static_assert(std::is_same_v<model_scalar_t<M>, S>,
                  "DHO2: optimizer<S>: the model's scalar_type must be S");
    initialize(model, x);
    last_estimated_ = false;
    last_loss_ = std::numeric_limits<double>::quiet_NaN();
    if (stopped_) return step_status::stopped;
    const index t = summary_.iterations;
    if (opts_.use_curvature) {
      schedule_estimates(model, consensus ? const_vector_ref<S>(z_) : const_vector_ref<S>(x),
                         curvature_batch, t);
      if (stopped_) return step_status::stopped;
    }
    ++summary_.iterations;

    if constexpr (consensus) {
      return local_step(model, x, batch);
    }
    const auto [local_loss, weight] = local_loss_and_gradient(model, x, batch);
    // One small all-reduce agrees on the global loss and on whether any rank saw a non-finite
    // value, so every rank takes or skips the step together.
    std::array<double, 4> agreed{weight * local_loss, weight, std::isfinite(local_loss) ? 0.0 : 1.0,
                                 detail::all_finite(grad_) ? 0.0 : 1.0};
    if (distributed()) communicate([&] { comm().all_reduce_sum(std::span<double>(agreed)); });
    last_loss_ = agreed[1] > 0.0 ? agreed[0] / agreed[1] : local_loss;
    if (agreed[2] != 0.0) return reject(step_status::skipped_nonfinite_loss, stop_timing::now);
    if (agreed[3] != 0.0) {
      return reject(step_status::skipped_nonfinite_gradient, stop_timing::now);
    }

    const auto t1 = clock::now();
    const double comm_before = summary_.communication_seconds;
    if (distributed()) {
      // g[I_p] = Σ_q (w_q / W) g_q[I_p]: the global mean gradient, on this rank's shard only.
      grad_ *= static_cast<S>(weight / agreed[1]);
      communicate([&] {
        comm().reduce_scatter_sum(std::span<const S>(grad_.data(), span_size(n_)),
                                  std::span<S>(shard_grad_.data(), span_size(state_.size)),
                                  std::span<const index>(offsets_));
      });
      update(x, shard_grad_);
      // delta_ now holds the new x[I_p]; every rank needs the whole vector.
      communicate([&] {
        comm().all_gather(std::span<const S>(delta_.data(), span_size(state_.size)),
                          std::span<S>(x.data(), span_size(n_)), std::span<const index>(offsets_));
      });
    } else {
      update(x, grad_);
    }
    // Communication is booked separately.
    summary_.update_seconds +=
        seconds(t1, clock::now()) - (summary_.communication_seconds - comm_before);
    ++summary_.steps;
    return step_status::taken;
  }

  /// Whether a curvature estimate ran before the last step call.
  [[nodiscard]] bool last_step_estimated() const noexcept { return last_estimated_; }
  /// Loss on the batch at the parameters before the last step call.
  [[nodiscard]] double last_loss() const noexcept { return last_loss_; }

  // (clang-format 14 would put the requires-clause and the name on one line)
  // clang-format off
  /// Runs `epochs` epochs over `batches` (a `batch_source` of the model's batches), calling the
  /// callbacks' hooks (see `dho2/callbacks/events.hpp`), and returns the summary. Stops early when
  /// a callback asks or on a non-finite value with `nonfinite_policy::stop`. After
  /// `load_checkpoint` the first call resumes at the loaded `data_position` (`resume_position`)
  /// and runs to the end of epoch `epochs` − 1, so `epochs` is the run's total either way.
  template <differentiable_model M, class Batches, class... Callbacks>
    requires batch_source<Batches, model_batch_t<M>>
  summary optimize(const M& model, vector_ref<S> x, Batches& batches, index epochs,
                   Callbacks&&... callbacks) {
    // clang-format on
    detail::require(epochs >= 0, "epochs", epochs, ">= 0");
    const index per_epoch = batches.num_batches();
    initialize(model, x);
    const auto run_start = clock::now();
    const double seconds_before = summary_.total_seconds;
    (detail::call_on_begin(callbacks, run_info{model.num_parameters(), epochs, per_epoch}), ...);
    model_batch_t<M> batch{};
    bool stop = false;
    if (curvature_rank_) {
      serve(model, batches);
      summary_.total_seconds = seconds_before + seconds(run_start, clock::now());
      summary_.termination = termination_type::completed;
      summary_.message =
          "served " + std::to_string(summary_.curvature_estimates) + " curvature estimates";
      (detail::call_on_end(callbacks, summary_), ...);
      return summary_;
    }
    data_position start = std::exchange(resume_, data_position{});
    if (start.batch >= per_epoch) start = {start.epoch + 1, 0};
    for (index e = start.epoch; e < epochs && !stop; ++e) {
      batches.begin_epoch(e);
      double loss_sum = 0.0;
      index loss_count = 0;
      const index first = e == start.epoch ? start.batch : 0;
      index done = first;
      for (index i = first; i < per_epoch && !stop; ++i) {
        batch_epoch_ = e;
        batch_index_ = i;
        fill_slice(batches, i, comm().rank(), comm().size(), batch);
        const index iteration = summary_.iterations;
        const step_status st = step(model, x, batch);
        ++done;
        if (st == step_status::taken) {
          loss_sum += last_loss_;
          ++loss_count;
        }
        const step_info<S> info{e,          i,  per_epoch,       iteration,
                                last_loss_, st, last_estimated_, seconds(run_start, clock::now()),
                                x};
        bool asked = (detail::call_on_step(callbacks, info) | ... | false);
        // A stop asked on one rank must stop every rank, or the others would wait in the next
        // collective; agreed only when some callback can ask at a step.
        if constexpr ((detail::can_stop_on_step<Callbacks, step_info<S>> || ...)) {
          asked = agree_on_stop(asked);
        }
        stop = asked || st == step_status::stopped;
      }
      if (stopped_ || done < per_epoch) break;  // an epoch cut short is not a completed epoch
      epoch_info<S> info{e,
                         epochs,
                         summary_.iterations,
                         loss_count > 0 ? loss_sum / static_cast<double>(loss_count)
                                        : std::numeric_limits<double>::quiet_NaN(),
                         seconds(run_start, clock::now()),
                         x,
                         {}};
      summary_.epochs = e + 1;
      summary_.final_loss = info.train_loss;
      if (agree_on_stop((detail::call_on_epoch_end(callbacks, info) | ... | false))) stop = true;
    }
    finish_schedule();
    summary_.total_seconds = seconds_before + seconds(run_start, clock::now());
    if (stopped_) {
      summary_.termination = termination_type::numerical_failure;
    } else if (stop) {
      summary_.termination = termination_type::stopped_by_callback;
      summary_.message = "a callback asked to stop";
    } else {
      summary_.termination = termination_type::completed;
      summary_.message = "all " + std::to_string(epochs) + " epochs done";
    }
    (detail::call_on_end(callbacks, summary_), ...);
    return summary_;
  }

 private:
  using clock = std::chrono::steady_clock;
  static double seconds(clock::time_point a, clock::time_point b) {
    return std::chrono::duration<double>(b - a).count();
  }

  void validate_model_independent() const {
    // n-dependent constraints are checked at the first step; use a large n here.
    opts_.validate(std::numeric_limits<index>::max());
  }

  // Every rank must run with the same options and parameter count; checked with one broadcast
  // and one all-reduce before any other collective, so all ranks throw the same error.
  void check_agreement(index n) {
    const auto fields = detail::option_fields(opts_, n);
    detail::check_fields_agree(policies_.transport, fields);
  }

  // A partitioner's result must be P + 1 non-decreasing offsets from 0 to n (a user-written one
  // may get it wrong; every rank computes the same offsets, so every rank throws alike).
  static void check_offsets(const std::vector<index>& offsets, index n, int ranks) {
    detail::require(offsets.size() == static_cast<std::size_t>(ranks) + 1,
                    "partitioner offsets size", offsets.size(),
                    "ranks + 1 = " + std::to_string(ranks + 1));
    detail::require(offsets.front() == 0, "partitioner offsets[0]", offsets.front(), "0");
    detail::require(offsets.back() == n, "partitioner offsets[ranks]", offsets.back(),
                    "n = " + std::to_string(n));
    for (std::size_t r = 0; r + 1 < offsets.size(); ++r) {
      detail::require(offsets[r] <= offsets[r + 1],
                      "partitioner offsets[" + std::to_string(r + 1) + "]", offsets[r + 1],
                      ">= offsets[" + std::to_string(r) + "] = " + std::to_string(offsets[r]));
    }
  }

  template <class M>
  void initialize(const M& model, const_vector_ref<S> x) {
    const index n = model.num_parameters();
    detail::require(x.size() == n, "parameter vector size", x.size(),
                    "equal to model.num_parameters() = " + std::to_string(n));
    if (initialized_) {
      detail::require(n == n_, "model.num_parameters()", n,
                      "unchanged since the first step (" + std::to_string(n_) + ")");
      return;
    }
    setup(x);
  }

  // The collective set-up of the first step (or of a checkpoint call before it) for the n =
  // x.size() parameters x.
  void setup(const_vector_ref<S> x) {
    const index n = x.size();
    const int world = policies_.transport.size();
    if (world > 1) check_agreement(n);
    setup_groups(world);
    ranks_ = comm().size();
    opts_.validate(n);
    offsets_ = policies_.partitioner.partition(n, ranks_);
    check_offsets(offsets_, n, ranks_);
    const auto r = static_cast<std::size_t>(comm().rank());
    shard_ = {n, offsets_[r], offsets_[r + 1] - offsets_[r]};
    state_ = consensus ? shard_layout{n, 0, n} : shard_;
    if (curvature_rank_) state_ = {n, shard_.offset, 0};  // keeps no optimizer state
    n_ = n;
    base_state_ = policies_.base.template init<S>(state_.size);
    grad_.resize(curvature_rank_ ? 0 : n);
    shard_grad_.resize(sharded_update() ? state_.size : 0);
    delta_.resize(state_.size);
    basis_.resize(state_.size, 0);
    penalty_ = policies_.admm.penalty();
    if constexpr (consensus) {
      z_ = x;
      dual_ = vector<S>::Zero(n);
      local_steps_ = 0;
      pending_stop_ = false;
    }
    eigenvalues_.resize(0);
    rho_.resize(0);
    scale_ = 1.0;
    clip_ = opts_.clip.value_or(default_clip_for<base_type>());
    anchor_.resize(0);
    anchor_decay_ = 0.0;
    coeff_velocity_.resize(0);
    anchor_projection_.resize(0);
    summary_ = {};
    initialized_ = true;
    update_memory_report(0);
  }

  // The mean loss over this rank's slice of `batch` and its weight in the global mean
  // (`detail::batch_weight`).
  struct weighted_loss {
    double loss;
    double weight;
  };

  // Loss and gradient (into grad_) over this rank's slice, booked as gradient time; an empty
  // slice contributes nothing: loss 0, weight 0, zero gradient.
  template <class M>
  weighted_loss local_loss_and_gradient(const M& model, const_vector_ref<S> x,
                                        const model_batch_t<M>& batch) {
    const auto t0 = clock::now();
    const double weight = detail::batch_weight(model, batch);
    double loss = 0.0;
    if (weight > 0.0) {
      loss = static_cast<double>(model.loss_and_gradient(x, batch, grad_));
    } else {
      grad_.setZero();
    }
    summary_.gradient_seconds += seconds(t0, clock::now());
    return {loss, weight};
  }

  // When a step rejected under `nonfinite_policy::stop` stops the run: at once (mode S, where
  // all ranks agreed on the non-finite value), or at the next consensus round (mode A, where
  // the ranks learn of it).
  enum class stop_timing { now, next_round };

  // Books a step skipped for a non-finite loss or gradient (`why`) and returns `why`; under
  // `nonfinite_policy::stop`, stops the run (`when`), says why, and returns `stopped`.
  step_status reject(step_status why, stop_timing when) {
    if (why == step_status::skipped_nonfinite_loss) ++summary_.skipped_nonfinite_loss;
    if (why == step_status::skipped_nonfinite_gradient) ++summary_.skipped_nonfinite_gradient;
    if (opts_.on_nonfinite != nonfinite_policy::stop) return why;
    summary_.message = std::string("non-finite ") +
                       (why == step_status::skipped_nonfinite_loss ? "loss" : "gradient") +
                       " at step " + std::to_string(summary_.iterations - 1);
    if (when == stop_timing::now) {
      stopped_ = true;
      summary_.termination = termination_type::numerical_failure;
      summary_.message += "; parameters are those before it";
    } else {
      pending_stop_ = true;
      summary_.message +=
          " on rank " + std::to_string(comm().rank()) + "; parameters are the last consensus";
    }
    return step_status::stopped;
  }

  // The FOSI update of this rank's shard (DESIGN §2.1); K = 0 is the base step exactly. `g` is
  // the shard's gradient and is overwritten. On one rank x[I_p] is updated in place; on several,
  // delta_ receives the new x[I_p] for the all-gather.
  void update(vector_ref<S> x, vector<S>& gradient) {
    vector_ref<S> g(gradient.head(state_.size));
    vector_ref<S> delta(delta_);
    auto xs = x.segment(state_.offset, state_.size);
    const index k = basis_.cols();
    if (k == 0) {
      policies_.base.step(base_state_, const_vector_ref<S>(g), delta);
      commit(xs);
      return;
    }
    // V is stored n × K (each eigenvector contiguous), so Vg is K dot products and Vᵀc is K
    // axpys: both stream V once at full bandwidth.
    Eigen::VectorXd c = (basis_.transpose() * g).template cast<double>();
    all_reduce(c);
    // Newton velocity in coefficient space: V u = δ·(V u₀) + a.
    const double beta = opts_.momentum;
    switch (opts_.momentum_form) {
      case momentum_kind::ema:
        anchor_decay_ *= beta;
        coeff_velocity_ = beta * coeff_velocity_ + (1.0 - beta) * c;
        break;
      case momentum_kind::heavy_ball:
        anchor_decay_ *= beta;
        coeff_velocity_ = beta * coeff_velocity_ + c;
        break;
      case momentum_kind::none:
        anchor_decay_ = 0.0;
        coeff_velocity_ = c;
        break;
    }
    const Eigen::VectorXd newton =
        rho_.cwiseProduct(anchor_decay_ * anchor_projection_ + coeff_velocity_);
    // g₂ = g − Vᵀc, in place: the full gradient is not needed again this step.
    g.noalias() -= basis_ * c.cast<S>();
    policies_.base.step(base_state_, const_vector_ref<S>(g), delta);
    Eigen::VectorXd p = (basis_.transpose() * delta_).template cast<double>();
    all_reduce(p);
    // Δx = s(b − Vᵀ V b) − α Vᵀ(newton) = s·b − Vᵀ(s·p + α·newton).
    const Eigen::VectorXd coef = scale_ * p + opts_.alpha * newton;
    if (scale_ != 1.0) delta_ *= static_cast<S>(scale_);
    delta_.noalias() -= basis_ * coef.cast<S>();
    commit(xs);
  }

  template <class Block>
  void commit(Block&& xs) {
    if (sharded_update()) {
      delta_ += xs;
    } else {
      xs += delta_;
    }
  }

  // Several ranks share collectives (the estimate, the agreement checks).
  [[nodiscard]] bool distributed() const noexcept { return ranks_ > 1; }
  // Mode S over several ranks: the update works on shards and reduces its projections.
  [[nodiscard]] bool sharded_update() const noexcept { return !consensus && ranks_ > 1; }

  static std::size_t span_size(index n) { return static_cast<std::size_t>(n); }

  // Runs a transport call and books its time.
  template <class F>
  void communicate(F&& f) {
    const auto t0 = clock::now();
    std::forward<F>(f)();
    summary_.communication_seconds += seconds(t0, clock::now());
  }

  // Sums the partial projections of a sharded update (mode S over several ranks only).
  void all_reduce(Eigen::VectorXd& v) {
    if (!sharded_update()) return;
    communicate([&] { comm().all_reduce_sum(std::span<double>(v.data(), span_size(v.size()))); });
  }

  // The transport of this rank's working group: the trainers' or the curvature ranks' group
  // under the split schedule, the whole job otherwise.
  typename Policies::transport_type& comm() noexcept {
    return group_ ? *group_ : policies_.transport;
  }

  [[nodiscard]] estimate_request next_request() {
    const index m =
        opts_.lanczos_steps > 0 ? opts_.lanczos_steps : default_lanczos_steps(opts_.k, opts_.l, n_);
    return {opts_.k, opts_.l, m, opts_.seed, static_cast<std::uint64_t>(requests_++)};
  }

  // Runs the estimator at x on this rank's slice of the curvature batch, with the basis sharded
  // over `offsets` of the working group (collective over it when `collective`). Touches no
  // member that training uses, so it may run on a background thread with collective = false.
  // Seconds of transport calls inside an estimate: within its HVPs, and elsewhere (the
  // reductions of Lanczos).
  struct estimate_communication {
    double hvp = 0.0, other = 0.0;
  };

  template <class M>
  static constexpr hvp_source hvp_source_of() {
    return hvp_model<M> ? hvp_source::model : hvp_source::finite_difference;
  }

  template <class M>
  eigen_estimate run_estimate(const M& model, const_vector_ref<S> x, const model_batch_t<M>& batch,
                              const estimate_request& request, bool collective,
                              estimate_communication* comm_out) {
    auto& t = comm();
    const std::vector<index>& offsets = offsets_;
    const shard_layout shard = shard_;
    estimate_communication comm_seconds;
    bool in_hvp = false;
    auto timed = [&](auto&& f) {
      const auto t0 = clock::now();
      f();
      (in_hvp ? comm_seconds.hvp : comm_seconds.other) += seconds(t0, clock::now());
    };
    // Each rank's product is scaled by w_p / W so the reduce-scatter sums to the Hessian of
    // the global mean loss over the curvature batch.
    const double weight = detail::batch_weight(model, batch);
    double total_weight = weight;
    if (collective) timed([&] { t.all_reduce_sum(std::span<double>(&total_weight, 1)); });
    const auto scale = static_cast<S>(total_weight > 0.0 ? weight / total_weight : 0.0);
    vector<S> v(n_), hv(n_), part(shard.size);
    hvp_operator op(
        shard,
        [&](Eigen::Ref<const Eigen::VectorXd> in, Eigen::Ref<Eigen::VectorXd> out) {
          in_hvp = true;
          const struct leave_hvp {
            bool& flag;
            ~leave_hvp() { flag = false; }
          } leave{in_hvp};
          if (collective) {
            part = in.template cast<S>();
            timed([&] {
              t.all_gather(std::span<const S>(part.data(), span_size(shard.size)),
                           std::span<S>(v.data(), span_size(n_)), std::span<const index>(offsets));
            });
          } else {
            v = in.template cast<S>();
          }
          if (weight > 0.0) {
            if constexpr (hvp_model<M>) {
              model.hessian_vector_product(x, batch, v, hv);
            } else {
              finite_difference_hvp(model, x, batch, v, hv);
            }
          } else {
            hv.setZero();
          }
          double bad = detail::all_finite(hv) ? 0.0 : 1.0;
          if (collective) timed([&] { t.all_reduce_sum(std::span<double>(&bad, 1)); });
          if (bad != 0.0) {
            out.setZero();
            return false;
          }
          if (collective) {
            hv *= scale;
            timed([&] {
              t.reduce_scatter_sum(std::span<const S>(hv.data(), span_size(n_)),
                                   std::span<S>(part.data(), span_size(shard.size)),
                                   std::span<const index>(offsets));
            });
            out = part.template cast<double>();
          } else {
            out = hv.template cast<double>();
          }
          return true;
        },
        [&](std::span<double> values) {
          if (collective) timed([&] { t.all_reduce_sum(values); });
        });
    eigen_estimate est = policies_.estimator.estimate(op, request);
    if (!est.eigenvalues.allFinite() || !est.eigenvectors.allFinite()) est.failed = true;
    if (comm_out != nullptr) *comm_out = comm_seconds;
    return est;
  }

  // Counts an estimate in the summary: estimates, HVPs, failures, and its time. An estimate this
  // rank took part in (`here`: the communication inside it) adds to this rank's time split —
  // HVP, other estimate work and communication, disjoint; one that ran beside training (a
  // background thread, the curvature ranks) adds to offloaded_estimate_seconds only.
  void book_estimate(const eigen_estimate& est, const estimate_communication* here) {
    ++summary_.curvature_estimates;
    summary_.hvps += est.hvps;
    if (est.failed) ++summary_.failed_estimates;
    if (here != nullptr) {
      summary_.hvp_seconds += std::max(0.0, est.hvp_seconds - here->hvp);
      summary_.estimate_other_seconds += std::max(0.0, est.seconds - est.hvp_seconds - here->other);
      summary_.communication_seconds += here->hvp + here->other;
    } else {
      summary_.offloaded_estimate_seconds += est.seconds;
    }
  }

  // Books an estimate (of the snapshot taken before step `snapshot_step`, put in use before
  // step t) in the summary and, unless it failed, adopts it.
  void record_estimate(eigen_estimate est, index snapshot_step, index t,
                       const estimate_communication* here) {
    book_estimate(est, here);
    estimate_report report;
    report.step = snapshot_step;
    report.staleness = t - snapshot_step;
    report.eigenvalues = est.eigenvalues;
    report.residuals = est.residuals;
    report.iterations = est.iterations;
    report.hvps = est.hvps;
    report.breakdown = est.breakdown;
    report.hvp_seconds = est.hvp_seconds;
    report.seconds = est.seconds;
    report.failed = est.failed;
    summary_.max_staleness = std::max(summary_.max_staleness, report.staleness);
    if (report.failed) {
      if (opts_.on_nonfinite == nonfinite_policy::stop) {
        stopped_ = true;
        summary_.termination = termination_type::numerical_failure;
        summary_.message = "non-finite Hessian-vector product in the estimate before step " +
                           std::to_string(snapshot_step) + "; parameters are those before it";
      }
    } else {
      if (consensus && distributed()) gather_rows(est);
      adopt(est);
    }
    report.retained = eigenvalues_.size();
    report.scale = scale_;
    summary_.estimates.push_back(std::move(report));
    update_memory_report(est.basis_bytes);
  }

  // An estimate due before step t, run inline (every rank of the group takes part).
  template <class M>
  void estimate(const M& model, const_vector_ref<S> x, const model_batch_t<M>& batch, index t) {
    estimate_communication comm_seconds;
    eigen_estimate est =
        run_estimate(model, x, batch, next_request(), distributed(), &comm_seconds);
    record_estimate(std::move(est), t, t, &comm_seconds);
  }

  // --- schedules: where and when estimates run (inline, background thread, dedicated ranks) ---

  using schedule_type = typename Policies::schedule_type;
  static constexpr curvature_placement placement = schedule_type::placement;
  static constexpr int tag_request = 7101, tag_params = 7102, tag_meta = 7103, tag_values = 7104,
                       tag_vectors = 7105, tag_checkpoint = 7106;

  // Splits the job into trainers and curvature ranks for the split schedule; checks that the
  // schedule fits the job. Runs after the agreement check, so every rank throws alike.
  void setup_groups(int world) {
    const index staleness = policies_.schedule.staleness();
    detail::require(staleness >= 0, "schedule staleness", staleness, ">= 0");
    if (opts_.use_curvature && staleness > 0) {
      detail::require(staleness < opts_.refresh_every, "schedule staleness", staleness,
                      "< options.refresh_every = " + std::to_string(opts_.refresh_every) +
                          " (at most one estimate in flight)");
    }
    if constexpr (placement == curvature_placement::background_thread) {
      detail::require(world == 1, "transport size", world,
                      "1 (background_schedule runs on one process; use split_schedule)");
    }
    if constexpr (placement == curvature_placement::dedicated_ranks) {
      static_assert(!consensus, "DHO2: split_schedule requires mode S (synchronous_admm)");
      const int c = policies_.schedule.curvature_ranks();
      detail::require(c >= 1 && c < world, "split_schedule::curvature_group", c,
                      "1 <= c < transport size = " + std::to_string(world));
      if (late_policy_of(policies_.schedule) == late_estimate_policy::keep_previous) {
        detail::require(can_poll(policies_.transport), "split_schedule::on_late", "keep_previous",
                        "a transport that can poll (dho2::polling_transport)");
      }
      const int rank = policies_.transport.rank();
      curvature_rank_ = rank >= world - c;
      trainers_ = world - c;
      group_.emplace(policies_.transport.split(curvature_rank_ ? 1 : 0, rank));
    }
  }

  // Before step t: put a pending estimate in use when due, then start the one the schedule
  // names.
  template <class M>
  void schedule_estimates(const M& model, const_vector_ref<S> x, const model_batch_t<M>& batch,
                          index t) {
    const bool due = policies_.schedule.estimate_before(t, opts_.warmup, opts_.refresh_every);
    if (due) summary_.hvp = hvp_source_of<M>();
    if (pending_ && t >= pending_->ready_step) {
      if (pending_ready()) {
        finish_pending(t);
      } else if (t == pending_->ready_step) {
        ++summary_.late_estimates;  // late_estimate_policy::keep_previous: go on without it
      }
    }
    if (stopped_ || !due) return;
    if (pending_) {  // the previous estimate is still late: at most one is in flight
      ++summary_.skipped_estimates;
      return;
    }
    last_estimated_ = true;
    const index s = policies_.schedule.staleness();
    if constexpr (placement == curvature_placement::inline_estimate) {
      estimate(model, x, batch, t);
    } else if constexpr (placement == curvature_placement::background_thread) {
      if (s == 0) {
        estimate(model, x, batch, t);
        return;
      }
      auto snapshot = std::make_shared<std::pair<vector<S>, model_batch_t<M>>>(x, batch);
      const estimate_request request = next_request();
      pending_.emplace(pending_estimate{
          t, t + s, std::async(std::launch::async, [this, &model, snapshot, request] {
            return run_estimate(model, snapshot->first, snapshot->second, request, false, nullptr);
          })});
    } else {
      request_remote(x, t);
      if (s == 0) finish_pending(t);
    }
  }

  // Whether the pending estimate, now due, is to be put in use: always under
  // late_estimate_policy::wait (finish_pending waits for it); under keep_previous, whether it
  // has arrived — on the trainers, as the first trainer sees it, so all of them agree.
  bool pending_ready() {
    if (late_policy_of(policies_.schedule) == late_estimate_policy::wait) return true;
    if constexpr (placement == curvature_placement::background_thread) {
      return pending_->result.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
    } else if constexpr (placement == curvature_placement::dedicated_ranks &&
                         polling_transport<typename Policies::transport_type>) {
      std::uint8_t ready = 0;
      if (comm().rank() == 0) ready = policies_.transport.poll(trainers_, tag_meta) ? 1 : 0;
      if (distributed()) communicate([&] { comm().broadcast(writable_bytes_of(&ready, 1), 0); });
      return ready != 0;
    } else {
      return true;  // not reached: setup_groups requires a polling transport for keep_previous
    }
  }

  void finish_pending(index t) {
    pending_estimate p = std::move(*pending_);
    pending_.reset();
    eigen_estimate est;
    if constexpr (placement == curvature_placement::dedicated_ranks) {
      // No time limit while the curvature ranks are alive (a lost one makes the poll throw).
      wait_for_message(policies_.transport, trainers_, tag_meta);
      est = receive_remote();
    } else {
      est = p.result.get();
    }
    record_estimate(std::move(est), p.snapshot_step, t, nullptr);
  }

  template <class T>
  static std::span<const std::byte> bytes_of(const T* data, std::size_t count) {
    return std::as_bytes(std::span<const T>(data, count));
  }
  template <class T>
  static std::span<std::byte> writable_bytes_of(T* data, std::size_t count) {
    return std::as_writable_bytes(std::span<T>(data, count));
  }

  // Requests from the first trainer to the curvature ranks: a header (kind, step, and two
  // numbers that depend on the kind) sent to every curvature rank.
  enum class request_kind { finish = 0, estimate = 1, checkpoint = 2 };
  using request_header = std::array<double, 4>;

  void send_request(request_kind kind, double a, double b) {
    const request_header header{static_cast<double>(kind), static_cast<double>(summary_.iterations),
                                a, b};
    auto& world = policies_.transport;
    for (int q = trainers_; q < world.size(); ++q) {
      world.send(bytes_of(header.data(), header.size()), q, tag_request);
    }
  }

  // Trainer side: the first trainer asks for an estimate at the parameters of step t, on the
  // global batch at (epoch, batch), and sends the parameters to the first curvature rank.
  void request_remote(const_vector_ref<S> x, index t) {
    if (comm().rank() == 0) {
      send_request(request_kind::estimate, static_cast<double>(batch_epoch_),
                   static_cast<double>(batch_index_));
      policies_.transport.send(bytes_of(x.data(), span_size(n_)), trainers_, tag_params);
    }
    pending_.emplace(pending_estimate{t, t + policies_.schedule.staleness(), {}});
  }

  // Trainer side: the first trainer tells the curvature ranks to join a checkpoint in `dir`.
  void announce_checkpoint(const std::filesystem::path& dir) {
    const std::string path = dir.string();
    send_request(request_kind::checkpoint, static_cast<double>(path.size()), 0.0);
    auto& world = policies_.transport;
    for (int q = trainers_; q < world.size(); ++q) {
      world.send(bytes_of(path.data(), path.size()), q, tag_checkpoint);
    }
  }

  // Trainer side: eigenvalues from the first curvature rank, and from every curvature rank the
  // columns of V this trainer owns.
  eigen_estimate receive_remote() {
    auto& world = policies_.transport;
    std::array<double, 10> meta{};
    world.recv(writable_bytes_of(meta.data(), meta.size()), trainers_, tag_meta);
    eigen_estimate est;
    const auto k = static_cast<index>(meta[0]);
    est.num_largest = static_cast<index>(meta[1]);
    est.num_smallest = static_cast<index>(meta[2]);
    est.iterations = static_cast<index>(meta[3]);
    est.hvps = static_cast<index>(meta[4]);
    est.breakdown = meta[5] != 0.0;
    est.failed = meta[6] != 0.0;
    est.seconds = meta[7];
    est.hvp_seconds = meta[8];
    est.basis_bytes = 0;  // the basis lived on the curvature ranks
    Eigen::VectorXd values(2 * k);
    if (k > 0)
      world.recv(writable_bytes_of(values.data(), span_size(2 * k)), trainers_, tag_values);
    est.eigenvalues = values.head(k);
    est.residuals = values.tail(k);
    est.eigenvectors.resize(k, shard_.size);
    if (k > 0 && !est.failed) {
      const auto curv = policies_.partitioner.partition(n_, policies_.schedule.curvature_ranks());
      for (std::size_t q = 0; q + 1 < curv.size(); ++q) {
        const index lo = std::max(curv[q], shard_.offset);
        const index hi = std::min(curv[q + 1], shard_.offset + shard_.size);
        if (lo >= hi) continue;
        world.recv(writable_bytes_of(est.eigenvectors.col(lo - shard_.offset).data(),
                                     span_size(k * (hi - lo))),
                   trainers_ + static_cast<int>(q), tag_vectors);
      }
    }
    return est;
  }

  // Curvature side: serve estimate requests until the trainers are done.
  template <class M, class Batches>
  void serve(const M& model, Batches& batches) {
    summary_.hvp = hvp_source_of<M>();
    auto& world = policies_.transport;
    auto& group = comm();
    const int c = group.size();
    const auto trainer_offsets = policies_.partitioner.partition(n_, trainers_);
    vector<S> x(n_);
    model_batch_t<M> batch{};
    index epoch = -1;
    for (;;) {
      // Idle until the next request: a polling wait is free of the transport's timeout, however
      // long the trainers train between estimates.
      request_header header{};
      wait_for_message(world, 0, tag_request);
      world.recv(writable_bytes_of(header.data(), header.size()), 0, tag_request);
      const auto kind = static_cast<request_kind>(static_cast<int>(header[0]));
      if (kind == request_kind::finish) break;
      if (kind == request_kind::checkpoint) {
        // (Trainers can only ask when their base state is checkpointable: save_checkpoint
        // does not compile otherwise.)
        if constexpr (detail::checkpointable_state<typename base_type::template state<S>>) {
          join_checkpoint(x, static_cast<index>(header[1]), static_cast<std::size_t>(header[2]));
        }
        continue;
      }
      if (group.rank() == 0) world.recv(writable_bytes_of(x.data(), span_size(n_)), 0, tag_params);
      group.broadcast(writable_bytes_of(x.data(), span_size(n_)), 0);
      const auto e = static_cast<index>(header[2]);
      if (e != epoch) {
        batches.begin_epoch(e);
        epoch = e;
      }
      fill_slice(batches, static_cast<index>(header[3]), group.rank(), c, batch);
      estimate_communication comm_seconds;
      eigen_estimate est = run_estimate(model, x, batch, next_request(), c > 1, &comm_seconds);
      book_estimate(est, &comm_seconds);
      update_memory_report(est.basis_bytes);
      const index k = est.failed ? 0 : est.eigenvalues.size();
      if (group.rank() == 0) {
        const std::array<double, 10> meta{static_cast<double>(k),
                                          static_cast<double>(est.num_largest),
                                          static_cast<double>(est.num_smallest),
                                          static_cast<double>(est.iterations),
                                          static_cast<double>(est.hvps),
                                          est.breakdown ? 1.0 : 0.0,
                                          est.failed ? 1.0 : 0.0,
                                          est.seconds,
                                          est.hvp_seconds,
                                          static_cast<double>(est.basis_bytes)};
        Eigen::VectorXd values(2 * k);
        if (k > 0) values << est.eigenvalues, est.residuals;
        for (int p = 0; p < trainers_; ++p) {
          world.send(bytes_of(meta.data(), meta.size()), p, tag_meta);
          if (k > 0) world.send(bytes_of(values.data(), span_size(2 * k)), p, tag_values);
        }
      }
      if (k == 0) continue;
      // Re-shard: send each trainer the columns of its shard that this rank holds.
      for (int p = 0; p < trainers_; ++p) {
        const auto pi = static_cast<std::size_t>(p);
        const index lo = std::max(trainer_offsets[pi], shard_.offset);
        const index hi = std::min(trainer_offsets[pi + 1], shard_.offset + shard_.size);
        if (lo >= hi) continue;
        world.send(
            bytes_of(est.eigenvectors.col(lo - shard_.offset).data(), span_size(k * (hi - lo))), p,
            tag_vectors);
      }
    }
  }

  // Curvature side: joins the checkpoint of step `step` the first trainer announced (its
  // directory follows as `length` bytes). A failure is the trainers' to report (their
  // save_checkpoint throws); the curvature ranks keep serving.
  void join_checkpoint(const vector<S>& x, index step, std::size_t length) {
    std::string path(length, '\0');
    policies_.transport.recv(writable_bytes_of(path.data(), length), 0, tag_checkpoint);
    try {
      commit_checkpoint(path, capture(x, {}), step);
    } catch (const checkpoint_error&) {  // NOLINT(bugprone-empty-catch): reported by trainers
    }
  }

  // Trainer side, at the end: consume an estimate still in flight, then release the curvature
  // ranks.
  void finish_schedule() {
    if constexpr (placement == curvature_placement::dedicated_ranks) {
      if (finished_ || curvature_rank_) return;
      if (pending_) finish_pending(summary_.iterations);
      if (comm().rank() == 0) send_request(request_kind::finish, 0.0, 0.0);
      finished_ = true;
    } else {
      if (pending_) finish_pending(summary_.iterations);
    }
  }

  // True on every rank of the working group if any rank asked to stop.
  bool agree_on_stop(bool asked) {
    if (!distributed()) return asked;
    double flag = asked ? 1.0 : 0.0;
    communicate([&] { comm().all_reduce_sum(std::span<double>(&flag, 1)); });
    return flag != 0.0;
  }

  // Fills rank `rank`'s slice of batch i when the source can slice, else the whole batch.
  template <class Batches, class Batch>
  static void fill_slice(Batches& batches, index i, int rank, int ranks, Batch& batch) {
    if constexpr (requires { batches.fill_batch(i, index{0}, index{1}, batch); }) {
      batches.fill_batch(i, static_cast<index>(rank), static_cast<index>(ranks), batch);
    } else {
      batches.fill_batch(i, batch);
    }
  }

  // Applies the eigenvalue floor, swaps in the new V, and re-anchors the Newton velocity.
  void adopt(const eigen_estimate& est) {
    const index count = est.eigenvalues.size();
    const double top = count > 0 ? est.eigenvalues.cwiseAbs().maxCoeff() : 0.0;
    std::vector<index> keep;
    for (index i = 0; i < count; ++i) {
      const double a = std::abs(est.eigenvalues(i));
      if (top > 0.0 && a >= opts_.eigenvalue_floor * top && a > 0.0) keep.push_back(i);
    }
    const auto kept = static_cast<index>(keep.size());
    // Materialise u = δu₀ + Vᵀa with the old V before V changes.
    vector<S> u = vector<S>::Zero(state_.size);
    if (anchor_.size() == state_.size) u = static_cast<S>(anchor_decay_) * anchor_;
    if (basis_.cols() > 0) u.noalias() += basis_ * coeff_velocity_.cast<S>();

    matrix<S> basis(state_.size, kept);
    eigenvalues_.resize(kept);
    num_top_ = 0;
    for (index r = 0; r < kept; ++r) {
      const auto i = keep[static_cast<std::size_t>(r)];
      basis.col(r) = est.eigenvectors.row(i).transpose().template cast<S>();
      eigenvalues_(r) = est.eigenvalues(i);
      if (i < est.num_largest) ++num_top_;  // the largest come first, so these are rows 0..
    }
    basis_ = std::move(basis);
    refresh_inverses();
    anchor_ = std::move(u);
    anchor_decay_ = 1.0;
    coeff_velocity_ = Eigen::VectorXd::Zero(kept);
    anchor_projection_ = (basis_.transpose() * anchor_).template cast<double>();
    all_reduce(anchor_projection_);
  }

  // ρᵢ = 1/|λᵢ + ρ_admm| (ρ_admm = 0 in mode S) and the base-step scale
  // s = clip(max/min of |λ + ρ_admm| over the retained top pairs, 1, c).
  void refresh_inverses() {
    const index kept = eigenvalues_.size();
    rho_.resize(kept);
    double top_max = 0.0;
    double top_min = std::numeric_limits<double>::infinity();
    for (index r = 0; r < kept; ++r) {
      const double shifted = std::abs(eigenvalues_(r) + penalty_);
      rho_(r) = 1.0 / shifted;
      if (r < num_top_) {
        top_max = std::max(top_max, shifted);
        top_min = std::min(top_min, shifted);
      }
    }
    scale_ = (top_max > 0.0) ? std::clamp(top_max / top_min, 1.0, clip_) : 1.0;
  }

  // Mode A: every rank needs whole eigenvectors; the estimate left each rank its shard. The
  // K × shard column-major block of rank r is contiguous at K·offsets[r] in the K × n matrix.
  void gather_rows(eigen_estimate& est) {
    const index k = est.eigenvectors.rows();
    Eigen::MatrixXd full(k, n_);
    std::vector<index> offsets(offsets_.size());
    for (std::size_t i = 0; i < offsets_.size(); ++i) offsets[i] = k * offsets_[i];
    communicate([&] {
      comm().all_gather(
          std::span<const double>(est.eigenvectors.data(), span_size(est.eigenvectors.size())),
          std::span<double>(full.data(), span_size(full.size())), std::span<const index>(offsets));
    });
    est.eigenvectors = std::move(full);
  }

  // Mode A: a local FOSI step on fₚ(x) + (ρ/2)‖x − z + uₚ‖², then a consensus round every τ
  // steps. Non-finite values are handled locally; a stop is agreed at the next round.
  template <class M>
  step_status local_step(const M& model, vector_ref<S> x, const model_batch_t<M>& batch) {
    const double loss = local_loss_and_gradient(model, x, batch).loss;
    const auto t1 = clock::now();
    last_loss_ = loss;
    step_status status = step_status::taken;
    if (pending_stop_) {
      status = step_status::stopped;
    } else if (!std::isfinite(loss)) {
      status = reject(step_status::skipped_nonfinite_loss, stop_timing::next_round);
    } else if (!detail::all_finite(grad_)) {
      status = reject(step_status::skipped_nonfinite_gradient, stop_timing::next_round);
    } else {
      if (penalty_ != 0.0) {
        grad_.array() += static_cast<S>(penalty_) * (x.array() - z_.array() + dual_.array());
      }
      update(x, grad_);
      ++summary_.steps;
    }
    summary_.update_seconds += seconds(t1, clock::now());
    if (++local_steps_ % policies_.admm.local_steps() == 0) consensus_round(x);
    return stopped_ ? step_status::stopped : status;
  }

  // z ← mean(x + u); u ← u + x − z; x ← z; residuals; optional rebalancing of ρ.
  void consensus_round(vector_ref<S> x) {
    vector<S> sum(n_ + 1);
    sum.head(n_) = x + dual_;
    sum(n_) = pending_stop_ ? S{1} : S{0};
    if (distributed()) {
      communicate([&] { comm().all_reduce_sum(std::span<S>(sum.data(), span_size(n_ + 1))); });
    }
    const auto ranks = static_cast<double>(ranks_);
    vector<S> z_new = sum.head(n_) / static_cast<S>(ranks);
    double primal2 = (x - z_new).template cast<double>().squaredNorm();
    if (distributed()) {
      communicate([&] { comm().all_reduce_sum(std::span<double>(&primal2, 1)); });
    }
    admm_round round;
    round.round = static_cast<index>(summary_.admm_rounds.size());
    round.step = summary_.iterations - 1;
    round.primal_residual = std::sqrt(primal2);
    round.dual_residual = penalty_ * std::sqrt(ranks) * (z_new - z_).template cast<double>().norm();
    round.rho = penalty_;
    dual_ += x - z_new;
    z_ = std::move(z_new);
    x = z_;
    const double next =
        policies_.admm.rebalance(round.primal_residual, round.dual_residual, penalty_);
    if (next != penalty_ && next > 0.0 && std::isfinite(next)) {
      dual_ *= static_cast<S>(penalty_ / next);
      penalty_ = next;
      refresh_inverses();
    }
    summary_.admm_rounds.push_back(round);
    if (sum(n_) != S{0}) {
      stopped_ = true;
      summary_.termination = termination_type::numerical_failure;
      if (summary_.message.empty()) {
        summary_.message = "a peer met a non-finite value; parameters are the last consensus";
      }
      x = z_;
    }
  }

  // --- checkpoints ---

  using snapshot_type = optimizer_snapshot<S, typename base_type::template state<S>>;

  // Checks shared by save and load, before any collective; runs the set-up of the first step if
  // needed.
  void prepare_checkpoint(const std::filesystem::path& dir, const_vector_ref<S> x) {
    static_cast<void>(dir);
    if (!initialized_) {
      detail::require(x.size() >= 1, "parameter vector size", x.size(), ">= 1");
      setup(x);
    }
    detail::require(x.size() == n_, "parameter vector size", x.size(),
                    "equal to the number of parameters n = " + std::to_string(n_));
  }

  // Checkpoints span the whole job (under the split schedule the trainers and the curvature
  // ranks): its transport, ranks and size.
  typename Policies::transport_type& job() noexcept { return policies_.transport; }

  // The header of this rank's checkpoint of step `step`: n, world size, rank (in the whole job),
  // partition hash (this group's offsets; under the split schedule both groups'), options hash
  // (options, scalar type, ADMM mode and τ, schedule placement and staleness, effective clip and
  // the base state's fields — not the base optimizer's hyper-parameters, which a resumed run may
  // change).
  checkpoint_identity checkpoint_id(index step) {
    fnv1a64 layout;
    if constexpr (placement == curvature_placement::dedicated_ranks) {
      for (const int ranks : {trainers_, job().size() - trainers_}) {
        for (const index o : policies_.partitioner.partition(n_, ranks)) {
          layout.add_u64(static_cast<std::uint64_t>(o));
        }
      }
    } else {
      for (const index o : offsets_) layout.add_u64(static_cast<std::uint64_t>(o));
    }
    fnv1a64 opts;
    for (const auto& f : detail::option_fields(opts_, n_)) {
      if (f.name == "model.num_parameters()") continue;
      opts.add(f.name).add_u64(std::bit_cast<std::uint64_t>(f.value));
    }
    opts.add(sizeof(S) == sizeof(float) ? "float" : "double")
        .add(consensus ? "consensus_admm" : "synchronous_admm")
        .add_u64(static_cast<std::uint64_t>(policies_.admm.local_steps()))
        .add_u64(static_cast<std::uint64_t>(placement))
        .add_u64(static_cast<std::uint64_t>(policies_.schedule.staleness()))
        .add_u64(static_cast<std::uint64_t>(policies_.schedule.curvature_ranks()))
        .add_u64(std::bit_cast<std::uint64_t>(clip_))
        .add(detail::state_signature<typename base_type::template state<S>>());
    return {n_, job().size(), job().rank(), layout.value(), opts.value(), step};
  }

  // True on every rank of the job when `ok` is true on all of them.
  bool all_ranks_succeeded(bool ok) {
    if (job().size() == 1) return ok;
    double failed = ok ? 0.0 : 1.0;
    communicate([&] { job().all_reduce_sum(std::span<double>(&failed, 1)); });
    return failed == 0.0;
  }

  // Writes this rank's file of the checkpoint of step `step` holding `snap`, then commits the
  // checkpoint with the other ranks of the job (the protocol of dho2/checkpoint/directory.hpp).
  // Collective over the job; throws checkpoint_error on every rank if any rank fails.
  void commit_checkpoint(const std::filesystem::path& dir, const snapshot_type& snap, index step) {
    const checkpoint_identity id = checkpoint_id(step);
    std::string error;
    try {
      std::error_code ec;
      std::filesystem::create_directories(dir, ec);
      if (!std::filesystem::is_directory(dir)) {
        throw checkpoint_error("checkpoint directory '" + dir.string() +
                               "': cannot be created: " + ec.message());
      }
      checkpoint_writer w(id);
      snap.write(w);
      w.write(checkpoint_rank_file(dir, id.rank, id.step));
    } catch (const std::exception& e) {
      error = e.what();
    }
    const std::string not_saved = "checkpoint directory '" + dir.string() +
                                  "': the checkpoint of step " + std::to_string(id.step) +
                                  " was not committed (the previous one stays in use)";
    if (!all_ranks_succeeded(error.empty())) {
      throw checkpoint_error(error.empty() ? not_saved + ": another rank failed to save"
                                           : error + "; " + not_saved);
    }
    if (id.rank == 0) {
      try {
        write_checkpoint_manifest(dir, id);
      } catch (const std::exception& e) {
        error = e.what();
      }
    }
    if (!all_ranks_succeeded(error.empty())) {
      throw checkpoint_error(error.empty() ? not_saved + ": rank 0 failed to write the manifest"
                                           : error + "; " + not_saved);
    }
    remove_stale_checkpoint_files(dir, id.rank, id.step);
  }

  snapshot_type capture(const_vector_ref<S> x, data_position position) const {
    snapshot_type s;
    s.x = x;
    s.base = base_state_;
    s.anchor = anchor_;
    s.anchor_decay = anchor_decay_;
    s.coefficients = coeff_velocity_;
    s.anchor_projection = anchor_projection_;
    s.eigenvalues = eigenvalues_;
    s.inverses = rho_;
    s.eigenvectors = basis_;
    s.scale = scale_;
    s.penalty = penalty_;
    s.num_top = num_top_;
    s.requests = requests_;
    s.local_steps = local_steps_;
    s.stopped = stopped_;
    s.pending_stop = pending_stop_;
    s.batch_epoch = batch_epoch_;
    s.batch_index = batch_index_;
    s.consensus_point = z_;
    s.dual = dual_;
    s.stats = summary_;
    s.position = position;
    return s;
  }

  void restore(snapshot_type s, vector_ref<S> x) {
    pending_.reset();
    x = s.x;
    base_state_ = std::move(s.base);
    anchor_ = std::move(s.anchor);
    anchor_decay_ = s.anchor_decay;
    coeff_velocity_ = std::move(s.coefficients);
    anchor_projection_ = std::move(s.anchor_projection);
    eigenvalues_ = std::move(s.eigenvalues);
    rho_ = std::move(s.inverses);
    basis_ = std::move(s.eigenvectors);
    scale_ = s.scale;
    penalty_ = s.penalty;
    num_top_ = s.num_top;
    requests_ = s.requests;
    local_steps_ = s.local_steps;
    stopped_ = s.stopped;
    pending_stop_ = s.pending_stop;
    batch_epoch_ = s.batch_epoch;
    batch_index_ = s.batch_index;
    z_ = std::move(s.consensus_point);
    dual_ = std::move(s.dual);
    summary_ = std::move(s.stats);
    last_estimated_ = false;
    last_loss_ = std::numeric_limits<double>::quiet_NaN();
  }

  void update_memory_report(std::size_t basis_bytes) {
    const std::size_t v_bytes = static_cast<std::size_t>(basis_.size()) * sizeof(S);
    summary_.curvature_bytes = std::max({summary_.curvature_bytes, v_bytes, basis_bytes});
    summary_.optimizer_state_bytes =
        base_state_.bytes() +
        static_cast<std::size_t>(anchor_.size() + z_.size() + dual_.size()) * sizeof(S);
  }

  options opts_;
  Policies policies_;
  bool initialized_ = false;
  bool stopped_ = false;
  bool last_estimated_ = false;
  double last_loss_ = std::numeric_limits<double>::quiet_NaN();
  index n_ = 0;
  int ranks_ = 1;
  std::vector<index> offsets_;
  shard_layout shard_;  // the partitioner's shard: the Krylov basis and, in mode S, the state
  shard_layout state_;  // where the optimizer state lives: shard_ in mode S, [0, n) in mode A,
                        // nowhere on a curvature rank
  typename base_type::template state<S> base_state_{};
  vector<S> grad_;
  vector<S> shard_grad_;
  vector<S> delta_;
  matrix<S> basis_;
  Eigen::VectorXd eigenvalues_;
  Eigen::VectorXd rho_;
  double scale_ = 1.0;
  double clip_ = 3.0;
  index num_top_ = 0;
  double penalty_ = 0.0;
  vector<S> z_;
  vector<S> dual_;
  index local_steps_ = 0;
  bool pending_stop_ = false;
  struct pending_estimate {
    index snapshot_step;
    index ready_step;
    std::future<eigen_estimate> result;  // background thread only
  };
  std::optional<pending_estimate> pending_;
  std::optional<typename Policies::transport_type> group_;
  bool curvature_rank_ = false;
  bool finished_ = false;
  int trainers_ = 0;
  index requests_ = 0;
  index batch_epoch_ = 0;
  index batch_index_ = 0;
  vector<S> anchor_;
  double anchor_decay_ = 0.0;
  Eigen::VectorXd coeff_velocity_;
  Eigen::VectorXd anchor_projection_;
  summary summary_;
  data_position resume_;  // where the next optimize call starts (set by load_checkpoint)
};

}  // namespace dho2
