// Tests of dho2::options::validate (include/dho2/fosi/options.hpp) and of when the optimizer
// applies it: every bad field gives an invalid_options message naming the field, the value and
// the violated constraint (and carries the three as data); model-independent fields are rejected
// at construction, n-dependent ones at the first step, with the parameters and the optimizer
// state untouched. And the field list those checks, the cross-rank agreement values and the
// flag tables derive from.
#include <dho2/base/sgd.hpp>
#include <dho2/core/errors.hpp>
#include <dho2/detail/agreement.hpp>
#include <dho2/fosi/optimizer.hpp>
#include <dho2/fosi/options.hpp>
#include <dho2/models/quadratic.hpp>
#include <dho2/models/softmax_regression.hpp>
#include <dho2/transport/inproc.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <mutex>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace {

constexpr double nan_value = std::numeric_limits<double>::quiet_NaN();
constexpr double inf_value = std::numeric_limits<double>::infinity();

// The message of the invalid_options `f` throws ("" if it throws nothing).
std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const dho2::invalid_options& e) {
    return e.what();
  }
  return "";
}

// The invalid_options `f` throws; fails the test if it throws none.
dho2::invalid_options error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const dho2::invalid_options& e) {
    return e;
  }
  FAIL("no invalid_options thrown");
  return dho2::invalid_options("");
}

// The message of `o.validate(n)`.
std::string validate_message(const dho2::options& o, dho2::index n) {
  return message_of([&] { o.validate(n); });
}

// Checks "<field> = <value>. Violated constraint: <rule...>".
void check_message(const std::string& msg, const std::string& field, const std::string& value,
                   const std::string& rule) {
  CAPTURE(msg);
  CHECK(msg.find(field + " = " + value + ". Violated constraint: ") == 0);
  CHECK(msg.find(rule) != std::string::npos);
}

// Options with one field changed.
dho2::options with(const std::function<void(dho2::options&)>& change) {
  dho2::options o;
  change(o);
  return o;
}

// Planted spectrum (8, 4, 2, 1): n = 4.
dho2::quadratic<double> small_quadratic() {
  dho2::vector<double> lambda(4);
  lambda << 8.0, 4.0, 2.0, 1.0;
  return dho2::quadratic<double>(lambda, 7);
}

bool bit_identical(const dho2::vector<double>& a, const dho2::vector<double>& b) {
  return a.size() == b.size() &&
         std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.size()) * sizeof(double)) == 0;
}

}  // namespace

TEST_CASE("options: the defaults are valid") {
  CHECK(validate_message(dho2::options{}, 100).empty());
  CHECK(validate_message(dho2::options{}, 6).empty());  // k + l = 5 < 6
}

