// Local SGD and DiLoCo as consensus policies (include/dho2/admm/local_sgd.hpp, diloco.hpp):
// Local SGD with τ = 1 equals synchronous data-parallel SGD (mode S); DiLoCo with outer learning
// rate 1 and momentum 0 equals Local SGD; DiLoCo's outer Nesterov and heavy-ball steps equal a
// hand-computed 2-rank example on quadratics; one all-reduce of n + 2 values per τ steps (counted
// by the transport, and charged by a simulated link at the ring all-reduce's price); validation
// names the field.
#include "distributed_fixture.hpp"
#include <dho2/admm/diloco.hpp>
#include <dho2/admm/local_sgd.hpp>
#include <dho2/data/batcher.hpp>
#include <dho2/dho2.hpp>
#include <dho2/transport/inproc.hpp>
#include <dho2/transport/simulated_link.hpp>

#include <Eigen/Dense>
#include <doctest/doctest.h>

#include <cstddef>
#include <limits>
#include <utility>
#include <vector>

namespace {

using Eigen::VectorXd;

template <class Base, class Admm, class Transport = dho2::inproc_transport>
using policies_of = typename dho2::default_policies::with_base<Base>::template with_transport<
    Transport>::template with_admm<Admm>;

// Rank p's term fₚ(x) = ½‖x − cₚ‖² (the batch is cₚ): gradient x − cₚ, Hessian I.
struct pull_to_point {
  using scalar_type = double;
  using batch_type = VectorXd;
  dho2::index n = 2;
  [[nodiscard]] dho2::index num_parameters() const { return n; }
  double loss_and_gradient(dho2::const_vector_ref<double> x, const batch_type& c,
                           dho2::vector_ref<double> g) const {
    g = x - c;
    return 0.5 * g.squaredNorm();
  }
};

struct rank_end {
  VectorXd x;
  VectorXd z;
  dho2::summary summary;
};

// `steps` steps of an optimizer with base `base` and consensus policy `admm` on `ranks` in-process
// ranks over the MLP problem, each rank on its slice of global batches of 24 (equal slices at
// P = 2, 3, 4).
template <class Base, class Admm>
std::vector<rank_end> run_mlp(int ranks, const dho2::options& o, const Base& base, const Admm& admm,
                              int steps) {
  using P = policies_of<Base, Admm>;
  const dho2_test::mlp_problem p;
  return dho2_test::on_inproc_ranks(ranks, [&](dho2::inproc_transport& t) {
    const int rank = t.rank();
    dho2::optimizer<double, P> opt(o, P{.base = base, .transport = std::move(t), .admm = admm});
    dho2::shuffling_batcher<double> batches(p.data.train, 24, 3);
    rank_end out{p.x0, {}, {}};
    dho2_test::train_steps(opt, p.model, out.x, batches, steps, rank, ranks);
    out.z = opt.consensus_point();
    out.summary = opt.get_summary();
    return out;
  });
}

}  // namespace

TEST_CASE("local_sgd: tau = 1 with an SGD base equals synchronous data-parallel SGD at P = 2 3") {
  dho2::options fosi = dho2_test::fosi_test_options();
  fosi.l = 0;
  dho2::options plain;
  plain.use_curvature = false;
  const dho2::sgd base{.learning_rate = 0.2};
  for (const bool curvature : {false, true}) {
    const dho2::options& o = curvature ? fosi : plain;
    for (const int ranks : {2, 3}) {
      const auto mode_s = run_mlp(ranks, o, base, dho2::synchronous_admm{}, 10);
      const auto local = run_mlp(ranks, o, base, dho2::local_sgd{.tau = 1}, 10);
      for (int r = 0; r < ranks; ++r) {
        const auto i = static_cast<std::size_t>(r);
        INFO("curvature ", curvature, ", P = ", ranks, ", rank ", r);
        dho2_test::check_close(local[i].x, mode_s[i].x, 1e-10, "max |x_local_sgd - x_mode_S|");
        INFO("expected x = z bit for bit after a round");
        CHECK((local[i].z.array() == local[i].x.array()).all());
        INFO("expected 10 rounds, one per step");
        CHECK(local[i].summary.admm_rounds.size() == 10);
        CHECK(local[i].summary.steps == 10);
        if (curvature) CHECK(local[i].summary.curvature_estimates >= 2);
      }
    }
  }
}

