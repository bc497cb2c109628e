// DHO2 quickstart: a user-defined model trained with FOSI (Adam base) in one short program.
//
// The model is least squares, f(x) = 1/(2m) ‖A x − b‖², with badly scaled columns; FOSI takes
// Newton steps along the Hessian's top eigenvectors and lets Adam handle the rest.
#include <dho2/dho2.hpp>

#include <cmath>
#include <cstdio>
#include <string>

// Any type with scalar_type, batch_type, num_parameters() and loss_and_gradient() is a model.
struct least_squares {
  using scalar_type = double;
  struct batch_type {
    Eigen::MatrixXd a;  // m × n design matrix
    Eigen::VectorXd b;  // m targets
  };
  dho2::index n = 0;

  [[nodiscard]] dho2::index num_parameters() const { return n; }
  double loss_and_gradient(dho2::const_vector_ref<double> x, const batch_type& batch,
                           dho2::vector_ref<double> g) const {
    const Eigen::VectorXd r = batch.a * x - batch.b;
    const auto m = static_cast<double>(batch.b.size());
    g.noalias() = batch.a.transpose() * r / m;
    return 0.5 * r.squaredNorm() / m;
  }
};

int main() {
  const dho2::index n = 40;
  const dho2::index m = 200;
  least_squares model{n};
  least_squares::batch_type data{Eigen::MatrixXd::Random(m, n), {}};
  for (dho2::index j = 0; j < n; ++j) {  // column scales from 1 to 30
    data.a.col(j) *= std::pow(30.0, static_cast<double>(j) / static_cast<double>(n - 1));
  }
  data.b = data.a * Eigen::VectorXd::Random(n);  // a consistent system: the minimum is 0

  // FOSI with 5 curvature directions, estimated before step 19 (W − 1) and then every 200
  // steps, and Adam (the default base optimizer) for the rest of the space.
  dho2::options opts;
  opts.k = 5;
  opts.warmup = 20;
  opts.refresh_every = 200;
  opts.alpha = 1.0;
  dho2::optimizer<double> opt(opts, {.base = {.learning_rate = 0.05}});
  Eigen::VectorXd x = Eigen::VectorXd::Zero(n);
  Eigen::VectorXd g(n);
  const double before = model.loss_and_gradient(x, data, g);
  for (int step = 0; step < 600; ++step) opt.step(model, x, data);
  const double after = model.loss_and_gradient(x, data, g);

  const dho2::summary& s = opt.get_summary();
  std::printf("loss %.4g -> %.4g in %lld steps, %lld curvature estimates (%lld HVPs, %s)\n", before,
              after, static_cast<long long>(s.steps), static_cast<long long>(s.curvature_estimates),
              static_cast<long long>(s.hvps), std::string(dho2::to_string(s.hvp)).c_str());
  return after < 0.5 * before ? 0 : 1;
}
