/// @file
/// `dho2::lanczos` (`dho2::basic_lanczos<Basis>`): extreme-spectrum estimation by the Lanczos
/// iteration with full re-orthogonalisation, on shards (docs/algorithm.md, "Curvature estimates").
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/concepts/curvature_estimator.hpp>
#include <dho2/curvature/detail/gram_schmidt.hpp>
#include <dho2/detail/random.hpp>
#include <dho2/detail/validate.hpp>

#include <Eigen/Eigenvalues>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <span>
#include <type_traits>
#include <utility>

namespace dho2 {

/// The Lanczos iteration (Lanczos, 1950) for the k largest and l smallest eigenpairs of the
/// Hessian H, as FOSI's extreme spectrum estimation (Sivan et al., ICLR 2024), with its basis
/// stored in `Basis` (`double` or `float`; `dho2::lanczos` is `basic_lanczos<double>`).
///
/// From a start vector q₀ drawn from the estimator's own counter-based RNG (seed and stream of
/// the request; the value of coordinate i does not depend on how the vector is sharded), step j
/// computes w = H qⱼ and orthogonalises it against the whole basis Q = [q₀ … qⱼ] by classical
/// Gram–Schmidt (CGS) passes
/// \f[ h = Q^\top w,\; w \leftarrow w - Q h,\; \alpha_j = h_j \;(+\text{corrections}),\quad
///     \beta_j = \lVert w \rVert,\quad q_{j+1} = w / \beta_j. \f]
/// The first pass contains the three-term recurrence. A further pass runs only when the DGKS
/// criterion (Daniel, Gragg, Kaufman & Stewart, "Reorthogonalization and stable algorithms for
/// updating the Gram–Schmidt QR factorization", Math. Comp. 30(136), 1976) detects cancellation:
/// with w⁻ the vector before a pass and w⁺ after it,
/// \f[ \lVert w^+ \rVert < \eta\,\lVert w^- \rVert \quad (\eta = \texttt{reorthogonalization\_eta}
///     = 1/\sqrt{2}) \f]
/// means the pass removed most of w, so the rounding errors of h, of relative size ε‖w⁻‖, are
/// large relative to ‖w⁺‖ and w⁺ is not orthogonal to Q to working precision: CGS is repeated,
/// at most `reorthogonalization_passes` passes in all ("twice is enough": 2 by default). When the
/// criterion does not fire, one pass already leaves w⁺ orthogonal to round-off and the second
/// pass of CGS2 (two reads of Q) is saved; when it fires, the subtraction of one pass and the
/// projection of the next share one read of Q, row block by row block.
///
/// **Reductions.** Each pass reduces ‖w⁻‖² together with h, and
/// \f[ \lVert w^+ \rVert^2 = \lVert w^- \rVert^2 - \lVert h \rVert^2 \f]
/// (Pythagoras, Q orthonormal) serves both the DGKS test and β: its error is O(ε‖w⁻‖²) (for a
/// float basis, O(ε_float‖w⁻‖²)), so when the last pass kept at least half of w's norm
/// (‖w⁺‖² ≥ ‖w⁻‖²/4) β is exact to a few ε relative and needs no reduction of its own; otherwise
/// (heavy cancellation in the last allowed pass, near a breakdown) ‖w⁺‖² is reduced explicitly.
/// The product's finiteness flag rides in the first pass's reduction as well
/// (`hvp_operator::apply_local_check`). Every decision uses reduced values only, which every rank
/// holds identically, so all ranks run the same passes and collectives: distributed, a step
/// costs the product's gather and reduce-scatter plus 1 reduction, 2 with a second pass.
/// After m steps the tridiagonal T = tridiag(β, α, β) = Y Θ Yᵀ gives Ritz values θ and vectors
/// V = Yᵀ Qᵀ, with residuals ‖H vᵢ − θᵢ vᵢ‖ = |β_{m−1} Y_{m−1,i}| at no extra cost.
///
/// **Precision.** All arithmetic (products, projections, the tridiagonal, the Ritz vectors) is in
/// double whatever the model's scalar and `Basis`. `Basis` is only how the basis is stored:
/// 8·m·n/P bytes per rank in double, half in float. The re-orthogonalisation reads Q two or three
/// times per step; a float basis halves those bytes, converting each row block to double in a
/// small buffer (which pays at moderate m, not at large m: docs/algorithm.md gives the
/// measurements). The price is that Q is orthonormal only to float round-off (about 6e-8): on
/// planted spectra the Ritz values moved by up to 2.4e-9 of ‖H‖. Choose `float` to halve the
/// basis's memory, e.g. for a float model, whose products already carry float round-off; keep
/// `double` when eigenvalues are wanted to more than about eight digits.
///
/// Breakdown: when βⱼ ≤ `breakdown_tolerance`·‖T‖ (the Krylov space is invariant, e.g. a zero or
/// low-rank Hessian), the iteration stops and returns the pairs of the steps done — fewer than
/// requested if needed, never NaN, never a throw.
template <class Basis = double>
struct basic_lanczos {
  static_assert(std::is_same_v<Basis, double> || std::is_same_v<Basis, float>,
                "DHO2: basic_lanczos<Basis>: the basis is stored in double or float");

