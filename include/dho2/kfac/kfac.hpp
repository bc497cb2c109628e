/// @file
/// `dho2::kfac<S, Transport>`: Kronecker-factored approximate curvature (K-FAC) for `dho2::mlp`,
/// data parallel over any `dho2::transport` with the factor inversions spread over the ranks as
/// in KAISA — the second-order baseline DHO2's FOSI is compared with. Options:
/// `dho2/kfac/kfac_options.hpp`; counters: `dho2/kfac/kfac_summary.hpp`. Drive it step by step
/// (`kfac::step`) or by epochs with the callbacks of `optimizer::optimize` (`kfac::optimize`).
///
/// References: Martens & Grosse, "Optimizing neural networks with Kronecker-factored approximate
/// curvature", ICML 2015 (K-FAC, factored Tikhonov damping); Ba, Grosse & Martens, "Distributed
/// second-order optimization using Kronecker-factored approximations", ICLR 2017 (KL clipping);
/// Pauloski et al., "KAISA: an adaptive second-order optimizer framework for deep neural
/// networks", SC 2021 (distributing the per-layer inversions over the workers).
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/callbacks/detail/epoch_loop.hpp>
#include <dho2/callbacks/events.hpp>
#include <dho2/concepts/batch_source.hpp>
#include <dho2/concepts/transport.hpp>
#include <dho2/core/errors.hpp>
#include <dho2/core/types.hpp>
#include <dho2/data/classification_batch.hpp>
#include <dho2/detail/agreement.hpp>
#include <dho2/detail/validate.hpp>
#include <dho2/kfac/kfac_options.hpp>
#include <dho2/kfac/kfac_summary.hpp>
#include <dho2/models/mlp.hpp>
#include <dho2/transport/single_process.hpp>

#include <Eigen/Cholesky>
#include <Eigen/Core>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <limits>
#include <numeric>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace dho2 {

