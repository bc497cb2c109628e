/// @file
/// `dho2::optimizer`: FOSI (Sivan et al., ICLR 2024) composed from policies. The optimizer
/// orchestrates: the schedule decides when and where curvature is estimated, the consensus
/// policy what happens across ranks at each step; the optimizer owns the run state, the FOSI
/// update (`dho2::newton_subspace`), running estimates, and checkpoints.
///
/// Why this file is longer than the others (about 980 lines, a third of them documentation):
/// it is the one place that owns the run state and lends it to the policies, so the public
/// contracts of `step`, `optimize`, `save_checkpoint` and `load_checkpoint` and the private
/// members the two contexts forward to belong together; the pieces that can stand alone live
/// beside it (`newton_subspace.hpp`, `snapshot.hpp`, `detail/estimate.hpp`,
/// `detail/checkpoint.hpp`, the schedules and consensus policies).
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/callbacks/detail/epoch_loop.hpp>
#include <dho2/checkpoint/directory.hpp>
#include <dho2/checkpoint/optimizer_state.hpp>
#include <dho2/concepts/base_optimizer.hpp>
#include <dho2/concepts/batch_source.hpp>
#include <dho2/concepts/differentiable_model.hpp>
#include <dho2/concepts/hvp_model.hpp>
#include <dho2/core/data_position.hpp>
#include <dho2/core/errors.hpp>
#include <dho2/core/job_settings.hpp>
#include <dho2/core/step_status.hpp>
#include <dho2/core/summary.hpp>
#include <dho2/detail/agreement.hpp>
#include <dho2/detail/validate.hpp>
#include <dho2/fosi/curvature_context.hpp>
#include <dho2/fosi/detail/checkpoint.hpp>
#include <dho2/fosi/detail/estimate.hpp>
#include <dho2/fosi/options.hpp>
#include <dho2/fosi/policies.hpp>
#include <dho2/fosi/run_state.hpp>
#include <dho2/fosi/snapshot.hpp>
#include <dho2/fosi/step_context.hpp>
#include <dho2/transport/single_process.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <chrono>
#include <cmath>
#include <exception>
#include <filesystem>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace dho2 {