  /// The scalar the basis is stored in.
  using basis_scalar = Basis;

  /// Relative threshold on β for declaring breakdown (in (0, 1)).
  double breakdown_tolerance = 1e-10;
  /// Maximum classical Gram–Schmidt passes per step (≥ 1; 2 gives orthogonality to round-off).
  /// Passes after the first run only when the DGKS criterion fires (see the class doc).
  index reorthogonalization_passes = 2;
  /// DGKS threshold η in [0, 1]: one more pass runs when a pass leaves ‖w⁺‖ < η‖w⁻‖. 1/√2 is
  /// the classical choice; smaller values repeat less often, 1 repeats whenever a pass removed
  /// anything (CGS2 in practice).
  double reorthogonalization_eta = 0.70710678118654752;

  /// Throws `dho2::invalid_options` for bad hyper-parameters.
  void validate() const {
    detail::require(std::isfinite(breakdown_tolerance) && breakdown_tolerance > 0.0 &&
                        breakdown_tolerance < 1.0,
                    "lanczos::breakdown_tolerance", breakdown_tolerance, "0 < value < 1");
    detail::require(reorthogonalization_passes >= 1, "lanczos::reorthogonalization_passes",
                    reorthogonalization_passes, ">= 1");
    detail::require(std::isfinite(reorthogonalization_eta) && reorthogonalization_eta >= 0.0 &&
                        reorthogonalization_eta <= 1.0,
                    "lanczos::reorthogonalization_eta", reorthogonalization_eta, "0 <= value <= 1");
  }

  /// Scratch of an estimate that a caller keeps across estimates: the shard of the basis Q
  /// (sizeof(Basis)·m·n/P bytes, tens of megabytes for a network) and the small vectors. A fresh
  /// allocation of that size comes from `mmap`, so every estimate would pay its first-touch page
  /// faults again; an estimate into a kept workspace reuses the pages (same results, bit for
  /// bit). One estimate at a time per workspace.
  struct workspace {
    /// The basis shard Q (shard size × m), column j holding qⱼ.
    Eigen::Matrix<Basis, Eigen::Dynamic, Eigen::Dynamic> basis;
    /// The tridiagonal's diagonal α.
    Eigen::VectorXd alpha;
    /// The tridiagonal's off-diagonal β.
    Eigen::VectorXd beta;
    /// The vector being orthogonalised, w = H qⱼ − …
    Eigen::VectorXd w;
    /// A pass's projections Qᵀw, then ‖w⁻‖² (and, in the first pass, the finiteness flag),
    /// reduced together.
    Eigen::VectorXd h;
    /// The next pass's projections, when a second pass runs.
    Eigen::VectorXd h_next;
    /// A float basis: qⱼ in double (the operator's input).
    Eigen::VectorXd q;
    /// A float basis: one row block of Q converted to double.
    Eigen::VectorXd block;
  };

  /// Runs at most `request.steps` (and at most n) Lanczos steps on `op` and returns the
  /// `request.largest` largest and `request.smallest` smallest Ritz pairs.
  [[nodiscard]] eigen_estimate estimate(hvp_operator& op, const estimate_request& request) const {
    workspace scratch;
    return estimate(op, request, scratch);
  }

