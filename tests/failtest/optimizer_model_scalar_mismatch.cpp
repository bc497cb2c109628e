// DHO2_EXPECT: DHO2: optimizer<S>: the model's scalar_type must be S
// optimizer<float>::step with a model whose scalar_type is double must be rejected with the
// optimizer's own message, not only with Eigen's errors about mismatched vector types.
#include <dho2/fosi/optimizer.hpp>
#include <dho2/models/quadratic.hpp>

int main() {
  dho2::vector<double> lambda(3);
  lambda << 3.0, 2.0, 1.0;
  const dho2::quadratic<double> model(lambda, 1);
  dho2::vector<float> x = dho2::vector<float>::Ones(3);
  dho2::optimizer<float> opt;
  opt.step(model, x, dho2::quadratic<double>::batch{});
}
