// Tests of the base optimizers (include/dho2/base/*.hpp) against steps computed by hand: every
// expected number below is a literal worked out in the comment next to it, never the formula
// re-run in code. Dyadic inputs (0.5, 0.25, ...) make SGD / heavy ball / Nesterov exact in float
// and double, so those are compared with ==; Adam's square roots are compared to a relative
// tolerance per scalar.
#include <dho2/base/adam.hpp>
#include <dho2/base/heavy_ball.hpp>
#include <dho2/base/nesterov.hpp>
#include <dho2/base/sgd.hpp>
#include <dho2/core/errors.hpp>
#include <dho2/fosi/optimizer.hpp>
#include <dho2/fosi/policies.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <initializer_list>
#include <limits>
#include <string>

namespace {

template <class S>
dho2::vector<S> vec(std::initializer_list<double> values) {
  dho2::vector<S> v(static_cast<dho2::index>(values.size()));
  dho2::index i = 0;
  for (const double x : values) v(i++) = static_cast<S>(x);
  return v;
}

// One step of base optimizer `b` on gradient `g`; returns delta (what is added to x).
template <class S, class B>
dho2::vector<S> step(const B& b, typename B::template state<S>& st,
                     std::initializer_list<double> g) {
  const dho2::vector<S> grad = vec<S>(g);
  dho2::vector<S> delta = dho2::vector<S>::Constant(grad.size(), S(12345));  // overwritten
  b.step(st, dho2::const_vector_ref<S>(grad), dho2::vector_ref<S>(delta));
  return delta;
}

// Exact comparison (dyadic numbers are exact in float and double).
template <class S>
void check_exact(const dho2::vector<S>& got, std::initializer_list<double> want) {
  REQUIRE(got.size() == static_cast<dho2::index>(want.size()));
  dho2::index i = 0;
  for (const double w : want) {
    CAPTURE(i);
    CHECK(got(i) == static_cast<S>(w));
    ++i;
  }
}

// Relative tolerance of a few rounding errors of S over a handful of operations.
template <class S>
constexpr double rel_tol() {
  return std::is_same_v<S, float> ? 2e-6 : 1e-13;
}

// Adam in float: adam.hpp forms (1 − β₁) and (1 − β₂) in double before rounding to float
// (1 − 0.999f would be off by 1.3e-5 relative), so float steps are within the float tolerance.
template <class S>
constexpr double adam_rel_tol() {
  return rel_tol<S>();
}

template <class S>
void check_close(const dho2::vector<S>& got, std::initializer_list<double> want,
                 double tol = rel_tol<S>()) {
  REQUIRE(got.size() == static_cast<dho2::index>(want.size()));
  dho2::index i = 0;
  for (const double w : want) {
    CAPTURE(i);
    CAPTURE(w);
    const double g = static_cast<double>(got(i));
    CAPTURE(g);
    CHECK(std::abs(g - w) <= tol * std::abs(w));
    ++i;
  }
}

// The message of the invalid_options `f` throws ("" if it throws nothing).
std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const dho2::invalid_options& e) {
    return e.what();
  }
  return "";
}

// Checks "<field> = <value>. Violated constraint: <rule>".
void check_message(const std::string& msg, const std::string& field, const std::string& value,
                   const std::string& rule) {
  CAPTURE(msg);
  CHECK(msg.find(field + " = " + value + ".") == 0);
  CHECK(msg.find("Violated constraint") != std::string::npos);
  CHECK(msg.find(rule) != std::string::npos);
}

constexpr double nan_value = std::numeric_limits<double>::quiet_NaN();
constexpr double inf_value = std::numeric_limits<double>::infinity();

}  // namespace