TEST_CASE("options: validate names every bad field, its value and the violated constraint") {
  SUBCASE("k + l >= n") {
    dho2::options o;
    o.k = 3;
    o.l = 1;
    check_message(validate_message(o, 4), "options.k", "3", "k + l < n (l = 1, n = 4)");
    check_message(validate_message(o, 3), "options.k", "3", "k + l < n (l = 1, n = 3)");
    CHECK(validate_message(o, 5).empty());
  }
  SUBCASE("k = l = 0 with use_curvature") {
    dho2::options o;
    o.k = 0;
    o.l = 0;
    check_message(validate_message(o, 100), "options.k", "0",
                  "k + l >= 1 when use_curvature is true (l = 0)");
    // Without curvature, k and l are not used and 0 is fine.
    o.use_curvature = false;
    CHECK(validate_message(o, 100).empty());
  }
  SUBCASE("negative k or l") {
    check_message(validate_message(with([](auto& x) { x.k = -1; }), 100), "options.k", "-1",
                  ">= 0");
    check_message(validate_message(with([](auto& x) { x.l = -2; }), 100), "options.l", "-2",
                  ">= 0");
  }
  SUBCASE("T = 0") {
    check_message(validate_message(with([](auto& x) { x.refresh_every = 0; }), 100),
                  "options.refresh_every", "0", ">= 1");
    check_message(validate_message(with([](auto& x) { x.refresh_every = -3; }), 100),
                  "options.refresh_every", "-3", ">= 1");
  }
  SUBCASE("W = 0") {
    check_message(validate_message(with([](auto& x) { x.warmup = 0; }), 100), "options.warmup", "0",
                  ">= 1");
  }
  SUBCASE("alpha negative, NaN or infinite") {
    check_message(validate_message(with([](auto& x) { x.alpha = -0.5; }), 100), "options.alpha",
                  "-0.5", "finite and >= 0");
    check_message(validate_message(with([](auto& x) { x.alpha = nan_value; }), 100),
                  "options.alpha", "nan", "finite and >= 0");
    check_message(validate_message(with([](auto& x) { x.alpha = inf_value; }), 100),
                  "options.alpha", "inf", "finite and >= 0");
    check_message(validate_message(with([](auto& x) { x.alpha = -inf_value; }), 100),
                  "options.alpha", "-inf", "finite and >= 0");
    CHECK(validate_message(with([](auto& x) { x.alpha = 0.0; }), 100).empty());
  }
  SUBCASE("momentum outside [0, 1)") {
    check_message(validate_message(with([](auto& x) { x.momentum = 1.0; }), 100),
                  "options.momentum", "1", "0 <= value < 1");
    check_message(validate_message(with([](auto& x) { x.momentum = 1.5; }), 100),
                  "options.momentum", "1.5", "0 <= value < 1");
    check_message(validate_message(with([](auto& x) { x.momentum = -0.25; }), 100),
                  "options.momentum", "-0.25", "0 <= value < 1");
    check_message(validate_message(with([](auto& x) { x.momentum = nan_value; }), 100),
                  "options.momentum", "nan", "0 <= value < 1");
    CHECK(validate_message(with([](auto& x) { x.momentum = 0.0; }), 100).empty());
  }
  SUBCASE("eigenvalue floor negative or >= 1") {
    check_message(validate_message(with([](auto& x) { x.eigenvalue_floor = -0.25; }), 100),
                  "options.eigenvalue_floor", "-0.25", "0 <= value < 1");
    check_message(validate_message(with([](auto& x) { x.eigenvalue_floor = 1.0; }), 100),
                  "options.eigenvalue_floor", "1", "0 <= value < 1");
    check_message(validate_message(with([](auto& x) { x.eigenvalue_floor = nan_value; }), 100),
                  "options.eigenvalue_floor", "nan", "0 <= value < 1");
    CHECK(validate_message(with([](auto& x) { x.eigenvalue_floor = 0.0; }), 100).empty());
  }
  SUBCASE("lanczos_steps < k + l") {
    check_message(validate_message(with([](auto& x) { x.lanczos_steps = 3; }), 100),
                  "options.lanczos_steps", "3", "0 (default) or >= k + l (k + l = 5)");
    dho2::options o;
    o.k = 2;
    o.l = 2;
    o.lanczos_steps = 3;
    check_message(validate_message(o, 100), "options.lanczos_steps", "3",
                  "0 (default) or >= k + l (k + l = 4)");
    CHECK(validate_message(with([](auto& x) { x.lanczos_steps = 5; }), 100).empty());
  }
  SUBCASE("lanczos_steps > n") {
    check_message(validate_message(with([](auto& x) { x.lanczos_steps = 20; }), 10),
                  "options.lanczos_steps", "20", "<= n (n = 10)");
    CHECK(validate_message(with([](auto& x) { x.lanczos_steps = 10; }), 10).empty());
  }
  SUBCASE("negative lanczos_steps without curvature") {
    dho2::options o;
    o.use_curvature = false;
    o.lanczos_steps = -1;
    check_message(validate_message(o, 10), "options.lanczos_steps", "-1", ">= 0");
  }
  SUBCASE("clip < 1 or not finite") {
    check_message(validate_message(with([](auto& x) { x.clip = 0.5; }), 100), "options.clip", "0.5",
                  "finite and >= 1");
    check_message(validate_message(with([](auto& x) { x.clip = -2.0; }), 100), "options.clip", "-2",
                  "finite and >= 1");
    check_message(validate_message(with([](auto& x) { x.clip = nan_value; }), 100), "options.clip",
                  "nan", "finite and >= 1");
    check_message(validate_message(with([](auto& x) { x.clip = inf_value; }), 100), "options.clip",
                  "inf", "finite and >= 1");
    CHECK(validate_message(with([](auto& x) { x.clip = 1.0; }), 100).empty());
  }
  SUBCASE("n = 0") {
    check_message(validate_message(dho2::options{}, 0), "number of parameters n", "0", ">= 1");
  }
}

