// Mode A (docs/algorithm.md, "Mode A"): consensus ADMM reduces to mode S with τ = 1, ρ = 0, and
// converges to the closed-form optimum of a least-squares problem split over ranks, with vanishing
// residuals.
#include "distributed_fixture.hpp"
#include <dho2/data/batcher.hpp>
#include <dho2/dho2.hpp>
#include <dho2/transport/inproc.hpp>

#include <Eigen/Dense>
#include <doctest/doctest.h>

#include <utility>
#include <vector>

namespace {

using Eigen::MatrixXd;
using Eigen::VectorXd;

template <class Admm>
using admm_policies = dho2::default_policies::with_base<dho2::heavy_ball>::with_transport<
    dho2::inproc_transport>::with_admm<Admm>;

// Rank p's least-squares term fₚ(x) = ‖Aₚx − bₚ‖² / (2mₚ).
struct least_squares {
  using scalar_type = double;
  struct batch_type {
    MatrixXd a;
    VectorXd b;
  };
  dho2::index n;
  dho2::index num_parameters() const { return n; }
  double loss_and_gradient(dho2::const_vector_ref<double> x, const batch_type& d,
                           dho2::vector_ref<double> g) const {
    const VectorXd r = d.a * x - d.b;
    const auto m = static_cast<double>(d.a.rows());
    g.noalias() = d.a.transpose() * r / m;
    return 0.5 * r.squaredNorm() / m;
  }
  void hessian_vector_product(dho2::const_vector_ref<double> /*x*/, const batch_type& d,
                              dho2::const_vector_ref<double> v, dho2::vector_ref<double> hv) const {
    hv.noalias() = d.a.transpose() * (d.a * v) / static_cast<double>(d.a.rows());
  }
};

least_squares::batch_type rank_data(int rank, dho2::index n) {
  dho2::detail::xoshiro256 rng(100 + static_cast<std::uint64_t>(rank));
  const dho2::index m = 200 + 30 * rank;
  least_squares::batch_type d{MatrixXd(m, n), VectorXd(m)};
  for (dho2::index i = 0; i < m; ++i) {
    for (dho2::index j = 0; j < n; ++j) d.a(i, j) = rng.normal() * (1.0 + static_cast<double>(j));
    d.b(i) = rng.normal() + static_cast<double>(rank);  // ranks disagree: consensus matters
  }
  return d;
}

}  // namespace

TEST_CASE("consensus_admm: tau = 1 and rho = 0 equal mode S at P = 2 3 4") {
  const dho2_test::mlp_problem p;
  dho2::options o = dho2_test::fosi_test_options();
  o.l = 0;
  const dho2::heavy_ball base{.learning_rate = 0.05, .momentum = 0.9};
  constexpr dho2::index global_batch = 24;  // equal slices at P = 2, 3, 4
  struct rank_run {
    VectorXd x;
    dho2::index rounds = 0;
  };
  for (int ranks : {2, 3, 4}) {
    auto run = [&](auto admm) {
      using policies = admm_policies<decltype(admm)>;
      return dho2_test::on_inproc_ranks(ranks, [&](dho2::inproc_transport& t) {
        const int rank = t.rank();
        dho2::optimizer<double, policies> opt(
            o, policies{.base = base, .transport = std::move(t), .admm = admm});
        dho2::shuffling_batcher<double> batches(p.data.train, global_batch, 3);
        rank_run out{p.x0, 0};
        dho2_test::train_steps(opt, p.model, out.x, batches, 10, rank, ranks);
        out.rounds = static_cast<dho2::index>(opt.get_summary().admm_rounds.size());
        return out;
      });
    };
    const auto mode_s = run(dho2::synchronous_admm{});
    const auto mode_a = run(dho2::consensus_admm{.rho = 0.0, .tau = 1});
    for (int r = 0; r < ranks; ++r) {
      const auto i = static_cast<std::size_t>(r);
      INFO("P = ", ranks, ", rank ", r);
      dho2_test::check_close(mode_a[i].x, mode_s[i].x, 1e-10, "max |x_A - x_S|");
      CHECK(mode_a[i].rounds == 10);
    }
  }
}

TEST_CASE("consensus_admm: converges to the centralised least-squares optimum") {
  constexpr dho2::index n = 8;
  constexpr int ranks = 3;
  // Closed form: x* solves Σₚ AₚᵀAₚ/mₚ x = Σₚ Aₚᵀbₚ/mₚ.
  MatrixXd h = MatrixXd::Zero(n, n);
  VectorXd rhs = VectorXd::Zero(n);
  for (int r = 0; r < ranks; ++r) {
    const auto d = rank_data(r, n);
    const auto m = static_cast<double>(d.a.rows());
    h += d.a.transpose() * d.a / m;
    rhs += d.a.transpose() * d.b / m;
  }
  const VectorXd x_star = h.ldlt().solve(rhs);

  struct rank_end {
    VectorXd z;
    std::vector<dho2::admm_round> rounds;
  };
  for (bool balancing : {false, true}) {
    using policies = dho2::default_policies::with_base<dho2::sgd>::with_transport<
        dho2::inproc_transport>::with_admm<dho2::consensus_admm>;
    dho2::options o;
    // k = 7 of n = 8 with α = 1: the Newton part solves each local problem (whose Hessian is
    // H + ρI — the +ρ must be accounted for) almost exactly, so ADMM converges at its own rate.
    o.k = 7;
    o.lanczos_steps = 8;
    o.warmup = 1;
    o.refresh_every = 1000;
    o.alpha = 1.0;
    o.momentum_form = dho2::momentum_kind::none;
    const dho2::consensus_admm admm{
        .rho = balancing ? 1e-3 : 8.0, .tau = 10, .residual_balancing = balancing};
    const auto ends = dho2_test::on_inproc_ranks(ranks, [&](dho2::inproc_transport& t) {
      const int rank = t.rank();
      const least_squares model{n};
      const auto data = rank_data(rank, n);
      dho2::optimizer<double, policies> opt(
          o, policies{.base = {.learning_rate = 0.02}, .transport = std::move(t), .admm = admm});
      VectorXd x = VectorXd::Zero(n);
      for (int s = 0; s < 1500; ++s) opt.step(model, x, data);
      return rank_end{opt.consensus_point(), opt.get_summary().admm_rounds};
    });
    const auto& rounds = ends[0].rounds;
    REQUIRE(rounds.size() == 150);
    INFO("residual balancing ", balancing, ": |z - x*| = ", (ends[0].z - x_star).norm(),
         ", primal ", rounds.front().primal_residual, " -> ", rounds.back().primal_residual,
         ", dual ", rounds[1].dual_residual, " -> ", rounds.back().dual_residual, ", rho ",
         rounds.front().rho, " -> ", rounds.back().rho);
    for (int r = 0; r < ranks; ++r) {
      CHECK((ends[static_cast<std::size_t>(r)].z - x_star).norm() < 1e-6 * x_star.norm());
    }
    CHECK(rounds.back().primal_residual < 1e-6);
    CHECK(rounds.back().dual_residual < 1e-6);
    CHECK(rounds.back().primal_residual < 1e-4 * rounds.front().primal_residual);
    if (balancing) CHECK(rounds.back().rho > 1e-3);  // the tiny initial ρ was raised
  }
}
