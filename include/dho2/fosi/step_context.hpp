/// @file
/// `dho2::step_context`: what the optimizer lends a consensus policy (`dho2::admm_solver`) for
/// one training step — the parameters, this rank's gradient, the FOSI update of the rank's
/// state, the working group's transport and the summary.
#pragma once

#include <dho2/core/shard_layout.hpp>
#include <dho2/core/step_status.hpp>
#include <dho2/core/summary.hpp>
#include <dho2/core/types.hpp>

#include <Eigen/Core>

#include <span>
#include <string>
#include <utility>

namespace dho2 {

/// One step's view of the optimizer, handed to `admm_solver::step(state, context)`. `Optimizer`
/// is the `dho2::optimizer` taking the step, `Model` its model type. A consensus policy calls:
/// `loss_and_gradient()` once, then either `reject(…)` or `update(g)` (the FOSI step of the
/// rank's state on gradient g) and the collectives it needs through `transport()`, timing them
/// with `communicate`. The context lives for one step; it is not copyable.
template <class Optimizer, class Model>
class step_context {
 public:
  /// Parameter scalar.
  using scalar_type = typename Optimizer::scalar_type;
  /// The working group's transport type.
  using transport_type = typename Optimizer::transport_type;

  /// A context for one step of `opt` on `model` at `x` with `batch`.
  step_context(Optimizer& opt, const Model& model, vector_ref<scalar_type> x,
               const typename Model::batch_type& batch)
      : opt_(opt), model_(model), x_(x), batch_(batch) {}
  step_context(const step_context&) = delete;
  step_context& operator=(const step_context&) = delete;

  /// The parameters (all n, as this rank holds them).
  [[nodiscard]] vector_ref<scalar_type> x() noexcept { return x_; }
  /// Number of parameters n.
  [[nodiscard]] index size() const noexcept { return x_.size(); }
  /// The 0-based index of this step.
  [[nodiscard]] index iteration() const noexcept { return opt_.run_.stats.iterations - 1; }
  /// Loss and gradient of this rank's slice of the batch at `x()`; the gradient lands in
  /// `gradient()`. Booked as gradient time.
  weighted_loss loss_and_gradient() { return opt_.local_loss_and_gradient(model_, x_, batch_); }
  /// This rank's gradient (n entries) from `loss_and_gradient`, free to be overwritten.
  [[nodiscard]] vector<scalar_type>& gradient() noexcept { return opt_.grad_; }
  /// A buffer of the state's length for a reduced gradient (sized when the state is sharded).
  [[nodiscard]] vector<scalar_type>& shard_gradient() noexcept { return opt_.shard_grad_; }
  /// Where this rank keeps optimizer state: its shard in mode S, [0, n) in mode A.
  [[nodiscard]] shard_layout state_layout() const noexcept { return opt_.state_; }
  /// The partition's P + 1 offsets over the working group.
  [[nodiscard]] std::span<const index> offsets() const noexcept { return opt_.offsets_; }
  /// The working group's transport.
  [[nodiscard]] transport_type& transport() noexcept { return opt_.comm(); }
  /// Ranks in the working group.
  [[nodiscard]] int ranks() const noexcept { return opt_.ranks_; }
  /// Whether the working group has several ranks.
  [[nodiscard]] bool distributed() const noexcept { return opt_.ranks_ > 1; }
  /// Runs a transport call `f()` and books its time as communication.
  template <class F>
  void communicate(F&& f) {
    opt_.communicate(std::forward<F>(f));
  }
  /// The FOSI step of the rank's state on `g` (the state's length; overwritten). When the state
  /// is sharded the new x[I_p] lands in `new_shard()` (for an all-gather); otherwise `x()` is
  /// updated in place. Call inside `timed_update`.
  void update(vector<scalar_type>& g) { opt_.update(x_, g); }
  /// This rank's part of c = Vᵀg for `g` of the state's length (K values; none before the first
  /// estimate): for a policy that sums it in a collective of its own (mode S sends it with the
  /// loss agreement) and then calls `update_projected`.
  [[nodiscard]] Eigen::VectorXd partial_projection(const vector<scalar_type>& g) const {
    return opt_.partial_projection(g);
  }
  /// Whether `options::max_gradient_norm` asks for gradient clipping.
  [[nodiscard]] bool clips_gradient() const noexcept { return opt_.clips_gradient(); }
  /// The clipping factor min(1, max_gradient_norm / ‖g‖) for a whole gradient of squared L2
  /// norm `squared`; records ‖g‖ as `optimizer::last_gradient_norm()`.
  double clip_factor(double squared) { return opt_.clip_factor(squared); }
  /// `update` on the gradient γ·g (`gain` γ, applied in the update's own pass over g), given
  /// c = Vᵀ(γg) summed over the ranks sharing the state; it clips nothing (fold the clipping
  /// factor into γ) and sums no projection of g itself. Call inside `timed_update`.
  void update_projected(vector<scalar_type>& g, scalar_type gain, const Eigen::VectorXd& c) {
    opt_.update_projected(x_, g, gain, c);
  }
  /// The new values of this rank's shard after a sharded `update`.
  [[nodiscard]] const vector<scalar_type>& new_shard() const noexcept { return opt_.delta_; }
  /// Runs `f()` and books its time as update time, less the communication inside it.
  template <class F>
  void timed_update(F&& f) {
    opt_.timed_update(std::forward<F>(f));
  }
  /// Records the loss of this step (the global mean where the ranks agreed on it).
  void set_loss(double loss) noexcept { opt_.last_loss_ = loss; }
  /// Counts a taken step.
  void count_step() noexcept { ++opt_.run_.stats.steps; }
  /// Books a step skipped for `why` (a non-finite loss or gradient) and returns `why`; under
  /// `nonfinite_policy::stop` stops the run (`when`), says why in the summary, and returns
  /// `step_status::stopped`.
  step_status reject(step_status why, stop_timing when) { return opt_.reject(why, when); }
  /// Sets the proximal shift σ added to every Hessian eigenvalue by the local objective (the
  /// consensus penalty ρ); the Newton part then inverts |λᵢ + σ|.
  void set_proximal_shift(double sigma) { opt_.set_proximal_shift(sigma); }
  /// Stops the run with termination `numerical_failure` and `message` (unless one is set).
  void stop(const std::string& message) { opt_.halt(message); }
  /// Whether the run has stopped.
  [[nodiscard]] bool stopped() const noexcept { return opt_.run_.stopped; }
  /// The run summary (a consensus policy appends its rounds to `admm_rounds`).
  [[nodiscard]] summary& stats() noexcept { return opt_.run_.stats; }

 private:
  Optimizer& opt_;
  const Model& model_;
  vector_ref<scalar_type> x_;
  const typename Model::batch_type& batch_;
};

}  // namespace dho2