/// The FOSI optimizer for parameters of scalar `S`, composed from `Policies` (see
/// `dho2::policies`).
///
/// One step on gradient g, with V the K = k + l retained eigenvectors (orthonormal) and
/// ρᵢ = 1/|λᵢ| (the algorithm: `docs/algorithm.md`):
/// \f[ c = V^\top g,\quad g_2 = g - V c,\quad u \leftarrow \mathrm{mom}(V c, u),\quad
///     d = V(\rho \odot V^\top u), \f]
/// \f[ b = \mathrm{base.step}(g_2),\quad \Delta x = s\,(b - V V^\top b) - \alpha\, d, \f]
/// with s = clip(λ_max/λ_min over the retained top-k, 1, c). Before the first estimate V is empty
/// and the step is the base step, bit for bit. A base with a parameter term (`decay`, e.g.
/// `dho2::adamw`'s −ηλx) adds it to Δx last, outside the split and unseen by the estimate.
/// Curvature is (re-)estimated by the estimator on
/// Hessian-vector products (the model's own when it is a `dho2::hvp_model`, central finite
/// differences of gradients otherwise) when the schedule says so (by default before the steps
/// W − 1, W − 1 + T, …).
///
/// Roles: the schedule (`dho2::schedule`) is called before every step through a
/// `dho2::curvature_context` and decides when and where estimates run; the consensus policy
/// (`dho2::admm_solver`) takes each step through a `dho2::step_context` — mode S averages
/// gradients and updates shards, mode A takes local steps and reconciles the ranks.
///
/// Guards: eigenpairs with |λ| < floor·max|λ| are dropped; a non-finite loss or gradient skips
/// the step or stops the run (`options::on_nonfinite`) without touching any state; a failed
/// estimate (non-finite HVP) keeps the previous curvature.
///
/// Memory per rank: the base state and the velocity anchor on this rank's state layout, V
/// (K × state length, in S), and during an estimate the estimator's basis (Lanczos: m × shard
/// doubles); all measured from the allocated buffers and reported in the summary.
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
  /// Consensus policy (`synchronous_admm`: mode S; `consensus_admm`: mode A).
  using admm_type = typename Policies::admm_type;
  /// Schedule policy.
  using schedule_type = typename Policies::schedule_type;
  /// Transport policy.
  using transport_type = typename Policies::transport_type;
  /// Everything a checkpoint saves of this rank, besides the parameters.
  using run_state_type =
      run_state<S, typename base_type::template state<S>, typename admm_type::template state<S>>;
  /// True in mode A: every rank keeps a whole state (the consensus policy does not shard it).
  static constexpr bool consensus = !admm_type::shards_state;

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
    // n-dependent constraints are checked at the first step; use a large n here.
    opts_.validate(std::numeric_limits<index>::max());
  }

  /// The options in force.
  [[nodiscard]] const options& get_options() const noexcept { return opts_; }
  /// The policy objects.
  [[nodiscard]] const Policies& policies() const noexcept { return policies_; }
  /// The run summary so far.
  [[nodiscard]] const summary& get_summary() const noexcept { return run_.stats; }

  /// The base optimizer's learning rate in force (`policies().base.learning_rate`, as set at
  /// construction or by the last `set_learning_rate`). For a base with a `learning_rate` field
  /// (every shipped base: `adam`, `sgd`, `heavy_ball`, `nesterov`).
  [[nodiscard]] double learning_rate()
      const noexcept requires detail::has_learning_rate<base_type> {
    return static_cast<double>(policies_.base.learning_rate);
  }

  /// Sets the base optimizer's learning rate from the next step on (what a learning-rate
  /// schedule such as `dho2::lr_schedule` calls between steps). Nothing else changes: the base
  /// state (Adam's moments and step count, a momentum buffer) and the curvature are kept. Every
  /// rank must set the same rate before the same step (a schedule that is a function of the step
  /// count does); the ranks' agreement on the policies is checked once, at the first step's
  /// set-up, and a checkpoint's identity leaves out the base optimizer's hyper-parameters, so a
  /// resumed run with another rate loads. `reset` keeps the rate.
  /// @throws dho2::invalid_options naming the field `policies.base.learning_rate`, with the
  ///   constraint "finite and > 0" (changing nothing).
  void set_learning_rate(double learning_rate) requires detail::has_learning_rate<base_type> {
    detail::require_finite_positive("policies.base.learning_rate", learning_rate);
    policies_.base.learning_rate = learning_rate;
  }

  /// The L2 norm of the gradient the last taken step used, before clipping
  /// (`options::max_gradient_norm`; in mode S the global norm); NaN when clipping is off or no
  /// step was taken yet.
  [[nodiscard]] double last_gradient_norm() const noexcept { return last_gradient_norm_; }

  /// Names what else every rank of this job must share and a checkpoint must match, beyond the
  /// options and the policies: typically `model_settings(model)` followed by the data layout
  /// ("data.batch_size", "data.train_size", …). Call it before the first `step`, `optimize` or
  /// checkpoint call. The first step's set-up checks, in one collective, that every rank has the
  /// same options, policies (their `identity()`: the base optimizer's hyper-parameters, the
  /// schedule, the ADMM solver, the partitioner) and settings; every checkpoint records the
  /// settings and `load_checkpoint` refuses one whose settings differ, naming the setting and
  /// both values. Without it the first `step` or `optimize` call uses `model_settings(model)`
  /// (and a checkpoint call before any step records and checks no settings). A "model.structure"
  /// setting is checked against the model at the first step or `optimize` call. Throws
  /// `invalid_options` after the set-up.
  void describe_job(job_settings settings) {
    if (initialized_) {
      throw invalid_options("describe_job", "called after the first step's set-up",
                            "before the first step, optimize or checkpoint call");
    }
    job_ = std::move(settings);
    job_described_ = true;
  }

  /// The settings of this job (see `describe_job`).
  [[nodiscard]] const job_settings& job_description() const noexcept { return job_; }
  /// Everything this rank carries from step to step (what a checkpoint saves).
  [[nodiscard]] const run_state_type& state() const noexcept { return run_; }
  /// Retained eigenvalues (largest first, then smallest), empty before the first estimate.
  [[nodiscard]] const Eigen::VectorXd& eigenvalues() const noexcept {
    return run_.newton.eigenvalues;
  }
  /// Retained eigenvectors where this rank keeps state (its shard in mode S, the whole vector in
  /// mode A): length × K, column r is (this rank's part of) eigenvector r, as in
  /// `Eigen::SelfAdjointEigenSolver::eigenvectors()`.
  [[nodiscard]] const matrix<S>& eigenvectors() const noexcept { return run_.newton.basis; }
  /// Base-step scale s in force.
  [[nodiscard]] double base_scale() const noexcept { return run_.newton.scale; }
  /// Whether the run has stopped on a non-finite value (`nonfinite_policy::stop`).
  [[nodiscard]] bool stopped() const noexcept { return run_.stopped; }
  /// Mode A: the consensus point z of the last round (the parameters every rank restarts from);
  /// empty for a consensus policy without one.
  [[nodiscard]] const vector<S>& consensus_point() const noexcept {
    if constexpr (requires { run_.consensus.consensus_point; }) {
      return run_.consensus.consensus_point;
    } else {
      return empty_;
    }
  }
  /// The proximal shift σ in force (mode A: the current penalty ρ; 0 in mode S).
  [[nodiscard]] double penalty() const noexcept { return proximal_shift(); }

  /// Forgets all run state (base state, curvature, velocity, counters; an estimate in flight is
  /// waited for and dropped); keeps options and policies (and the learning rate in force). With
  /// several ranks, every rank must reset together: the next step repeats the collective set-up.
  void reset() {
    sched_ = {};
    group_.reset();
    initialized_ = false;
    curvature_rank_ = false;
    model_checked_ = false;
    if (!job_described_) job_.clear();
    resume_ = {};
    run_ = {};
    last_gradient_norm_ = std::numeric_limits<double>::quiet_NaN();
  }

  /// Puts an estimate still in flight in use and, under `split_schedule`, releases the
  /// curvature ranks (their `optimize` returns). `optimize` calls it at its end; call it
  /// yourself when you drive `step` directly on the trainers. Idempotent.
  void finish() {
    if (!initialized_) return;
    curvature_host<optimizer> host(*this);
    policies_.schedule.finish(sched_, host);
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
    prepare_checkpoint(x);
    detail::require(position.epoch >= 0, "data_position.epoch", position.epoch, ">= 0");
    detail::require(position.batch >= 0, "data_position.batch", position.batch, ">= 0");
    if (const auto f = policies_.schedule.in_flight(sched_)) {
      throw checkpoint_error(
          "checkpoint directory '" + dir.string() + "': cannot save after step call " +
          std::to_string(run_.stats.iterations) + ": the curvature estimate of the snapshot " +
          "before step " + std::to_string(f->snapshot_step) + " is in flight until step " +
          std::to_string(f->ready_step) + "; save at a step where no estimate is in flight");
    }
    if constexpr (requires(curvature_host<optimizer> & h) {
                    policies_.schedule.announce_checkpoint(sched_, h, dir);
                  }) {
      curvature_host<optimizer> host(*this);
      policies_.schedule.announce_checkpoint(sched_, host, dir);
    }
    commit_checkpoint(dir, capture(x, position), run_.stats.iterations);
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
    prepare_checkpoint(x);
    snapshot_type snap;
    snap.run = fresh_state(x);
    detail::read_checkpoint(dir, checkpoint_id(run_.stats.iterations), snap, n_, state_.size,
                            [&](bool ok) { return all_ranks_succeeded(ok); });
    if constexpr (requires { policies_.schedule.drop_in_flight(sched_); }) {
      policies_.schedule.drop_in_flight(sched_);
    }
    x = snap.x;
    run_ = std::move(snap.run);
    last_estimated_ = false;
    last_loss_ = std::numeric_limits<double>::quiet_NaN();
    resume_ = snap.position;
    return snap.position;
  }

  /// Where the next `optimize` call starts: the data position of the last `load_checkpoint`
  /// until that call, epoch 0 batch 0 otherwise.
  [[nodiscard]] data_position resume_position() const noexcept { return resume_; }

  /// Whether a curvature estimate started on a snapshot is still to be put in use (background
  /// schedule with staleness s > 0, for the s steps after it starts; under `split_schedule`, a
  /// request out to the curvature ranks). `save_checkpoint` refuses to save meanwhile. Every rank
  /// of the group sees the same value at the same step.
  [[nodiscard]] bool estimate_in_flight() const noexcept {
    return policies_.schedule.in_flight(sched_).has_value();
  }

  /// Whether this rank only serves estimates (`split_schedule`'s curvature ranks; known after
  /// the first step or `optimize` call).
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
  template <detail::checked_model M>
  step_status step(const M& model, vector_ref<S> x, const model_batch_t<M>& batch) {
    return step(model, x, batch, batch);
  }

  /// One FOSI step on `batch`; a curvature estimate due before it uses `curvature_batch`.
  /// Throws `dho2::invalid_options` (changing nothing) when the options do not fit the model or
  /// `x` has the wrong length; never throws for numerical trouble (see `step_status`).
  template <detail::checked_model M>
  step_status step(const M& model, vector_ref<S> x, const model_batch_t<M>& batch,
                   const model_batch_t<M>& curvature_batch) {
    static_assert(std::is_same_v<model_scalar_t<M>, S>,
                  "DHO2: optimizer<S>: the model's scalar_type must be S");
    initialize(model, x);
    last_estimated_ = false;
    last_loss_ = std::numeric_limits<double>::quiet_NaN();
    if (run_.stopped) return step_status::stopped;
    if (opts_.use_curvature) {
      curvature_context<optimizer, M> ctx(*this, model, curvature_point(x), curvature_batch);
      static_assert(
          requires { policies_.schedule.before_step(sched_, ctx); },
          "DHO2: optimizer: the schedule has no before_step(state, context)");
      policies_.schedule.before_step(sched_, ctx);
      if (run_.stopped) return step_status::stopped;
    }
    ++run_.stats.iterations;
    step_context<optimizer, M> ctx(*this, model, x, batch);
    static_assert(
        requires {
          { policies_.admm.step(run_.consensus, ctx) } -> std::same_as<step_status>;
        },
        "DHO2: optimizer: the admm solver has no step(state, context) returning step_status");
    const step_status status = policies_.admm.step(run_.consensus, ctx);
    if (status == step_status::taken) run_.consecutive_skips = 0;
    return status;
  }

  /// Whether a curvature estimate ran (or started) before the last step call.
  [[nodiscard]] bool last_step_estimated() const noexcept { return last_estimated_; }
  /// Loss on the batch at the parameters before the last step call.
  [[nodiscard]] double last_loss() const noexcept { return last_loss_; }

  // (clang-format 14 would put the requires-clause and the name on one line)
  // clang-format off
  /// Runs `epochs` epochs over `batches` (a `batch_source` of the model's batches), calling the
  /// callbacks' hooks (see `dho2/callbacks/events.hpp`), and returns the summary. Stops early when
  /// a callback asks or on a non-finite value with `nonfinite_policy::stop`. After
  /// `load_checkpoint` the first call resumes at the loaded `data_position` (`resume_position`)
  /// and runs to the end of epoch `epochs` − 1, so `epochs` is the run's total either way. On a
  /// rank that only serves estimates (`is_curvature_rank`) it serves them until the trainers
  /// finish. Each rank trains on its slice of every batch (`slicing_batch_source`); with a
  /// transport other than `single_process`, a source that cannot slice is a compile error unless
  /// it is declared rank-local (`dho2::local_batches`; see `dho2/concepts/batch_source.hpp`).
  template <detail::checked_model M, class Batches, class... Callbacks>
    requires batch_source<Batches, model_batch_t<M>>
  summary optimize(const M& model, vector_ref<S> x, Batches& batches, index epochs,
                   Callbacks&&... callbacks) {
    // clang-format on
    static_assert(detail::check_distributed_source<!std::is_same_v<transport_type, single_process>,
                                                   Batches, model_batch_t<M>>(),
                  "DHO2: optimizer::optimize: see the message above");
    detail::require(epochs >= 0, "epochs", epochs, ">= 0");
    initialize(model, x);
    const auto run_start = clock::now();
    const double seconds_before = run_.stats.total_seconds;
    (detail::call_on_begin(callbacks,
                           run_info{model.num_parameters(), epochs, batches.num_batches()}),
     ...);
    model_batch_t<M> batch{};
    summary& stats = run_.stats;
    if (curvature_rank_) {
      if constexpr (requires(curvature_context<optimizer, M> & c) {
                      policies_.schedule.serve(sched_, c, batches);
                    }) {
        curvature_context<optimizer, M> ctx(*this, model, x, batch);
        policies_.schedule.serve(sched_, ctx, batches);
      }
      stats.total_seconds = seconds_before + seconds(run_start, clock::now());
      stats.termination = termination_type::completed;
      stats.message =
          "served " + std::to_string(stats.curvature_estimates) + " curvature estimates";
      (detail::call_on_end(callbacks, stats), ...);
      return stats;
    }
    epoch_driver<M> driver{*this, model, x};
    const detail::epoch_loop_result out =
        detail::run_epochs<S>(driver, x, batches, batch, epochs,
                              std::exchange(resume_, data_position{}), run_start, callbacks...);
    if (out.epochs > 0) {
      stats.epochs = out.epochs;
      stats.final_loss = out.final_loss;
    }
    finish();
    stats.total_seconds = seconds_before + seconds(run_start, clock::now());
    if (run_.stopped) {
      stats.termination = termination_type::numerical_failure;
    } else if (out.stopped) {
      stats.termination = out.cause.termination;
      stats.message = out.cause.message;
    } else {
      stats.termination = termination_type::completed;
      stats.message = "all " + std::to_string(epochs) + " epochs done";
    }
    (detail::call_on_end(callbacks, stats), ...);
    return stats;
  }

 private:
  template <class O, class M>
  friend class step_context;
  template <class O>
  friend class curvature_host;
  template <class O, class M>
  friend class curvature_context;

  using clock = std::chrono::steady_clock;
  using snapshot_type = optimizer_snapshot<S, run_state_type>;

  static double seconds(clock::time_point a, clock::time_point b) {
    return std::chrono::duration<double>(b - a).count();
  }

  // What the shared epoch loop drives: this optimizer's steps on one model.
  template <class M>
  struct epoch_driver {
    optimizer& opt;
    const M& model;
    vector_ref<S> x;
    step_status step(const model_batch_t<M>& batch) { return opt.step(model, x, batch); }
    void at_batch(index epoch, index i) {
      opt.run_.batch_epoch = epoch;
      opt.run_.batch_index = i;
    }
    [[nodiscard]] double last_loss() const { return opt.last_loss_; }
    [[nodiscard]] bool last_step_estimated() const { return opt.last_estimated_; }
    [[nodiscard]] index iterations() const { return opt.run_.stats.iterations; }
    [[nodiscard]] int slice_rank() { return opt.comm().rank(); }
    [[nodiscard]] int slice_ranks() { return opt.comm().size(); }
    [[nodiscard]] bool halted() const { return opt.run_.stopped; }
    detail::stop_vote agree_on_stop(detail::stop_vote v) { return opt.agree_on_stop(v); }
  };

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
    if (!model_checked_) {
      if (!initialized_ && !job_described_) job_ = model_settings(model);
      for (const job_setting& s : job_) {
        if (s.name != "model.structure") continue;
        const std::string structure = model_structure(model);
        detail::require(structure == s.value, "model.structure", structure,
                        "the structure the job was described with (" + s.value + ")");
      }
      model_checked_ = true;
    }
    if (initialized_) {
      detail::require(n == n_, "model.num_parameters()", n,
                      "unchanged since the first step (" + std::to_string(n_) + ")");
      return;
    }
    setup(x);
  }

  // The collective set-up of the first step (or of a checkpoint call before it) for the n =
  // x.size() parameters x: agreement of the options, the schedule's groups, the partition and
  // the state layout the consensus policy asks for.
  void setup(const_vector_ref<S> x) {
    const index n = x.size();
    // Every rank must run with the same options, parameter count, policies and job settings;
    // checked with two all-gathers before any other collective, so all ranks throw the same
    // error naming each rank's value.
    if (policies_.transport.size() > 1) {
      std::vector<std::pair<std::string, std::string>> agreed;
      for (const auto& f : detail::option_fields(opts_, n)) {
        agreed.emplace_back(f.name, detail::exact_text(f.value));
      }
      agreed.emplace_back("scalar type", sizeof(S) == sizeof(float) ? "float" : "double");
      agreed.emplace_back("policies.base", identity_of(policies_.base));
      agreed.emplace_back("policies.schedule", identity_of(policies_.schedule));
      agreed.emplace_back("policies.admm", identity_of(policies_.admm));
      agreed.emplace_back("policies.partitioner", identity_of(policies_.partitioner));
      for (const job_setting& s : job_) agreed.emplace_back(s.name, s.value);
      detail::check_settings_agree(policies_.transport,
                                   std::span<const std::pair<std::string, std::string>>(agreed));
    }
    n_ = n;
    sched_ = {};
    group_.reset();
    if constexpr (requires(curvature_host<optimizer> & h) {
                    policies_.schedule.setup(sched_, h);
                  }) {
      curvature_host<optimizer> host(*this);
      policies_.schedule.setup(sched_, host);
    }
    if constexpr (requires { policies_.schedule.trains(sched_); }) {
      curvature_rank_ = !policies_.schedule.trains(sched_);
    }
    ranks_ = comm().size();
    opts_.validate(n);
    offsets_ = policies_.partitioner.partition(n, ranks_);
    check_offsets(offsets_, n, ranks_);
    const auto r = static_cast<std::size_t>(comm().rank());
    shard_ = {n, offsets_[r], offsets_[r + 1] - offsets_[r]};
    state_ = consensus ? shard_layout{n, 0, n} : shard_;
    if (curvature_rank_) state_ = {n, shard_.offset, 0};  // keeps no optimizer state
    sharded_ = !consensus && ranks_ > 1;
    grad_.resize(curvature_rank_ ? 0 : n);
    shard_grad_.resize(sharded_ ? state_.size : 0);
    delta_.resize(state_.size);
    clip_ = opts_.clip.value_or(default_clip_of(policies_.base));
    run_ = fresh_state(x);
    initialized_ = true;
    update_memory_report(0);
  }

  // The run state of the first step: fresh base and consensus states, no curvature.
  run_state_type fresh_state(const_vector_ref<S> x) const {
    run_state_type st;
    st.base = policies_.base.template init<S>(state_.size);
    st.consensus = policies_.admm.template init<S>(x);
    st.newton.basis.resize(state_.size, 0);
    return st;
  }

  // The parameters curvature is estimated at (the consensus policy's choice; x by default).
  const_vector_ref<S> curvature_point(const_vector_ref<S> x) const {
    if constexpr (requires { policies_.admm.curvature_point(run_.consensus, x); }) {
      return policies_.admm.curvature_point(run_.consensus, x);
    } else {
      return x;
    }
  }

  // σ added to every eigenvalue by the consensus policy's local objective.
  double proximal_shift() const noexcept {
    if constexpr (requires { policies_.admm.proximal_shift(run_.consensus); }) {
      return policies_.admm.proximal_shift(run_.consensus);
    } else {
      return 0.0;
    }
  }

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
    run_.stats.gradient_seconds += seconds(t0, clock::now());
    return {loss, weight};
  }

  // Books a step skipped for a non-finite loss or gradient (`why`) and returns `why`; under
  // `nonfinite_policy::stop`, stops the run (`when`), says why, and returns `stopped`.
  step_status reject(step_status why, stop_timing when) {
    summary& s = run_.stats;
    if (why == step_status::skipped_nonfinite_loss) ++s.skipped_nonfinite_loss;
    if (why == step_status::skipped_nonfinite_gradient) ++s.skipped_nonfinite_gradient;
    ++run_.consecutive_skips;
    const index bound = opts_.max_consecutive_skips;
    const bool diverged = bound > 0 && run_.consecutive_skips >= bound;
    if (opts_.on_nonfinite != nonfinite_policy::stop && !diverged) return why;
    s.message = std::string("non-finite ") +
                (why == step_status::skipped_nonfinite_loss ? "loss" : "gradient") + " at step " +
                std::to_string(s.iterations - 1);
    if (opts_.on_nonfinite != nonfinite_policy::stop) {
      s.message +=
          ": " + std::to_string(run_.consecutive_skips) +
          " steps skipped in a row (options.max_consecutive_skips = " + std::to_string(bound) +
          "), the run diverged";
    }
    if (when == stop_timing::now) {
      run_.stopped = true;
      s.termination = termination_type::numerical_failure;
      s.message += "; parameters are those before it";
    } else {
      s.message +=
          " on rank " + std::to_string(comm().rank()) + "; parameters are the last consensus";
    }
    return step_status::stopped;
  }

  // Stops the run on a numerical failure met elsewhere (keeps a message already set).
  void halt(const std::string& message) {
    run_.stopped = true;
    run_.stats.termination = termination_type::numerical_failure;
    if (run_.stats.message.empty()) run_.stats.message = message;
  }

  // The FOSI update of this rank's state layout on gradient g (overwritten). Sharded: delta_
  // receives the new x[I_p] for the all-gather; otherwise x[I_p] is updated in place. A base's
  // parameter term (decoupled decay, `base_optimizer`'s optional `decay`) is added to the
  // combined step, outside the subspace split, on x before the step.
  void update(vector_ref<S> x, vector<S>& g) {
    if (clips_gradient()) {
      // Sharded, the whole gradient's squared norm is the sum of the shards'.
      Eigen::VectorXd squared(1);
      squared(0) = g.head(state_.size).template cast<double>().squaredNorm();
      all_reduce(squared);
      const double factor = clip_factor(squared(0));
      if (factor != 1.0) g.head(state_.size) *= static_cast<S>(factor);
    }
    Eigen::VectorXd c = partial_projection(g);
    if (c.size() > 0) all_reduce(c);
    update_projected(x, g, S(1), c);
  }

  // The FOSI update on gain·g (g of the state's length, possibly overwritten) with
  // c = Vᵀ(gain·g) already summed over the ranks sharing the state; then the base's parameter
  // term and the commit, as in `update`.
  void update_projected(vector_ref<S> x, vector<S>& g, S gain, const Eigen::VectorXd& c) {
    auto xs = x.segment(state_.offset, state_.size);
    run_.newton.step_projected(opts_, policies_.base, run_.base, vector_ref<S>(g.head(state_.size)),
                               gain, c, delta_, [&](Eigen::VectorXd& v) { all_reduce(v); });
    detail::apply_decay<S>(policies_.base, const_vector_ref<S>(xs), vector_ref<S>(delta_));
    if (sharded_) {
      delta_ += xs;
    } else {
      xs += delta_;
    }
  }

  // This rank's part of Vᵀg, g of the state's length (none before the first estimate).
  [[nodiscard]] Eigen::VectorXd partial_projection(const vector<S>& g) const {
    return run_.newton.partial_projection(const_vector_ref<S>(g.head(state_.size)));
  }

  [[nodiscard]] bool clips_gradient() const noexcept { return opts_.max_gradient_norm > 0.0; }

  // The factor that brings a gradient of squared L2 norm `squared` within
  // options::max_gradient_norm (1 if it is within); records the norm.
  double clip_factor(double squared) {
    const double norm = std::sqrt(squared);
    last_gradient_norm_ = norm;
    return norm > opts_.max_gradient_norm ? opts_.max_gradient_norm / norm : 1.0;
  }

  void set_proximal_shift(double sigma) { run_.newton.refresh_inverses(sigma, clip_); }

  // Runs f() and books its time as update time, less the communication inside it.
  template <class F>
  void timed_update(F&& f) {
    const auto t1 = clock::now();
    const double comm_before = run_.stats.communication_seconds;
    std::forward<F>(f)();
    run_.stats.update_seconds +=
        seconds(t1, clock::now()) - (run_.stats.communication_seconds - comm_before);
  }

  [[nodiscard]] bool distributed() const noexcept { return ranks_ > 1; }

  // Runs a transport call and books its time.
  template <class F>
  void communicate(F&& f) {
    const auto t0 = clock::now();
    std::forward<F>(f)();
    run_.stats.communication_seconds += seconds(t0, clock::now());
  }

  // Sums the partial projections of a sharded update.
  void all_reduce(Eigen::VectorXd& v) {
    if (!sharded_) return;
    communicate([&] {
      comm().all_reduce_sum(std::span<double>(v.data(), static_cast<std::size_t>(v.size())));
    });
  }

  // The transport of this rank's working group (a schedule may split the job), or the job.
  transport_type& comm() noexcept { return group_ ? *group_ : policies_.transport; }

  // True on every rank of the working group if any rank asked to stop.
  detail::stop_vote agree_on_stop(detail::stop_vote mine) {
    if (!distributed()) return mine;
    std::array<double, 2> flags{mine.asked ? 1.0 : 0.0, mine.interrupted ? 1.0 : 0.0};
    communicate([&] { comm().all_reduce_sum(std::span<double>(flags)); });
    return {flags[0] != 0.0, flags[1] != 0.0};
  }

  // --- estimates: requests, running them, booking and adopting them ---

  [[nodiscard]] estimate_request next_request() {
    const index m =
        opts_.lanczos_steps > 0 ? opts_.lanczos_steps : default_lanczos_steps(opts_.k, opts_.l, n_);
    return {opts_.k, opts_.l, m, opts_.seed, static_cast<std::uint64_t>(run_.requests++)};
  }

  template <class M>
  void note_estimate_started() {
    last_estimated_ = true;
    run_.stats.hvp = hvp_model<M> ? hvp_source::model : hvp_source::finite_difference;
  }

  template <class M>
  eigen_estimate run_estimate(const M& model, const_vector_ref<S> x, const model_batch_t<M>& batch,
                              const estimate_request& request, bool collective,
                              estimate_communication* comm_out) {
    auto ws = estimator_scratch_.take();
    eigen_estimate est =
        detail::run_estimate<S>(model, x, batch, policies_.estimator, request, comm(), offsets_,
                                shard_, collective, comm_out, *ws);
    estimator_scratch_.give(std::move(ws));
    return est;
  }

  // An estimate before step t, run inline (every rank of the group takes part) and put in use.
  template <class M>
  void estimate_inline(const M& model, const_vector_ref<S> x, const model_batch_t<M>& batch,
                       index t) {
    note_estimate_started<M>();
    estimate_communication comm_seconds;
    eigen_estimate est =
        run_estimate(model, x, batch, next_request(), distributed(), &comm_seconds);
    record_estimate(std::move(est), t, t, &comm_seconds);
  }

  // An estimate on copies of x and the batch, with no collective (for another thread).
  template <class M>
  std::function<eigen_estimate()> detached_estimate(const M& model, const_vector_ref<S> x,
                                                    const model_batch_t<M>& batch) {
    note_estimate_started<M>();
    auto snapshot = std::make_shared<std::pair<vector<S>, model_batch_t<M>>>(x, batch);
    const estimate_request request = next_request();
    return [this, &model, snapshot, request] {
      return run_estimate(model, snapshot->first, snapshot->second, request, false, nullptr);
    };
  }

  // An estimate over this rank's working group for others to use (serving ranks).
  template <class M>
  eigen_estimate estimate_over_group(const M& model, const_vector_ref<S> x,
                                     const model_batch_t<M>& batch, estimate_communication& c) {
    return run_estimate(model, x, batch, next_request(), comm().size() > 1, &c);
  }

  // vᵣᵀ H vᵣ on the curvature batch, over the working group.
  template <class M>
  double rayleigh_quotient(const M& model, const_vector_ref<S> x, const model_batch_t<M>& batch,
                           index r) {
    detail::require(r >= 0 && r < run_.newton.size(), "rayleigh_quotient: eigenvector", r,
                    "< retained pairs = " + std::to_string(run_.newton.size()));
    vector<S> v(n_);
    if (sharded_) {
      const vector<S> part = run_.newton.basis.col(r);
      communicate([&] {
        comm().all_gather(std::span<const S>(part.data(), static_cast<std::size_t>(part.size())),
                          std::span<S>(v.data(), static_cast<std::size_t>(n_)),
                          std::span<const index>(offsets_));
      });
    } else {
      v = run_.newton.basis.col(r);
    }
    const bool collective = distributed() && (consensus || sharded_);
    return detail::weighted_quotient<S>(model, x, batch, v, comm(), collective,
                                        [&](auto&& f) { communicate(f); });
  }

  void book_estimate(const eigen_estimate& est, const estimate_communication* here) {
    detail::book_estimate(run_.stats, est, here);
  }

  // Books an estimate (of the snapshot taken before step `snapshot_step`, put in use before
  // step t) in the summary and, unless it failed, adopts it.
  void record_estimate(eigen_estimate est, index snapshot_step, index t,
                       const estimate_communication* here) {
    book_estimate(est, here);
    summary& s = run_.stats;
    estimate_report report = detail::report_of(est, snapshot_step, t);
    s.max_staleness = std::max(s.max_staleness, report.staleness);
    if (report.failed) {
      if (opts_.on_nonfinite == nonfinite_policy::stop) {
        run_.stopped = true;
        s.termination = termination_type::numerical_failure;
        s.message = "non-finite Hessian-vector product in the estimate before step " +
                    std::to_string(snapshot_step) + "; parameters are those before it";
      }
    } else {
      if (consensus && distributed()) gather_rows(est);
      run_.newton.adopt(est, state_.size, opts_.eigenvalue_floor, proximal_shift(), clip_,
                        [&](Eigen::VectorXd& v) { all_reduce(v); });
    }
    report.retained = run_.newton.eigenvalues.size();
    report.scale = run_.newton.scale;
    s.estimates.push_back(std::move(report));
    update_memory_report(est.basis_bytes);
  }

  // A whole state (mode A) needs whole eigenvectors; the estimate left each rank its shard. The
  // K × shard column-major block of rank r is contiguous at K·offsets[r] in the K × n matrix.
  void gather_rows(eigen_estimate& est) {
    const index k = est.eigenvectors.rows();
    Eigen::MatrixXd full(k, n_);
    std::vector<index> offsets(offsets_.size());
    for (std::size_t i = 0; i < offsets_.size(); ++i) offsets[i] = k * offsets_[i];
    communicate([&] {
      comm().all_gather(std::span<const double>(est.eigenvectors.data(),
                                                static_cast<std::size_t>(est.eigenvectors.size())),
                        std::span<double>(full.data(), static_cast<std::size_t>(full.size())),
                        std::span<const index>(offsets));
    });
    est.eigenvectors = std::move(full);
  }

  void update_memory_report(std::size_t basis_bytes) {
    summary& s = run_.stats;
    s.curvature_bytes = std::max({s.curvature_bytes, run_.newton.basis_bytes(), basis_bytes});
    s.optimizer_state_bytes = run_.base.bytes() +
                              static_cast<std::size_t>(run_.newton.anchor.size()) * sizeof(S) +
                              run_.consensus.bytes();
  }

  // --- checkpoints ---

  // Checks shared by save and load, before any collective; runs the set-up of the first step if
  // needed.
  void prepare_checkpoint(const_vector_ref<S> x) {
    if (!initialized_) {
      detail::require(x.size() >= 1, "parameter vector size", x.size(), ">= 1");
      setup(x);
    }
    detail::require(x.size() == n_, "parameter vector size", x.size(),
                    "equal to the number of parameters n = " + std::to_string(n_));
  }

  // Checkpoints span the whole job (under the split schedule the trainers and the curvature
  // ranks): its transport, ranks and size.
  transport_type& job() noexcept { return policies_.transport; }

  // The identity of this rank's checkpoint of step `step`: n, world size, rank (in the whole
  // job), partition hash (every group's offsets), options hash (the options, the scalar type,
  // the policies' identities and state fields, the effective clip — not the base optimizer's
  // hyper-parameters, which a resumed run may change).
  checkpoint_identity checkpoint_id(index step) {
    fnv1a64 layout;
    std::vector<int> groups{ranks_};
    if constexpr (requires(curvature_host<optimizer> & h) {
                    policies_.schedule.layout_groups(sched_, h);
                  }) {
      curvature_host<optimizer> host(*this);
      groups = policies_.schedule.layout_groups(sched_, host);
    }
    for (const int ranks : groups) {
      for (const index o : policies_.partitioner.partition(n_, ranks)) {
        layout.add_u64(static_cast<std::uint64_t>(o));
      }
    }
    fnv1a64 opts;
    for (const auto& f : detail::option_fields(opts_, n_)) {
      if (f.name == "model.num_parameters()") continue;
      opts.add(f.name).add_u64(std::bit_cast<std::uint64_t>(f.value));
    }
    opts.add(sizeof(S) == sizeof(float) ? "float" : "double")
        .add(identity_of(policies_.admm))
        .add(identity_of(policies_.schedule))
        .add_u64(std::bit_cast<std::uint64_t>(clip_))
        .add(detail::state_signature<typename base_type::template state<S>>())
        .add(detail::state_signature<typename admm_type::template state<S>>());
    return {n_, job().size(), job().rank(), layout.value(), opts.value(), step, job_};
  }

  template <class P>
  static std::string identity_of(const P& p) {
    if constexpr (requires { p.identity(); }) {
      return p.identity();
    } else {
      return "";
    }
  }

  // True on every rank of the job when `ok` is true on all of them.
  bool all_ranks_succeeded(bool ok) {
    return detail::all_ranks_succeeded(job(), ok, [&](auto&& f) { communicate(f); });
  }

  // Writes this rank's file of the checkpoint of step `step` holding `snap` and commits it with
  // the other ranks of the job. Collective; throws checkpoint_error on every rank if any fails.
  void commit_checkpoint(const std::filesystem::path& dir, const snapshot_type& snap, index step) {
    detail::commit_checkpoint(dir, snap, checkpoint_id(step),
                              [&](bool ok) { return all_ranks_succeeded(ok); });
  }

  // A serving rank's part of a checkpoint the trainers announced (errors are theirs to report;
  // trainers can only announce when their base state is checkpointable).
  void join_checkpoint(const_vector_ref<S> x, index step, const std::filesystem::path& dir) {
    if constexpr (detail::checkpointable_state<typename base_type::template state<S>>) {
      try {
        commit_checkpoint(dir, capture(x, {}), step);
      } catch (const checkpoint_error&) {  // NOLINT(bugprone-empty-catch): reported by trainers
      }
    }
  }

  snapshot_type capture(const_vector_ref<S> x, data_position position) const {
    return snapshot_type{x, run_, position};
  }

  options opts_;
  Policies policies_;
  run_state_type run_{};  // what a checkpoint saves; everything below is derived or transient
  typename schedule_type::state sched_{};
  std::optional<transport_type> group_;
  bool initialized_ = false;
  bool curvature_rank_ = false;
  job_settings job_;            // what else the ranks share and checkpoints record
  bool job_described_ = false;  // job_ set by describe_job (else the model's settings)
  bool model_checked_ = false;  // job_'s model.structure checked against the model
  bool sharded_ = false;        // mode S over several ranks: the update works on shards
  bool last_estimated_ = false;
  double last_loss_ = std::numeric_limits<double>::quiet_NaN();
  double last_gradient_norm_ = std::numeric_limits<double>::quiet_NaN();
  index n_ = 0;
  int ranks_ = 1;
  std::vector<index> offsets_;
  shard_layout shard_;  // the partitioner's shard: the Krylov basis and, in mode S, the state
  shard_layout state_;  // where the optimizer state lives: shard_ in mode S, [0, n) in mode A,
                        // nowhere on a serving rank
  // The estimator's scratch (the Lanczos basis), kept from one estimate to the next.
  detail::workspace_slot<detail::estimator_workspace_t<typename Policies::estimator_type>>
      estimator_scratch_;
  vector<S> grad_;
  vector<S> shard_grad_;
  vector<S> delta_;
  double clip_ = 3.0;
  data_position resume_;  // where the next optimize call starts (set by load_checkpoint)
  inline static const vector<S> empty_{};
};

}  // namespace dho2
