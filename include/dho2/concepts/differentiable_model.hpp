/// @file
/// The `differentiable_model` concept: what DHO2 needs from a user's model.
///
/// A type `M` models `differentiable_model` when, with `S = typename M::scalar_type`:
///  1. `typename M::scalar_type` is `float` or `double` (the parameters' scalar);
///  2. `typename M::batch_type` names the model's own batch type (DHO2 never looks inside it);
///  3. `m.num_parameters()` on a `const M&` returns the length n of the parameter vector,
///     convertible to `dho2::index`;
///  4. `m.loss_and_gradient(x, batch, g)` on a `const M&`, with `x` a
///     `Eigen::Ref<const dho2::vector<S>>` of length n, `batch` a `const batch_type&` and `g` an
///     `Eigen::Ref<dho2::vector<S>>` of length n, writes the gradient of the *mean* loss over the
///     batch into `g` and returns that loss (convertible to `S`).
///
/// Not required, used when present (detected by `requires`):
///  - `m.batch_size(batch)`: number of samples, used to weight per-rank slices in distributed runs
///    (without it, slices are weighted equally);
///  - `m.parameter_blocks()`: a range of block lengths summing to n (e.g. one per layer), used by
///    the `block_aligned` partitioner;
///  - `m.structure()`: a `std::string` fingerprint of the model's architecture (kind, layer
///    widths, activation, loss: what tells two models with the same n apart), which the ranks of
///    a job must share and a checkpoint records (see `dho2::model_structure` in
///    `dho2/core/job_settings.hpp`; without it the fingerprint is n alone).
///
/// Semantic requirements: const member functions are pure functions of their arguments and are
/// safe to call concurrently from several threads (curvature may run beside training).
///
/// Opt-in: none; satisfying the expressions is enough. `dho2::testing::model_archetype` is the
/// minimal conforming type, and `DHO2_REQUIRE_DIFFERENTIABLE_MODEL(M)` names the first missing
/// requirement in a compile error that starts with "DHO2:".
#pragma once

#include <dho2/core/types.hpp>

#include <concepts>

namespace dho2 {

/// A model whose mean loss and gradient DHO2 can evaluate at any parameter vector on a batch of
/// its own type. See the file comment for the numbered requirements.
template <class M>
concept differentiable_model =
    requires { typename M::scalar_type; typename M::batch_type; } &&
    model_scalar<typename M::scalar_type> &&
    requires(const M& m, const_vector_ref<typename M::scalar_type> x,
             const typename M::batch_type& batch, vector_ref<typename M::scalar_type> g) {
      { m.num_parameters() } -> std::convertible_to<index>;
      { m.loss_and_gradient(x, batch, g) } -> std::convertible_to<typename M::scalar_type>;
    };

/// The model's parameter scalar.
template <differentiable_model M>
using model_scalar_t = typename M::scalar_type;

/// The model's batch type.
template <differentiable_model M>
using model_batch_t = typename M::batch_type;

namespace detail {
template <class M>
constexpr bool check_differentiable_model() {
  if constexpr (!requires { typename M::scalar_type; }) {
    static_assert(requires { typename M::scalar_type; },
                  "DHO2: differentiable_model requires the member type `M::scalar_type` "
                  "(float or double)");
    return false;
  } else if constexpr (!model_scalar<typename M::scalar_type>) {
    static_assert(model_scalar<typename M::scalar_type>,
                  "DHO2: differentiable_model requires `M::scalar_type` to be float or double");
    return false;
  } else if constexpr (!requires { typename M::batch_type; }) {
    static_assert(requires { typename M::batch_type; },
                  "DHO2: differentiable_model requires the member type `M::batch_type`");
    return false;
  } else if constexpr (!requires(const M& m) {
                         { m.num_parameters() } -> std::convertible_to<index>;
                       }) {
    static_assert(requires(const M& m) {
                    { m.num_parameters() } -> std::convertible_to<index>;
                  },
                  "DHO2: differentiable_model requires `m.num_parameters()` (const, returning "
                  "an integer)");
    return false;
  } else {
    using S = typename M::scalar_type;
    constexpr bool ok =
        requires(const M& m, const_vector_ref<S> x, const typename M::batch_type& b,
                 vector_ref<S> g) {
          { m.loss_and_gradient(x, b, g) } -> std::convertible_to<S>;
        };
    static_assert(ok,
                  "DHO2: differentiable_model requires `m.loss_and_gradient(x, batch, g)` (const; "
                  "x: Eigen::Ref<const dho2::vector<S>>, batch: const batch_type&, g: "
                  "Eigen::Ref<dho2::vector<S>>; returns the mean loss as S)");
    return ok;
  }
}
}  // namespace detail

}  // namespace dho2

/// Fails compilation with a message starting "DHO2:" that names the first requirement of
/// `dho2::differentiable_model` that `M` does not meet.
#define DHO2_REQUIRE_DIFFERENTIABLE_MODEL(M) \
  static_assert(::dho2::detail::check_differentiable_model<M>(), "DHO2: see the message above")
