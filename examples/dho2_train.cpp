// dho2_train: trains a classifier or an autoencoder on Fashion-MNIST (or on synthetic teacher
// data, which needs no files) with DHO2's FOSI optimizer, with its base optimizer alone, or with
// K-FAC, and reports test accuracy and loss, time to a target, curvature work, a time split and
// memory. `dho2_train --help` lists the flags and their defaults.
//
//   dho2_train                                    # fosi-adam, MLP 784-256-256-10, 3 epochs
//   dho2_train --optimizer adam --target-accuracy 0.85 --summary-json adam.json
//   dho2_train --dataset synthetic --epochs 1 --max-steps 60 --quiet
//
// fosi-<base> runs dho2::optimizer<float, default_policies::with_base<base>>; <base> alone runs
// the same optimizer with options.use_curvature = false, so both share one code path. kfac runs
// dho2::kfac<float, dho2::any_transport> over the same ranks, transports, model, data pipeline,
// evaluations and reports.
// Bad usage prints one line "dho2_train: error: ..." on stderr and exits with 2; runtime
// failures (missing data files, I/O) do the same with exit code 1.
#include "dho2_train/callbacks.hpp"
#include "dho2_train/config.hpp"
#include "dho2_train/distributed.hpp"
#include "dho2_train/json_writer.hpp"
#include "dho2_train/report.hpp"
#include <dho2/callbacks/callbacks.hpp>
#include <dho2/checkpoint/directory.hpp>
#include <dho2/data/batcher.hpp>
#include <dho2/data/idx.hpp>
#include <dho2/data/synthetic.hpp>
#include <dho2/dho2.hpp>
#include <dho2/kfac/kfac.hpp>
#include <dho2/models/mlp.hpp>
#include <dho2/models/softmax_regression.hpp>
#include <dho2/partition/any.hpp>
#include <dho2/partition/block_aligned.hpp>
#include <dho2/partition/weighted.hpp>
#include <dho2/schedule/background.hpp>
#include <dho2/schedule/split.hpp>
#include <dho2/transport/any.hpp>

#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <functional>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace dho2_train {
namespace {

/// The model families of --model.
enum class model_kind { softmax, mlp, autoencoder };

/// What --model (and the data set) asks for.
struct model_choice {
  model_kind kind = model_kind::mlp;
  std::vector<dho2::index> layers;  // MLP / autoencoder widths
  long long features = 0;
  long long classes = 0;  // of the data (the autoencoder ignores the labels)