/// K-FAC for `dho2::mlp<S>`, data parallel over `Transport` (Martens & Grosse 2015; KAISA).
///
/// **Curvature.** Weight layer l (0-based, width sₗ → sₗ₊₁) has parameters W̄ₗ = [Wₗ bₗ]
/// (sₗ₊₁ × (sₗ + 1)); its block of the Fisher is approximated by Fₗ ≈ Aₗ ⊗ Gₗ with
///
///     Aₗ = (1/B) Σⱼ āₗⱼ āₗⱼᵀ,  āₗⱼ = [aₗⱼ; 1]   (layer inputs, bias as homogeneous coordinate)
///     Gₗ = (1/B) Σⱼ gₗⱼ gₗⱼᵀ,  gₗⱼ = ∂ℓⱼ/∂zₗⱼ     (see `mlp_layer_signals`)
///
/// over the B samples of the global batch. Scaling convention: gₗⱼ is the gradient of sample j's
/// own loss ℓⱼ, i.e. B times the back-propagated gradient of the mean loss f = (1/B) Σⱼ ℓⱼ, so
/// Gₗ does not depend on B. The gradients come from the observed targets (the "empirical" Fisher
/// used by KAISA and kfac-pytorch), not from targets sampled from the model: the labels for the
/// cross-entropy, the inputs themselves for the reconstruction loss of an autoencoder
/// (`mlp_loss::squared_error_reconstruction`, where g_{L−1,j} = z_L,j − xⱼ). Both factors are kept
/// in double as moving averages A ← εA + (1 − ε)Â (ε = `factor_decay`; the first update sets
/// A = Â), updated every `factor_every` steps.
///
/// **Step** t (0-based) on global batch B = ⋃ₚ Bₚ, this rank holding the slice Bₚ:
///
///     ∇W̄ₗ = [∇Wₗ ∇bₗ]          (the mean-loss gradient, weight decay λWₗ included)
///     Pₗ = (Gₗ + γ_G I)⁻¹ ∇W̄ₗ (Aₗ + γ_A I)⁻¹
///        ⇔ vec(Pₗ) = ((Aₗ + γ_A I) ⊗ (Gₗ + γ_G I))⁻¹ vec(∇W̄ₗ)   (column-major vec)
///     ν = min(1, √(κ / (η² Σₗ ⟨Pₗ, ∇W̄ₗ⟩)))       (ν = 1 without `kl_clip`)
///     u ← μu + νP,   x ← x − ηu                 (u = νP when μ = 0)
///
/// with (γ_A, γ_G) = (π√γ, √γ/π) or (√γ, √γ) per `damping_form`. The damped inverses are
/// recomputed (Cholesky) every `inverse_every` steps from the factors current at that step, and
/// damping values are fixed with them.
///
/// **Distribution** (data parallel): every rank holds the whole model and computes loss,
/// gradient and the unnormalised factor sums Σ_{j∈Bₚ} āāᵀ, Σ_{j∈Bₚ} ggᵀ on its slice
/// (`shuffling_batcher::fill_batch(i, rank, ranks, out)`); one all-reduce of
/// (|Bₚ|·loss, |Bₚ|, |Bₚ|·∇fₚ, factor sums) gives the global means weighted by slice sizes, so
/// any P equals P = 1 up to round-off (empty slices allowed). Inversions are spread over ranks
/// (KAISA): layers are assigned greedily by cost (sₗ + 1)³ + sₗ₊₁³ — largest first, each to the
/// rank with the least assigned cost so far (ties: lower layer, lower rank) — and the owner
/// inverts both damped factors of its layers; one all-gather shares every inverse with every
/// rank (KAISA's communication-optimal placement: every rank then preconditions all layers
/// itself, with no per-step broadcast of preconditioned gradients). Factors agree bit for bit on
/// all ranks (the transport's sums are deterministic), so all ranks take identical steps.
/// Per step: one all-reduce of 2 + n (+ Σₗ (sₗ + 1)² + sₗ₊₁² on factor steps) doubles; on
/// inverse steps one all-gather of the same factor sizes. P = 1 (`single_process`) communicates
/// nothing.
///
/// Numerical trouble: a step whose global loss, gradient or factor statistics are not finite is
/// skipped on every rank (counted in `kfac_summary::skipped_nonfinite`, nothing changes).
///
/// Not thread-safe; one object per rank, driven by one thread.
template <model_scalar S, transport Transport = single_process>
class kfac {
 public:
  /// Parameter scalar (`float` or `double`).
  using scalar_type = S;
  /// The transport this rank communicates through.
  using transport_type = Transport;

  /// An optimizer with options `opts` communicating through `transport`.
  /// @throws dho2::invalid_options if `opts.validate()` does (before any communication).
  explicit kfac(kfac_options opts = {}, Transport transport = {})
      : opts_(opts), comm_(std::move(transport)) {
    opts_.validate();
  }

