// The model concepts' compile-time reporting: which types count as declaring a
// hessian_vector_product (so that a wrong signature is rejected rather than silently replaced by
// finite differences), and the explicit opt-out dho2::allow_finite_difference_hvp. The rejections
// themselves are failtests (tests/failtest/optimizer_hvp_wrong_signature.cpp and others).
#include <dho2/concepts/hvp_model.hpp>
#include <dho2/fosi/optimizer.hpp>
#include <dho2/models/quadratic.hpp>
#include <dho2/testing/model_archetype.hpp>
#include <dho2/testing/planted_spectrum.hpp>

#include <doctest/doctest.h>

namespace {

using quad = dho2::quadratic<double>;

// Loss and gradient of a quadratic; the product members below vary.
struct quad_base {
  using scalar_type = double;
  using batch_type = quad::batch;
  quad exact{dho2::testing::geometric(12, 4.0, 0.7), 5};
  [[nodiscard]] dho2::index num_parameters() const { return exact.num_parameters(); }
  double loss_and_gradient(dho2::const_vector_ref<double> x, const batch_type& b,
                           dho2::vector_ref<double> g) const {
    return exact.loss_and_gradient(x, b, g);
  }
};

// Not const: does not satisfy hvp_model, but declares the name.
struct non_const_product : quad_base {
  void hessian_vector_product(dho2::const_vector_ref<double> x, const batch_type& b,
                              dho2::const_vector_ref<double> v, dho2::vector_ref<double> hv) {
    exact.hessian_vector_product(x, b, v, hv);
  }
};

struct overloaded_product : quad_base {
  void hessian_vector_product(int /*unused*/) const {}
  void hessian_vector_product(double /*unused*/) const {}
};

struct template_product : quad_base {
  template <class... A>
  void hessian_vector_product(A&&... /*unused*/) {}
};

class private_product : public quad_base {
  void hessian_vector_product() const {}
};

struct final_product final : quad_base {
  void hessian_vector_product() const {}
};

struct data_member_named_product : quad_base {
  int hessian_vector_product = 0;
};

}  // namespace

// A model that opts out: trained with finite differences on purpose.
template <>
inline constexpr bool dho2::allow_finite_difference_hvp<non_const_product> = true;

using dho2::detail::declares_hessian_vector_product;
static_assert(!declares_hessian_vector_product<quad_base>());
static_assert(!declares_hessian_vector_product<dho2::testing::model_archetype>());
static_assert(declares_hessian_vector_product<dho2::testing::hvp_model_archetype>());
static_assert(declares_hessian_vector_product<quad>());
static_assert(declares_hessian_vector_product<non_const_product>());
static_assert(declares_hessian_vector_product<overloaded_product>());
static_assert(declares_hessian_vector_product<template_product>());
static_assert(declares_hessian_vector_product<private_product>());
static_assert(declares_hessian_vector_product<final_product>());
static_assert(declares_hessian_vector_product<data_member_named_product>());
static_assert(!declares_hessian_vector_product<int>());

// Trainable: models without a product, models with a valid one, and opted-out ones.
static_assert(dho2::detail::checked_model<quad_base>);
static_assert(dho2::detail::checked_model<quad>);
static_assert(dho2::detail::checked_model<non_const_product>);
static_assert(!dho2::hvp_model<non_const_product>);
DHO2_REQUIRE_HVP_MODEL(quad);
DHO2_REQUIRE_HVP_MODEL(dho2::testing::hvp_model_archetype);

TEST_CASE(
    "model concepts: an opted-out model with a non-conforming product trains with finite "
    "differences, like a model without one") {
  const non_const_product opted_out;
  const quad_base plain;
  dho2::vector<double> x_opted = plain.exact.initial_point();
  dho2::vector<double> x_plain = x_opted;
  const dho2::options opts{.k = 3, .lanczos_steps = 8, .warmup = 2, .refresh_every = 3};
  dho2::optimizer<double> a(opts);
  dho2::optimizer<double> b(opts);
  for (int t = 0; t < 6; ++t) {
    REQUIRE(a.step(opted_out, x_opted, quad::batch{}) == dho2::step_status::taken);
    REQUIRE(b.step(plain, x_plain, quad::batch{}) == dho2::step_status::taken);
  }
  CHECK_MESSAGE(a.get_summary().hvp == dho2::hvp_source::finite_difference,
                "expected the opted-out model to be trained with finite-difference products, "
                "got hvp = "
                    << dho2::to_string(a.get_summary().hvp));
  CHECK_MESSAGE(x_opted == x_plain,
                "expected the opted-out model to follow the model without a product bit for bit");
}
