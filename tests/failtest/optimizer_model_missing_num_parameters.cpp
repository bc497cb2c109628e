// DHO2_EXPECT: DHO2: differentiable_model requires `m\.num_parameters\(\)`
// Passing optimizer::step a model without num_parameters() must report the missing member with
// the model concept's own "DHO2:" message, not only with plain constraint diagnostics.
#include <dho2/fosi/optimizer.hpp>

namespace {

struct no_size {
  using scalar_type = double;
  struct batch_type {};

  double loss_and_gradient(dho2::const_vector_ref<double> x, const batch_type& /*batch*/,
                           dho2::vector_ref<double> g) const {
    g = x;
    return 0.5 * x.squaredNorm();
  }
};

}  // namespace

int main() {
  const no_size model;
  dho2::vector<double> x = dho2::vector<double>::Ones(3);
  dho2::optimizer<double> opt;
  opt.step(model, x, no_size::batch_type{});
}