TEST_CASE("diloco: outer learning rate 1 and momentum 0 equal local_sgd (Adam inner, FOSI)") {
  dho2::options o = dho2_test::fosi_test_options();
  const dho2::adam base{.learning_rate = 0.01};
  constexpr int ranks = 3;
  const auto local = run_mlp(ranks, o, base, dho2::local_sgd{.tau = 4}, 14);
  const auto dil =
      run_mlp(ranks, o, base,
              dho2::diloco{.tau = 4, .outer_learning_rate = 1.0, .outer_momentum = 0.0}, 14);
  for (int r = 0; r < ranks; ++r) {
    const auto i = static_cast<std::size_t>(r);
    INFO("rank ", r);
    // x_g − (x_g − x̄) is x̄ to round-off only
    dho2_test::check_close(dil[i].x, local[i].x, 1e-12, "max |x_diloco - x_local_sgd|");
    dho2_test::check_close(dil[i].z, local[i].z, 1e-12, "max |x_g - z_local_sgd|");
    INFO("expected 3 rounds (after steps 3, 7, 11) in both");
    CHECK(dil[i].summary.admm_rounds.size() == 3);
    CHECK(local[i].summary.admm_rounds.size() == 3);
    // 2 steps after the last round, the ranks have drifted apart (the test is not trivial)
    if (r > 0) CHECK(dho2_test::max_abs_diff(local[i].x, local[0].x) > 1e-6);
  }
}

TEST_CASE("diloco: the outer steps of a hand-computed 2-rank example on quadratics") {
  // fₚ(x) = ½‖x − cₚ‖², c₀ = (1, 2), c₁ = (3, −1), x_g = 0; inner SGD with η = ½ for τ = 2
  // steps: xₚ = cₚ + (½)²(x_g − cₚ) = ¾cₚ + ¼x_g.
  // Round 1: x₀ = (0.75, 1.5), x₁ = (2.25, −0.75), x̄ = (1.5, 0.375), Δ = x_g − x̄ = (−1.5, −0.375).
  //  Nesterov (η = 0.7, μ = 0.9): v = Δ; x_g = −0.7·(Δ + 0.9Δ) = (1.995, 0.49875).
  //  Heavy ball: x_g = −0.7·v = (1.05, 0.2625).
  // Round 2 (Nesterov): x₀ = (1.24875, 1.6246875), x₁ = (2.74875, −0.6253125),
  //  x̄ = (1.99875, 0.4996875), Δ = (−0.00375, −0.0009375), v = 0.9v + Δ = (−1.35375, −0.3384375),
  //  x_g = x_g − 0.7·(Δ + 0.9v) = (2.8504875, 0.712621875).
  // Every value is exact in binary to within a few ulps, so the comparison is to 1e-14.
  const std::vector<VectorXd> c{VectorXd{{1.0, 2.0}}, VectorXd{{3.0, -1.0}}};
  dho2::options o;
  o.use_curvature = false;
  using P = policies_of<dho2::sgd, dho2::diloco>;
  struct run_out {
    VectorXd after_one;
    VectorXd after_two;
    VectorXd velocity;
    double primal = 0.0;
  };
  for (const bool nesterov : {true, false}) {
    const auto out = dho2_test::on_inproc_ranks(2, [&](dho2::inproc_transport& t) {
      const auto rank = static_cast<std::size_t>(t.rank());
      dho2::optimizer<double, P> opt(o, P{.base = {.learning_rate = 0.5},
                                          .transport = std::move(t),
                                          .admm = {.tau = 2, .nesterov = nesterov}});
      const pull_to_point model;
      VectorXd x = VectorXd::Zero(2);
      run_out r;
      for (int s = 0; s < 2; ++s) opt.step(model, x, c[rank]);
      r.after_one = x;
      for (int s = 0; s < 2; ++s) opt.step(model, x, c[rank]);
      r.after_two = x;
      r.velocity = opt.state().consensus.outer_velocity;
      r.primal = opt.get_summary().admm_rounds.front().primal_residual;
      return r;
    });
    for (std::size_t r = 0; r < 2; ++r) {
      INFO("rank ", r, ", nesterov ", nesterov);
      const VectorXd one = nesterov ? VectorXd{{1.995, 0.49875}} : VectorXd{{1.05, 0.2625}};
      dho2_test::check_close(out[r].after_one, one, 1e-14, "max |x_g - hand| after round 1");
      // Round 1's primal residual: ‖x₀ − x̄‖² + ‖x₁ − x̄‖² = 2·(0.75² + 1.125²)
      INFO("primal residual ", out[r].primal);
      CHECK(out[r].primal == doctest::Approx(std::sqrt(2 * (0.5625 + 1.265625))).epsilon(1e-12));
      if (nesterov) {
        dho2_test::check_close(out[r].after_two, VectorXd{{2.8504875, 0.712621875}}, 1e-14,
                               "max |x_g - hand| after round 2");
        dho2_test::check_close(out[r].velocity, VectorXd{{-1.35375, -0.3384375}}, 1e-14,
                               "max |v - hand| after round 2");
      }
    }
  }
}