TEST_CASE_TEMPLATE("base optimizers: sgd steps match hand-computed values", S, float, double) {
  const dho2::sgd b{.learning_rate = 0.5};
  auto st = b.init<S>(3);
  CHECK(st.bytes() == 0);
  // Δx = −η g with η = 0.5.
  // g = (1, −2, 0.25):   −0.5·(1, −2, 0.25)  = (−0.5, 1, −0.125)
  check_exact(step<S>(b, st, {1.0, -2.0, 0.25}), {-0.5, 1.0, -0.125});
  // g = (2, 0, −1):      −0.5·(2, 0, −1)     = (−1, 0, 0.5)
  check_exact(step<S>(b, st, {2.0, 0.0, -1.0}), {-1.0, 0.0, 0.5});
  // g = (0, 4, 1):       −0.5·(0, 4, 1)      = (0, −2, −0.5)    (stateless: no memory of before)
  check_exact(step<S>(b, st, {0.0, 4.0, 1.0}), {0.0, -2.0, -0.5});

  // Typical η = 0.1 (not exact in binary):  g = (1, −2, 0.5) → (−0.1, 0.2, −0.05).
  const dho2::sgd typical{.learning_rate = 0.1};
  auto st2 = typical.init<S>(3);
  check_close(step<S>(typical, st2, {1.0, -2.0, 0.5}), {-0.1, 0.2, -0.05});
}

TEST_CASE_TEMPLATE("base optimizers: heavy_ball steps match hand-computed values", S, float,
                   double) {
  const dho2::heavy_ball b{.learning_rate = 0.5, .momentum = 0.5};
  auto st = b.init<S>(3);
  CHECK(st.bytes() == 3 * sizeof(S));
  // m ← μ m + g, Δx = −η m, with η = μ = 0.5 and m₀ = 0.
  // t = 1, g = (1, −2, 0.25):  m = (1, −2, 0.25);  Δx = −0.5 m = (−0.5, 1, −0.125)
  check_exact(step<S>(b, st, {1.0, -2.0, 0.25}), {-0.5, 1.0, -0.125});
  check_exact<S>(st.m, {1.0, -2.0, 0.25});
  // t = 2, g = (2, 0, −1):     m = 0.5·(1, −2, 0.25) + (2, 0, −1) = (0.5 + 2, −1 + 0, 0.125 − 1)
  //                              = (2.5, −1, −0.875);  Δx = (−1.25, 0.5, 0.4375)
  check_exact(step<S>(b, st, {2.0, 0.0, -1.0}), {-1.25, 0.5, 0.4375});
  check_exact<S>(st.m, {2.5, -1.0, -0.875});
  // t = 3, g = (0, 4, 1):      m = 0.5·(2.5, −1, −0.875) + (0, 4, 1) = (1.25, −0.5 + 4, −0.4375 +
  // 1)
  //                              = (1.25, 3.5, 0.5625);  Δx = (−0.625, −1.75, −0.28125)
  check_exact(step<S>(b, st, {0.0, 4.0, 1.0}), {-0.625, -1.75, -0.28125});
  check_exact<S>(st.m, {1.25, 3.5, 0.5625});

  // Typical η = 0.1, μ = 0.9:
  // t = 1, g = (1, −2, 0.5): m = (1, −2, 0.5);  Δx = (−0.1, 0.2, −0.05)
  // t = 2, g = (1, 1, 1):    m = 0.9·(1, −2, 0.5) + 1 = (1.9, −0.8, 1.45);  Δx = (−0.19, 0.08,
  // −0.145)
  const dho2::heavy_ball typical{.learning_rate = 0.1, .momentum = 0.9};
  auto st2 = typical.init<S>(3);
  check_close(step<S>(typical, st2, {1.0, -2.0, 0.5}), {-0.1, 0.2, -0.05});
  check_close(step<S>(typical, st2, {1.0, 1.0, 1.0}), {-0.19, 0.08, -0.145});
}

