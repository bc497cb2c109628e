// dho2_train: trains a classifier on Fashion-MNIST (or on synthetic teacher data, which needs no
// files) with DHO2's FOSI optimizer or with its base optimizer alone, and reports test accuracy,
// time to a target accuracy, curvature work, a time split and memory. `dho2_train --help` lists
// the flags and their defaults.
//
//   dho2_train                                    # fosi-adam, MLP 784-256-256-10, 3 epochs
//   dho2_train --optimizer adam --target-accuracy 0.85 --summary-json adam.json
//   dho2_train --dataset synthetic --epochs 1 --max-steps 60 --quiet
//
// fosi-<base> runs dho2::optimizer<float, default_policies::with_base<base>>; <base> alone runs
// the same optimizer with options.use_curvature = false, so both share one code path.
// Bad usage prints one line "dho2_train: error: ..." on stderr and exits with 2; runtime
// failures (missing data files, I/O) do the same with exit code 1.
#include "dho2_train/callbacks.hpp"
#include "dho2_train/config.hpp"
#include "dho2_train/json_writer.hpp"
#include "dho2_train/report.hpp"
#include <dho2/callbacks/callbacks.hpp>
#include <dho2/data/batcher.hpp>
#include <dho2/data/idx.hpp>
#include <dho2/data/synthetic.hpp>
#include <dho2/dho2.hpp>
#include <dho2/models/mlp.hpp>
#include <dho2/models/softmax_regression.hpp>