  /// One K-FAC step of `model` at `x` (updated in place) on this rank's slice `slice` of the
  /// global batch; every rank of the transport must call it with the same model and global
  /// batch index. The first call agrees the options and the model's widths across the ranks.
  /// @returns `step_status::taken` or `step_status::skipped_nonfinite_gradient` (non-finite
  ///   loss, gradient or factors anywhere; nothing changed).
  /// @throws dho2::invalid_options if x.size() != model.num_parameters(), if the options or
  ///   model widths differ between ranks, if the model differs from the first call's, or if the
  ///   global batch is empty (all ranks throw);
  ///   dho2::data_error if the slice does not fit the model.
  step_status step(const mlp<S>& model, vector_ref<S> x, const classification_batch<S>& slice) {
    const auto start = clock::now();
    initialize(model, x);
    const index t = summary_.iterations++;
    const bool factor_step = t % opts_.factor_every == 0 || !have_factors_;
    const bool inverse_step = t % opts_.inverse_every == 0 || !have_inverses_ || !have_factors_;

    // Local loss, gradient (and signals), weighted by this rank's slice size.
    const auto weight = static_cast<double>(slice.size());
    double loss = 0.0;
    timed(summary_.gradient_seconds, [&] {
      // An empty slice gives a zero-width signal and is weighted 0 (its loss and gradient hold
      // only the weight-decay term).
      loss = static_cast<double>(factor_step
                                     ? model.loss_gradient_and_signals(x, slice, grad_, signals_)
                                     : model.loss_and_gradient(x, slice, grad_));
    });
    const index n = grad_.size();
    const index stats = factor_step ? factor_size_ : 0;
    buffer_.resize(2 + n + stats);
    buffer_(0) = weight * loss;
    buffer_(1) = weight;
    buffer_.segment(2, n) = grad_.template cast<double>() * weight;
    if (factor_step) timed(summary_.factor_seconds, [&] { local_factor_sums(2 + n); });
    if (comm_.size() > 1) {
      timed(summary_.communication_seconds, [&] {
        comm_.all_reduce_sum(std::span<double>(buffer_.data(), count(buffer_.size())));
      });
      summary_.communicated_bytes += sizeof(double) * count(buffer_.size());
    }
    const double total = buffer_(1);
    if (!(total > 0.0)) {
      summary_.total_seconds += seconds(start, clock::now());
      throw invalid_options("global batch size = 0. Violated constraint: >= 1 sample over all " +
                            std::to_string(comm_.size()) + " ranks");
    }
    last_loss_ = buffer_(0) / total;
    if (!buffer_.allFinite()) {
      ++summary_.skipped_nonfinite;
      ++consecutive_skips_;
      summary_.total_seconds += seconds(start, clock::now());
      return step_status::skipped_nonfinite_gradient;
    }
    consecutive_skips_ = 0;
    buffer_ /= total;

    if (factor_step) timed(summary_.factor_seconds, [&] { update_factors(2 + n); });
    if (inverse_step) refresh_inverses();
    timed(summary_.update_seconds, [&] { update(x); });
    ++summary_.steps;
    summary_.total_seconds += seconds(start, clock::now());
    return step_status::taken;
  }