TEST_CASE("options: the optimizer rejects model-independent bad options at construction") {
  // Each bad field gives the same message at construction as validate() does.
  const dho2::options bad[] = {
      with([](auto& x) {
        x.k = 0;
        x.l = 0;
      }),
      with([](auto& x) { x.refresh_every = 0; }),
      with([](auto& x) { x.warmup = 0; }),
      with([](auto& x) { x.alpha = -0.5; }),
      with([](auto& x) { x.alpha = nan_value; }),
      with([](auto& x) { x.momentum = 1.0; }),
      with([](auto& x) { x.eigenvalue_floor = -0.25; }),
      with([](auto& x) { x.lanczos_steps = 3; }),
      with([](auto& x) { x.clip = 0.5; }),
  };
  for (const auto& o : bad) {
    const std::string expected = validate_message(o, 1000);
    REQUIRE(!expected.empty());
    CAPTURE(expected);
    CHECK_THROWS_AS(dho2::optimizer<double>{o}, dho2::invalid_options);
    CHECK(message_of([&] { dho2::optimizer<double> opt(o); }) == expected);
  }
  CHECK(message_of([] { dho2::optimizer<double> opt{}; }).empty());
}

TEST_CASE("options: k + l >= n throws at the first step and changes nothing") {
  const auto model = small_quadratic();  // n = 4
  const dho2::quadratic<double>::batch batch{};
  const dho2::vector<double> x0 = model.initial_point();
  dho2::vector<double> x = x0;

  // Valid whatever n ... except that k + l = 4 is not < n = 4.
  const dho2::options bad = with([](auto& o) {
    o.k = 3;
    o.l = 1;
    o.warmup = 1;
  });
  dho2::optimizer<double> opt(bad);
  for (int attempt = 0; attempt < 2; ++attempt) {
    CAPTURE(attempt);
    const std::string msg = message_of([&] { opt.step(model, x, batch); });
    check_message(msg, "options.k", "3", "k + l < n (l = 1, n = 4)");
    CHECK(bit_identical(x, x0));
    CHECK(opt.get_summary().iterations == 0);
    CHECK(opt.get_summary().steps == 0);
    CHECK(opt.get_summary().curvature_estimates == 0);
    CHECK(opt.get_summary().termination == dho2::termination_type::running);
    CHECK(opt.eigenvalues().size() == 0);
    CHECK_FALSE(opt.stopped());
  }
  // optimize() checks the same thing before any hook or step.
  struct one_batch {
    dho2::index num_batches() const { return 1; }
    void begin_epoch(dho2::index /*epoch*/) {}
    void fill_batch(dho2::index /*i*/, dho2::quadratic<double>::batch& /*b*/) {}
  } batches;
  int hooks = 0;
  struct counter {
    int* hooks;
    void on_begin(const dho2::run_info& /*info*/) { ++*hooks; }
  } count{&hooks};
  CHECK_THROWS_AS(opt.optimize(model, x, batches, 2, count), dho2::invalid_options);
  CHECK(hooks == 0);
  CHECK(bit_identical(x, x0));

  // A corrected optimizer (k + l = 3 < 4) works on the same, untouched x: the estimate before
  // step 0 finds the planted top-2 and bottom-1 eigenvalues and the loss goes down.
  dho2::optimizer<double> fixed(with([](auto& o) {
    o.k = 2;
    o.l = 1;
    o.warmup = 1;
  }));
  const double loss0 = model.loss(x, batch);
  CHECK(fixed.step(model, x, batch) == dho2::step_status::taken);
  CHECK(fixed.last_step_estimated());
  REQUIRE(fixed.eigenvalues().size() == 3);
  CHECK(fixed.eigenvalues()(0) == doctest::Approx(8.0).epsilon(1e-9));
  CHECK(fixed.eigenvalues()(1) == doctest::Approx(4.0).epsilon(1e-9));
  CHECK(fixed.eigenvalues()(2) == doctest::Approx(1.0).epsilon(1e-9));
  CHECK(model.loss(x, batch) < loss0);

  // And the failed optimizer was not poisoned: on a model where its options fit (n = 6) it
  // takes exactly the steps of a fresh optimizer with the same options.
  dho2::vector<double> lambda6(6);
  lambda6 << 8.0, 4.0, 2.0, 1.0, 0.5, 0.25;
  const dho2::quadratic<double> big(lambda6, 11);
  dho2::vector<double> xa = big.initial_point(), xb = big.initial_point();
  dho2::optimizer<double> fresh(bad);
  for (int i = 0; i < 3; ++i) {
    CHECK(opt.step(big, xa, batch) == dho2::step_status::taken);
    CHECK(fresh.step(big, xb, batch) == dho2::step_status::taken);
  }
  CHECK(bit_identical(xa, xb));
  CHECK(opt.get_summary().iterations == 3);
}