  /// The same estimate with its scratch in `ws`, which keeps its allocations for the next call.
  [[nodiscard]] eigen_estimate estimate(hvp_operator& op, const estimate_request& request,
                                        workspace& ws) const {
    using Eigen::MatrixXd;
    using Eigen::VectorXd;
    const auto t_start = std::chrono::steady_clock::now();
    const index ns = op.shard_size();
    const index m = std::max<index>(1, std::min(request.steps, op.global_size()));
    const index hvps_before = op.applications();
    const double hvp_seconds_before = op.apply_seconds();

    eigen_estimate out;
    auto& basis = ws.basis;
    basis.resize(ns, m);  // keeps the allocation when the size is unchanged
    out.basis_bytes = static_cast<std::size_t>(basis.size()) * sizeof(Basis);
    VectorXd& alpha = ws.alpha;
    VectorXd& beta = ws.beta;
    alpha.setZero(m);
    beta.setZero(m);
    VectorXd& w = ws.w;
    w.resize(ns);
    ws.h.resize(m + 2);
    ws.h_next.resize(m + 1);
    if constexpr (!std::is_same_v<Basis, double>) ws.q.resize(ns);

    const auto offset = static_cast<std::uint64_t>(op.shard_offset());
    for (index i = 0; i < ns; ++i) {
      w(i) = detail::counter_normal(request.seed, request.stream,
                                    offset + static_cast<std::uint64_t>(i));
    }
    double norm2 = w.squaredNorm();
    op.all_reduce_sum(std::span<double>(&norm2, 1));
    w /= std::sqrt(norm2);
    basis.col(0) = w.template cast<Basis>();

    index steps = 0;
    double last_beta = 0.0;
    double t_norm = 0.0;
    const double eta2 = reorthogonalization_eta * reorthogonalization_eta;
    for (index j = 0; j < m; ++j) {
      const index cols = j + 1;
      bool finite = false;
      if constexpr (std::is_same_v<Basis, double>) {
        finite = op.apply_local_check(basis.col(j), w);
      } else {
        ws.q = basis.col(j).template cast<double>();
        finite = op.apply_local_check(ws.q, w);
      }
      // First pass: h = Qᵀw, ‖w⁻‖² and the product's finiteness flag in one reduction.
      VectorXd* h = &ws.h;
      VectorXd* h_next = &ws.h_next;
      detail::project<Basis>(basis, w, h->head(cols), ws.block);
      (*h)(cols) = w.squaredNorm();
      (*h)(cols + 1) = finite ? 0.0 : 1.0;
      op.all_reduce_sum(std::span<double>(h->data(), static_cast<std::size_t>(cols + 2)));
      if ((*h)(cols + 1) != 0.0) {
        out.failed = true;
        break;
      }
      steps = cols;
      double before2 = (*h)(cols);
      double after2 = 0.0;
      for (index pass = 0;; ++pass) {
        const auto hj = h->head(cols);
        alpha(j) += hj(j);
        ++out.reorthogonalization_passes;
        after2 = before2 - hj.squaredNorm();  // ‖w⁺‖², see the class doc
        if (pass + 1 == reorthogonalization_passes || !(after2 < eta2 * before2)) {
          detail::subtract<Basis>(basis, hj, w, ws.block);
          break;
        }
        // Another pass: this subtraction and its projection share one read of Q.
        (*h_next)(cols) =
            detail::subtract_project<Basis>(basis, hj, w, h_next->head(cols), ws.block);
        op.all_reduce_sum(std::span<double>(h_next->data(), static_cast<std::size_t>(cols + 1)));
        std::swap(h, h_next);
        before2 = (*h)(cols);
      }
      double b2 = after2;
      if (!(after2 >= 0.25 * before2)) {  // too much cancelled for Pythagoras: reduce ‖w⁺‖²
        b2 = w.squaredNorm();
        op.all_reduce_sum(std::span<double>(&b2, 1));
      }
      const double b = std::sqrt(std::max(b2, 0.0));
      beta(j) = b;
      t_norm = std::max(t_norm, std::abs(alpha(j)) + b + (j > 0 ? beta(j - 1) : 0.0));
      last_beta = b;
      if (j + 1 == m) break;
      if (!(b > breakdown_tolerance * t_norm)) {
        out.breakdown = true;
        break;
      }
      basis.col(j + 1) = (w / b).template cast<Basis>();
    }

    out.iterations = steps;
    out.hvps = op.applications() - hvps_before;
    out.hvp_seconds = op.apply_seconds() - hvp_seconds_before;
    if (out.failed || steps == 0) {
      out.failed = true;
      out.eigenvalues.resize(0);
      out.eigenvectors.resize(0, ns);
      out.residuals.resize(0);
      out.seconds = seconds_since(t_start);
      return out;
    }

    Eigen::SelfAdjointEigenSolver<MatrixXd> tri;
    const VectorXd diag = alpha.head(steps);
    const VectorXd sub = beta.head(std::max<index>(steps - 1, 0));
    tri.computeFromTridiagonal(diag, sub, Eigen::ComputeEigenvectors);
    const VectorXd& theta = tri.eigenvalues();  // ascending
    const MatrixXd& y = tri.eigenvectors();

    out.num_largest = std::min(request.largest, steps);
    out.num_smallest = std::min(request.smallest, steps - out.num_largest);
    const index count = out.num_largest + out.num_smallest;
    MatrixXd y_sel(steps, count);
    out.eigenvalues.resize(count);
    out.residuals.resize(count);
    for (index r = 0; r < count; ++r) {
      const index col = r < out.num_largest ? steps - 1 - r : r - out.num_largest;
      y_sel.col(r) = y.col(col);
      out.eigenvalues(r) = theta(col);
      out.residuals(r) = std::abs(last_beta * y(steps - 1, col));
    }
    detail::ritz_vectors<Basis>(basis, y_sel, out.eigenvectors, ws.block);
    out.seconds = seconds_since(t_start);
    return out;
  }

 private:
  static double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
};

/// The Lanczos estimator with its basis in double: the default `Estimator` policy.
using lanczos = basic_lanczos<double>;

static_assert(curvature_estimator<basic_lanczos<double>>);
static_assert(curvature_estimator<basic_lanczos<float>>);

/// The default Lanczos iteration count for k + l pairs in dimension n, used when
/// `options::lanczos_steps` is 0: m = max(4(k + l), ⌈2 ln n⌉), capped at n.
[[nodiscard]] inline index default_lanczos_steps(index k, index l, index n) {
  const auto log_term =
      static_cast<index>(std::ceil(2.0 * std::log(static_cast<double>(std::max<index>(n, 1)))));
  return std::min(n, std::max(4 * (k + l), log_term));
}

}  // namespace dho2