  // (clang-format 14 would put the requires-clause and the name on one line)
  // clang-format off
  /// Runs `epochs` epochs over `batches`, one `step` per batch, calling the callbacks' hooks as
  /// `optimizer::optimize` does (see `dho2/callbacks/events.hpp`), and returns the run's summary.
  /// Batch i of an epoch is this rank's slice `batches.fill_batch(i, rank, ranks, slice)` when
  /// the source offers it (`shuffling_batcher` does), else `batches.fill_batch(i, slice)`: then,
  /// unless `Transport` is `single_process`, the source must be declared rank-local (every rank
  /// passes its own slice source wrapped in `dho2::local_batches`; otherwise a compile error, see
  /// `dho2/concepts/batch_source.hpp`). Every rank of the transport calls it alike.
  ///
  /// Hooks: `on_begin`; `on_step` after every step (`step_info::estimated` is false: K-FAC has
  /// no curvature estimates; `loss` is the global batch's mean loss); `on_epoch_end` after every
  /// completed epoch (`train_loss` the mean over its taken steps); `on_end` with the returned
  /// summary. A stop asked by a callback on any rank stops every rank after the same step: the
  /// ranks agree by a one-double all-reduce after each step (only when some callback's `on_step`
  /// can ask, i.e. does not return void) and after each epoch end.
  ///
  /// The returned `dho2::summary`: termination (`completed`, `stopped_by_callback` or
  /// `interrupted`, see `dho2::stop_cause`, or `numerical_failure` after more consecutive
  /// skipped steps than `kfac_options::max_consecutive_skips`) and message; iterations, steps and skipped steps (`skipped_nonfinite_gradient`) since
  /// construction; `epochs` completed in this call and `final_loss` (the last one's
  /// `train_loss`); `total_seconds`, the wall time of this call; `gradient_seconds`,
  /// `update_seconds` and `communication_seconds` since construction (the factor and inverse
  /// times are only in `summary()`); `curvature_bytes` the factors and inverses,
  /// `optimizer_state_bytes` the rest of the state. No HVPs, no estimates.
  /// @throws what `step` throws, and dho2::invalid_options if epochs < 0.
  template <class Batches, class... Callbacks>
    requires batch_source<Batches, classification_batch<S>>
  dho2::summary optimize(const mlp<S>& model, vector_ref<S> x, Batches& batches, index epochs,
                   Callbacks&&... callbacks) {
    // clang-format on
    static_assert(detail::check_distributed_source<!std::is_same_v<Transport, single_process>,
                                                   Batches, classification_batch<S>>(),
                  "DHO2: kfac::optimize: see the message above");
    detail::require(epochs >= 0, "epochs", epochs, ">= 0");
    [[maybe_unused]] const index per_epoch = batches.num_batches();  // unused without callbacks
    const auto run_start = clock::now();
    (detail::call_on_begin(callbacks, run_info{model.num_parameters(), epochs, per_epoch}), ...);
    dho2::summary run;
    classification_batch<S> slice;
    epoch_driver driver{*this, model, x};
    const detail::epoch_loop_result out =
        detail::run_epochs<S>(driver, x, batches, slice, epochs, {}, run_start, callbacks...);
    const bool stop = out.stopped;
    run.epochs = out.epochs;
    if (out.epochs > 0) run.final_loss = out.final_loss;
    if (diverged()) {
      run.termination = termination_type::numerical_failure;
      run.message = "non-finite value at step " + std::to_string(summary_.iterations - 1) + ": " +
                    std::to_string(consecutive_skips_) +
                    " steps skipped in a row (kfac_options.max_consecutive_skips = " +
                    std::to_string(opts_.max_consecutive_skips) +
                    "), the run diverged; parameters are those before it";
    } else {
      run.termination = stop ? out.cause.termination : termination_type::completed;
      run.message = stop ? out.cause.message : "all " + std::to_string(epochs) + " epochs done";
    }
    run.iterations = summary_.iterations;
    run.steps = summary_.steps;
    run.skipped_nonfinite_gradient = summary_.skipped_nonfinite;
    run.gradient_seconds = summary_.gradient_seconds;
    run.update_seconds = summary_.update_seconds;
    run.communication_seconds = summary_.communication_seconds;
    run.curvature_bytes = summary_.curvature_bytes;
    run.optimizer_state_bytes = summary_.optimizer_state_bytes - summary_.curvature_bytes;
    run.total_seconds = seconds(run_start, clock::now());
    (detail::call_on_end(callbacks, run), ...);
    return run;
  }

  /// Mean loss over the global batch of the last step call, at the parameters before it.
  [[nodiscard]] double last_loss() const noexcept { return last_loss_; }
  /// Counters, times and memory of this rank.
  [[nodiscard]] const kfac_summary& summary() const noexcept { return summary_; }
  /// The options.
  [[nodiscard]] const kfac_options& options() const noexcept { return opts_; }
  /// The learning rate in force (`options().learning_rate`).
  [[nodiscard]] double learning_rate() const noexcept { return opts_.learning_rate; }
  /// Sets the learning rate from the next step on (what `dho2::lr_schedule` calls between
  /// steps); factors, inverses and the velocity are kept. Every rank must set the same rate
  /// before the same step (the options are agreed once, at the first step).
  /// @throws dho2::invalid_options naming the field `kfac_options.learning_rate`, with the
  ///   constraint "finite and > 0" (changing nothing).
  void set_learning_rate(double learning_rate) {
    detail::require_finite_positive("kfac_options.learning_rate", learning_rate);
    opts_.learning_rate = learning_rate;
  }
  /// The transport.
  [[nodiscard]] Transport& transport() noexcept { return comm_; }

