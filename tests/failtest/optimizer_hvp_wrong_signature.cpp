// DHO2_EXPECT: DHO2: the model declares `hessian_vector_product` but does not satisfy
// dho2::hvp_model A model whose hessian_vector_product is not const (a slip that used to fall back
// silently to finite differences) must be rejected by optimizer::step with a message naming the
// signature.
#include <dho2/fosi/optimizer.hpp>

namespace {

struct non_const_product {
  using scalar_type = double;
  struct batch_type {};

  [[nodiscard]] dho2::index num_parameters() const { return 3; }
  double loss_and_gradient(dho2::const_vector_ref<double> x, const batch_type& /*batch*/,
                           dho2::vector_ref<double> g) const {
    g = x;
    return 0.5 * x.squaredNorm();
  }
  // Deliberately not const.
  void hessian_vector_product(dho2::const_vector_ref<double> /*x*/, const batch_type& /*batch*/,
                              dho2::const_vector_ref<double> v, dho2::vector_ref<double> hv) {
    hv = v;
  }
};

}  // namespace

int main() {
  const non_const_product model;
  dho2::vector<double> x = dho2::vector<double>::Ones(3);
  dho2::optimizer<double> opt;
  opt.step(model, x, non_const_product::batch_type{});
}
