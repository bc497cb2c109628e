// One curvature estimate at x on this rank's slice of a batch: the HVP operator on shards (the
// model's product or finite differences), its collectives over a group, and the estimator.
#pragma once

#include <dho2/detail/internal_header_check.hpp>

#include <dho2/concepts/hvp_model.hpp>
#include <dho2/core/eigen_estimate.hpp>
#include <dho2/core/hvp_operator.hpp>
#include <dho2/core/shard_layout.hpp>
#include <dho2/core/summary.hpp>
#include <dho2/curvature/finite_difference_hvp.hpp>
#include <dho2/detail/agreement.hpp>
#include <dho2/detail/finite.hpp>
#include <dho2/fosi/curvature_context.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <memory>
#include <mutex>
#include <span>
#include <utility>
#include <vector>

namespace dho2::detail {

// H·v on this rank's slice (the model's product when it has one).
template <class M, class S>
void slice_hvp(const M& model, const_vector_ref<S> x, const model_batch_t<M>& batch,
               const vector<S>& v, vector<S>& hv) {
  if constexpr (hvp_model<M>) {
    model.hessian_vector_product(x, batch, v, hv);
  } else {
    finite_difference_hvp(model, x, batch, v, hv);
  }
}

// The estimator's scratch type (`E::workspace`, see curvature_estimator), or an empty one.
struct no_estimator_workspace {};
template <class E>
struct estimator_workspace {
  using type = no_estimator_workspace;
};
template <class E>
requires requires { typename E::workspace; }
struct estimator_workspace<E> {
  using type = typename E::workspace;
};
template <class E>
using estimator_workspace_t = typename estimator_workspace<E>::type;

// One kept workspace, lent to one estimate at a time: an estimate that finds it lent (a
// background estimate beside an inline one) gets a fresh one, and the last one given back is kept.
template <class W>
class workspace_slot {
 public:
  std::unique_ptr<W> take() {
    const std::lock_guard lock(mutex_);
    return kept_ ? std::move(kept_) : std::make_unique<W>();
  }
  void give(std::unique_ptr<W> w) {
    const std::lock_guard lock(mutex_);
    kept_ = std::move(w);
  }

 private:
  std::mutex mutex_;
  std::unique_ptr<W> kept_;
};

// Runs `estimator` at x with the basis sharded over `offsets` of `group` (collective over it when
// `collective`); touches nothing else, so it may run on another thread with collective = false.
// Each rank's product is scaled by w_p / W so the reduce-scatter sums to the Hessian of the
// global mean loss over the batch.
template <class S, class M, class Estimator, class Transport>
eigen_estimate run_estimate(const M& model, const_vector_ref<S> x, const model_batch_t<M>& batch,
                            const Estimator& estimator, const estimate_request& request,
                            Transport& group, const std::vector<index>& offsets, shard_layout shard,
                            bool collective, estimate_communication* comm_out,
                            estimator_workspace_t<Estimator>& ws) {
  using clock = std::chrono::steady_clock;
  const index n = x.size();
  const auto un = static_cast<std::size_t>(n);
  const auto us = static_cast<std::size_t>(shard.size);
  estimate_communication comm_seconds;
  bool in_hvp = false;
  auto timed = [&](auto&& f) {
    const auto t0 = clock::now();
    f();
    (in_hvp ? comm_seconds.hvp : comm_seconds.other) +=
        std::chrono::duration<double>(clock::now() - t0).count();
  };
  const double weight = batch_weight(model, batch);
  double total_weight = weight;
  if (collective) timed([&] { group.all_reduce_sum(std::span<double>(&total_weight, 1)); });
  const auto scale = static_cast<S>(total_weight > 0.0 ? weight / total_weight : 0.0);
  vector<S> v(n), hv(n), part(shard.size);
  const std::span<const index> off(offsets);
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
            group.all_gather(std::span<const S>(part.data(), us), std::span<S>(v.data(), un), off);
          });
        } else {
          v = in.template cast<S>();
        }
        if (weight > 0.0) {
          slice_hvp<M, S>(model, x, batch, v, hv);
        } else {
          hv.setZero();
        }
        // Finiteness is checked on this rank's shard only (hvp_operator::apply_function): a
        // non-finite entry of any rank's product reaches, through the sum, the shard that owns it.
        if (collective) {
          hv *= scale;
          timed([&] {
            group.reduce_scatter_sum(std::span<const S>(hv.data(), un),
                                     std::span<S>(part.data(), us), off);
          });
          out = part.template cast<double>();
          return all_finite(part);
        }
        out = hv.template cast<double>();
        return all_finite(hv);
      },
      [&](std::span<double> values) {
        if (collective) timed([&] { group.all_reduce_sum(values); });
      });
  eigen_estimate est = [&] {
    if constexpr (requires { estimator.estimate(op, request, ws); }) {
      return estimator.estimate(op, request, ws);
    } else {
      return estimator.estimate(op, request);
    }
  }();
  if (!est.eigenvalues.allFinite() || !est.eigenvectors.allFinite()) est.failed = true;
  if (comm_out != nullptr) *comm_out = comm_seconds;
  return est;
}

// Counts an estimate in the summary: estimates, HVPs, failures, and its time. An estimate this
// rank took part in (`here`: the communication inside it) adds to this rank's time split —
// HVP, other estimate work and communication, disjoint; one that ran beside training (a
// background thread, the curvature ranks) adds to offloaded_estimate_seconds only.
inline void book_estimate(summary& s, const eigen_estimate& est,
                          const estimate_communication* here) {
  ++s.curvature_estimates;
  s.hvps += est.hvps;
  if (est.failed) ++s.failed_estimates;
  if (here != nullptr) {
    s.hvp_seconds += std::max(0.0, est.hvp_seconds - here->hvp);
    s.estimate_other_seconds += std::max(0.0, est.seconds - est.hvp_seconds - here->other);
    s.communication_seconds += here->hvp + here->other;
    s.estimate_communication_seconds += here->hvp + here->other;
  } else {
    s.offloaded_estimate_seconds += est.seconds;
  }
}

// What the summary reports of an estimate on the snapshot of `snapshot_step`, in use at step t.
inline estimate_report report_of(const eigen_estimate& est, index snapshot_step, index t) {
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
  return report;
}

// vᵀ H v for the Hessian of the global mean loss: each rank's slice weighted by w_p / W, summed
// over `group` when `collective` (`communicate` times the call).
template <class S, class M, class Transport, class Communicate>
double weighted_quotient(const M& model, const_vector_ref<S> x, const model_batch_t<M>& batch,
                         const vector<S>& v, Transport& group, bool collective,
                         Communicate&& communicate) {
  const double weight = batch_weight(model, batch);
  std::array<double, 2> sum{0.0, weight};
  if (weight > 0.0) {
    vector<S> hv(v.size());
    slice_hvp<M, S>(model, x, batch, v, hv);
    sum[0] = weight * static_cast<double>(v.dot(hv));
  }
  if (collective) communicate([&] { group.all_reduce_sum(std::span<double>(sum)); });
  return sum[1] > 0.0 ? sum[0] / sum[1] : 0.0;
}

}  // namespace dho2::detail
