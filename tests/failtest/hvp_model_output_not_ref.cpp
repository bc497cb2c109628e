// DHO2_EXPECT: DHO2: hvp_model requires .m\.hessian_vector_product\(x, batch, v, hv\). \(const
// A product writing into `dho2::vector<double>&` cannot take DHO2's `Eigen::Ref` output:
// DHO2_REQUIRE_HVP_MODEL must name the expected signature.
#include <dho2/concepts/hvp_model.hpp>
#include <dho2/core/types.hpp>

namespace {

struct vector_output_product {
  using scalar_type = double;
  struct batch_type {};

  [[nodiscard]] dho2::index num_parameters() const { return 3; }
  double loss_and_gradient(dho2::const_vector_ref<double> x, const batch_type& /*batch*/,
                           dho2::vector_ref<double> g) const {
    g = x;
    return 0.5 * x.squaredNorm();
  }
  void hessian_vector_product(dho2::const_vector_ref<double> /*x*/, const batch_type& /*batch*/,
                              dho2::const_vector_ref<double> v, dho2::vector<double>& hv) const {
    hv = v;
  }
};

DHO2_REQUIRE_HVP_MODEL(vector_output_product);

}  // namespace
