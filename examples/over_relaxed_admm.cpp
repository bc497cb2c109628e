// A consensus scheme written as a user's policy, with public headers only: over-relaxed
// consensus ADMM (Boyd et al., "Distributed Optimization and Statistical Learning via the
// Alternating Direction Method of Multipliers", 2011, §3.4.3). In the consensus and dual updates
// each rank's x is replaced by the relaxed
//
//     x̂ₚ = α xₚ + (1 − α) z_old,      α ∈ (0, 2),
//
// so z ← mean(x̂ₚ + uₚ) and uₚ ← uₚ + x̂ₚ − z; α = 1 is plain consensus ADMM, α ≈ 1.5–1.8 often
// converges faster. The policy plugs into dho2::optimizer as its admm_solver; FOSI is the local
// solver, the optimizer and its other policies are untouched.
//
// The program solves a least-squares problem split over 3 in-process ranks (threads) and checks
// two things, returning 1 if either fails:
//  1. with α = 1 the policy gives exactly the parameters of the shipped dho2::consensus_admm;
//  2. with α = 1.6 it converges to the closed-form least-squares optimum.
#include <dho2/dho2.hpp>
#include <dho2/transport/inproc.hpp>

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <span>
#include <vector>

namespace {

/// Over-relaxed consensus ADMM in scaled form, penalty ρ, τ local FOSI steps per round.
struct over_relaxed_admm {
  static constexpr bool shards_state = false;  // every rank keeps a whole local state
  double rho = 1.0;
  dho2::index tau = 8;
  double relaxation = 1.5;  // α ∈ (0, 2)

  template <dho2::model_scalar S>
  struct state {
    dho2::vector<S> z;  // consensus point
    dho2::vector<S> u;  // scaled dual
    std::int64_t local_steps = 0;
    template <class F>
    void visit_fields(F&& f) {
      f("z", z);
      f("u", u);
      f("local_steps", local_steps);
    }
    [[nodiscard]] std::size_t bytes() const {
      return sizeof(S) * static_cast<std::size_t>(z.size() + u.size());
    }
  };

  void validate() const {
    if (!(relaxation > 0.0 && relaxation < 2.0) || !(rho >= 0.0) || tau < 1) {
      throw dho2::invalid_options("over_relaxed_admm: need 0 < relaxation < 2, rho >= 0, tau >= 1");
    }
  }
  template <dho2::model_scalar S>
  [[nodiscard]] state<S> init(dho2::const_vector_ref<S> x) const {
    return {x, dho2::vector<S>::Zero(x.size()), 0};
  }
  // Curvature is estimated at the consensus point, and the proximal term shifts it by ρ.
  template <dho2::model_scalar S>
  [[nodiscard]] dho2::const_vector_ref<S> curvature_point(const state<S>& st,
                                                          dho2::const_vector_ref<S>) const {
    return st.z;
  }
  template <dho2::model_scalar S>
  [[nodiscard]] double proximal_shift(const state<S>&) const {
    return rho;
  }

  // A local step on fₚ(x) + (ρ/2)‖x − z + u‖²; every τ steps a relaxed consensus round.
  template <dho2::model_scalar S, class Context>
  dho2::step_status step(state<S>& st, Context& ctx) const {
    const double loss = ctx.loss_and_gradient().loss;
    dho2::vector<S>& g = ctx.gradient();
    auto x = ctx.x();
    ctx.set_loss(loss);
    dho2::step_status status = dho2::step_status::taken;
    ctx.timed_update([&] {
      if (!std::isfinite(loss) || !g.allFinite()) {
        status = dho2::step_status::skipped_nonfinite_gradient;  // skip it; no state changes
        return;
      }
      if (rho != 0.0) g.array() += static_cast<S>(rho) * (x.array() - st.z.array() + st.u.array());
      ctx.update(g);
      ctx.count_step();
    });
    if (++st.local_steps % tau == 0) round(st, ctx);
    return status;
  }