  /// Number of weight layers L (0 before the first step).
  [[nodiscard]] index num_layers() const noexcept { return static_cast<index>(layers_.size()); }
  /// Aₗ ((sₗ + 1) square; the last row and column belong to the bias coordinate).
  [[nodiscard]] const Eigen::MatrixXd& factor_a(index l) const { return layer(l).a; }
  /// Gₗ (sₗ₊₁ square).
  [[nodiscard]] const Eigen::MatrixXd& factor_g(index l) const { return layer(l).g; }
  /// (Aₗ + γ_A I)⁻¹ as of the last inverse refresh.
  [[nodiscard]] const Eigen::MatrixXd& inverse_a(index l) const { return layer(l).a_inv; }
  /// (Gₗ + γ_G I)⁻¹ as of the last inverse refresh.
  [[nodiscard]] const Eigen::MatrixXd& inverse_g(index l) const { return layer(l).g_inv; }
  /// γ_A of layer l used by the last inverse refresh.
  [[nodiscard]] double damping_a(index l) const { return layer(l).gamma_a; }
  /// γ_G of layer l used by the last inverse refresh.
  [[nodiscard]] double damping_g(index l) const { return layer(l).gamma_g; }
  /// The rank that inverts layer l's factors.
  [[nodiscard]] int owner(index l) const { return layer(l).owner; }

 private:
  using clock = std::chrono::steady_clock;

  struct layer_state {
    index in = 0;      // sₗ + 1 (dimension of A)
    index out = 0;     // sₗ₊₁ (dimension of G)
    index offset = 0;  // of [Wₗ bₗ] in the parameter vector
    int owner = 0;
    Eigen::MatrixXd a, g, a_inv, g_inv;
    double gamma_a = 0.0, gamma_g = 0.0;
  };

  static double seconds(clock::time_point a, clock::time_point b) {
    return std::chrono::duration<double>(b - a).count();
  }
  static std::size_t count(index n) { return static_cast<std::size_t>(n); }
  template <class F>
  static void timed(double& into, F&& f) {
    const auto t0 = clock::now();
    std::forward<F>(f)();
    into += seconds(t0, clock::now());
  }

  [[nodiscard]] const layer_state& layer(index l) const {
    eigen_assert(l >= 0 && l < num_layers());
    return layers_[count(l)];
  }

  // Sizes, owners and buffers at the first step; agreement of options and widths across ranks.
  void initialize(const mlp<S>& model, const_vector_ref<S> x) {
    if (x.size() != model.num_parameters()) {
      throw invalid_options("x.size() = " + std::to_string(x.size()) +
                            ". Violated constraint: == model.num_parameters() (= " +
                            std::to_string(model.num_parameters()) + ")");
    }
    if (!widths_.empty()) {
      if (model.layers() != widths_ || model.output_loss() != loss_) {
        throw invalid_options("model.num_parameters() = " + std::to_string(model.num_parameters()) +
                              ". Violated constraint: the same layer widths and output loss at "
                              "every step");
      }
      return;
    }
    if (comm_.size() > 1) {
      const auto d = [](auto v) { return static_cast<double>(v); };
      std::vector<detail::named_field> fields{
          {"model.num_parameters()", d(model.num_parameters())},
          {"model.num_layers()", d(model.num_layers())},
          {"model.output_loss()", d(static_cast<int>(model.output_loss()))},
          {"kfac_options.learning_rate", opts_.learning_rate},
          {"kfac_options.momentum", opts_.momentum},
          {"kfac_options.damping", opts_.damping},
          {"kfac_options.damping_form", d(static_cast<int>(opts_.damping_form))},
          {"kfac_options.factor_decay", opts_.factor_decay},
          {"kfac_options.factor_every", d(opts_.factor_every)},
          {"kfac_options.inverse_every", d(opts_.inverse_every)},
          {"kfac_options.kl_clip", opts_.kl_clip.value_or(-1.0)},
          {"kfac_options.max_consecutive_skips", d(opts_.max_consecutive_skips)},
      };
      for (std::size_t l = 0; l < model.layers().size(); ++l) {
        fields.push_back({"model.layers()[" + std::to_string(l) + "]", d(model.layers()[l])});
      }
      if constexpr (requires { model.hidden_activation(); }) {
        fields.push_back(
            {"model.hidden_activation()", d(static_cast<int>(model.hidden_activation()))});
      }
      timed(summary_.communication_seconds, [&] { detail::check_fields_agree(comm_, fields); });
    }
    widths_ = model.layers();
    loss_ = model.output_loss();
    const index depth = model.num_layers();
    layers_.resize(count(depth));
    index offset = 0;
    factor_size_ = 0;
    for (index l = 0; l < depth; ++l) {
      layer_state& s = layers_[count(l)];
      s.in = widths_[count(l)] + 1;
      s.out = widths_[count(l) + 1];
      s.offset = offset;
      offset += s.in * s.out;
      factor_size_ += s.in * s.in + s.out * s.out;
      s.a = Eigen::MatrixXd::Zero(s.in, s.in);
      s.g = Eigen::MatrixXd::Zero(s.out, s.out);
      s.a_inv = Eigen::MatrixXd::Zero(s.in, s.in);
      s.g_inv = Eigen::MatrixXd::Zero(s.out, s.out);
    }
    assign_owners();
    grad_.resize(model.num_parameters());
    precond_.resize(model.num_parameters());
    if (opts_.momentum > 0.0) velocity_ = vector<double>::Zero(model.num_parameters());
    const std::size_t n = count(model.num_parameters());
    summary_.curvature_bytes = sizeof(double) * 2 * count(factor_size_);
    summary_.optimizer_state_bytes =
        sizeof(double) * (2 * count(factor_size_) + count(velocity_.size()) + n /*precond_*/ +
                          (2 + n + count(factor_size_)) /*buffer_*/ + count(gather_.size())) +
        sizeof(S) * n /*grad_*/;
  }

