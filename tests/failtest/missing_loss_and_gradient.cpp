// DHO2_EXPECT: DHO2: differentiable_model requires `m\.loss_and_gradient\(x, batch, g\)` \(const
// A model with scalar_type, batch_type and num_parameters() but no loss_and_gradient(x, batch, g):
// DHO2_REQUIRE_DIFFERENTIABLE_MODEL must name exactly that missing expression.
#include <dho2/concepts/differentiable_model.hpp>
#include <dho2/core/types.hpp>

namespace {

struct bad_model {
  using scalar_type = double;
  struct batch_type {};

  [[nodiscard]] dho2::index num_parameters() const { return 3; }
  // Deliberately absent: double loss_and_gradient(x, batch, g) const.
};

DHO2_REQUIRE_DIFFERENTIABLE_MODEL(bad_model);

}  // namespace