 private:
  template <dho2::model_scalar S, class Context>
  void round(state<S>& st, Context& ctx) const {
    const dho2::index n = ctx.size();
    auto x = ctx.x();
    const auto a = static_cast<S>(relaxation);
    const dho2::vector<S> xhat = a * x + (S{1} - a) * st.z;
    dho2::vector<S> sum = xhat + st.u;
    if (ctx.distributed()) {
      ctx.communicate([&] {
        ctx.transport().all_reduce_sum(std::span<S>(sum.data(), static_cast<std::size_t>(n)));
      });
    }
    const auto ranks = static_cast<double>(ctx.ranks());
    dho2::vector<S> z_new = sum / static_cast<S>(ranks);
    double primal2 = (x - z_new).template cast<double>().squaredNorm();
    if (ctx.distributed()) {
      ctx.communicate([&] { ctx.transport().all_reduce_sum(std::span<double>(&primal2, 1)); });
    }
    dho2::admm_round r;
    r.round = static_cast<dho2::index>(ctx.stats().admm_rounds.size());
    r.step = ctx.iteration();
    r.primal_residual = std::sqrt(primal2);
    r.dual_residual = rho * std::sqrt(ranks) * (z_new - st.z).template cast<double>().norm();
    r.rho = rho;
    ctx.stats().admm_rounds.push_back(r);
    st.u += xhat - z_new;
    st.z = std::move(z_new);
    x = st.z;
  }
};
static_assert(dho2::admm_solver<over_relaxed_admm>);

/// f(x) = ‖A x − b‖² / (2m) on one rank's rows.
struct least_squares {
  using scalar_type = double;
  struct batch_type {
    Eigen::MatrixXd a;
    Eigen::VectorXd b;
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
  void hessian_vector_product(dho2::const_vector_ref<double>, const batch_type& batch,
                              dho2::const_vector_ref<double> v, dho2::vector_ref<double> hv) const {
    hv.noalias() = batch.a.transpose() * (batch.a * v) / static_cast<double>(batch.b.size());
  }
};

constexpr int ranks = 3;
constexpr dho2::index n = 12;
constexpr int rounds = 250;

/// Runs `rounds` ADMM rounds of `Admm` on 3 ranks (rank p on its rows); returns rank 0's x and
/// the primal residual of every round.
template <class Admm>
std::pair<Eigen::VectorXd, std::vector<double>> solve(
    const Admm& admm, const std::vector<least_squares::batch_type>& data) {
  using policies = dho2::policies<dho2::sgd, dho2::lanczos, dho2::even_partitioner,
                                  dho2::synchronous_schedule, dho2::inproc_transport, Admm>;
  const dho2::options opts{.k = 2, .warmup = 5, .refresh_every = 40, .alpha = 0.5};
  std::vector<Eigen::VectorXd> x_out(ranks);
  std::vector<double> residuals;
  dho2::run_inproc(ranks, {}, [&](dho2::inproc_transport& t) {
    const int p = t.rank();
    dho2::optimizer<double, policies> opt(
        opts, {.base = {.learning_rate = 0.3}, .transport = std::move(t), .admm = admm});
    Eigen::VectorXd x = Eigen::VectorXd::Zero(n);
    const least_squares model{n};
    for (dho2::index s = 0; s < rounds * admm.tau; ++s) {
      opt.step(model, x, data[static_cast<std::size_t>(p)]);
    }
    x_out[static_cast<std::size_t>(p)] = x;
    if (p == 0) {
      for (const auto& r : opt.get_summary().admm_rounds) residuals.push_back(r.primal_residual);
    }
  });
  return {x_out[0], residuals};
}

}  // namespace

int main() {
  // Each rank holds 40 rows of a consistent-but-noisy system.
  std::vector<least_squares::batch_type> data;
  Eigen::MatrixXd normal = Eigen::MatrixXd::Zero(n, n);
  Eigen::VectorXd rhs = Eigen::VectorXd::Zero(n);
  std::srand(7);
  for (int p = 0; p < ranks; ++p) {
    least_squares::batch_type d{Eigen::MatrixXd::Random(40, n), Eigen::VectorXd::Random(40)};
    normal += d.a.transpose() * d.a / 40.0;
    rhs += d.a.transpose() * d.b / 40.0;
    data.push_back(std::move(d));
  }
  // The closed-form optimum of Σₚ fₚ: (Σ Aₚᵀ Aₚ / m) x* = Σ Aₚᵀ bₚ / m.
  const Eigen::VectorXd optimum = normal.ldlt().solve(rhs);

  const auto [x_shipped, r_shipped] = solve(dho2::consensus_admm{.rho = 1.0, .tau = 8}, data);
  const auto [x_one, r_one] =
      solve(over_relaxed_admm{.rho = 1.0, .tau = 8, .relaxation = 1.0}, data);
  const auto [x_fast, r_fast] =
      solve(over_relaxed_admm{.rho = 1.0, .tau = 8, .relaxation = 1.6}, data);

  const auto rounds_to = [](const std::vector<double>& r, double tol) {
    const auto it = std::find_if(r.begin(), r.end(), [&](double v) { return v < tol; });
    return static_cast<long>(it - r.begin());
  };
  const double same = (x_one - x_shipped).cwiseAbs().maxCoeff();
  const double error = (x_fast - optimum).norm() / optimum.norm();
  std::printf("relaxation 1.0 vs dho2::consensus_admm: max |difference| = %g\n", same);
  std::printf("relaxation 1.6: relative distance to the least-squares optimum = %.3g\n", error);
  std::printf("rounds until the primal residual < 1e-6: relaxation 1.0: %ld, 1.6: %ld (of %d)\n",
              rounds_to(r_one, 1e-6), rounds_to(r_fast, 1e-6), rounds);
  bool ok = true;
  if (same != 0.0) {
    std::printf("FAILED: expected relaxation 1 to reproduce consensus_admm exactly\n");
    ok = false;
  }
  if (!(error < 1e-6)) {
    std::printf("FAILED: expected relaxation 1.6 to reach the optimum to a relative 1e-6\n");
    ok = false;
  }
  return ok ? 0 : 1;
}
