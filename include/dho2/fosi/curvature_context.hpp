/// @file
/// `dho2::curvature_host` and `dho2::curvature_context`: what the optimizer lends a schedule
/// (`dho2::schedule`) at step boundaries — running an estimate, putting one in use, the job's
/// transports and partition, and the bookkeeping of the summary.
#pragma once

#include <dho2/concepts/schedule.hpp>
#include <dho2/core/data_position.hpp>
#include <dho2/core/eigen_estimate.hpp>
#include <dho2/core/shard_layout.hpp>
#include <dho2/core/summary.hpp>
#include <dho2/core/types.hpp>

#include <filesystem>
#include <functional>
#include <utility>
#include <vector>

namespace dho2 {

/// Seconds of transport calls inside an estimate: within its HVPs, and elsewhere (the
/// reductions of the estimator).
struct estimate_communication {
  /// Inside Hessian-vector products (gathers and reduce-scatters of vectors).
  double hvp = 0.0;
  /// Elsewhere (the estimator's small reductions).
  double other = 0.0;
};

/// The model-independent part of what a schedule may ask of `Optimizer`: the step, the options'
/// timing, the job's transports and partition, putting an estimate in use, and the summary.
template <class Optimizer>
class curvature_host {
 public:
  /// Parameter scalar.
  using scalar_type = typename Optimizer::scalar_type;
  /// Transport type of the job and of its groups.
  using transport_type = typename Optimizer::transport_type;

  /// Whether the consensus policy shards one state over the ranks (mode S).
  static constexpr bool shards_state = Optimizer::admm_type::shards_state;

  /// A view of `opt`.
  explicit curvature_host(Optimizer& opt) noexcept : opt_(opt) {}

  /// The 0-based index of the step about to be taken (the number of step calls so far).
  [[nodiscard]] index step() const noexcept { return opt_.run_.stats.iterations; }
  /// The options' warm-up W.
  [[nodiscard]] index warmup() const noexcept { return opt_.opts_.warmup; }
  /// The options' refresh period T.
  [[nodiscard]] index refresh_every() const noexcept { return opt_.opts_.refresh_every; }
  /// Whether curvature is used at all (`options::use_curvature`).
  [[nodiscard]] bool uses_curvature() const noexcept { return opt_.opts_.use_curvature; }
  /// Whether `step()` is one of the reference's estimate steps W − 1 + jT.
  [[nodiscard]] bool reference_step_due() const noexcept {
    return reference_estimate_step(step(), warmup(), refresh_every());
  }
  /// Number of parameters n.
  [[nodiscard]] index size() const noexcept { return opt_.n_; }
  /// The partitioner's shard of this rank in its working group.
  [[nodiscard]] shard_layout shard() const noexcept { return opt_.shard_; }
  /// The partitioner's P + 1 offsets of n parameters over `ranks` ranks.
  [[nodiscard]] std::vector<index> partition(int ranks) const {
    return opt_.policies_.partitioner.partition(opt_.n_, ranks);
  }
  /// The whole job's transport.
  [[nodiscard]] transport_type& world() noexcept { return opt_.policies_.transport; }
  /// This rank's working group (the whole job unless `split_group` was called).
  [[nodiscard]] transport_type& group() noexcept { return opt_.comm(); }
  /// Splits the job: the ranks passing the same `color` form a working group (ordered by world
  /// rank). Only from `setup`; collective over the job.
  void split_group(int color) { opt_.group_.emplace(world().split(color, world().rank())); }
  /// Where `optimize` is in its data (epoch and batch of the step about to be taken).
  [[nodiscard]] data_position batch_position() const noexcept {
    return {opt_.run_.batch_epoch, opt_.run_.batch_index};
  }
  /// Whether the run has stopped.
  [[nodiscard]] bool stopped() const noexcept { return opt_.run_.stopped; }
  /// Books estimate `est` made on the snapshot of step `snapshot_step` and, unless it failed,
  /// puts it in use now (its staleness is the steps since the snapshot).
  void put_in_use(eigen_estimate est, index snapshot_step) {
    opt_.record_estimate(std::move(est), snapshot_step, step(), nullptr);
  }
  /// Counts an estimate not ready at its due step (training went on with the previous one).
  void count_late() noexcept { ++opt_.run_.stats.late_estimates; }
  /// Counts an estimate not started because the previous one is still in flight.
  void count_skipped() noexcept { ++opt_.run_.stats.skipped_estimates; }
  /// Books an estimate this rank served to others (it is not put in use here); `here` holds
  /// the communication inside it, or null when it ran beside training.
  void book_served(const eigen_estimate& est, const estimate_communication* here) {
    opt_.book_estimate(est, here);
    opt_.update_memory_report(est.basis_bytes);
  }
  /// Runs a transport call `f()` and books its time as communication.
  template <class F>
  void communicate(F&& f) {
    opt_.communicate(std::forward<F>(f));
  }
  /// Serving ranks: writes this rank's part of the checkpoint of step `step` into `dir`, with
  /// parameters `x`, and takes part in its commit (errors are the trainers' to report).
  void join_checkpoint(const_vector_ref<scalar_type> x, index step,
                       const std::filesystem::path& dir) {
    opt_.join_checkpoint(x, step, dir);
  }
  /// The run summary.
  [[nodiscard]] summary& stats() noexcept { return opt_.run_.stats; }

