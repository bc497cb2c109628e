/// @file
/// `dho2::newton_subspace`: the curvature FOSI keeps between estimates — the retained
/// eigenpairs, their inverses, the base-step scale and the Newton velocity — and the FOSI update
/// of one shard with it.
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/concepts/base_optimizer.hpp>
#include <dho2/core/detail/blocks.hpp>
#include <dho2/core/eigen_estimate.hpp>
#include <dho2/core/types.hpp>
#include <dho2/fosi/options.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

namespace dho2 {

/// The retained curvature of one rank and the Newton velocity, on the rank's state layout (its
/// shard in mode S, all n parameters in mode A).
///
/// One step on gradient g, with V ∈ R^{m×K} the K = k + l retained eigenvectors (orthonormal
/// columns, m the state length) and ρᵢ = 1/|λᵢ + σ| (σ the proximal shift of a consensus
/// policy, 0 in mode S):
/// \f[ c = V^\top g,\quad g_2 = g - V c,\quad u \leftarrow \mathrm{mom}(V c, u),\quad
///     d = V(\rho \odot V^\top u), \f]
/// \f[ b = \mathrm{base.step}(g_2),\quad \Delta x = s\,(b - V V^\top b) - \alpha\, d, \f]
/// with s = clip(λ_max/λ_min over the retained top-k, 1, c). The velocity is kept without a pass
/// over m per step: between estimates u = δ·u₀ + V a with a scalar δ, the anchor u₀ (stored at
/// the last estimate) and K coefficients a, so Vᵀu = δ·(Vᵀu₀) + a — the reference's
/// full-vector recurrence rearranged, not an approximation. A base optimizer's parameter term
/// (decoupled decay) is not part of this step: `dho2::optimizer` adds it to Δx afterwards.
template <model_scalar S>
struct newton_subspace {
  /// V: m × K, column r is (this rank's part of) eigenvector r.
  matrix<S> basis;
  /// Retained eigenvalues λ (K): the largest first, then the smallest.
  Eigen::VectorXd eigenvalues;
  /// ρᵢ = 1/|λᵢ + σ| (K).
  Eigen::VectorXd inverses;
  /// Base-step scale s.
  double scale = 1.0;
  /// Retained pairs that are among the largest (rows 0 … num_top − 1).
  index num_top = 0;
  /// Anchor u₀ of the Newton velocity (0 or m entries).
  vector<S> anchor;
  /// Decay δ of the anchor.
  double anchor_decay = 0.0;
  /// Velocity coefficients a (K).
  Eigen::VectorXd coefficients;
  /// Vᵀu₀ (K).
  Eigen::VectorXd anchor_projection;

  /// Retained pairs K (0 before the first estimate).
  [[nodiscard]] index size() const noexcept { return basis.cols(); }

  /// The FOSI step of one shard: `g` (this shard's gradient) gives the step Δx in `delta`;
  /// `base` and `base_state` take the base step. `reduce(Eigen::VectorXd&)` sums partial
  /// projections over the ranks sharing the state (a no-op when the state is whole). With K = 0
  /// it is the base step exactly.
  ///
  /// Passes over the shard, with a base that has a step kernel (`base_optimizer`'s optional
  /// `begin_step`; all of DHO2's do): (1) c = Vᵀg; (2) block by block, g₂ = g − V c (kept in a
  /// block buffer, never stored), b = base step on g₂ into `delta`, p += Vᵀb, delta = s·b;
  /// (3) delta −= V(s·p + α·newton). V is read three times — the least the step allows, since
  /// Vᵀb needs all of b before any entry of Δx — g twice (passes 1 and 2), the base state once
  /// and `delta` twice (written in 2, updated in 3). A base without a kernel takes the unfused
  /// path (g is then overwritten with g₂): one more pass over V and two more over the shard, the
  /// same result to round-off.
  template <class Base, class BaseState, class Reduce>
  void step(const options& opts, const Base& base, BaseState& base_state, vector_ref<S> g,
            vector<S>& delta, Reduce&& reduce) {
    Eigen::VectorXd c = partial_projection(const_vector_ref<S>(g));
    if (size() > 0) reduce(c);
    step_projected(opts, base, base_state, g, S(1), c, delta, reduce);
  }

  /// This rank's part of c = Vᵀg (K values; none before the first estimate): `step_projected`
  /// needs it summed over the ranks sharing the state. Mode S sends it in the all-reduce that
  /// also agrees on the loss, so the step costs no collective of its own for it.
  [[nodiscard]] Eigen::VectorXd partial_projection(const_vector_ref<S> g) const {
    if (size() == 0) return {};
    return (basis.transpose() * g).template cast<double>();
  }

