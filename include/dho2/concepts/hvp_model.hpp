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
///
/// A model that *declares* a member named `hessian_vector_product` whose signature does not fit
/// requirement 2 (non-const, a `dho2::vector<S>&` output, a missing argument, ...) would silently
/// fall back to finite differences, which can be far off (float, ReLU kinks). The optimizers
/// therefore reject such a model at compile time with a message starting "DHO2:" naming the
/// expected signature. To train it with finite differences anyway, opt out explicitly:
/// `template <> inline constexpr bool dho2::allow_finite_difference_hvp<my_model> = true;`.
///
/// `DHO2_REQUIRE_HVP_MODEL(M)` names the first requirement `M` does not meet in a compile error
/// that starts with "DHO2:" (put it next to a model's definition to check it where it is written).
#pragma once

#include <dho2/concepts/differentiable_model.hpp>

#include <type_traits>

namespace dho2 {

/// A differentiable model with an exact Hessian-vector product (see the file comment).
// clang-format off
template <class M>
concept hvp_model =
    differentiable_model<M> &&
    requires(const M& m, const_vector_ref<typename M::scalar_type> x,
             const typename M::batch_type& batch, const_vector_ref<typename M::scalar_type> v,
             vector_ref<typename M::scalar_type> hv) {
      { m.hessian_vector_product(x, batch, v, hv) };
    };
// clang-format on

/// Set to `true` (by specialisation) for a model that declares a member named
/// `hessian_vector_product` which is not DHO2's product, so that the optimizers accept it and use
/// central finite differences of gradients (see the file comment).
template <class M>
inline constexpr bool allow_finite_difference_hvp = false;

namespace detail {
struct hvp_member_probe {
  int hessian_vector_product;  // NOLINT(misc-non-private-member-variables-in-classes)
};
template <class M>
struct hvp_member_mix : M, hvp_member_probe {};

// Whether M has a member named hessian_vector_product of any kind (overloaded, template, private):
// then the name is ambiguous in a class derived from M and from the probe.
template <class M>
constexpr bool declares_hessian_vector_product() {
  if constexpr (!std::is_class_v<M>) {
    return false;
  } else if constexpr (std::is_final_v<M>) {
    return requires { &M::hessian_vector_product; };
  } else {
    return !requires { &hvp_member_mix<M>::hessian_vector_product; };
  }
}

template <class M>
constexpr bool check_hvp_model() {
  if constexpr (!check_differentiable_model<M>()) {
    return false;
  } else {
    constexpr bool ok = hvp_model<M>;
    static_assert(ok,
                  "DHO2: hvp_model requires `m.hessian_vector_product(x, batch, v, hv)` "
                  "(const; x, v: Eigen::Ref<const dho2::vector<S>>, batch: const "
                  "batch_type&, hv: Eigen::Ref<dho2::vector<S>>)");
    return ok;
  }
}

// What the optimizers check of a model: a differentiable_model, and an hvp_model when it declares
// a product (unless allow_finite_difference_hvp). Each failure is a "DHO2:" compile error.
template <class M>
constexpr bool check_trainable_model() {
  if constexpr (!check_differentiable_model<M>()) {
    return false;
  } else if constexpr (hvp_model<M> || allow_finite_difference_hvp<M> ||
                       !declares_hessian_vector_product<M>()) {
    return true;
  } else {
    static_assert(hvp_model<M>,
                  "DHO2: the model declares `hessian_vector_product` but does not satisfy "
                  "dho2::hvp_model, so DHO2 would silently use finite differences: give it the "
                  "signature `void hessian_vector_product(x, batch, v, hv) const` (x, v: "
                  "Eigen::Ref<const dho2::vector<S>>, batch: const batch_type&, hv: "
                  "Eigen::Ref<dho2::vector<S>>), or specialise "
                  "dho2::allow_finite_difference_hvp<M> to true to use finite differences");
    return false;
  }
}

// The optimizers' constraint on a model: evaluating it for a type that is not a trainable model is
// a compile error whose first message starts with "DHO2:" and names the missing requirement.
template <class M>
concept checked_model = check_trainable_model<M>();
}  // namespace detail

}  // namespace dho2

/// Fails compilation with a message starting "DHO2:" that names the first requirement of
/// `dho2::hvp_model` that `M` does not meet.
#define DHO2_REQUIRE_HVP_MODEL(M) \
  static_assert(::dho2::detail::check_hvp_model<M>(), "DHO2: see the message above")