  // What the shared epoch loop drives: this optimizer's steps on one model.
  struct epoch_driver {
    kfac& opt;
    const mlp<S>& model;
    vector_ref<S> x;
    step_status step(const classification_batch<S>& batch) {
      const step_status st = opt.step(model, x, batch);
      return opt.diverged() ? step_status::stopped : st;
    }
    void at_batch(index /*epoch*/, index /*i*/) {}
    [[nodiscard]] double last_loss() const { return opt.last_loss_; }
    [[nodiscard]] bool last_step_estimated() const { return false; }
    [[nodiscard]] index iterations() const { return opt.summary_.iterations; }
    [[nodiscard]] int slice_rank() const { return opt.comm_.rank(); }
    [[nodiscard]] int slice_ranks() const { return opt.comm_.size(); }
    [[nodiscard]] bool halted() const { return opt.diverged(); }
    detail::stop_vote agree_on_stop(detail::stop_vote v) { return opt.agree_on_stop(v); }
  };

  // More consecutive skipped steps than the options allow (the same on every rank: the
  // finiteness test is on all-reduced values).
  [[nodiscard]] bool diverged() const noexcept {
    return opts_.max_consecutive_skips > 0 && consecutive_skips_ >= opts_.max_consecutive_skips;
  }

  // True on every rank if any rank asked to stop.
  detail::stop_vote agree_on_stop(detail::stop_vote mine) {
    if (comm_.size() <= 1) return mine;
    std::array<double, 2> flags{mine.asked ? 1.0 : 0.0, mine.interrupted ? 1.0 : 0.0};
    timed(summary_.communication_seconds, [&] { comm_.all_reduce_sum(std::span<double>(flags)); });
    summary_.communicated_bytes += sizeof(flags);
    return {flags[0] != 0.0, flags[1] != 0.0};
  }