TEST_CASE_TEMPLATE("base optimizers: nesterov steps match hand-computed values", S, float, double) {
  const dho2::nesterov b{.learning_rate = 0.5, .momentum = 0.5};
  auto st = b.init<S>(3);
  CHECK(st.bytes() == 3 * sizeof(S));
  // m ← μ m + g, Δx = −η (g + μ m), with η = μ = 0.5 and m₀ = 0.
  // t = 1, g = (1, −2, 0.25):  m = (1, −2, 0.25);  g + 0.5 m = (1.5, −3, 0.375)
  //                              Δx = −0.5·(1.5, −3, 0.375) = (−0.75, 1.5, −0.1875)
  check_exact(step<S>(b, st, {1.0, -2.0, 0.25}), {-0.75, 1.5, -0.1875});
  // t = 2, g = (2, 0, −1):     m = (2.5, −1, −0.875) (as for heavy ball);
  //                              g + 0.5 m = (2 + 1.25, 0 − 0.5, −1 − 0.4375) = (3.25, −0.5,
  //                              −1.4375) Δx = (−1.625, 0.25, 0.71875)
  check_exact(step<S>(b, st, {2.0, 0.0, -1.0}), {-1.625, 0.25, 0.71875});
  // t = 3, g = (0, 4, 1):      m = (1.25, 3.5, 0.5625);
  //                              g + 0.5 m = (0.625, 4 + 1.75, 1 + 0.28125) =
  //                              (0.625, 5.75, 1.28125) Δx = (−0.3125, −2.875, −0.640625)
  check_exact(step<S>(b, st, {0.0, 4.0, 1.0}), {-0.3125, -2.875, -0.640625});
  check_exact<S>(st.m, {1.25, 3.5, 0.5625});

  // Typical η = 0.1, μ = 0.9:
  // t = 1, g = (1, −2, 0.5): m = g;  g + 0.9 m = 1.9 g = (1.9, −3.8, 0.95);  Δx = (−0.19, 0.38,
  // −0.095) t = 2, g = (1, 1, 1):    m = (1.9, −0.8, 1.45);  g + 0.9 m = (2.71, 0.28, 2.305)
  //                            Δx = (−0.271, −0.028, −0.2305)
  const dho2::nesterov typical{.learning_rate = 0.1, .momentum = 0.9};
  auto st2 = typical.init<S>(3);
  check_close(step<S>(typical, st2, {1.0, -2.0, 0.5}), {-0.19, 0.38, -0.095});
  check_close(step<S>(typical, st2, {1.0, 1.0, 1.0}), {-0.271, -0.028, -0.2305});
}

TEST_CASE_TEMPLATE("base optimizers: adam bias correction at t = 1 and t = 2 (defaults)", S, float,
                   double) {
  const dho2::adam b{};  // η = 1e-3, β₁ = 0.9, β₂ = 0.999, ε = 1e-8
  auto st = b.init<S>(3);
  CHECK(st.bytes() == 6 * sizeof(S));
  CHECK(dho2::default_clip_for<dho2::adam>() == 1.0);
  // t = 1, g = (1, −2, 0.25):
  //   m = 0.1 g = (0.1, −0.2, 0.025),  v = 0.001 g² = (0.001, 0.004, 0.0000625)
  //   m̂ = m / (1 − 0.9) = g,  v̂ = v / (1 − 0.999) = g²,  √v̂ = |g| = (1, 2, 0.25)
  //   Δx = −η m̂ / (√v̂ + ε) = −0.001·g/(|g| + 1e-8) ≈ −0.001·sign(g):
  //     −0.001·1/(1 + 1e-8)          = −0.00099999999000000010
  //     +0.001·2/(2 + 1e-8)          = +0.00099999999500000002
  //     −0.001·0.25/(0.25 + 1e-8)    = −0.00099999996000000160
  const auto d1 = step<S>(b, st, {1.0, -2.0, 0.25});
  check_close(d1, {-0.00099999999000000010, 0.00099999999500000002, -0.00099999996000000160},
              adam_rel_tol<S>());
  check_close<S>(st.m, {0.1, -0.2, 0.025}, adam_rel_tol<S>());
  check_close<S>(st.v, {0.001, 0.004, 0.0000625}, adam_rel_tol<S>());
  CHECK(st.t == 1);
  // ≈ −η·sign(g) to within ε/|g| ≤ 4e-8 relative (a sign error or a missing correction fails).
  const double sign[] = {-1.0, 1.0, -1.0};
  for (dho2::index i = 0; i < 3; ++i) {
    CHECK(std::abs(static_cast<double>(d1(i)) / 1e-3 - sign[i]) <
          std::max(1e-7, adam_rel_tol<S>()));
  }

  // t = 2, g = (0.5, 1, −0.25):
  //   m = 0.9 m + 0.1 g = (0.09 + 0.05, −0.18 + 0.1, 0.0225 − 0.025) = (0.14, −0.08, −0.0025)
  //   v = 0.999 v + 0.001 g² = (0.000999 + 0.00025, 0.003996 + 0.001, 0.0000624375 + 0.0000625)
  //     = (0.001249, 0.004996, 0.0001249375)
  //   1 − β₁² = 1 − 0.81 = 0.19;   1 − β₂² = 1 − 0.998001 = 0.001999
  //   m̂ = (0.14, −0.08, −0.0025)/0.19 = (14/19, −8/19, −0.25/19)
  //      = (0.736842105263157895, −0.421052631578947368, −0.0131578947368421053)
  //   v̂ = (0.001249, 0.004996, 0.0001249375)/0.001999 = (1249/1999, 4996/1999, 0.0625)
  //   √v̂ = (0.790450761403328367, 1.580901522806656734, 0.25)   [4996 = 4·1249, so √ doubles]
  //   Δx = −0.001·m̂/(√v̂ + 1e-8):
  //     −0.001·0.736842105263157895/0.790450771403328367  = −0.000932179627018395821
  //     +0.001·0.421052631578947368/1.580901532806656734  = +0.000266337037975686397
  //     +0.001·0.0131578947368421053/0.25000001           = +0.0000526315768421053474
  const auto d2 = step<S>(b, st, {0.5, 1.0, -0.25});
  check_close(d2, {-0.000932179627018395821, 0.000266337037975686397, 0.0000526315768421053474},
              adam_rel_tol<S>());
  check_close<S>(st.m, {0.14, -0.08, -0.0025}, adam_rel_tol<S>());
  check_close<S>(st.v, {0.001249, 0.004996, 0.0001249375}, adam_rel_tol<S>());
  CHECK(st.t == 2);
}