 protected:
  /// The optimizer.
  Optimizer& opt_;
};

/// What a schedule may ask of `Optimizer` before a step on `Model`: everything of
/// `curvature_host`, and running estimates on the curvature batch.
template <class Optimizer, class Model>
class curvature_context : public curvature_host<Optimizer> {
 public:
  /// Parameter scalar.
  using scalar_type = typename Optimizer::scalar_type;
  /// The model's batch type.
  using batch_type = typename Model::batch_type;

  /// A view of `opt` before a step on `model`; estimates run at `point` on `batch`.
  curvature_context(Optimizer& opt, const Model& model, const_vector_ref<scalar_type> point,
                    const batch_type& batch)
      : curvature_host<Optimizer>(opt), model_(model), point_(point), batch_(batch) {}

  /// The parameters curvature is estimated at (the consensus point in mode A).
  [[nodiscard]] const_vector_ref<scalar_type> point() const noexcept { return point_; }
  /// This rank's slice of the curvature batch.
  [[nodiscard]] const batch_type& batch() const noexcept { return batch_; }
  /// The model.
  [[nodiscard]] const Model& model() const noexcept { return model_; }

  /// Runs an estimate now at `point()` on the curvature batch, every rank of the working group
  /// taking part, and puts it in use for this step.
  void estimate_now() { this->opt_.estimate_inline(model_, point_, batch_, this->step()); }
  /// Records that an estimate starts before this step (`optimizer::last_step_estimated`) and
  /// which Hessian-vector product it uses; `estimate_now` and `detached_estimate` do it
  /// themselves, a schedule that estimates elsewhere calls it.
  void note_estimate_started() { this->opt_.template note_estimate_started<Model>(); }
  /// Copies `point()` and the batch and returns a job that estimates on the copies without any
  /// collective (safe on another thread while training goes on, under the model's concurrency
  /// rules). Put its result in use with `put_in_use(est, step)` at a later step.
  [[nodiscard]] std::function<eigen_estimate()> detached_estimate() {
    return this->opt_.detached_estimate(model_, point_, batch_);
  }
  /// Serving ranks: runs an estimate at `x` on `batch` over this rank's working group
  /// (collective when the group has several ranks), with the communication seconds in `comm`.
  eigen_estimate estimate_over_group(const_vector_ref<scalar_type> x, const batch_type& batch,
                                     estimate_communication& comm) {
    return this->opt_.estimate_over_group(model_, x, batch, comm);
  }
  /// The Rayleigh quotient vᵣᵀ H vᵣ of retained eigenvector r on the curvature batch at
  /// `point()` (a collective over the working group; one Hessian-vector product). A drift probe:
  /// compare it with eigenvalue r to see whether the curvature moved.
  [[nodiscard]] double rayleigh_quotient(index r) {
    return this->opt_.rayleigh_quotient(model_, point_, batch_, r);
  }
  /// Retained eigenvalues in use (largest first), empty before the first estimate.
  [[nodiscard]] const Eigen::VectorXd& eigenvalues() const noexcept {
    return this->opt_.run_.newton.eigenvalues;
  }

 private:
  const Model& model_;
  const_vector_ref<scalar_type> point_;
  const batch_type& batch_;
};

}  // namespace dho2
