/// @file
/// Archetypes: the minimal types that satisfy `dho2::differentiable_model` and
/// `dho2::hvp_model`, and nothing more (no `loss`, `batch_size`, `parameter_blocks`, default
/// constructor or comparison). Instantiate generic code with them to prove that it asks only for
/// what the concepts require (stdexec / Boost Concept Check style).
///
/// They are also runnable: the loss is f(x) = ½‖x‖² on an empty batch, so ∇f(x) = x and
/// H v = v, and code instantiated with them can be executed in tests.
#pragma once

#include <dho2/concepts/differentiable_model.hpp>
#include <dho2/concepts/hvp_model.hpp>
#include <dho2/core/types.hpp>

/// Tools to test your own models and policies against DHO2's requirements: minimal conforming
/// types (archetypes), gradient and Hessian-vector product checks, planted-spectrum problems and
/// the transport conformance suite.
namespace dho2::testing {

/// The empty batch type of the archetypes. DHO2 never looks inside a batch.
struct archetype_batch {};

/// The minimal `differentiable_model` with scalar `S`: f(x) = ½‖x‖², ∇f(x) = x, for x ∈ Rⁿ.
template <model_scalar S>
class basic_model_archetype {
 public:
  /// Parameter scalar.
  using scalar_type = S;
  /// The empty batch type.
  using batch_type = archetype_batch;

  /// A model with n parameters.
  explicit basic_model_archetype(index n) : n_(n) {}

  /// Number of parameters n.
  [[nodiscard]] index num_parameters() const noexcept { return n_; }

  /// Writes ∇f(x) = x into `g` and returns f(x) = ½‖x‖².
  S loss_and_gradient(const_vector_ref<S> x, const batch_type& /*batch*/, vector_ref<S> g) const {
    g = x;
    return S(0.5) * x.squaredNorm();
  }

 private:
  index n_;
};

/// The minimal `hvp_model` with scalar `S`: `basic_model_archetype<S>` plus H v = v.
template <model_scalar S>
class basic_hvp_model_archetype : public basic_model_archetype<S> {
 public:
  using basic_model_archetype<S>::basic_model_archetype;

  /// Writes H v = v into `hv` (the Hessian of ½‖x‖² is the identity).
  void hessian_vector_product(const_vector_ref<S> /*x*/, const archetype_batch& /*batch*/,
                              const_vector_ref<S> v, vector_ref<S> hv) const {
    hv = v;
  }
};

/// The minimal `differentiable_model` (scalar `double`).
using model_archetype = basic_model_archetype<double>;

/// The minimal `hvp_model` (scalar `double`).
using hvp_model_archetype = basic_hvp_model_archetype<double>;

static_assert(differentiable_model<model_archetype>);
static_assert(differentiable_model<basic_model_archetype<float>>);
static_assert(!hvp_model<model_archetype>, "the plain archetype must not provide a product");
static_assert(hvp_model<hvp_model_archetype>);
static_assert(hvp_model<basic_hvp_model_archetype<float>>);

}  // namespace dho2::testing

DHO2_REQUIRE_DIFFERENTIABLE_MODEL(dho2::testing::model_archetype);