  [[nodiscard]] bool is_mlp() const { return kind != model_kind::softmax; }
  [[nodiscard]] bool is_autoencoder() const { return kind == model_kind::autoencoder; }
};

/// Features and classes of Fashion-MNIST (and the synthetic default for --model softmax).
constexpr long long image_features = 28 * 28;
constexpr long long image_classes = dho2::fashion_mnist_num_classes;

model_choice parse_model(const train_config& c) {
  model_choice m;
  const auto widths = [&](std::size_t prefix) {
    try {
      m.layers = dho2::parse_mlp_layers(std::string_view(c.model).substr(prefix));
    } catch (const dho2::invalid_options& e) {
      throw usage_error("--model " + c.model + ": " + e.what());
    }
  };
  if (c.model == "softmax") {
    m.kind = model_kind::softmax;
    m.features = image_features;
    m.classes = image_classes;
  } else if (c.model.starts_with("mlp:")) {
    widths(4);
    m.features = m.layers.front();
    m.classes = m.layers.back();
    if (m.classes < 2) throw usage_error("--model " + c.model + ": needs at least 2 classes");
  } else if (c.model.starts_with("autoencoder:")) {
    m.kind = model_kind::autoencoder;
    widths(12);
    if (m.layers.back() != m.layers.front()) {
      throw usage_error("--model " + c.model + ": the last width (" +
                        std::to_string(m.layers.back()) + ") must equal the first (" +
                        std::to_string(m.layers.front()) + "): the output reconstructs the input");
    }
    m.features = m.layers.front();
    m.classes = image_classes;  // of the data set; the labels are not used
  } else {
    throw usage_error("--model: unknown model '" + c.model +
                      "' (expected mlp:<in>-<hidden>...-<classes>, e.g. mlp:784-256-256-10, "
                      "autoencoder:<in>-<hidden>...-<in>, e.g. autoencoder:784-256-64-256-784, "
                      "or softmax)");
  }
  if (m.is_autoencoder() && c.target_accuracy) {
    throw usage_error("--target-accuracy: the autoencoder has no accuracy (use --target-loss)");
  }
  if (is_kfac(c.optimizer) && !m.is_mlp()) {
    throw usage_error(
        "--optimizer kfac: needs --model mlp:... or autoencoder:... (K-FAC preconditions the "
        "layers of dho2::mlp; softmax regression is mlp:784-10)");
  }
  if (m.is_autoencoder() && c.dataset == "fashion-mnist" && m.features != image_features) {
    throw usage_error("--model " + c.model + ": has " + std::to_string(m.features) +
                      " inputs; fashion-mnist has " + std::to_string(image_features));
  }
  if (!m.is_autoencoder() && c.dataset == "fashion-mnist" &&
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
  if (sets.train.num_features() != m.features ||
      (!m.is_autoencoder() && sets.train.num_classes != m.classes)) {
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

/// The evaluation of rank 0 (`lead`; the others never evaluate): test accuracy (classifiers),
/// test loss, and the loss on the first --eval-train-size training samples (copied once).
template <class Model>
timed_evaluation make_evaluation(const train_config& c, const Model& model, const dataset& data,
                                 bool lead) {
  auto train = std::make_shared<dho2::classification_batch<scalar>>();
  if (lead && c.eval_train_size > 0) {
    const dho2::index count = std::min<dho2::index>(c.eval_train_size, data.train.size());
    train->inputs = data.train.inputs.leftCols(count);
    train->labels = data.train.labels.head(count);
  }
  return timed_evaluation([&model, &data, train](dho2::const_vector_ref<scalar> w) {
    eval_metrics m;
    bool classifier = true;
    if constexpr (requires { model.is_classifier(); }) classifier = model.is_classifier();
    if (classifier) m.test_accuracy = model.accuracy(w, data.test);
    m.test_loss = static_cast<double>(model.loss(w, data.test));
    if (train->size() > 0) m.train_loss = static_cast<double>(model.loss(w, *train));
    return m;
  });
}

/// The target --target-accuracy or --target-loss asks for.
std::optional<target_spec> target_of(const train_config& c) {
  if (c.target_accuracy) return target_spec{true, *c.target_accuracy};
  if (c.target_loss) return target_spec{false, *c.target_loss};
  return std::nullopt;
}

/// The partitioner --partitioner names.
template <class Model>
dho2::any_partitioner make_partitioner(const train_config& c, const Model& model) {
  if (c.partitioner == "block") {
    if constexpr (requires { model.parameter_blocks(); }) {
      return dho2::any_partitioner(dho2::block_aligned_partitioner::for_model(model));
    } else {
      throw usage_error("--partitioner block: the model has no parameter blocks");
    }
  }
  if (c.partitioner == "weighted") {
    return dho2::any_partitioner(dho2::weighted_partitioner(c.partition_weights));
  }
  return dho2::any_partitioner(dho2::even_partitioner{});
}

template <class Schedule>
Schedule make_schedule(const train_config& c) {
  const dho2::late_estimate_policy on_late = c.on_late == "keep-previous"
                                                 ? dho2::late_estimate_policy::keep_previous
                                                 : dho2::late_estimate_policy::wait;
  if constexpr (std::is_same_v<Schedule, dho2::split_schedule>) {
    return {.curvature_group = static_cast<int>(c.curvature_ranks),
            .max_staleness = static_cast<dho2::index>(c.max_staleness),
            .on_late = on_late};
  } else if constexpr (std::is_same_v<Schedule, dho2::background_schedule>) {
    return {.max_staleness = static_cast<dho2::index>(c.max_staleness), .on_late = on_late};
  } else {
    return {};
  }
}

template <class Admm>
Admm make_admm(const train_config& c) {
  if constexpr (!Admm::shards_state) {
    return {.rho = c.admm_rho.value_or(1.0),
            .tau = static_cast<dho2::index>(c.admm_every.value_or(8)),
            .residual_balancing = c.admm_balance};
  } else {
    return {};
  }
}

/// Parameters whose optimizer state rank `rank` keeps (its shard in mode S, all in mode A, none
/// on a curvature rank).
template <class Policies>
long long shard_of(const Policies& p, dho2::index n, int rank, int ranks, bool curvature_rank) {
  if (curvature_rank) return 0;
  if constexpr (!Policies::admm_type::shards_state) {
    return static_cast<long long>(n);
  } else {
    int trainers = ranks;
    if constexpr (std::is_same_v<typename Policies::schedule_type, dho2::split_schedule>) {
      trainers -= p.schedule.curvature_ranks();
    }
    const std::vector<dho2::index> offsets = p.partitioner.partition(n, trainers);
    const auto r = static_cast<std::size_t>(rank);
    return static_cast<long long>(offsets[r + 1] - offsets[r]);
  }
}

/// --resume: loads the checkpoint committed in --checkpoint-dir into `opt` and `x` when there is
/// one (a collective: the ranks first agree that all or none of them see it) and returns the step
/// it was taken at; nullopt when starting fresh.
template <class Optimizer>
std::optional<dho2::index> resume(const train_config& c, Optimizer& opt, dho2::any_transport& world,
                                  dho2::vector<scalar>& x) {
  if (!c.resume) return std::nullopt;
  double seen = dho2::has_checkpoint(c.checkpoint_dir) ? 1.0 : 0.0;
  world.all_reduce_sum(std::span<double>(&seen, 1));
  if (seen == 0.0) {
    if (world.rank() == 0 && !c.quiet) {
      std::printf("dho2_train: no checkpoint in %s yet: starting fresh\n",
                  c.checkpoint_dir.c_str());
    }
    return std::nullopt;
  }
  if (seen != static_cast<double>(world.size())) {
    throw usage_error("--resume: only " + std::to_string(static_cast<int>(seen)) + " of " +
                      std::to_string(world.size()) + " ranks see a checkpoint in " +
                      c.checkpoint_dir + " (the ranks need one shared directory)");
  }
  const dho2::data_position at = opt.load_checkpoint(c.checkpoint_dir, x);
  const dho2::index step = opt.get_summary().iterations;
  if (world.rank() == 0 && !c.quiet) {
    std::printf(
        "dho2_train: resumed from the checkpoint of step %lld in %s (epoch %lld, batch "
        "%lld)\n",
        static_cast<long long>(step), c.checkpoint_dir.c_str(),
        static_cast<long long>(at.epoch + 1), static_cast<long long>(at.batch));
  }
  return step;
}

/// --save-parameters FILE: the final parameters as n little-endian float32 values, written
/// atomically.
inline void save_parameters(const std::string& file, const dho2::vector<scalar>& x) {
  static_assert(std::is_same_v<scalar, float>);
  const std::string_view bytes(reinterpret_cast<const char*>(x.data()),
                               static_cast<std::size_t>(x.size()) * sizeof(scalar));
  write_file_atomically(file, bytes);
}

/// The callbacks every optimizer's run passes (after its own): the monitor (evaluations,
/// --max-steps, --time-budget, target, --eval-log), --log and the progress lines, all but the
/// monitor on rank 0 only.
struct rank_callbacks {
  timed_evaluation evaluation;
  std::unique_ptr<eval_log> eval_csv;
  run_monitor monitor;
  optional_callback<dho2::csv_history> log;
  optional_callback<dho2::progress_bar> progress;

  template <class Model>
  rank_callbacks(const train_config& c, const Model& model, const dataset& data, bool lead)
      : evaluation(make_evaluation(c, model, data, lead)),
        eval_csv(lead && !c.eval_log.empty() ? std::make_unique<eval_log>(c.eval_log) : nullptr),
        monitor(lead, c.max_steps, c.eval_every, target_of(c), !c.continue_after_target,
                c.time_budget, evaluation, eval_csv.get()),
        log(c.log_path.empty() || !lead
                ? std::nullopt
                : std::optional<dho2::csv_history>(std::in_place, c.log_path)),
        progress(c.quiet || !lead ? std::nullopt
                                  : std::optional<dho2::progress_bar>(std::in_place, stdout)) {}
  rank_callbacks(const rank_callbacks&) = delete;
  rank_callbacks& operator=(const rank_callbacks&) = delete;

  /// Rank 0 after the run: the final evaluation (unless the last one saw these parameters) and
  /// the record of every evaluation, epoch and stop.
  void finish(run_result& r, dho2::const_vector_ref<scalar> x, double cpu_end) {
    monitor.finish(x, static_cast<long long>(r.summary.iterations),
                   static_cast<long long>(r.summary.epochs) + 1, r.summary.total_seconds, cpu_end,
                   r.summary.termination == dho2::termination_type::numerical_failure);
    const eval_metrics& last = evaluation.last();
    r.final_test_accuracy = last.test_accuracy;
    r.final_test_loss = last.test_loss;
    r.final_eval_train_loss = last.train_loss;
    r.target = monitor.target();
    r.max_steps_reached = monitor.max_steps_reached();
    r.time_budget_reached = monitor.time_budget_reached();
    r.eval_seconds = evaluation.seconds();
    r.eval_cpu_seconds = evaluation.cpu_seconds();
    r.evaluations_count = evaluation.count();
    r.evaluations = monitor.evaluations();
    r.epochs = monitor.epochs();
  }
};

/// One rank of the run: trains `model` on its slice of every global batch with `policies`
/// (whose transport is this rank's) and, on rank 0, fills `lead`. The test accuracy, progress,
/// CSV log and stopping decisions are rank 0's; the optimizer agrees the stop with the others.
template <class Policies, class Model>
rank_record run_rank(const train_config& c, const Model& model, const dataset& data,
                     Policies policies, std::optional<run_result>& lead) {
  const bool is_lead = policies.transport.rank() == 0;
  dho2::any_transport world = policies.transport;
  dho2::optimizer<scalar, Policies> opt(make_options(c), std::move(policies));
  dho2::vector<scalar> x = initial_parameters(model, c.seed);
  dho2::shuffling_batcher<scalar> batches(data.train, c.batch, c.seed);
  const std::optional<dho2::index> resumed_at = resume(c, opt, world, x);
  using saver_type = checkpointer<decltype(opt)>;
  optional_callback<saver_type> saver(
      c.checkpoint_every > 0
          ? std::optional<saver_type>(std::in_place, opt, c.checkpoint_dir, c.checkpoint_every)
          : std::nullopt);

  rank_callbacks cbs(c, model, data, is_lead);

  run_result r;
  const double cpu0 = process_cpu_seconds();
  r.summary = opt.optimize(model, x, batches, static_cast<dho2::index>(c.epochs), saver,
                           cbs.monitor, cbs.log, cbs.progress);
  const double cpu_end = process_cpu_seconds();
  r.cpu_seconds = cpu_end - cpu0;
  const rank_record mine =
      make_rank_record(r.summary, world, opt.is_curvature_rank(),
                       shard_of(opt.policies(), model.num_parameters(), world.rank(), world.size(),
                                opt.is_curvature_rank()));
  r.ranks = gather_records(world, mine);
  if (!is_lead) return mine;
  r.resumed_at = resumed_at;
  if (!c.save_parameters.empty()) save_parameters(c.save_parameters, x);
  cbs.finish(r, x, cpu_end);
  r.parameters = static_cast<long long>(model.num_parameters());
  r.train_size = static_cast<long long>(data.train.size());
  r.test_size = static_cast<long long>(data.test.size());
  r.steps_per_epoch = static_cast<long long>(batches.num_batches());
  r.clip = c.clip.value_or(dho2::default_clip_for<typename Policies::base_type>());
  r.lanczos_steps = static_cast<long long>(
      c.lanczos_steps > 0 ? c.lanczos_steps
                          : dho2::default_lanczos_steps(c.k, c.l, model.num_parameters()));
  r.load_seconds = data.load_seconds;
  if (opt.get_summary().admm_rounds.size() > 0) r.admm_rho = opt.penalty();
  lead = std::move(r);
  return mine;
}

/// The K-FAC options from the flags (unset flags keep dho2::kfac_options' defaults; --kl-clip 0
/// turns clipping off).
dho2::kfac_options make_kfac_options(const train_config& c) {
  dho2::kfac_options o;
  if (c.lr) o.learning_rate = *c.lr;
  if (c.momentum) o.momentum = *c.momentum;
  if (c.damping) o.damping = *c.damping;
  if (c.kfac_factor_decay) o.factor_decay = *c.kfac_factor_decay;
  if (c.kfac_factor_every) o.factor_every = static_cast<dho2::index>(*c.kfac_factor_every);
  if (c.kfac_inverse_every) o.inverse_every = static_cast<dho2::index>(*c.kfac_inverse_every);
  if (c.kl_clip) o.kl_clip = *c.kl_clip == 0.0 ? std::nullopt : std::optional<double>(*c.kl_clip);
  return o;
}

/// One rank of a K-FAC run over `world` (this rank's transport), like `run_rank`: every rank
/// keeps the whole model and its factors, inversions are spread over the ranks (dho2::kfac).
rank_record run_kfac_rank(const train_config& c, const dho2::mlp<scalar>& model,
                          const dataset& data, dho2::any_transport world,
                          std::optional<run_result>& lead) {
  const bool is_lead = world.rank() == 0;
  dho2::kfac<scalar, dho2::any_transport> opt(make_kfac_options(c), world);
  dho2::vector<scalar> x = model.initialize(c.seed);
  dho2::shuffling_batcher<scalar> batches(data.train, c.batch, c.seed);
  rank_callbacks cbs(c, model, data, is_lead);

  run_result r;
  const double cpu0 = process_cpu_seconds();
  r.summary = opt.optimize(model, x, batches, static_cast<dho2::index>(c.epochs), cbs.monitor,
                           cbs.log, cbs.progress);
  const double cpu_end = process_cpu_seconds();
  r.cpu_seconds = cpu_end - cpu0;
  const rank_record mine =
      make_rank_record(r.summary, world, false, static_cast<long long>(model.num_parameters()));
  r.ranks = gather_records(world, mine);
  if (!is_lead) return mine;
  if (!c.save_parameters.empty()) save_parameters(c.save_parameters, x);
  cbs.finish(r, x, cpu_end);
  r.kfac = opt.summary();
  r.parameters = static_cast<long long>(model.num_parameters());
  r.train_size = static_cast<long long>(data.train.size());
  r.test_size = static_cast<long long>(data.test.size());
  r.steps_per_epoch = static_cast<long long>(batches.num_batches());
  r.load_seconds = data.load_seconds;
  lead = std::move(r);
  return mine;
}

/// The first line of a run (rank 0, unless --quiet).
template <class Model>
void announce(const train_config& c, const Model& model, const model_choice& choice,
              const dataset& data, const std::string& transport, int ranks) {
  const std::string model_name =
      choice.is_mlp() ? c.model + " (" + c.activation + ")" : std::string("softmax");
  std::printf(
      "dho2_train: %s on %s (%lld train / %lld test), %s with %lld parameters, "
      "batch %lld, %lld epoch(s), %d rank(s) over %s, %d thread(s) per rank\n",
      c.optimizer.c_str(), c.dataset.c_str(), static_cast<long long>(data.train.size()),
      static_cast<long long>(data.test.size()), model_name.c_str(),
      static_cast<long long>(model.num_parameters()), c.batch, c.epochs, ranks,
      ranks == 1 && transport != "asio" ? "no transport" : transport.c_str(), Eigen::nbThreads());
  std::fflush(stdout);
}

/// The output files' directories must exist (checked before the data is read).
void check_output_directories(const train_config& c) {
  check_output_directory("--summary-json", c.summary_json);
  check_output_directory("--log", c.log_path);
  check_output_directory("--eval-log", c.eval_log);
}

/// Rank 0's report: the summary block on stdout and --summary-json.
int report(const train_config& c, run_result& r, const model_choice& choice,
           const std::string& transport) {
  r.model_name = c.model;
  r.target_loss = c.target_loss.has_value();
  r.stop_at_target = !c.continue_after_target;
  r.features = choice.features;
  r.classes = choice.is_autoencoder() ? choice.features : choice.classes;
  r.eigen_threads = Eigen::nbThreads();
  r.transport = transport;
  const std::size_t peak = peak_rss_bytes();
  print_summary(c, r, peak, stdout);
  if (!c.summary_json.empty()) write_file_atomically(c.summary_json, summary_json(c, r, peak));
  return 0;
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

/// The policy bundle of a run: base, schedule and ADMM solver fixed at compile time, transport
/// and partitioner chosen at run time.
template <class Base, class Schedule, class Admm>
using run_policies =
    dho2::policies<Base, dho2::lanczos, dho2::any_partitioner, Schedule, dho2::any_transport, Admm>;

/// Calls `f(policies)` with the bundle --schedule and --admm-* ask for. Only the Adam base has
/// the split and background schedules and consensus ADMM (--optimizer dho2, fosi-adam, adam), so
/// that the other bases add one instantiation each.
template <class Base, class F>
int with_policies(const train_config& c, const Base& base, F&& f) {
  if constexpr (std::is_same_v<Base, dho2::adam>) {
    if (uses_admm(c)) {
      using P = run_policies<Base, dho2::synchronous_schedule, dho2::consensus_admm>;
      return f(P{.base = base, .admm = make_admm<dho2::consensus_admm>(c)});
    }
    if (c.schedule == "split") {
      using P = run_policies<Base, dho2::split_schedule, dho2::synchronous_admm>;
      return f(P{.base = base, .schedule = make_schedule<dho2::split_schedule>(c)});
    }
    if (c.schedule == "background") {
      using P = run_policies<Base, dho2::background_schedule, dho2::synchronous_admm>;
      return f(P{.base = base, .schedule = make_schedule<dho2::background_schedule>(c)});
    }
  }
  return f(run_policies<Base, dho2::synchronous_schedule, dho2::synchronous_admm>{.base = base});
}

/// Validates everything that does not need the data, loads it, trains on every rank this process
/// hosts and reports (on the process of rank 0).
template <class Model>
int train(const train_config& c, const Model& model, const model_choice& choice,
          const std::string& transport) {
  return with_base(c, [&](const auto& base, double mu) {
    // Options and hyper-parameters are checked before the data is read.
    base.validate();
    make_options(c).validate(model.num_parameters());
    check_output_directories(c);
    return with_policies(c, base, [&](auto policies) {
      if constexpr (requires { policies.schedule.validate(); }) policies.schedule.validate();
      if constexpr (requires { policies.admm.validate(); }) policies.admm.validate();
      policies.partitioner = make_partitioner(c, model);

      const dataset data = load_data(c, choice);
      if (data.train.size() < c.batch) {
        throw usage_error("--batch: " + std::to_string(c.batch) + " exceeds the " +
                          std::to_string(data.train.size()) + " training samples");
      }
      std::optional<run_result> lead;
      bool announced = false;
      run_ranks(c, transport, [&](dho2::any_transport& t) {
        if (t.rank() == 0 && !c.quiet && !announced) {
          announced = true;
          announce(c, model, choice, data, transport, t.size());
        }
        auto mine = policies;
        mine.transport = t;
        run_rank(c, model, data, std::move(mine), lead);
      });
      if (!lead) return 0;  // rank 0 is another process
      lead->learning_rate = base.learning_rate;
      lead->base_momentum = mu;
      return report(c, *lead, choice, transport);
    });
  });
}

/// --optimizer kfac: validates, loads the data, trains on every rank this process hosts and
/// reports (on the process of rank 0).
int train_kfac(const train_config& c, const dho2::mlp<scalar>& model, const model_choice& choice,
               const std::string& transport) {
  const dho2::kfac_options options = make_kfac_options(c);
  options.validate();
  check_output_directories(c);
  const dataset data = load_data(c, choice);
  if (data.train.size() < c.batch) {
    throw usage_error("--batch: " + std::to_string(c.batch) + " exceeds the " +
                      std::to_string(data.train.size()) + " training samples");
  }
  std::optional<run_result> lead;
  bool announced = false;
  run_ranks(c, transport, [&](dho2::any_transport& t) {
    if (t.rank() == 0 && !c.quiet && !announced) {
      announced = true;
      announce(c, model, choice, data, transport, t.size());
    }
    run_kfac_rank(c, model, data, t, lead);
  });
  if (!lead) return 0;  // rank 0 is another process
  lead->learning_rate = options.learning_rate;
  lead->base_momentum = options.momentum;
  lead->kfac_options = options;
  return report(c, *lead, choice, transport);
}

/// Builds the model --model names and trains it over `transport`.
int run(const train_config& c, const std::string& transport) {
  Eigen::setNbThreads(static_cast<int>(c.threads));
  const model_choice choice = parse_model(c);
  if (choice.is_mlp()) {
    const dho2::mlp<scalar> model(
        choice.layers, c.activation == "tanh" ? dho2::activation::tanh : dho2::activation::relu,
        c.l2,
        choice.is_autoencoder() ? dho2::mlp_loss::squared_error_reconstruction
                                : dho2::mlp_loss::softmax_cross_entropy);
    if (is_kfac(c.optimizer)) return train_kfac(c, model, choice, transport);
    return train(c, model, choice, transport);
  }
  const dho2::softmax_regression<scalar> model(choice.features, choice.classes, c.l2);
  return train(c, model, choice, transport);
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
      {"kfac_options.learning_rate", "--lr"},
      {"kfac_options.momentum", "--momentum"},
      {"kfac_options.damping", "--damping"},
      {"kfac_options.factor_decay", "--kfac-factor-decay"},
      {"kfac_options.kl_clip", "--kl-clip"},
      {"l2", "--l2"},
      {"split_schedule::curvature_group", "--curvature-ranks"},
      {"split_schedule::max_staleness", "--max-staleness"},
      {"background_schedule::max_staleness", "--max-staleness"},
      {"split_schedule::on_late", "--on-late"},
      {"schedule staleness", "--max-staleness"},
      {"transport size", "--schedule background"},
      {"consensus_admm::rho", "--admm-rho"},
      {"consensus_admm::tau", "--admm-every"},
      {"weighted_partitioner ranks", "--partitioner"},
      {"weighted_partitioner weights", "--partitioner"},
      {"weighted_partitioner sum of the weights", "--partitioner"},
      {"asio_options::rank", "--rank"},
      {"asio_options::size", "--world-size"},
      {"asio_options::host", "--rendezvous"},
      {"asio_options::port", "--rendezvous"},
      {"asio_options::bind_address", "--bind"}};
  std::string_view field = message.substr(0, message.find(" = "));
  field = field.substr(0, field.find('['));  // weights[2] -> weights
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

/// Exit code and message of the exception in flight: 2 for bad usage and invalid options (which
/// every rank detects alike), 1 for everything else.
std::pair<int, std::string> describe_current_exception() {
  try {
    throw;
  } catch (const usage_error& e) {
    return {2, e.what()};
  } catch (const dho2::invalid_options& e) {
    const std::string flag = flag_of_invalid_option(e.what());
    return {2, flag.empty() ? std::string(e.what()) : flag + ": " + e.what()};
  } catch (const dho2::data_error& e) {
    return {1, e.what()};
  } catch (const std::bad_alloc&) {
    return {1, "out of memory"};
  } catch (const std::exception& e) {
    return {1, e.what()};
  } catch (...) {
    return {1, "unknown exception"};
  }
}

/// Reports the exception in flight. Under mpirun, usage errors are printed by rank 0 only (every
/// rank meets them alike); runtime errors by the rank that met them, naming it.
int report_current_exception(std::optional<int> rank) {
  const auto [code, message] = describe_current_exception();
  if (!rank) return fail(code, message);
  if (code == 2) return *rank == 0 ? fail(code, message) : code;
  return fail(code, "rank " + std::to_string(*rank) + ": " + message);
}

/// Parses the command line, sets up MPI when it is the transport, and runs.
int run_command_line(int argc, char** argv) {
  const std::vector<std::string_view> args(argv + (argc > 0 ? 1 : 0), argv + argc);
  const std::optional<int> launched_rank = launcher_rank();
  train_config c;
  std::string transport;
  try {
    c = parse_args(args);
    if (c.help) {
      if (launched_rank.value_or(0) == 0) std::fputs(usage().c_str(), stdout);
      return 0;
    }
    transport = resolved_transport(c);
  } catch (...) {
    return report_current_exception(launched_rank);
  }
#if DHO2_TRAIN_WITH_MPI
  if (transport == "mpi") {
    // Exceptions are reported here; a rank that fails alone aborts the job, so that no peer
    // waits forever in a collective.
    const boost::mpi::environment env(argc, argv, false);
    const boost::mpi::communicator world;
    try {
      return run(c, transport);
    } catch (...) {
      const int code = report_current_exception(world.rank());
      if (code != 2 && world.size() > 1) world.abort(code);
      return code;
    }
  }
#endif
  try {
    return run(c, transport);
  } catch (...) {
    return report_current_exception(std::nullopt);
  }
}

}  // namespace
}  // namespace dho2_train

int main(int argc, char** argv) { return dho2_train::run_command_line(argc, argv); }