TEST_CASE("options: other model-dependent violations throw at the first step, x unchanged") {
  const auto model = small_quadratic();  // n = 4
  const dho2::quadratic<double>::batch batch{};
  const dho2::vector<double> x0 = model.initial_point();

  SUBCASE("lanczos_steps > n") {
    dho2::vector<double> x = x0;
    dho2::optimizer<double> opt(with([](auto& o) {
      o.k = 2;
      o.lanczos_steps = 6;
    }));
    check_message(message_of([&] { opt.step(model, x, batch); }), "options.lanczos_steps", "6",
                  "<= n (n = 4)");
    CHECK(bit_identical(x, x0));
    CHECK(opt.get_summary().iterations == 0);
  }
  SUBCASE("parameter vector of the wrong length") {
    dho2::vector<double> x = dho2::vector<double>::Ones(3);
    const dho2::vector<double> before = x;
    dho2::optimizer<double, dho2::default_policies::with_base<dho2::sgd>> opt(
        with([](auto& o) { o.k = 1; }));
    check_message(message_of([&] { opt.step(model, x, batch); }), "parameter vector size", "3",
                  "equal to model.num_parameters() = 4");
    CHECK(bit_identical(x, before));
    CHECK(opt.get_summary().iterations == 0);
  }
}

TEST_CASE("options: invalid_options carries the field, the value and the constraint") {
  struct bad_case {
    std::function<void(dho2::options&)> change;
    dho2::index n;
    std::string field, value, constraint;
  };
  const std::vector<bad_case> cases{
      {[](auto& o) { o.k = -1; }, 100, "options.k", "-1", ">= 0"},
      {[](auto& o) {
         o.k = 3;
         o.l = 1;
       },
       4, "options.k", "3", "k + l < n (l = 1, n = 4)"},
      {[](auto& o) { o.l = -2; }, 100, "options.l", "-2", ">= 0"},
      {[](auto& o) { o.lanczos_steps = 3; }, 100, "options.lanczos_steps", "3",
       "0 (default) or >= k + l (k + l = 5)"},
      {[](auto& o) { o.warmup = 0; }, 100, "options.warmup", "0", ">= 1"},
      {[](auto& o) { o.alpha = -0.5; }, 100, "options.alpha", "-0.5", "finite and >= 0"},
      {[](auto& o) { o.momentum = 1.0; }, 100, "options.momentum", "1", "0 <= value < 1"},
      {[](auto& o) { o.clip = 0.5; }, 100, "options.clip", "0.5", "finite and >= 1"},
      {[](auto& o) { o.eigenvalue_floor = nan_value; }, 100, "options.eigenvalue_floor", "nan",
       "0 <= value < 1"},
      {[](auto&) {}, 0, "number of parameters n", "0", ">= 1"},
  };
  for (const auto& c : cases) {
    const dho2::options o = with(c.change);
    const dho2::invalid_options e = error_of([&] { o.validate(c.n); });
    CAPTURE(e.what());
    CHECK(e.field() == c.field);
    CHECK(e.value() == c.value);
    CHECK(e.constraint() == c.constraint);
    CHECK(std::string(e.what()) ==
          c.field + " = " + c.value + ". Violated constraint: " + c.constraint);
  }
  SUBCASE("a copy keeps them") {
    const dho2::invalid_options e = error_of([] { with([](auto& o) { o.k = -1; }).validate(9); });
    const dho2::invalid_options copy = e;  // NOLINT(performance-unnecessary-copy-initialization)
    CHECK(copy.field() == "options.k");
    CHECK(copy.constraint() == ">= 0");
  }
  SUBCASE("a bare message has none") {
    const dho2::invalid_options e("something is wrong");
    CHECK(std::string(e.what()) == "something is wrong");
    CHECK(e.field().empty());
    CHECK(e.value().empty());
    CHECK(e.constraint().empty());
  }
  SUBCASE("the models' checks name their fields too") {
    const dho2::invalid_options e =
        error_of([] { dho2::softmax_regression<double> model(4, 3, -0.5); });
    CHECK(e.field() == "l2");
    CHECK(e.value() == "-0.5");
    CHECK(std::string(e.what()) == "l2 = -0.5. Violated constraint: finite and >= 0");
  }
}