  // Greedy largest-cost-first assignment of layers to ranks; offsets of the all-gather.
  void assign_owners() {
    const int ranks = comm_.size();
    std::vector<index> order(layers_.size());
    std::iota(order.begin(), order.end(), index{0});
    const auto cost = [&](index l) {
      const auto in = static_cast<double>(layers_[count(l)].in);
      const auto out = static_cast<double>(layers_[count(l)].out);
      return in * in * in + out * out * out;
    };
    std::stable_sort(order.begin(), order.end(),
                     [&](index a, index b) { return cost(a) > cost(b); });
    std::vector<double> load(static_cast<std::size_t>(ranks), 0.0);
    for (const index l : order) {
      const auto lightest = std::min_element(load.begin(), load.end()) - load.begin();
      layers_[count(l)].owner = static_cast<int>(lightest);
      load[static_cast<std::size_t>(lightest)] += cost(l);
    }
    gather_offsets_.assign(static_cast<std::size_t>(ranks) + 1, 0);
    for (const auto& s : layers_) {
      gather_offsets_[static_cast<std::size_t>(s.owner) + 1] += s.in * s.in + s.out * s.out;
    }
    std::partial_sum(gather_offsets_.begin(), gather_offsets_.end(), gather_offsets_.begin());
    if (ranks > 1) gather_.resize(gather_offsets_.back());
  }

  // buffer_[at, …) = Σ_{j ∈ slice} āāᵀ, Σ ggᵀ for every layer (unnormalised, this rank's slice).
  void local_factor_sums(index at) {
    for (std::size_t k = 0; k < layers_.size(); ++k) {
      const layer_state& s = layers_[k];
      const index b = signals_.inputs[k].cols();
      abar_.resize(s.in, b);
      abar_.topRows(s.in - 1) = signals_.inputs[k].template cast<double>();
      abar_.row(s.in - 1).setOnes();
      Eigen::Map<Eigen::MatrixXd>(buffer_.data() + at, s.in, s.in).noalias() =
          abar_ * abar_.transpose();
      at += s.in * s.in;
      gbar_ = signals_.output_gradients[k].template cast<double>();
      Eigen::Map<Eigen::MatrixXd>(buffer_.data() + at, s.out, s.out).noalias() =
          gbar_ * gbar_.transpose();
      at += s.out * s.out;
    }
  }

  // Moving averages from the (already normalised) global statistics in buffer_[at, …).
  void update_factors(index at) {
    const double decay = have_factors_ ? opts_.factor_decay : 0.0;
    for (auto& s : layers_) {
      for (Eigen::MatrixXd* f : {&s.a, &s.g}) {
        const index d = f->rows();
        const Eigen::Map<const Eigen::MatrixXd> fresh(buffer_.data() + at, d, d);
        if (decay == 0.0) {
          *f = fresh;
        } else {
          *f = decay * *f + (1.0 - decay) * fresh;
        }
        at += d * d;
      }
    }
    have_factors_ = true;
    ++summary_.factor_updates;
  }

  // Every rank computes the damping of every layer (cheap, identical everywhere) and inverts the
  // factors of the layers it owns; one all-gather shares the inverses.
  void refresh_inverses() {
    const double root = std::sqrt(opts_.damping);
    const int rank = comm_.rank();
    const auto t0 = clock::now();
    for (auto& s : layers_) {
      double pi = 1.0;
      if (opts_.damping_form == kfac_damping::trace_norm) {
        const double ta = s.a.trace() / static_cast<double>(s.in);
        const double tg = s.g.trace() / static_cast<double>(s.out);
        const double ratio = ta / tg;
        if (ta > 0.0 && tg > 0.0 && std::isfinite(ratio) && ratio > 0.0) pi = std::sqrt(ratio);
      }
      s.gamma_a = pi * root;
      s.gamma_g = root / pi;
      if (s.owner != rank) continue;
      invert_damped(s.a, s.gamma_a, s.a_inv);
      invert_damped(s.g, s.gamma_g, s.g_inv);
      summary_.factors_inverted += 2;
    }
    summary_.inverse_seconds += seconds(t0, clock::now());
    if (comm_.size() > 1) share_inverses();
    have_inverses_ = true;
    ++summary_.inverse_updates;
  }

