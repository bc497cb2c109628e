/// @file
/// Gradient accumulation: `dho2::micro_batched<Model>`, a model whose batch is a sequence of
/// micro-batches of `Model` and whose loss, gradient and Hessian-vector product are those of the
/// whole batch (the micro-batch results weighted by their sizes), and `dho2::micro_batches`, the
/// batch source that cuts each (rank's slice of a) global batch into micro-batches.
#pragma once

#include <dho2/concepts/batch_source.hpp>
#include <dho2/concepts/differentiable_model.hpp>
#include <dho2/concepts/hvp_model.hpp>
#include <dho2/core/errors.hpp>
#include <dho2/core/job_settings.hpp>
#include <dho2/core/types.hpp>

#include <cstddef>
#include <string>
#include <vector>

namespace dho2 {

namespace detail {
template <class M>
concept has_batch_size = requires(const M& m, const model_batch_t<M>& b) {
  m.batch_size(b);
};
template <class M>
concept has_parameter_blocks = requires(const M& m) {
  m.parameter_blocks();
};
}  // namespace detail

/// `Model` over a batch given as micro-batches: one optimizer step (and one curvature batch) on
/// a batch larger than the model can take at once, with the result of the large batch.
///
/// With micro-batches B₁ … B_M of sizes wⱼ (`Model::batch_size`, or 1 each when `Model` has
/// none) and W = Σ wⱼ, the mean loss, gradient and Hessian-vector product are
/// \f[ L = \sum_j \frac{w_j}{W} L_j,\qquad g = \sum_j \frac{w_j}{W} g_j,\qquad
///     Hv = \sum_j \frac{w_j}{W} H_j v, \f]
/// which is the large batch's mean (to round-off) when each Lⱼ is the mean over Bⱼ: micro-batches
/// of unequal sizes are weighted correctly (a model without `batch_size` must be given equal
/// micro-batches for that). Empty micro-batches (wⱼ = 0) are skipped; with W = 0 the loss is 0
/// and the gradient zero. A per-batch term of the loss (an L2 penalty in each Lⱼ) stays itself,
/// the weights summing to 1.
///
/// Forwarded: `batch_size` (the sum over micro-batches) when `Model` has one,
/// `hessian_vector_product` when `Model` is a `dho2::hvp_model`, `parameter_blocks` when present,
/// and `structure()` (`dho2::model_structure` of `Model`, so a run and its checkpoints are the
/// same job with or without accumulation).
///
/// Memory: the model runs on one micro-batch at a time, so its working memory (activations) is
/// that of one micro-batch; the micro-batches themselves are all held (the batch type), plus one
/// gradient-sized buffer per call. Keeps a pointer to `model`, which must outlive it.
template <differentiable_model Model>
class micro_batched {
 public:
  /// The parameter scalar of `Model`.
  using scalar_type = model_scalar_t<Model>;
  /// The micro-batches of one batch, in order.
  using batch_type = std::vector<model_batch_t<Model>>;

  /// Accumulates over micro-batches of `model` (kept by pointer).
  explicit micro_batched(const Model& model) noexcept : model_(&model) {}
  /// Deleted: the adapter would keep a pointer to a destroyed temporary.
  explicit micro_batched(const Model&&) = delete;

  /// The wrapped model.
  [[nodiscard]] const Model& inner() const noexcept { return *model_; }
  /// Number of parameters n of the wrapped model.
  [[nodiscard]] index num_parameters() const {
    return static_cast<index>(model_->num_parameters());
  }

  /// Total samples over the micro-batches.
  [[nodiscard]] index batch_size(
      const batch_type& batch) const requires detail::has_batch_size<Model> {
    index total = 0;
    for (const auto& b : batch) total += static_cast<index>(model_->batch_size(b));
    return total;
  }

