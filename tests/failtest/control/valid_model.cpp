// DHO2_EXPECT: DHO2: differentiable_model requires
// Positive control of the failtest harness (registered with CONTROL in tests/CMakeLists.txt): this
// file is a valid model and COMPILES, so the harness must report it as a failure (the test is
// WILL_FAIL), while a plain build of it must succeed (`failtest.<name>.compiles`).
#include <dho2/concepts/differentiable_model.hpp>
#include <dho2/core/types.hpp>

namespace {

struct good_model {
  using scalar_type = double;
  struct batch_type {};

  [[nodiscard]] dho2::index num_parameters() const { return 3; }
  double loss_and_gradient(dho2::const_vector_ref<double> x, const batch_type& /*batch*/,
                           dho2::vector_ref<double> g) const {
    g = x;
    return 0.5 * x.squaredNorm();
  }
};

DHO2_REQUIRE_DIFFERENTIABLE_MODEL(good_model);

}  // namespace