  void invert_damped(const Eigen::MatrixXd& f, double gamma, Eigen::MatrixXd& inv) {
    Eigen::MatrixXd damped = f;
    damped.diagonal().array() += gamma;
    const Eigen::LLT<Eigen::MatrixXd> llt(damped);
    if (llt.info() != Eigen::Success) {
      ++summary_.failed_inversions;
      return;
    }
    inv = llt.solve(Eigen::MatrixXd::Identity(f.rows(), f.cols()));
  }

  // Packs this rank's inverses (its layers in order), all-gathers, unpacks everyone's.
  void share_inverses() {
    const auto rank = static_cast<std::size_t>(comm_.rank());
    const auto walk = [&](auto&& visit) {
      std::vector<index> at(gather_offsets_.begin(), gather_offsets_.end() - 1);
      for (auto& s : layers_) {
        index& pos = at[static_cast<std::size_t>(s.owner)];
        for (Eigen::MatrixXd* inv : {&s.a_inv, &s.g_inv}) {
          visit(s.owner, *inv,
                Eigen::Map<Eigen::MatrixXd>(gather_.data() + pos, inv->rows(), inv->cols()));
          pos += inv->size();
        }
      }
    };
    walk([&](int owner, Eigen::MatrixXd& inv, Eigen::Map<Eigen::MatrixXd> slot) {
      if (static_cast<std::size_t>(owner) == rank) slot = inv;
    });
    const index mine = gather_offsets_[rank];
    const index length = gather_offsets_[rank + 1] - mine;
    // The input is copied out first: in and out of an all-gather must not overlap.
    const std::vector<double> local(gather_.data() + mine, gather_.data() + mine + length);
    timed(summary_.communication_seconds, [&] {
      comm_.all_gather(std::span<const double>(local),
                       std::span<double>(gather_.data(), count(gather_.size())),
                       std::span<const index>(gather_offsets_));
    });
    summary_.communicated_bytes += sizeof(double) * local.size();
    walk([&](int owner, Eigen::MatrixXd& inv, Eigen::Map<Eigen::MatrixXd> slot) {
      if (static_cast<std::size_t>(owner) != rank) inv = slot;
    });
  }

  // Preconditions the mean gradient in buffer_[2, 2 + n), clips, applies momentum, updates x.
  void update(vector_ref<S> x) {
    double inner = 0.0;
    for (const auto& s : layers_) {
      const Eigen::Map<const Eigen::MatrixXd> grad(buffer_.data() + 2 + s.offset, s.out, s.in);
      Eigen::Map<Eigen::MatrixXd> p(precond_.data() + s.offset, s.out, s.in);
      p.noalias() = s.g_inv * grad * s.a_inv;
      inner += p.cwiseProduct(grad).sum();
    }
    const double lr = opts_.learning_rate;
    double nu = 1.0;
    if (opts_.kl_clip && inner > 0.0) {
      nu = std::min(1.0, std::sqrt(*opts_.kl_clip / (lr * lr * inner)));
    }
    summary_.last_kl_scale = nu;
    if (opts_.momentum > 0.0) {
      velocity_ = opts_.momentum * velocity_ + nu * precond_;
      x -= (lr * velocity_).template cast<S>();
    } else {
      x -= ((lr * nu) * precond_).template cast<S>();
    }
  }

  kfac_options opts_;
  Transport comm_;
  kfac_summary summary_;
  double last_loss_ = std::numeric_limits<double>::quiet_NaN();
  std::vector<index> widths_;
  mlp_loss loss_ = mlp_loss::softmax_cross_entropy;
  std::vector<layer_state> layers_;
  index factor_size_ = 0;
  std::vector<index> gather_offsets_;
  index consecutive_skips_ = 0;  // steps skipped in a row (kfac_options::max_consecutive_skips)
  bool have_factors_ = false;
  bool have_inverses_ = false;
  mlp_layer_signals<S> signals_;
  vector<S> grad_;
  Eigen::VectorXd buffer_, precond_, velocity_, gather_;
  Eigen::MatrixXd abar_, gbar_;
};

}  // namespace dho2
