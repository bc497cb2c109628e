// The consumer test program: uses DHO2 as a downstream project would, compiled with strict
// warnings and -Werror (see CMakeLists.txt). Exit status 0 only if every check below holds.
// The core umbrella (once it exists) is compiled by `consumer`; `consumer_data` keeps to the two
// headers below so that the test stays quick.
#if __has_include(<dho2/dho2.hpp>) && !defined(DHO2_CONSUMER_WITH_DATA)
#include <dho2/dho2.hpp>
#endif
#include <dho2/concepts/differentiable_model.hpp>
#include <dho2/core/types.hpp>

#if defined(DHO2_CONSUMER_WITH_DATA)
#if __has_include(<dho2/data/idx.hpp>)
#include <dho2/data/idx.hpp>  // the IDX reader: the reason dho2::data links zlib
#endif
#include <zlib.h>
#endif

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdio>
#include <vector>

namespace consumer {

/// Linear least squares on a batch (A, b) of m rows: f(x) = 1/(2m) ||A x - b||^2,
/// grad f(x) = A^T (A x - b) / m.
template <class S>
struct least_squares {
  using scalar_type = S;
  struct batch_type {
    dho2::matrix<S> a;
    dho2::vector<S> b;
  };

  dho2::index n = 0;

  [[nodiscard]] dho2::index num_parameters() const { return n; }

  S loss_and_gradient(dho2::const_vector_ref<S> x, const batch_type& batch,
                      dho2::vector_ref<S> g) const {
    const dho2::vector<S> r = batch.a * x - batch.b;
    const auto m = static_cast<S>(batch.a.rows());
    g.noalias() = batch.a.transpose() * r / m;
    return S(0.5) * r.squaredNorm() / m;
  }
};

struct no_gradient {
  using scalar_type = double;
  struct batch_type {};
  [[nodiscard]] dho2::index num_parameters() const { return 1; }
};

/// Plain gradient descent written against the concept only.
template <dho2::differentiable_model M>
dho2::vector<dho2::model_scalar_t<M>> gradient_descent(const M& model,
                                                       const dho2::model_batch_t<M>& batch,
                                                       dho2::model_scalar_t<M> step, int steps) {
  using S = dho2::model_scalar_t<M>;
  dho2::vector<S> x = dho2::vector<S>::Zero(model.num_parameters());
  dho2::vector<S> g(model.num_parameters());
  for (int i = 0; i < steps; ++i) {
    model.loss_and_gradient(x, batch, g);
    x -= step * g;
  }
  return x;
}

}  // namespace consumer

static_assert(dho2::differentiable_model<consumer::least_squares<double>>);
static_assert(dho2::differentiable_model<consumer::least_squares<float>>);
static_assert(std::same_as<dho2::model_scalar_t<consumer::least_squares<float>>, float>);
static_assert(!dho2::differentiable_model<consumer::least_squares<int>>);
static_assert(!dho2::differentiable_model<consumer::no_gradient>);
static_assert(dho2::model_scalar<double> && !dho2::model_scalar<long double>);
DHO2_REQUIRE_DIFFERENTIABLE_MODEL(consumer::least_squares<double>);

namespace {

int failures = 0;

void check(bool ok, const char* what) {
  std::printf("%s: %s\n", ok ? "ok  " : "FAIL", what);
  if (!ok) {
    ++failures;
  }
}

}  // namespace

int main() {
  using model_t = consumer::least_squares<double>;
  // A = diag(1, 2, 3, 4), b = A * (1, 1, 1, 1): the minimiser is x* = (1, 1, 1, 1).
  const model_t model{4};
  model_t::batch_type batch;
  batch.a = dho2::vector<double>::LinSpaced(4, 1.0, 4.0).asDiagonal();
  batch.b = batch.a * dho2::vector<double>::Ones(4);

  // At x = 0: loss = (1 + 4 + 9 + 16) / (2 * 4) = 3.75 and gradient = -(1, 4, 9, 16) / 4.
  dho2::vector<double> g(model.num_parameters());
  const double loss0 = model.loss_and_gradient(dho2::vector<double>::Zero(4), batch, g);
  dho2::vector<double> g_expected(4);
  g_expected << -0.25, -1.0, -2.25, -4.0;
  check(std::abs(loss0 - 3.75) < 1e-15, "loss at 0 is 3.75");
  check((g - g_expected).cwiseAbs().maxCoeff() < 1e-15, "gradient at 0 is -(1, 4, 9, 16) / 4");

  // Central differences agree with the gradient at another point.
  dho2::vector<double> x(4);
  x << 0.5, -1.0, 2.0, 0.0;
  model.loss_and_gradient(x, batch, g);
  double fd_error = 0.0;
  for (dho2::index i = 0; i < x.size(); ++i) {
    const double h = 1e-6;
    dho2::vector<double> xp = x;
    dho2::vector<double> xm = x;
    xp(i) += h;
    xm(i) -= h;
    dho2::vector<double> scratch(4);
    const double fd = (model.loss_and_gradient(xp, batch, scratch) -
                       model.loss_and_gradient(xm, batch, scratch)) /
                      (2.0 * h);
    fd_error = std::max(fd_error, std::abs(fd - g(i)));
  }
  check(fd_error < 1e-6, "gradient matches central differences");

  // Gradient descent with step 1/L (L = 16/4 = 4) converges to x* = (1, 1, 1, 1).
  const dho2::vector<double> x_star = consumer::gradient_descent(model, batch, 0.25, 600);
  check((x_star - dho2::vector<double>::Ones(4)).cwiseAbs().maxCoeff() < 1e-10,
        "gradient descent reaches (1, 1, 1, 1)");

#if defined(DHO2_CONSUMER_WITH_DATA)
  // dho2::data brings zlib: round-trip the solution through compress / uncompress.
  check(zlibVersion()[0] == ZLIB_VERSION[0], "zlib headers and library agree");
  const auto* bytes = reinterpret_cast<const Bytef*>(x_star.data());
  const auto size = static_cast<uLong>(sizeof(double)) * static_cast<uLong>(x_star.size());
  std::vector<Bytef> packed(compressBound(size));
  uLongf packed_size = static_cast<uLongf>(packed.size());
  const bool packed_ok = compress(packed.data(), &packed_size, bytes, size) == Z_OK;
  dho2::vector<double> unpacked(x_star.size());
  uLongf unpacked_size = size;
  const bool unpacked_ok = uncompress(reinterpret_cast<Bytef*>(unpacked.data()), &unpacked_size,
                                      packed.data(), packed_size) == Z_OK;
  check(packed_ok && unpacked_ok && unpacked_size == size && unpacked == x_star,
        "zlib round trip of the solution");
#endif

  std::printf("dho2 consumer: %s\n", failures == 0 ? "all checks passed" : "FAILED");
  return failures == 0 ? 0 : 1;
}
