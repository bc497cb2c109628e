// A schedule written as a user's policy, with public headers only: re-estimate curvature when it
// has drifted, instead of every T steps.
//
// After the first estimate (before step W − 1), every `check_every` steps the schedule probes
// the curvature in use: the Rayleigh quotient q = v₁ᵀ H v₁ of the leading retained eigenvector
// on the current batch (one Hessian-vector product, `curvature_context::rayleigh_quotient`)
// against its eigenvalue λ₁. When |q − λ₁| > threshold·|λ₁| the curvature has moved and an
// estimate runs — but never sooner than `min_interval` steps after the last one, and never later
// than `max_interval`.
//
// The program trains a quadratic whose Hessian changes once (its leading eigenvectors rotate at
// step 200) with FOSI, once with a fixed refresh period T and once with this schedule, and
// checks that the drift schedule estimates fewer times for the same final loss; it returns 1
// otherwise.
#include <dho2/dho2.hpp>

#include <Eigen/Dense>

#include <cmath>
#include <cstdio>
#include <optional>

namespace {

/// Re-estimates when the leading eigenpair no longer describes the Hessian.
struct drift_schedule {
  dho2::index min_interval = 10;
  dho2::index max_interval = 1000;
  dho2::index check_every = 5;
  double threshold = 0.2;

  struct state {
    dho2::index last = -1;   // step of the last estimate
    dho2::index probes = 0;  // Rayleigh-quotient probes (one HVP each)
  };

  template <class Context>
  void before_step(state& st, Context& ctx) const {
    const dho2::index t = ctx.step();
    if (st.last < 0) {  // the first estimate, where the reference's schedule puts it
      if (t >= ctx.warmup() - 1) estimate(st, ctx, t);
      return;
    }
    const dho2::index since = t - st.last;
    if (since < min_interval) return;
    bool drifted = since >= max_interval;
    if (!drifted && since % check_every == 0 && ctx.eigenvalues().size() > 0) {
      ++st.probes;
      const double lambda = ctx.eigenvalues()(0);
      drifted = std::abs(ctx.rayleigh_quotient(0) - lambda) > threshold * std::abs(lambda);
    }
    if (drifted) estimate(st, ctx, t);
  }
  template <class Host>
  void finish(state&, Host&) const {}
  [[nodiscard]] std::optional<dho2::estimate_in_flight> in_flight(const state&) const {
    return std::nullopt;
  }

 private:
  template <class Context>
  static void estimate(state& st, Context& ctx, dho2::index t) {
    ctx.estimate_now();
    st.last = t;
  }
};
static_assert(dho2::schedule<drift_schedule>);

/// f(x) = ½ (x − c)ᵀ H (x − c), where H is H₀ on batches of phase 0 and H₁ on phase 1: the same
/// spectrum (three large eigenvalues 100, 60, 30 and the rest in [1, 2]) on rotated
/// eigenvectors.
struct switching_quadratic {
  using scalar_type = double;
  struct batch_type {
    int phase = 0;
  };
  Eigen::MatrixXd h[2];
  Eigen::VectorXd c;

  explicit switching_quadratic(dho2::index n) {
    Eigen::VectorXd spectrum = Eigen::VectorXd::LinSpaced(n, 1.0, 2.0);
    spectrum.head(3) << 100.0, 60.0, 30.0;
    for (int p = 0; p < 2; ++p) {
      const Eigen::MatrixXd q =
          Eigen::HouseholderQR<Eigen::MatrixXd>(Eigen::MatrixXd::Random(n, n)).householderQ();
      h[p] = q * spectrum.asDiagonal() * q.transpose();
    }
    c = Eigen::VectorXd::Random(n);
  }
  [[nodiscard]] dho2::index num_parameters() const { return c.size(); }
  double loss_and_gradient(dho2::const_vector_ref<double> x, const batch_type& b,
                           dho2::vector_ref<double> g) const {
    const Eigen::VectorXd d = x - c;
    g.noalias() = h[b.phase] * d;
    return 0.5 * d.dot(g);
  }
  void hessian_vector_product(dho2::const_vector_ref<double>, const batch_type& b,
                              dho2::const_vector_ref<double> v, dho2::vector_ref<double> hv) const {
    hv.noalias() = h[b.phase] * v;
  }
};

constexpr dho2::index n = 60;
constexpr int steps = 400;
constexpr int switch_step = 200;

/// Trains from 0 with FOSI-SGD under `Schedule`; returns the final loss (on the current phase).
template <class Schedule>
double train(const switching_quadratic& model, const Schedule& schedule, dho2::index refresh_every,
             dho2::summary& out) {
  using policies = dho2::default_policies::with_base<dho2::sgd>::with_schedule<Schedule>;
  const dho2::options opts{.k = 3,
                           .warmup = 10,
                           .refresh_every = refresh_every,
                           .alpha = 1.0,
                           .momentum_form = dho2::momentum_kind::none,
                           .clip = 1.0};
  dho2::optimizer<double, policies> opt(opts,
                                        {.base = {.learning_rate = 0.015}, .schedule = schedule});
  Eigen::VectorXd x = Eigen::VectorXd::Zero(n);
  Eigen::VectorXd g(n);
  for (int t = 0; t < steps; ++t) opt.step(model, x, {t < switch_step ? 0 : 1});
  out = opt.get_summary();
  return model.loss_and_gradient(x, {1}, g);
}

}  // namespace

int main() {
  std::srand(3);
  const switching_quadratic model(n);
  dho2::summary fixed, drift;
  const double loss_fixed = train(model, dho2::synchronous_schedule{}, 25, fixed);
  const double loss_drift = train(model, drift_schedule{}, 25, drift);
  std::printf("fixed T = 25: %lld estimates (%lld HVPs), final loss %.6g\n",
              static_cast<long long>(fixed.curvature_estimates), static_cast<long long>(fixed.hvps),
              loss_fixed);
  std::printf("drift:        %lld estimates (%lld HVPs in estimates), final loss %.6g\n",
              static_cast<long long>(drift.curvature_estimates), static_cast<long long>(drift.hvps),
              loss_drift);
  for (const auto& e : drift.estimates) {
    std::printf("  drift estimate before step %lld: lambda_1 = %.4g\n",
                static_cast<long long>(e.step), e.eigenvalues.size() > 0 ? e.eigenvalues(0) : 0.0);
  }
  bool ok = true;
  if (!(drift.curvature_estimates < fixed.curvature_estimates)) {
    std::printf("FAILED: expected fewer estimates with the drift schedule\n");
    ok = false;
  }
  if (!(drift.estimates.size() >= 2 && drift.estimates[1].step >= switch_step &&
        drift.estimates[1].step < switch_step + 20)) {
    std::printf(
        "FAILED: expected the drift schedule to re-estimate within 20 steps of the "
        "change at step %d\n",
        switch_step);
    ok = false;
  }
  if (!(loss_drift <= 1.05 * loss_fixed + 1e-12)) {
    std::printf("FAILED: expected the same final loss (within 5%%)\n");
    ok = false;
  }
  return ok ? 0 : 1;
}