#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dho2_train {
namespace {

/// What --model (and the data set) asks for.
struct model_choice {
  bool is_mlp = true;
  std::vector<dho2::index> layers;  // MLP widths
  long long features = 0;
  long long classes = 0;
};

/// Features and classes of Fashion-MNIST (and the synthetic default for --model softmax).
constexpr long long image_features = 28 * 28;
constexpr long long image_classes = dho2::fashion_mnist_num_classes;

model_choice parse_model(const train_config& c) {
  model_choice m;
  if (c.model == "softmax") {
    m.is_mlp = false;
    m.features = image_features;
    m.classes = image_classes;
  } else if (c.model.starts_with("mlp:")) {
    try {
      m.layers = dho2::parse_mlp_layers(std::string_view(c.model).substr(4));
    } catch (const dho2::invalid_options& e) {
      throw usage_error("--model " + c.model + ": " + e.what());
    }
    m.features = m.layers.front();
    m.classes = m.layers.back();
    if (m.classes < 2) throw usage_error("--model " + c.model + ": needs at least 2 classes");
  } else {
    throw usage_error("--model: unknown model '" + c.model +
                      "' (expected mlp:<in>-<hidden>...-<classes>, e.g. mlp:784-256-256-10, or "
                      "softmax)");
  }
  if (c.dataset == "fashion-mnist" &&
      (m.features != image_features || m.classes != image_classes)) {
    throw usage_error("--model " + c.model + ": has " + std::to_string(m.features) +
                      " inputs and " + std::to_string(m.classes) + " classes; fashion-mnist has " +
                      std::to_string(image_features) + " and " + std::to_string(image_classes));
  }
  return m;
}

dho2::options make_options(const train_config& c) {
  dho2::options o;
  o.use_curvature = uses_curvature(c.optimizer);
  o.k = c.k;
  o.l = c.l;
  o.lanczos_steps = c.lanczos_steps;
  o.warmup = c.warmup;
  o.refresh_every = c.refresh_every;
  o.alpha = c.alpha;
  o.momentum = c.beta;
  o.clip = c.clip;
  o.seed = c.seed;
  return o;
}

/// The training set and the test set (as one batch, for evaluation).
struct dataset {
  dho2::classification_set<scalar> train;
  dho2::classification_batch<scalar> test;
  double load_seconds = 0.0;
};

dho2::classification_set<scalar> first(dho2::classification_set<scalar> set,
                                       const std::optional<long long>& size, const char* flag) {
  if (!size) return set;
  if (*size > set.size()) {
    throw usage_error(std::string(flag) + ": " + std::to_string(*size) + " exceeds the " +
                      std::to_string(set.size()) + " samples of the data set");
  }
  return set.subset(0, *size);
}

dataset load_data(const train_config& c, const model_choice& m) {
  const auto t0 = std::chrono::steady_clock::now();
  dho2::train_test_sets<scalar> sets;
  if (c.dataset == "synthetic") {
    sets =
        dho2::make_teacher_classification<scalar>(c.train_size.value_or(synthetic_default_train),
                                                  c.test_size.value_or(synthetic_default_test),
                                                  m.features, static_cast<int>(m.classes), c.seed);
  } else {
    try {
      sets = dho2::load_fashion_mnist<scalar>(c.data_dir);
    } catch (const dho2::data_error& e) {
      throw dho2::data_error(std::string(e.what()) +
                             "; install it with `apt-get install dataset-fashion-mnist`, point "
                             "--data at it, or use --dataset synthetic");
    }
    sets.train = first(std::move(sets.train), c.train_size, "--train-size");
    sets.test = first(std::move(sets.test), c.test_size, "--test-size");
  }
  if (sets.train.num_features() != m.features || sets.train.num_classes != m.classes) {
    throw usage_error("--model " + c.model + ": expects " + std::to_string(m.features) +
                      " features and " + std::to_string(m.classes) + " classes, the data has " +
                      std::to_string(sets.train.num_features()) + " and " +
                      std::to_string(sets.train.num_classes));
  }
  dataset d;
  d.train = std::move(sets.train);
  d.test.inputs = std::move(sets.test.inputs);
  d.test.labels = std::move(sets.test.labels);
  d.load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return d;
}

void check_output_directory(const char* flag, const std::string& path) {
  if (path.empty()) return;
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (!parent.empty() && !std::filesystem::is_directory(parent, ec)) {
    throw std::runtime_error(std::string(flag) + ": directory '" + parent.string() +
                             "' does not exist");
  }
}

template <class Model>
dho2::vector<scalar> initial_parameters(const Model& model, std::uint64_t seed) {
  if constexpr (requires { model.initialize(seed); }) {
    return model.initialize(seed);
  } else {
    return model.initial_point();
  }
}

/// Trains `model` with base optimizer `base` (plus curvature for fosi-*) and collects the result.
template <class Model, class Base>
run_result run(const train_config& c, const Model& model, const dataset& data, const Base& base,
               optional_callback<dho2::csv_history>& log) {
  using policies = dho2::default_policies::with_base<Base>;
  dho2::optimizer<scalar, policies> opt(make_options(c), policies{.base = base});
  dho2::vector<scalar> x = initial_parameters(model, c.seed);
  dho2::shuffling_batcher<scalar> batches(data.train, c.batch, c.seed);

  timed_metric accuracy(
      [&](dho2::const_vector_ref<scalar> w) { return model.accuracy(w, data.test); });
  dho2::evaluate test_accuracy("test_accuracy", std::ref(accuracy));
  run_monitor monitor(c.max_steps, c.eval_every, c.target_accuracy, !c.continue_after_target,
                      accuracy);
  optional_callback<dho2::progress_bar> progress(
      c.quiet ? std::nullopt : std::optional<dho2::progress_bar>(std::in_place, stdout));

  run_result r;
  const double cpu0 = process_cpu_seconds();
  r.summary = opt.optimize(model, x, batches, static_cast<dho2::index>(c.epochs), test_accuracy,
                           monitor, log, progress);
  r.cpu_seconds = process_cpu_seconds() - cpu0;
  // Evaluate the final parameters unless the last evaluation already saw them (a run stopped
  // mid-epoch gets no epoch-end evaluation).
  const auto& evals = monitor.evaluations();
  if (evals.empty() || evals.back().step != static_cast<long long>(r.summary.iterations) ||
      r.summary.termination == dho2::termination_type::numerical_failure) {
    accuracy(x);
  }
  r.final_test_accuracy = accuracy.last();
  r.target = monitor.target();
  r.max_steps_reached = monitor.max_steps_reached();
  r.eval_seconds = accuracy.seconds();
  r.eval_cpu_seconds = accuracy.cpu_seconds();
  r.evaluations_count = accuracy.count();
  r.evaluations = monitor.evaluations();
  r.epochs = monitor.epochs();
  r.parameters = static_cast<long long>(model.num_parameters());
  r.train_size = static_cast<long long>(data.train.size());
  r.test_size = static_cast<long long>(data.test.size());
  r.steps_per_epoch = static_cast<long long>(batches.num_batches());
  r.clip = c.clip.value_or(dho2::default_clip_for<Base>());
  r.lanczos_steps = static_cast<long long>(
      c.lanczos_steps > 0 ? c.lanczos_steps
                          : dho2::default_lanczos_steps(c.k, c.l, model.num_parameters()));
  r.load_seconds = data.load_seconds;
  return r;
}

/// Calls `f(base)` with the base optimizer --optimizer names, its learning rate and momentum.
template <class F>
int with_base(const train_config& c, F&& f) {
  const std::string_view name = base_name(c.optimizer);
  const double lr = c.lr.value_or(default_learning_rate(c.optimizer));
  const double mu = c.momentum.value_or(0.9);
  if (name == "sgd") {
    if (c.momentum) throw usage_error("--momentum: " + c.optimizer + " has no momentum");
    return f(dho2::sgd{.learning_rate = lr}, 0.0);
  }
  if (name == "momentum") return f(dho2::heavy_ball{.learning_rate = lr, .momentum = mu}, mu);
  if (name == "nesterov") return f(dho2::nesterov{.learning_rate = lr, .momentum = mu}, mu);
  return f(dho2::adam{.learning_rate = lr, .beta1 = mu}, mu);
}

/// Validates everything that does not need the data, loads it, trains and reports.
template <class Model>
int train(const train_config& c, const Model& model, const model_choice& choice) {
  return with_base(c, [&](const auto& base, double mu) {
    // Options and hyper-parameters are checked before the data is read.
    base.validate();
    make_options(c).validate(model.num_parameters());
    check_output_directory("--summary-json", c.summary_json);
    optional_callback<dho2::csv_history> log(
        c.log_path.empty() ? std::nullopt
                           : std::optional<dho2::csv_history>(std::in_place, c.log_path));

    const dataset data = load_data(c, choice);
    if (data.train.size() < c.batch) {
      throw usage_error("--batch: " + std::to_string(c.batch) + " exceeds the " +
                        std::to_string(data.train.size()) + " training samples");
    }
    const std::string model_name =
        choice.is_mlp ? c.model + " (" + c.activation + ")" : std::string("softmax");
    if (!c.quiet) {
      std::printf(
          "dho2_train: %s on %s (%lld train / %lld test), %s with %lld parameters, "
          "batch %lld, %lld epoch(s), %d thread(s)\n",
          c.optimizer.c_str(), c.dataset.c_str(), static_cast<long long>(data.train.size()),
          static_cast<long long>(data.test.size()), model_name.c_str(),
          static_cast<long long>(model.num_parameters()), c.batch, c.epochs, Eigen::nbThreads());
      std::fflush(stdout);
    }

    run_result r = run(c, model, data, base, log);
    r.model_name = c.model;
    r.features = choice.features;
    r.classes = choice.classes;
    r.learning_rate = base.learning_rate;
    r.base_momentum = mu;
    r.eigen_threads = Eigen::nbThreads();
    const std::size_t peak = peak_rss_bytes();
    print_summary(c, r, peak, stdout);
    if (!c.summary_json.empty()) write_file_atomically(c.summary_json, summary_json(c, r, peak));
    return 0;
  });
}

int run_command_line(const std::vector<std::string_view>& args) {
  const train_config c = parse_args(args);
  if (c.help) {
    std::fputs(usage().c_str(), stdout);
    return 0;
  }
  Eigen::setNbThreads(static_cast<int>(c.threads));
  const model_choice choice = parse_model(c);
  if (choice.is_mlp) {
    const dho2::mlp<scalar> model(
        choice.layers, c.activation == "tanh" ? dho2::activation::tanh : dho2::activation::relu,
        c.l2);
    return train(c, model, choice);
  }
  const dho2::softmax_regression<scalar> model(choice.features, choice.classes, c.l2);
  return train(c, model, choice);
}

/// The flag behind a field named in a dho2::invalid_options message ("options.alpha = -1. ..."),
/// so that the error names what the user typed.
std::string flag_of_invalid_option(std::string_view message) {
  static constexpr std::pair<std::string_view, std::string_view> fields[] = {
      {"options.k", "--k"},
      {"options.l", "--l"},
      {"options.lanczos_steps", "--m"},
      {"options.warmup", "--W"},
      {"options.refresh_every", "--T"},
      {"options.alpha", "--alpha"},
      {"options.momentum", "--beta"},
      {"options.clip", "--clip"},
      {"sgd::learning_rate", "--lr"},
      {"heavy_ball::learning_rate", "--lr"},
      {"nesterov::learning_rate", "--lr"},
      {"adam::learning_rate", "--lr"},
      {"heavy_ball::momentum", "--momentum"},
      {"nesterov::momentum", "--momentum"},
      {"adam::beta1", "--momentum"},
      {"l2", "--l2"}};
  const std::string_view field = message.substr(0, message.find(" = "));
  for (const auto& [name, flag] : fields) {
    if (field == name) return std::string(flag);
  }
  return {};
}

/// Prints "dho2_train: error: <message>" as one line on stderr and returns `code`.
int fail(int code, std::string_view message) {
  std::string line(message);
  for (char& ch : line) {
    if (ch == '\n' || ch == '\r') ch = ' ';
  }
  std::fflush(stdout);
  std::fprintf(stderr, "dho2_train: error: %s\n", line.c_str());
  return code;
}

}  // namespace
}  // namespace dho2_train

int main(int argc, char** argv) {
  const std::vector<std::string_view> args(argv + (argc > 0 ? 1 : 0), argv + argc);
  try {
    return dho2_train::run_command_line(args);
  } catch (const dho2_train::usage_error& e) {
    return dho2_train::fail(2, e.what());
  } catch (const dho2::invalid_options& e) {
    const std::string flag = dho2_train::flag_of_invalid_option(e.what());
    return dho2_train::fail(2, flag.empty() ? std::string(e.what()) : flag + ": " + e.what());
  } catch (const dho2::data_error& e) {
    return dho2_train::fail(1, e.what());
  } catch (const std::bad_alloc&) {
    return dho2_train::fail(1, "out of memory");
  } catch (const std::exception& e) {
    return dho2_train::fail(1, e.what());
  } catch (...) {
    return dho2_train::fail(1, "unknown exception");
  }
}