TEST_CASE("local_sgd and diloco: one all-reduce of n + 2 values per tau steps") {
  // P = 2, τ = 3, 12 steps without curvature: after the set-up (step 1), the transport sees
  // exactly the 4 rounds' all-reduces (after steps 3, 6, 9, 12), each of n + 2 doubles; the
  // simulated link charges each the ring all-reduce 2(P − 1)α + 2(P − 1)/P·(n + 2)·8/β.
  constexpr int ranks = 2;
  constexpr double alpha = 1e-6;
  constexpr double beta = 1e10;
  dho2::options o;
  o.use_curvature = false;
  struct counts {
    dho2::simulated_link_stats before;
    dho2::simulated_link_stats after;
    std::vector<dho2::index> round_steps;
    dho2::index n = 0;
  };
  const auto check = [&](auto admm, const char* name) {
    using P = policies_of<dho2::adam, decltype(admm), dho2::simulated_link<dho2::inproc_transport>>;
    const dho2_test::mlp_problem p;
    const auto out = dho2_test::on_inproc_ranks(ranks, [&](dho2::inproc_transport& t) {
      const int rank = t.rank();
      dho2::optimizer<double, P> opt(
          o, P{.base = {.learning_rate = 0.01},
               .transport = dho2::simulated_link(std::move(t), {alpha, beta}),
               .admm = admm});
      dho2::shuffling_batcher<double> batches(p.data.train, 24, 3);
      dho2::classification_batch<double> batch;
      VectorXd x = p.x0;
      counts c;
      for (int s = 0; s < 12; ++s) {
        batches.fill_batch(s, rank, ranks, batch);
        opt.step(p.model, x, batch);
        if (s == 0) c.before = opt.policies().transport.stats();
      }
      c.after = opt.policies().transport.stats();
      for (const auto& r : opt.get_summary().admm_rounds) c.round_steps.push_back(r.step);
      c.n = x.size();
      return c;
    });
    for (std::size_t r = 0; r < ranks; ++r) {
      const counts& c = out[r];
      const auto bytes = static_cast<std::uint64_t>(c.n + 2) * sizeof(double);
      INFO(name, ", rank ", r, ": calls ", c.before.calls, " -> ", c.after.calls, ", bytes sent ",
           c.before.bytes_sent, " -> ", c.after.bytes_sent);
      CHECK(c.after.calls - c.before.calls == 4);
      CHECK(c.after.bytes_sent - c.before.bytes_sent == 4 * (ranks - 1) * bytes);
      const double per_round =
          2 * (ranks - 1) * alpha + 2.0 * (ranks - 1) / ranks * static_cast<double>(bytes) / beta;
      CHECK(c.after.simulated_seconds - c.before.simulated_seconds ==
            doctest::Approx(4 * per_round).epsilon(1e-9));
      CHECK(c.round_steps == std::vector<dho2::index>{2, 5, 8, 11});
    }
  };
  check(dho2::local_sgd{.tau = 3}, "local_sgd");
  check(dho2::diloco{.tau = 3}, "diloco");
}

TEST_CASE("local_sgd and diloco: validation names the field") {
  const auto field_of = [](auto policy) -> std::string {
    try {
      policy.validate();
    } catch (const dho2::invalid_options& e) {
      return std::string(e.field());
    }
    return "(no exception)";
  };
  const double nan = std::numeric_limits<double>::quiet_NaN();
  CHECK(field_of(dho2::local_sgd{.tau = 0}) == "local_sgd::tau");
  CHECK(field_of(dho2::local_sgd{.tau = 1}) == "(no exception)");
  CHECK(field_of(dho2::diloco{.tau = 0}) == "diloco::tau");
  CHECK(field_of(dho2::diloco{.outer_learning_rate = 0.0}) == "diloco::outer_learning_rate");
  CHECK(field_of(dho2::diloco{.outer_learning_rate = nan}) == "diloco::outer_learning_rate");
  CHECK(field_of(dho2::diloco{.outer_momentum = 1.0}) == "diloco::outer_momentum");
  CHECK(field_of(dho2::diloco{.outer_momentum = -0.1}) == "diloco::outer_momentum");
  CHECK(field_of(dho2::diloco{}) == "(no exception)");
  INFO("the optimizer validates its consensus policy at construction");
  using P = policies_of<dho2::adam, dho2::diloco, dho2::single_process>;
  const auto construct = [] {
    dho2::optimizer<double, P> opt({}, P{.admm = {.outer_momentum = 2.0}});
  };
  CHECK_THROWS_AS(construct(), dho2::invalid_options);
  INFO("the identities name every hyper-parameter the ranks must share");
  CHECK(dho2::local_sgd{.tau = 5}.identity() == "local_sgd tau=5");
  CHECK(dho2::diloco{}.identity() ==
        "diloco tau=8 outer_learning_rate=0.7 outer_momentum=0.9 nesterov=1");
}
