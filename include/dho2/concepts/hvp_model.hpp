/// @file
/// The `hvp_model` concept: a `differentiable_model` that also computes exact Hessian-vector
/// products.
///
/// A type `M` models `hvp_model` when, with `S = typename M::scalar_type`:
///  1. `M` models `dho2::differentiable_model`;
///  2. `m.hessian_vector_product(x, batch, v, hv)` on a `const M&`, with `x` and `v`
///     `Eigen::Ref<const dho2::vector<S>>` of length n, `batch` a `const batch_type&` and `hv` an
///     `Eigen::Ref<dho2::vector<S>>` of length n, writes H(x)·v into `hv`, where H is the Hessian
///     of the mean loss over the batch (for example by Pearlmutter's R-operator).
///
/// Not required: symmetry is assumed, not checked (`dho2::testing::check_hvp` checks it).
/// Models without it still work: DHO2 then uses central finite differences of gradients and the
/// summary says so.
#pragma once

#include <dho2/concepts/differentiable_model.hpp>

namespace dho2 {

/// A differentiable model with an exact Hessian-vector product (see the file comment).
template <class M>
concept hvp_model =
    differentiable_model<M> &&
    requires(const M& m, const_vector_ref<typename M::scalar_type> x,
             const typename M::batch_type& batch, const_vector_ref<typename M::scalar_type> v,
             vector_ref<typename M::scalar_type> hv) {
      { m.hessian_vector_product(x, batch, v, hv) };
    };

}  // namespace dho2
