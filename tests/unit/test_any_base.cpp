// Tests of dho2::any_base (include/dho2/base/any.hpp), the base optimizer chosen at run time: an
// optimizer over it equals the same optimizer over the wrapped base bit for bit (one process and
// mode S, every shipped base, a learning rate changed mid-run), a checkpoint resumes bit for bit,
// and its state, clip, identity and validation are the wrapped base's.
#include <dho2/dho2.hpp>
#include <dho2/transport/inproc.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace {

using dho2::index;
using dho2::vector;

// A quadratic of 1,300 parameters (the fused update runs three blocks), K = 4 retained pairs.
struct problem {
  dho2::quadratic<double> model;
  dho2::options opts;
  problem() : model(spectrum(), 11) {
    opts.k = 4;
    opts.warmup = 2;
    opts.refresh_every = 5;
  }
  static vector<double> spectrum() {
    const index n = 1300;
    vector<double> e(n);
    for (index i = 0; i < n; ++i) e(i) = 0.5 + 40.0 * static_cast<double>(i * i) / (n * n);
    return e;
  }
};

// x after `steps` steps of an optimizer with `base` on `ranks` inproc ranks (rank 0's x); the
// learning rate is halved before step 7.
template <class Base>
vector<double> train(const problem& p, const Base& base, int ranks, int steps) {
  using P =
      dho2::default_policies::with_base<Base>::template with_transport<dho2::inproc_transport>;
  std::vector<vector<double>> result(static_cast<std::size_t>(ranks));
  dho2::run_inproc(
      ranks, {.timeout = std::chrono::duration<double>(20.0)}, [&](dho2::inproc_transport& t) {
        const int rank = t.rank();
        dho2::optimizer<double, P> opt(p.opts, P{.base = base, .transport = std::move(t)});
        vector<double> x = p.model.initial_point();
        for (int s = 0; s < steps; ++s) {
          if (s == 7) opt.set_learning_rate(0.5 * opt.learning_rate());
          opt.step(p.model, dho2::vector_ref<double>(x), {});
        }
        result[static_cast<std::size_t>(rank)] = x;
      });
  return result[0];
}

template <class Base>
void check_same_as_wrapped(const problem& p, const Base& base) {
  for (const int ranks : {1, 2}) {
    CAPTURE(ranks);
    const vector<double> direct = train(p, base, ranks, 12);
    const vector<double> wrapped = train(p, dho2::any_base(base), ranks, 12);
    INFO("expected any_base(" << base.identity() << ") to train bit for bit as the base itself");
    CHECK((direct - wrapped).cwiseAbs().maxCoeff() == 0.0);
    CHECK((direct - p.model.initial_point()).norm() > 0.0);  // the runs did move
  }
}

TEST_CASE("any_base: an optimizer over it equals one over the wrapped base, bit for bit") {
  const problem p;
  check_same_as_wrapped(p, dho2::sgd{.learning_rate = 0.01});
  check_same_as_wrapped(p, dho2::heavy_ball{.learning_rate = 0.01, .momentum = 0.8});
  check_same_as_wrapped(p, dho2::nesterov{.learning_rate = 0.01, .momentum = 0.8});
  check_same_as_wrapped(p, dho2::adam{.learning_rate = 0.01});
  check_same_as_wrapped(p, dho2::adamw{.learning_rate = 0.01, .weight_decay = 0.1});
}

TEST_CASE("any_base: a checkpoint of a wrapped heavy ball resumes bit for bit") {
  const problem p;
  using P = dho2::default_policies::with_base<dho2::any_base>;
  const P policies{.base = dho2::any_base(dho2::heavy_ball{.learning_rate = 0.01})};
  const auto dir = std::filesystem::temp_directory_path() / "dho2_test_any_base_checkpoint";
  std::filesystem::remove_all(dir);
  vector<double> whole = p.model.initial_point();
  {
    dho2::optimizer<double, P> opt(p.opts, policies);
    for (int s = 0; s < 10; ++s) opt.step(p.model, dho2::vector_ref<double>(whole), {});
  }
  vector<double> resumed = p.model.initial_point();
  {
    dho2::optimizer<double, P> first(p.opts, policies);
    for (int s = 0; s < 5; ++s) first.step(p.model, dho2::vector_ref<double>(resumed), {});
    first.save_checkpoint(dir, resumed, {});
  }
  dho2::optimizer<double, P> second(p.opts, policies);
  resumed.setZero();
  second.load_checkpoint(dir, resumed);
  for (int s = 0; s < 5; ++s) second.step(p.model, dho2::vector_ref<double>(resumed), {});
  std::filesystem::remove_all(dir);
  INFO("expected the resumed run to equal the uninterrupted one bit for bit");
  CHECK((whole - resumed).cwiseAbs().maxCoeff() == 0.0);
}

TEST_CASE("any_base: state, clip, identity and validation are the wrapped base's") {
  const dho2::any_base adam;  // wraps dho2::adam{}
  const dho2::any_base hb(dho2::heavy_ball{.learning_rate = 0.02, .momentum = 0.5});
  CHECK(adam.scaling_clip() == 1.0);
  CHECK(hb.scaling_clip() == 3.0);
  CHECK(adam.identity() == dho2::adam{}.identity());
  CHECK(hb.learning_rate == 0.02);
  CHECK(hb.identity() == dho2::heavy_ball{.learning_rate = 0.02, .momentum = 0.5}.identity());

  auto st = adam.init<float>(10);
  CHECK(st.bytes() == 2 * 10 * sizeof(float));
  std::vector<std::string> names;
  st.visit_fields([&](std::string_view name, auto& /*field*/) { names.emplace_back(name); });
  CHECK(names == std::vector<std::string>{"m", "v", "t"});

  // A copy is deep: stepping the original leaves it as it was.
  const dho2::any_base::state<float> copy = st;
  const vector<float> g = vector<float>::Constant(10, 1.0F);
  vector<float> delta(10);
  adam.step(st, dho2::const_vector_ref<float>(g), dho2::vector_ref<float>(delta));
  std::vector<float> first_moment;
  auto copy2 = copy;
  copy2.visit_fields([&](std::string_view name, auto& field) {
    if constexpr (requires { field.size(); }) {
      if (name == "m") first_moment.assign(field.data(), field.data() + field.size());
    }
  });
  CHECK(first_moment == std::vector<float>(10, 0.0F));

  dho2::any_base bad(dho2::nesterov{.learning_rate = 0.01, .momentum = 1.5});
  CHECK_THROWS_WITH_AS(bad.validate(), doctest::Contains("nesterov::momentum = 1.5"),
                       dho2::invalid_options);
  bad = dho2::any_base(dho2::sgd{});
  bad.learning_rate = -1.0;
  INFO("expected the wrapped base to be validated at any_base's learning rate");
  CHECK_THROWS_WITH_AS(bad.validate(), doctest::Contains("sgd::learning_rate = -1"),
                       dho2::invalid_options);
}

}  // namespace
