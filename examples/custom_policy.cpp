// A user-written base optimizer plugged into dho2::optimizer: RMSprop (Tieleman & Hinton, 2012).
// FOSI runs it on the part of the gradient outside its curvature subspace. The example trains
// softmax regression on synthetic teacher data with FOSI-RMSprop and with RMSprop alone (the
// same optimizer with use_curvature = false), checks that a bad hyper-parameter is rejected, and
// exits with 1 unless training worked.
#include <dho2/data/batcher.hpp>
#include <dho2/data/synthetic.hpp>
#include <dho2/dho2.hpp>
#include <dho2/models/softmax_regression.hpp>

#include <cmath>
#include <cstddef>
#include <cstdio>
#include <sstream>
#include <string>

namespace {

/// RMSprop as a DHO2 base optimizer. Two levels, like dho2::adam: the policy object holds the
/// hyper-parameters, `state<S>` the run state of one shard of parameters.
///     s ← ρ s + (1 − ρ) g²,   Δx = −η g / (√s + ε).
/// The step is element-wise in g, as DHO2 requires (it runs the step on parameter shards).
struct rmsprop {
  double learning_rate = 1e-2;  // η > 0
  double decay = 0.9;           // ρ in [0, 1)
  double epsilon = 1e-8;        // ε > 0

  /// Per-coordinate scaling, like Adam: FOSI must not rescale the base step (clip c = 1).
  static constexpr double default_clip = 1.0;

  template <dho2::model_scalar S>
  struct state {
    dho2::vector<S> mean_square;  // s, one entry per parameter
    [[nodiscard]] std::size_t bytes() const noexcept {
      return static_cast<std::size_t>(mean_square.size()) * sizeof(S);
    }
  };

  /// Throws dho2::invalid_options ("<field> = <value>. Violated constraint: ...") when a
  /// hyper-parameter is bad; dho2::optimizer calls it before any state changes.
  void validate() const {
    check(std::isfinite(learning_rate) && learning_rate > 0.0, "learning_rate", learning_rate,
          "finite and > 0");
    check(std::isfinite(decay) && decay >= 0.0 && decay < 1.0, "decay", decay, "0 <= value < 1");
    check(std::isfinite(epsilon) && epsilon > 0.0, "epsilon", epsilon, "finite and > 0");
  }

  template <dho2::model_scalar S>
  [[nodiscard]] state<S> init(dho2::index n) const {
    return {dho2::vector<S>::Zero(n)};
  }

  template <dho2::model_scalar S>
  void step(state<S>& st, dho2::const_vector_ref<S> g, dho2::vector_ref<S> delta) const {
    const auto rho = static_cast<S>(decay);
    st.mean_square.array() = rho * st.mean_square.array() + (S(1) - rho) * g.array().square();
    delta.array() = static_cast<S>(-learning_rate) * g.array() /
                    (st.mean_square.array().sqrt() + static_cast<S>(epsilon));
  }

 private:
  static void check(bool ok, const char* field, double value, const char* constraint) {
    if (ok) return;
    std::ostringstream message;
    message << "rmsprop::" << field << " = " << value << ". Violated constraint: " << constraint;
    throw dho2::invalid_options(message.str());
  }
};

// Names the first missing requirement at compile time if rmsprop is not a base optimizer.
DHO2_REQUIRE_BASE_OPTIMIZER(rmsprop, float);

using fosi_rmsprop = dho2::optimizer<float, dho2::default_policies::with_base<rmsprop>>;

struct outcome {
  double loss = 0.0;
  double accuracy = 0.0;
  dho2::summary summary;
};

outcome train(bool use_curvature, const dho2::softmax_regression<float>& model,
              const dho2::train_test_sets<float>& data) {
  dho2::options opts;
  opts.use_curvature = use_curvature;
  opts.k = 4;
  opts.warmup = 20;
  opts.refresh_every = 200;
  opts.alpha = 0.5;
  fosi_rmsprop opt(opts, {.base = {.learning_rate = 3e-3}});
  dho2::vector<float> x = model.initial_point();
  dho2::shuffling_batcher<float> batches(data.train, 64, 7);
  outcome out;
  out.summary = opt.optimize(model, x, batches, 8);
  const dho2::classification_batch<float> test{data.test.inputs, data.test.labels};
  out.accuracy = model.accuracy(x, test);
  const dho2::classification_batch<float> train_all{data.train.inputs, data.train.labels};
  out.loss = static_cast<double>(model.loss(x, train_all));
  return out;
}

}  // namespace

int main() {
  // 1. A bad hyper-parameter is rejected when the optimizer is built.
  try {
    fosi_rmsprop bad({}, {.base = {.learning_rate = -1.0}});
    std::printf("FAILED: a negative learning rate was accepted\n");
    return 1;
  } catch (const dho2::invalid_options& e) {
    std::printf("rejected as expected: %s\n", e.what());
  }

  // 2. Softmax regression (20 features, 4 classes) on data labelled by a random teacher network.
  const auto data = dho2::make_teacher_classification<float>(4000, 1000, 20, 4, 11);
  const dho2::softmax_regression<float> model(20, 4, 1e-4);
  const dho2::classification_batch<float> train_all{data.train.inputs, data.train.labels};
  const double initial_loss = static_cast<double>(model.loss(model.initial_point(), train_all));

  const outcome fosi = train(true, model, data);
  const outcome base = train(false, model, data);
  std::printf("initial loss %.4f\n", initial_loss);
  std::printf(
      "FOSI-RMSprop: loss %.4f, test accuracy %.4f, %lld estimates (%s HVPs), state %zu B\n",
      fosi.loss, fosi.accuracy, static_cast<long long>(fosi.summary.curvature_estimates),
      std::string(dho2::to_string(fosi.summary.hvp)).c_str(), fosi.summary.optimizer_state_bytes);
  std::printf("RMSprop:      loss %.4f, test accuracy %.4f\n", base.loss, base.accuracy);

  bool ok = true;
  if (fosi.summary.curvature_estimates < 1 || base.summary.curvature_estimates != 0) {
    std::printf("FAILED: wrong number of curvature estimates\n");
    ok = false;
  }
  if (!(fosi.loss < 0.6 * initial_loss) || !(base.loss < 0.6 * initial_loss)) {
    std::printf("FAILED: the training loss did not fall below 60%% of its initial value\n");
    ok = false;
  }
  if (!(fosi.accuracy > 0.6)) {
    std::printf("FAILED: FOSI-RMSprop test accuracy %.4f <= 0.6\n", fosi.accuracy);
    ok = false;
  }
  return ok ? 0 : 1;
}