TEST_CASE("options: the field list names every field once, in declaration order") {
  std::vector<std::string_view> names;
  int with_constraint = 0;
  dho2::options::for_each_field([&](const auto& f) {
    names.push_back(f.name);
    if (f.violated != nullptr) ++with_constraint;
  });
  const std::vector<std::string_view> expected{"options.use_curvature",
                                               "options.k",
                                               "options.l",
                                               "options.lanczos_steps",
                                               "options.warmup",
                                               "options.refresh_every",
                                               "options.alpha",
                                               "options.momentum",
                                               "options.momentum_form",
                                               "options.clip",
                                               "options.eigenvalue_floor",
                                               "options.on_nonfinite",
                                               "options.max_consecutive_skips",
                                               "options.max_gradient_norm",
                                               "options.seed"};
  CHECK(names == expected);
  CHECK(with_constraint == 11);
  // options::field_name finds a member's name in the list (at compile time).
  static_assert(dho2::options::field_name(&dho2::options::k) == "options.k");
  static_assert(dho2::options::field_name(&dho2::options::clip) == "options.clip");
  static_assert(dho2::options::field_name(&dho2::options::seed) == "options.seed");
  CHECK(dho2::options::field_name(&dho2::options::refresh_every) == "options.refresh_every");
  // Each constraint accepts the defaults.
  const dho2::options defaults;
  dho2::options::for_each_field([&](const auto& f) {
    if (f.violated != nullptr) CHECK_FALSE(f.violated(defaults, 100).has_value());
  });
}

TEST_CASE("options: the agreement values come from the field list (names, order, values)") {
  dho2::options o;
  o.k = 7;
  o.l = 2;
  o.lanczos_steps = 30;
  o.clip = 2.5;
  o.momentum_form = dho2::momentum_kind::heavy_ball;
  o.on_nonfinite = dho2::nonfinite_policy::stop;
  o.seed = 0x0000000500000003ULL;
  const std::vector<dho2::detail::named_field> fields = dho2::detail::option_fields(o, 1000);
  const std::vector<std::pair<std::string, double>> expected{
      {"model.num_parameters()", 1000.0},
      {"options.use_curvature", 1.0},
      {"options.k", 7.0},
      {"options.l", 2.0},
      {"options.lanczos_steps", 30.0},
      {"options.warmup", 100.0},
      {"options.refresh_every", 100.0},
      {"options.alpha", 0.1},
      {"options.momentum", 0.9},
      {"options.momentum_form", 1.0},
      {"options.clip", 2.5},
      {"options.eigenvalue_floor", 1e-4},
      {"options.on_nonfinite", 1.0},
      {"options.max_consecutive_skips", 20.0},
      {"options.max_gradient_norm", 0.0},
      {"options.seed (high 32 bits)", 5.0},
      {"options.seed (low 32 bits)", 3.0},
  };
  REQUIRE(fields.size() == expected.size());
  for (std::size_t i = 0; i < fields.size(); ++i) {
    CAPTURE(i);
    CHECK(fields[i].name == expected[i].first);
    CHECK(fields[i].value == expected[i].second);
  }
  o.clip.reset();
  CHECK(dho2::detail::option_fields(o, 1000)[10].value == -1.0);  // unset clip
}

TEST_CASE("options: the ranks' disagreement names the field as data") {
  std::mutex mutex;
  std::vector<std::string> fields(2), values(2), constraints(2);
  dho2::run_inproc(2, {.timeout = std::chrono::seconds(20)}, [&](dho2::inproc_transport& t) {
    dho2::options o;
    if (t.rank() == 1) o.alpha = 0.25;
    const dho2::invalid_options e =
        error_of([&] { dho2::detail::check_fields_agree(t, dho2::detail::option_fields(o, 10)); });
    const std::lock_guard lock(mutex);
    const auto r = static_cast<std::size_t>(t.rank());
    fields[r] = std::string(e.field());
    values[r] = std::string(e.value());
    constraints[r] = std::string(e.constraint());
  });
  CHECK(fields[0] == "options.alpha");
  CHECK(fields[1] == "options.alpha");
  // Every rank gives the same message, with each rank's value (not rank 0's twice).
  CHECK(values[0] == "0.1 on rank 0, 0.25 on rank 1");
  CHECK(values[1] == values[0]);
  CHECK(constraints[0] == "identical on all 2 ranks");
  CHECK(constraints[1] == constraints[0]);
}
