// Tests of the fused FOSI update (newton_subspace::step with a base optimizer's step kernel,
// base_optimizer's optional `begin_step`): the kernel on blocks is the base step bit for bit, and
// the fused update equals both the unfused update (a base without a kernel) and the FOSI step
// written densely, Δx = s(b − V Vᵀb) − αV(ρ ⊙ Vᵀu), to round-off.
#include <dho2/dho2.hpp>
#include <dho2/testing/without_step_kernel.hpp>

#include <Eigen/QR>
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <string>

namespace {

using dho2::index;

template <class S>
dho2::vector<S> random_vector(index n, std::uint64_t seed, double scale = 1.0) {
  dho2::detail::xoshiro256 rng(seed);
  dho2::vector<S> v(n);
  for (index i = 0; i < n; ++i) v(i) = static_cast<S>(scale * rng.normal());
  return v;
}

template <class Base>
using without_kernel = dho2::testing::without_step_kernel<Base>;

// The entries a shard of this length spans cross several blocks and end inside one.
constexpr index length = 3 * dho2::detail::block_entries + 77;

template <class S, class Base>
void check_kernel_on_blocks_is_the_step(const Base& base) {
  auto whole = base.template init<S>(length);
  auto blocked = base.template init<S>(length);
  for (std::uint64_t t = 0; t < 3; ++t) {
    const dho2::vector<S> g = random_vector<S>(length, 100 + t, 1e-2);
    dho2::vector<S> want(length);
    dho2::vector<S> got(length);
    base.step(whole, dho2::const_vector_ref<S>(g), dho2::vector_ref<S>(want));
    auto kernel = base.begin_step(blocked);
    // Block starts are multiples of 64 entries: the vectors stay as aligned as whole ones, so
    // SIMD and scalar code handle the same entries and the bits must agree.
    const index cuts[] = {0, 64, 640, 1408, length};
    for (int b = 0; b + 1 < 5; ++b) {
      const index begin = cuts[b];
      const index len = cuts[b + 1] - begin;
      kernel(begin, dho2::const_vector_ref<S>(g.segment(begin, len)),
             dho2::vector_ref<S>(got.segment(begin, len)));
    }
    CAPTURE(t);
    CHECK_MESSAGE(got == want, "the step kernel on four blocks should give the whole step's Δx");
  }
  if constexpr (requires { whole.m; }) CHECK(blocked.m == whole.m);
  if constexpr (requires { whole.v; }) CHECK(blocked.v == whole.v);
  if constexpr (requires { whole.t; }) CHECK(blocked.t == whole.t);
}

TEST_CASE_TEMPLATE("fused update: every base's step kernel on blocks is its step, bit for bit", S,
                   float, double) {
  check_kernel_on_blocks_is_the_step<S>(dho2::sgd{.learning_rate = 0.1});
  check_kernel_on_blocks_is_the_step<S>(dho2::heavy_ball{.learning_rate = 0.1, .momentum = 0.8});
  check_kernel_on_blocks_is_the_step<S>(dho2::nesterov{.learning_rate = 0.1, .momentum = 0.8});
  check_kernel_on_blocks_is_the_step<S>(dho2::adam{.learning_rate = 0.01});
  check_kernel_on_blocks_is_the_step<S>(dho2::adamw{.learning_rate = 0.01});
}

// A newton_subspace with K orthonormal random columns, eigenvalues of both signs and a base
// scale s ≠ 1.
template <class S>
dho2::newton_subspace<S> random_subspace(index m, index k) {
  dho2::matrix<double> a(m, k);
  for (index j = 0; j < k; ++j)
    a.col(j) = random_vector<double>(m, 7 + static_cast<std::uint64_t>(j));
  const Eigen::HouseholderQR<dho2::matrix<double>> qr(a);
  const dho2::matrix<double> q = qr.householderQ() * dho2::matrix<double>::Identity(m, k);
  dho2::newton_subspace<S> ns;
  ns.basis = q.cast<S>();
  ns.eigenvalues.resize(k);
  for (index i = 0; i < k; ++i)
    ns.eigenvalues(i) = (i % 2 == 0 ? 1.0 : -1.0) * (50.0 - 7.0 * static_cast<double>(i));
  ns.num_top = k - 1;
  ns.refresh_inverses(0.0, 4.0);
  ns.anchor_decay = 0.0;
  ns.coefficients = Eigen::VectorXd::Zero(k);
  ns.anchor_projection = Eigen::VectorXd::Zero(k);
  return ns;
}

template <class S>
double relative_difference(const dho2::vector<S>& a, const dho2::vector<S>& b) {
  return (a - b).template cast<double>().norm() / b.template cast<double>().norm();
}

template <class S, class Base>
void check_fused_against_unfused_and_dense(const Base& base) {
  constexpr index k = 6;
  const double tol = std::is_same_v<S, float> ? 1e-5 : 1e-12;
  dho2::options opts;
  opts.alpha = 0.3;
  opts.momentum_form = dho2::momentum_kind::none;
  dho2::newton_subspace<S> fused = random_subspace<S>(length, k);
  dho2::newton_subspace<S> unfused = fused;
  REQUIRE_MESSAGE(fused.scale > 1.0, "the test needs a base scale s > 1, got " << fused.scale);
  const without_kernel<Base> plain{base};
  static_assert(dho2::detail::has_step_kernel<Base, S>);
  static_assert(!dho2::detail::has_step_kernel<without_kernel<Base>, S>);
  auto fused_state = base.template init<S>(length);
  auto unfused_state = base.template init<S>(length);
  auto dense_state = base.template init<S>(length);
  const auto no_reduce = [](Eigen::VectorXd&) {};
  for (std::uint64_t t = 0; t < 3; ++t) {
    const dho2::vector<S> g = random_vector<S>(length, 200 + t, 1e-2);
    dho2::vector<S> g_fused = g;
    dho2::vector<S> g_unfused = g;
    dho2::vector<S> got(length);
    dho2::vector<S> other(length);
    fused.step(opts, base, fused_state, dho2::vector_ref<S>(g_fused), got, no_reduce);
    unfused.step(opts, plain, unfused_state, dho2::vector_ref<S>(g_unfused), other, no_reduce);
    // Dense FOSI step without momentum (u = V Vᵀg), in double from the same V.
    const dho2::matrix<double> v = fused.basis.template cast<double>();
    const Eigen::VectorXd c = v.transpose() * g.template cast<double>();
    const dho2::vector<S> g2 = (g.template cast<double>() - v * c).template cast<S>();
    dho2::vector<S> b(length);
    base.step(dense_state, dho2::const_vector_ref<S>(g2), dho2::vector_ref<S>(b));
    const Eigen::VectorXd bd = b.template cast<double>();
    const Eigen::VectorXd want = fused.scale * (bd - v * (v.transpose() * bd)) -
                                 opts.alpha * v * fused.inverses.cwiseProduct(c);
    CAPTURE(t);
    CHECK_MESSAGE(relative_difference(got, other) <= tol,
                  "fused and unfused FOSI steps should agree to round-off, relative difference "
                      << relative_difference(got, other));
    const dho2::vector<S> want_s = want.cast<S>();
    CHECK_MESSAGE(relative_difference(got, want_s) <= 10 * tol,
                  "the fused FOSI step should equal s(b - VV'b) - aV(rho.V'g), relative difference "
                      << relative_difference(got, want_s));
    CHECK_MESSAGE(g_fused == g, "the fused update should leave the gradient unchanged");
  }
}

TEST_CASE_TEMPLATE("fused update: equals the unfused update and the dense FOSI step", S, float,
                   double) {
  check_fused_against_unfused_and_dense<S>(dho2::sgd{.learning_rate = 0.1});
  check_fused_against_unfused_and_dense<S>(dho2::heavy_ball{.learning_rate = 0.1, .momentum = 0.8});
  check_fused_against_unfused_and_dense<S>(dho2::nesterov{.learning_rate = 0.1, .momentum = 0.8});
  check_fused_against_unfused_and_dense<S>(dho2::adam{.learning_rate = 0.01});
}

}  // namespace
