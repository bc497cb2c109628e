// DHO2_EXPECT: DHO2: differentiable_model requires `M::scalar_type` to be float or double
// A model that is complete except that its parameters are `int`: the concept only accepts float
// and double, and DHO2_REQUIRE_DIFFERENTIABLE_MODEL must say so before anything else.
#include <dho2/concepts/differentiable_model.hpp>
#include <dho2/core/types.hpp>

namespace {

struct bad_model {
  using scalar_type = int;
  struct batch_type {};

  [[nodiscard]] dho2::index num_parameters() const { return 3; }
  int loss_and_gradient(Eigen::Ref<const dho2::vector<int>> x, const batch_type& /*batch*/,
                        Eigen::Ref<dho2::vector<int>> g) const {
    g = x;
    return x.squaredNorm();
  }
};

DHO2_REQUIRE_DIFFERENTIABLE_MODEL(bad_model);

}  // namespace