  /// `step` on the gradient γ·g, given c = Vᵀ(γg) already summed over the ranks: the gain γ
  /// (`gain`) is applied in the pass that forms g₂, so the gradient never gets a scaling pass
  /// of its own (mode S passes 1/W, W the batch's total weight, times a clipping factor).
  template <class Base, class BaseState, class Reduce>
  void step_projected(const options& opts, const Base& base, BaseState& base_state, vector_ref<S> g,
                      S gain, const Eigen::VectorXd& c, vector<S>& delta, Reduce&& reduce) {
    vector_ref<S> d(delta);
    if (size() == 0) {
      if (gain == S(1)) {
        base.step(base_state, const_vector_ref<S>(g), d);
      } else if constexpr (detail::has_step_kernel<Base, S>) {
        fused_base_step(base.begin_step(base_state), const_vector_ref<S>(g), gain, d, c);
      } else {
        g *= gain;
        base.step(base_state, const_vector_ref<S>(g), d);
      }
      return;
    }
    // Newton velocity in coefficient space: Vᵀu = δ·(Vᵀu₀) + a.
    const double beta = opts.momentum;
    switch (opts.momentum_form) {
      case momentum_kind::ema:
        anchor_decay *= beta;
        coefficients = beta * coefficients + (1.0 - beta) * c;
        break;
      case momentum_kind::heavy_ball:
        anchor_decay *= beta;
        coefficients = beta * coefficients + c;
        break;
      case momentum_kind::none:
        anchor_decay = 0.0;
        coefficients = c;
        break;
    }
    const Eigen::VectorXd newton =
        inverses.cwiseProduct(anchor_decay * anchor_projection + coefficients);
    Eigen::VectorXd p;
    if constexpr (detail::has_step_kernel<Base, S>) {
      p = fused_base_step(base.begin_step(base_state), const_vector_ref<S>(g), gain, d, c);
    } else {
      // g₂ = γg − V c, in place: the full gradient is not needed again this step.
      if (gain != S(1)) g *= gain;
      g.noalias() -= basis * c.cast<S>();
      base.step(base_state, const_vector_ref<S>(g), d);
      p = (basis.transpose() * delta).template cast<double>();
      if (scale != 1.0) delta *= static_cast<S>(scale);
    }
    reduce(p);
    // Δx = s(b − V Vᵀb) − α V(newton) = s·b − V(s·p + α·newton).
    const Eigen::VectorXd coef = scale * p + opts.alpha * newton;
    delta.noalias() -= basis * coef.cast<S>();
  }

  /// Puts estimate `est` (this rank's columns of its eigenvectors over `length` state entries)
  /// in use: drops eigenpairs with |λ| < floor·max|λ|, swaps in the new V, recomputes the
  /// inverses and the scale (shift σ, clip c), and re-anchors the velocity (materialising
  /// u = δu₀ + V a with the old V first). `reduce` as in `step`.
  template <class Reduce>
  void adopt(const eigen_estimate& est, index length, double floor, double shift, double clip,
             Reduce&& reduce) {
    const index count = est.eigenvalues.size();
    const double top = count > 0 ? est.eigenvalues.cwiseAbs().maxCoeff() : 0.0;
    std::vector<index> keep;
    for (index i = 0; i < count; ++i) {
      const double a = std::abs(est.eigenvalues(i));
      if (top > 0.0 && a >= floor * top && a > 0.0) keep.push_back(i);
    }
    const auto kept = static_cast<index>(keep.size());
    vector<S> u = vector<S>::Zero(length);
    if (anchor.size() == length) u = static_cast<S>(anchor_decay) * anchor;
    if (basis.cols() > 0) u.noalias() += basis * coefficients.cast<S>();

    matrix<S> v(length, kept);
    eigenvalues.resize(kept);
    num_top = 0;
    for (index r = 0; r < kept; ++r) {
      const auto i = keep[static_cast<std::size_t>(r)];
      v.col(r) = est.eigenvectors.row(i).transpose().template cast<S>();
      eigenvalues(r) = est.eigenvalues(i);
      if (i < est.num_largest) ++num_top;  // the largest come first, so these are rows 0..
    }
    basis = std::move(v);
    refresh_inverses(shift, clip);
    anchor = std::move(u);
    anchor_decay = 1.0;
    coefficients = Eigen::VectorXd::Zero(kept);
    anchor_projection = (basis.transpose() * anchor).template cast<double>();
    reduce(anchor_projection);
  }

  /// ρᵢ = 1/|λᵢ + σ| and s = clip(max/min of |λ + σ| over the retained top pairs, 1, c).
  void refresh_inverses(double shift, double clip) {
    const index kept = eigenvalues.size();
    inverses.resize(kept);
    double top_max = 0.0;
    double top_min = std::numeric_limits<double>::infinity();
    for (index r = 0; r < kept; ++r) {
      const double shifted = std::abs(eigenvalues(r) + shift);
      inverses(r) = 1.0 / shifted;
      if (r < num_top) {
        top_max = std::max(top_max, shifted);
        top_min = std::min(top_min, shifted);
      }
    }
    scale = (top_max > 0.0) ? std::clamp(top_max / top_min, 1.0, clip) : 1.0;
  }

  /// Bytes of the retained eigenvectors.
  [[nodiscard]] std::size_t basis_bytes() const noexcept {
    return static_cast<std::size_t>(basis.size()) * sizeof(S);
  }

 private:
  // Pass (2) of `step` with the base's step kernel: per block of entries, g₂ = γg − V c into a
  // stack buffer, the kernel's b into delta, p += Vᵀb, delta = s·b, all while the block of V,
  // g, the base state and delta is in cache. Returns p = Vᵀb (this rank's part).
  template <class Kernel>
  Eigen::VectorXd fused_base_step(Kernel&& kernel, const_vector_ref<S> g, S gain,
                                  vector_ref<S> delta, const Eigen::VectorXd& c) const {
    const vector<S> cs = c.cast<S>();
    const auto s = static_cast<S>(scale);
    Eigen::VectorXd p = Eigen::VectorXd::Zero(size());
    vector<S> part(size());
    Eigen::Matrix<S, Eigen::Dynamic, 1, 0, detail::block_entries, 1> g2;
    detail::for_each_block(g.size(), [&](index i, index len) {
      const auto v = basis.middleRows(i, len);
      if (gain == S(1)) {
        g2 = g.segment(i, len);
      } else {
        g2 = gain * g.segment(i, len);
      }
      if (size() > 0) g2.noalias() -= v * cs;
      auto b = delta.segment(i, len);
      kernel(i, const_vector_ref<S>(g2), vector_ref<S>(b));
      if (size() == 0) return;
      part.noalias() = v.transpose() * b;
      p += part.template cast<double>();
      if (scale != 1.0) b *= s;
    });
    return p;
  }
};

}  // namespace dho2