  /// The weighted mean loss over the micro-batches; the gradient of it lands in `g`.
  scalar_type loss_and_gradient(const_vector_ref<scalar_type> x, const batch_type& batch,
                                vector_ref<scalar_type> g) const {
    const double total = total_weight(batch);
    g.setZero();
    if (total <= 0.0) return scalar_type(0);
    vector<scalar_type> part(g.size());
    double loss = 0.0;
    for (const auto& b : batch) {
      const double w = weight(b);
      if (w <= 0.0) continue;
      const double l =
          static_cast<double>(model_->loss_and_gradient(x, b, vector_ref<scalar_type>(part)));
      loss += (w / total) * l;
      g += static_cast<scalar_type>(w / total) * part;
    }
    return static_cast<scalar_type>(loss);
  }

  /// The weighted mean Hessian-vector product H·v over the micro-batches, into `hv`.
  void hessian_vector_product(const_vector_ref<scalar_type> x, const batch_type& batch,
                              const_vector_ref<scalar_type> v,
                              vector_ref<scalar_type> hv) const requires hvp_model<Model> {
    const double total = total_weight(batch);
    hv.setZero();
    if (total <= 0.0) return;
    vector<scalar_type> part(hv.size());
    for (const auto& b : batch) {
      const double w = weight(b);
      if (w <= 0.0) continue;
      model_->hessian_vector_product(x, b, v, vector_ref<scalar_type>(part));
      hv += static_cast<scalar_type>(w / total) * part;
    }
  }

  /// The wrapped model's parameter blocks.
  [[nodiscard]] decltype(auto) parameter_blocks()
      const requires detail::has_parameter_blocks<Model> {
    return model_->parameter_blocks();
  }

  /// The wrapped model's structure (`dho2::model_structure`).
  [[nodiscard]] std::string structure() const { return model_structure(*model_); }

 private:
  double weight(const model_batch_t<Model>& b) const {
    if constexpr (detail::has_batch_size<Model>) {
      return static_cast<double>(model_->batch_size(b));
    } else {
      return 1.0;
    }
  }
  double total_weight(const batch_type& batch) const {
    double total = 0.0;
    for (const auto& b : batch) total += weight(b);
    return total;
  }

  const Model* model_;
};

/// A batch source of micro-batches (`micro_batched<Model>::batch_type`, a `std::vector` of the
/// source's batches) over a source that slices (`slicing_batch_source`): rank `rank`'s batch i is
/// `parts` micro-batches, micro-batch j being the source's slice `rank·parts + j` of `ranks·parts`
/// (`fill_batch(i, rank·parts + j, ranks·parts, …)`). Over all ranks the micro-batches are disjoint
/// and cover global batch i, so with sizes as weights (mode S weighs each rank's gradient by its
/// sample count) a step equals the large batch's; a rank's samples may differ from its slice
/// without accumulation when the batch does not divide evenly. Keeps a pointer to `source`, which
/// must outlive it.
template <class Source>
class micro_batches {
 public:
  /// Micro-batches of `source`, `parts` (>= 1) per rank and batch. Throws `invalid_options` for
  /// parts < 1.
  micro_batches(Source& source, index parts) : source_(&source), parts_(parts) {
    if (parts < 1) {
      throw invalid_options("micro_batches parts = " + std::to_string(parts) +
                            ". Violated constraint: parts >= 1");
    }
  }
  /// The source's batches per epoch.
  [[nodiscard]] index num_batches() const { return static_cast<index>(source_->num_batches()); }
  /// The source's `begin_epoch(epoch)`.
  void begin_epoch(index epoch) { source_->begin_epoch(epoch); }
  /// Micro-batches per rank and batch.
  [[nodiscard]] index parts() const noexcept { return parts_; }
  /// Global batch i as `parts` micro-batches.
  template <class Batch>
  requires slicing_batch_source<Source, Batch>
  void fill_batch(index i, std::vector<Batch>& out) { fill_batch(i, 0, 1, out); }
  /// Rank `rank`'s part of global batch i as `parts` micro-batches (see the class doc).
  template <class Batch>
  requires slicing_batch_source<Source, Batch>
  void fill_batch(index i, index rank, index ranks, std::vector<Batch>& out) {
    out.resize(static_cast<std::size_t>(parts_));
    for (index j = 0; j < parts_; ++j) {
      source_->fill_batch(i, rank * parts_ + j, ranks * parts_, out[static_cast<std::size_t>(j)]);
    }
  }

 private:
  Source* source_;
  index parts_;
};

}  // namespace dho2
