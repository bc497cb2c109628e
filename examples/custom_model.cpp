// A user-defined model trained with FOSI: logistic regression on quadratic features, with its own
// batch type and no Hessian-vector product, so DHO2 estimates curvature from central finite
// differences of the gradient (the summary says so). Exits with 1 unless the full-data loss
// falls by at least a factor of 4.
//
// Model, for an input u ∈ R^d and a label y ∈ {0, 1}: the score z = b + wᵀu + uᵀQu (parameters
// b ∈ R, w ∈ R^d, Q ∈ R^{d×d}, so n = 1 + d + d²) and the loss
//     f = (1/m) Σⱼ [log(1 + e^{zⱼ}) − yⱼ zⱼ] + (λ/2)(‖w‖² + ‖Q‖²_F),
// whose gradient is ∂f/∂b = Σⱼ rⱼ, ∂f/∂w = U r + λw, ∂f/∂Q = U diag(r) Uᵀ + λQ with
// rⱼ = (σ(zⱼ) − yⱼ)/m and U = [u₁ … u_m].
#include <dho2/dho2.hpp>

#include <cmath>
#include <cstdio>
#include <random>
#include <string>

namespace {

class quadratic_logistic {
 public:
  using scalar_type = double;
  /// The model's own batch type: inputs as columns and 0/1 labels.
  struct batch_type {
    Eigen::MatrixXd inputs;  // d × m
    Eigen::VectorXd labels;  // m values in {0, 1}
  };

  quadratic_logistic(dho2::index dim, double l2) : dim_(dim), l2_(l2) {}

  [[nodiscard]] dho2::index num_parameters() const { return 1 + dim_ + dim_ * dim_; }

  double loss_and_gradient(dho2::const_vector_ref<double> x, const batch_type& batch,
                           dho2::vector_ref<double> g) const {
    const auto w = x.segment(1, dim_);
    const Eigen::Map<const Eigen::MatrixXd> q(x.data() + 1 + dim_, dim_, dim_);
    const Eigen::MatrixXd& u = batch.inputs;
    const auto m = static_cast<double>(u.cols());
    const Eigen::MatrixXd qu = q * u;
    const Eigen::VectorXd z =
        ((u.transpose() * w).array() + x(0) + (u.array() * qu.array()).colwise().sum().transpose())
            .matrix();
    // log(1 + e^z) computed without overflow.
    const Eigen::ArrayXd softplus = z.array().max(0.0) + (-z.array().abs()).exp().log1p();
    const double loss = (softplus - batch.labels.array() * z.array()).sum() / m +
                        0.5 * l2_ * (w.squaredNorm() + q.squaredNorm());
    const Eigen::VectorXd r =
        ((1.0 / (1.0 + (-z.array()).exp())) - batch.labels.array()).matrix() / m;
    g(0) = r.sum();
    g.segment(1, dim_) = u * r + l2_ * w;
    Eigen::Map<Eigen::MatrixXd> gq(g.data() + 1 + dim_, dim_, dim_);
    gq.noalias() = u * r.asDiagonal() * u.transpose();
    gq += l2_ * q;
    return loss;
  }

 private:
  dho2::index dim_;
  double l2_;
};

// What DHO2 needs, checked at compile time; no exact HVP, so finite differences are used.
DHO2_REQUIRE_DIFFERENTIABLE_MODEL(quadratic_logistic);
static_assert(!dho2::hvp_model<quadratic_logistic>);

// Points labelled by a planted ellipsoid (uᵀAu + aᵀu < c), with 1% of the labels flipped.
quadratic_logistic::batch_type make_data(dho2::index dim, dho2::index count, std::mt19937_64& rng) {
  std::normal_distribution<double> normal;
  std::uniform_real_distribution<double> uniform;
  Eigen::MatrixXd a(dim, dim);
  for (dho2::index i = 0; i < a.size(); ++i) a(i) = normal(rng);
  a = a * a.transpose() / static_cast<double>(dim);
  Eigen::VectorXd lin(dim);
  for (dho2::index i = 0; i < dim; ++i) lin(i) = 0.5 * normal(rng);
  quadratic_logistic::batch_type data{Eigen::MatrixXd(dim, count), Eigen::VectorXd(count)};
  for (dho2::index i = 0; i < data.inputs.size(); ++i) data.inputs(i) = normal(rng);
  for (dho2::index j = 0; j < count; ++j) {
    const auto uj = data.inputs.col(j);
    const bool inside = uj.dot(a * uj) + lin.dot(uj) < a.trace();
    data.labels(j) = (inside != (uniform(rng) < 0.01)) ? 1.0 : 0.0;
  }
  return data;
}

}  // namespace

int main() {
  const dho2::index dim = 8;
  const dho2::index count = 4000;
  const dho2::index batch_size = 100;
  std::mt19937_64 rng(42);
  const quadratic_logistic model(dim, 1e-4);
  const quadratic_logistic::batch_type data = make_data(dim, count, rng);

  // FOSI-Adam: 6 curvature directions estimated on a batch before step 19, then every 100 steps.
  dho2::options opts;
  opts.k = 6;
  opts.warmup = 20;
  opts.refresh_every = 100;
  opts.alpha = 0.5;
  dho2::optimizer<double> opt(opts, {.base = {.learning_rate = 0.02}});

  Eigen::VectorXd x = Eigen::VectorXd::Zero(model.num_parameters());
  Eigen::VectorXd g(model.num_parameters());
  const double before = model.loss_and_gradient(x, data, g);
  quadratic_logistic::batch_type batch;
  for (int epoch = 0; epoch < 30; ++epoch) {
    for (dho2::index first = 0; first + batch_size <= count; first += batch_size) {
      batch.inputs = data.inputs.middleCols(first, batch_size);
      batch.labels = data.labels.segment(first, batch_size);
      opt.step(model, x, batch);
    }
  }
  const double after = model.loss_and_gradient(x, data, g);

  const dho2::summary& s = opt.get_summary();
  std::printf("quadratic-feature logistic regression, n = %lld parameters, %lld samples\n",
              static_cast<long long>(model.num_parameters()), static_cast<long long>(count));
  std::printf("loss before %.4f, after %.4f (factor %.1f) in %lld steps\n", before, after,
              before / after, static_cast<long long>(s.steps));
  std::printf("curvature: %lld estimates, %lld HVPs, hvp_source = %s, lambda_max = %.4g\n",
              static_cast<long long>(s.curvature_estimates), static_cast<long long>(s.hvps),
              std::string(dho2::to_string(s.hvp)).c_str(),
              opt.eigenvalues().size() > 0 ? opt.eigenvalues()(0) : 0.0);
  if (s.hvp != dho2::hvp_source::finite_difference || s.curvature_estimates == 0) {
    std::printf("FAILED: expected curvature estimates from finite differences\n");
    return 1;
  }
  if (!(after < before / 4.0)) {
    std::printf("FAILED: the loss did not fall by a factor of 4\n");
    return 1;
  }
  return 0;
}