TEST_CASE_TEMPLATE("base optimizers: adam adds epsilon to the bias-corrected root", S, float,
                   double) {
  // A large ε makes its placement visible: η = 1, ε = 1, default β.
  const dho2::adam b{.learning_rate = 1.0, .epsilon = 1.0};
  auto st = b.init<S>(3);
  // t = 1, g = (1, −2, 0.25): m̂ = g, √v̂ = |g|, Δx = −g/(|g| + 1):
  //   −1/2 = −0.5,   +2/3 = 0.666…,   −0.25/1.25 = −0.2
  // (with ε added to the uncorrected √v = 0.0316·|g| instead, the first entry would be
  //  −0.1/(0.0316 + 1) ≈ −0.097: the test tells the two apart)
  check_close(step<S>(b, st, {1.0, -2.0, 0.25}), {-0.5, 2.0 / 3.0, -0.2}, adam_rel_tol<S>());
  // t = 2, same g: m = 0.9·0.1g + 0.1g = 0.19g, so m̂ = 0.19g/0.19 = g; v = 0.001999g², so
  // v̂ = g²: a constant gradient gives the same step again (−0.5, 2/3, −0.2).
  check_close(step<S>(b, st, {1.0, -2.0, 0.25}), {-0.5, 2.0 / 3.0, -0.2}, adam_rel_tol<S>());
}

TEST_CASE("base optimizers: validate names the field, the value and the violated constraint") {
  using std::string;
  const string positive = "finite and > 0";
  const string unit = "0 <= value < 1";

  SUBCASE("sgd") {
    check_message(message_of([] { dho2::sgd{.learning_rate = -0.5}.validate(); }),
                  "sgd::learning_rate", "-0.5", positive);
    check_message(message_of([] { dho2::sgd{.learning_rate = 0.0}.validate(); }),
                  "sgd::learning_rate", "0", positive);
    check_message(message_of([] { dho2::sgd{.learning_rate = nan_value}.validate(); }),
                  "sgd::learning_rate", "nan", positive);
    check_message(message_of([] { dho2::sgd{.learning_rate = inf_value}.validate(); }),
                  "sgd::learning_rate", "inf", positive);
    CHECK(message_of([] { dho2::sgd{.learning_rate = 0.25}.validate(); }).empty());
  }
  SUBCASE("heavy_ball") {
    check_message(message_of([] { dho2::heavy_ball{.learning_rate = -0.5}.validate(); }),
                  "heavy_ball::learning_rate", "-0.5", positive);
    check_message(message_of([] { dho2::heavy_ball{.learning_rate = nan_value}.validate(); }),
                  "heavy_ball::learning_rate", "nan", positive);
    check_message(message_of([] { dho2::heavy_ball{.momentum = 1.0}.validate(); }),
                  "heavy_ball::momentum", "1", unit);
    check_message(message_of([] { dho2::heavy_ball{.momentum = 1.5}.validate(); }),
                  "heavy_ball::momentum", "1.5", unit);
    check_message(message_of([] { dho2::heavy_ball{.momentum = -0.25}.validate(); }),
                  "heavy_ball::momentum", "-0.25", unit);
    check_message(message_of([] { dho2::heavy_ball{.momentum = nan_value}.validate(); }),
                  "heavy_ball::momentum", "nan", unit);
    CHECK(message_of([] { dho2::heavy_ball{.momentum = 0.0}.validate(); }).empty());
  }
  SUBCASE("nesterov") {
    check_message(message_of([] { dho2::nesterov{.learning_rate = -0.5}.validate(); }),
                  "nesterov::learning_rate", "-0.5", positive);
    check_message(message_of([] { dho2::nesterov{.learning_rate = inf_value}.validate(); }),
                  "nesterov::learning_rate", "inf", positive);
    check_message(message_of([] { dho2::nesterov{.momentum = 1.0}.validate(); }),
                  "nesterov::momentum", "1", unit);
    check_message(message_of([] { dho2::nesterov{.momentum = -0.25}.validate(); }),
                  "nesterov::momentum", "-0.25", unit);
    check_message(message_of([] { dho2::nesterov{.momentum = nan_value}.validate(); }),
                  "nesterov::momentum", "nan", unit);
  }
  SUBCASE("adam") {
    check_message(message_of([] { dho2::adam{.learning_rate = -0.5}.validate(); }),
                  "adam::learning_rate", "-0.5", positive);
    check_message(message_of([] { dho2::adam{.learning_rate = nan_value}.validate(); }),
                  "adam::learning_rate", "nan", positive);
    check_message(message_of([] { dho2::adam{.beta1 = 1.0}.validate(); }), "adam::beta1", "1",
                  unit);
    check_message(message_of([] { dho2::adam{.beta1 = -0.25}.validate(); }), "adam::beta1", "-0.25",
                  unit);
    check_message(message_of([] { dho2::adam{.beta2 = 1.5}.validate(); }), "adam::beta2", "1.5",
                  unit);
    check_message(message_of([] { dho2::adam{.beta2 = nan_value}.validate(); }), "adam::beta2",
                  "nan", unit);
    check_message(message_of([] { dho2::adam{.epsilon = 0.0}.validate(); }), "adam::epsilon", "0",
                  positive);
    check_message(message_of([] { dho2::adam{.epsilon = -0.25}.validate(); }), "adam::epsilon",
                  "-0.25", positive);
    check_message(message_of([] { dho2::adam{.epsilon = inf_value}.validate(); }), "adam::epsilon",
                  "inf", positive);
    CHECK(message_of([] { dho2::adam{}.validate(); }).empty());
  }
}

TEST_CASE("base optimizers: the optimizer rejects bad base hyper-parameters at construction") {
  using policies = dho2::default_policies::with_base<dho2::heavy_ball>;
  const std::string msg = message_of(
      [] { dho2::optimizer<float, policies> opt({}, policies{.base = {.momentum = 1.0}}); });
  check_message(msg, "heavy_ball::momentum", "1", "0 <= value < 1");
  CHECK(message_of([] { dho2::optimizer<float, policies> opt({}, policies{}); }).empty());
}
