// dho2_train: the runner. One templated path trains with either optimizer, dho2::optimizer
// (FOSI, or its base alone) or dho2::kfac, described by a run spec (`fosi_run`, `kfac_run`): it
// loads the data, runs every rank this process hosts (the same data pipeline, callbacks,
// evaluations and rank records for both optimizers) and reports on rank 0.
#pragma once

#include "callbacks.hpp"
#include "config.hpp"
#include "distributed.hpp"
#include "json_writer.hpp"
#include "preflight.hpp"
#include "report.hpp"
#include <dho2/callbacks/callbacks.hpp>
#include <dho2/checkpoint/directory.hpp>
#include <dho2/core/job_settings.hpp>
#include <dho2/data/batcher.hpp>
#include <dho2/data/idx.hpp>
#include <dho2/data/synthetic.hpp>
#include <dho2/dho2.hpp>
#include <dho2/kfac/kfac.hpp>
#include <dho2/models/mlp.hpp>
#include <dho2/schedule/split.hpp>
#include <dho2/transport/any.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace dho2_train {

/// The model families of --model.
enum class model_kind { softmax, mlp, autoencoder, cnn };

/// What --model (and the data set) asks for.
struct model_choice {
  model_kind kind = model_kind::mlp;
  std::vector<dho2::index> layers;  // MLP / autoencoder widths
  long long features = 0;
  long long classes = 0;  // of the data (the autoencoder ignores the labels)

  [[nodiscard]] bool is_mlp() const {
    return kind == model_kind::mlp || kind == model_kind::autoencoder;
  }
  [[nodiscard]] bool is_autoencoder() const { return kind == model_kind::autoencoder; }
};

/// The training set and the test set (as one batch, for evaluation).
struct dataset {
  dho2::classification_set<scalar> train;
  dho2::classification_batch<scalar> test;
  double load_seconds = 0.0;
};

/// The first `size` samples of `set` (all when unset); `flag` names the size in the error.
inline dho2::classification_set<scalar> first(dho2::classification_set<scalar> set,
                                              const std::optional<long long>& size,
                                              const char* flag) {
  if (!size) return set;
  if (*size > set.size()) {
    throw usage_error(std::string(flag) + ": " + std::to_string(*size) + " exceeds the " +
                      std::to_string(set.size()) + " samples of the data set");
  }
  return set.subset(0, *size);
}

/// The IDX file `name` of the Fashion-MNIST directory `dir`: `name`.gz, else `name`; nullopt when
/// neither exists.
inline std::optional<std::filesystem::path> fashion_mnist_file(const std::filesystem::path& dir,
                                                               std::string_view name) {
  std::error_code ec;
  for (const char* suffix : {".gz", ""}) {
    std::filesystem::path p = dir / (std::string(name) + suffix);
    if (std::filesystem::exists(p, ec)) return p;
  }
  return std::nullopt;
}

/// One split of Fashion-MNIST from --data: its image and label files, the images checked against
/// the model's `features` inputs. A missing file is reported with the advice to install Debian's
/// package only when --data is the default directory; a file that is there but does not parse
/// (wrong magic, truncated, …) is reported as corrupt, naming it.
inline dho2::classification_set<scalar> load_fashion_mnist_split(const train_config& c,
                                                                 std::string_view images_name,
                                                                 std::string_view labels_name,
                                                                 long long features) {
  const std::filesystem::path dir(c.data_dir);
  const auto images = fashion_mnist_file(dir, images_name);
  const auto labels = fashion_mnist_file(dir, labels_name);
  if (!images || !labels) {
    const std::string missing =
        (dir / (std::string(!images ? images_name : labels_name) + ".gz")).string();
    std::string message =
        "--data: Fashion-MNIST file '" + missing + "' not found (nor without .gz)";
    if (c.data_dir == dho2::fashion_mnist_default_dir) {
      message +=
          "; install it with `apt-get install dataset-fashion-mnist`, point --data at it, "
          "or use --dataset synthetic";
    } else {
      message +=
          "; point --data at a directory holding the four Fashion-MNIST IDX files, or use "
          "--dataset synthetic";
    }
    throw dho2::data_error(message);
  }
  dho2::classification_set<scalar> set;
  try {
    set = dho2::load_idx_dataset<scalar>(*images, *labels, dho2::fashion_mnist_num_classes);
  } catch (const dho2::data_error& e) {
    const std::string what = e.what();
    const bool unreadable = what.find("cannot open") != std::string::npos ||
                            what.find("cannot read") != std::string::npos;
    throw dho2::data_error("--data: " + what +
                           (unreadable ? std::string()
                                       : std::string(" (the file is corrupt: not a valid "
                                                     "Fashion-MNIST IDX file)")));
  }
  if (set.num_features() != features) {
    throw usage_error("--data: IDX file '" + images->string() + "' holds images of " +
                      std::to_string(set.num_features()) + " pixels; --model " + c.model +
                      " expects " + std::to_string(features) + " inputs");
  }
  return set;
}

/// Checks one data set against the model: its features (and, for classifiers, classes) equal the
/// model's; `source` names it in the message.
inline void check_split(const train_config& c, const model_choice& m,
                        const dho2::classification_set<scalar>& set, const std::string& source) {
  if (set.num_features() != m.features || (!m.is_autoencoder() && set.num_classes != m.classes)) {
    throw usage_error("--model " + c.model + ": expects " + std::to_string(m.features) +
                      " features and " + std::to_string(m.classes) + " classes, " + source +
                      " has " + std::to_string(set.num_features()) + " and " +
                      std::to_string(set.num_classes));
  }
}

/// The data set --dataset names (synthetic, or Fashion-MNIST from --data), cut to --train-size
/// and --test-size; the training and the test set are both checked against the model's features
/// and classes before training starts.
inline dataset load_data(const train_config& c, const model_choice& m) {
  const auto t0 = std::chrono::steady_clock::now();
  dho2::train_test_sets<scalar> sets;
  if (c.dataset == "synthetic") {
    sets =
        dho2::make_teacher_classification<scalar>(c.train_size.value_or(synthetic_default_train),
                                                  c.test_size.value_or(synthetic_default_test),
                                                  m.features, static_cast<int>(m.classes), c.seed);
    check_split(c, m, sets.train, "the synthetic training set");
    check_split(c, m, sets.test, "the synthetic test set");
  } else {
    sets.train = load_fashion_mnist_split(c, "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                          m.features);
    check_split(c, m, sets.train, "the training set in '" + c.data_dir + "'");
    sets.test =
        load_fashion_mnist_split(c, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", m.features);
    check_split(c, m, sets.test, "the test set in '" + c.data_dir + "'");
    sets.train = first(std::move(sets.train), c.train_size, "--train-size");
    sets.test = first(std::move(sets.test), c.test_size, "--test-size");
  }
  dataset d;
  d.train = std::move(sets.train);
  d.test.inputs = std::move(sets.test.inputs);
  d.test.labels = std::move(sets.test.labels);
  d.load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return d;
}

/// The model's initial parameters (seeded when the model takes a seed).
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
inline std::optional<target_spec> target_of(const train_config& c) {
  if (c.target_accuracy) return target_spec{true, *c.target_accuracy};
  if (c.target_loss) return target_spec{false, *c.target_loss};
  return std::nullopt;
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

/// An optimizer that saves and loads checkpoints (dho2::optimizer; not dho2::kfac).
template <class Optimizer>
concept checkpointable = requires(Optimizer& opt, const std::filesystem::path& dir,
                                  dho2::vector<scalar>& x) {
  opt.load_checkpoint(dir, x);
};

/// --resume: loads the checkpoint committed in --checkpoint-dir into `opt` and `x` when there is
/// one (a collective: the ranks first agree that all or none of them see it) and returns the step
/// it was taken at; nullopt when starting fresh.
template <checkpointable Optimizer>
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

/// The job's settings a checkpoint records and a resumed run must match: the model's structure
/// and the data layout (training samples, batch size, batches per epoch, sample size).
template <class Model>
dho2::job_settings job_of(const train_config& c, const Model& model, const dataset& data,
                          dho2::index batches_per_epoch) {
  dho2::job_settings job = dho2::model_settings(model);
  const auto text = [](auto v) { return std::to_string(static_cast<long long>(v)); };
  job.push_back({"data.train_size", text(data.train.size())});
  job.push_back({"data.batch_size", text(c.batch)});
  job.push_back({"data.batches_per_epoch", text(batches_per_epoch)});
  job.push_back({"data.sample_size", text(data.train.num_features())});
  return job;
}

/// The flags every rank must be given alike, by their name, with their effective value. Flags
/// only rank 0 acts on (outputs, evaluations, stopping rules: the stop is agreed at every step)
/// and per-rank ones (--rank, --threads, --bind, --timeout, ...) are not among them.
inline dho2::job_settings agreed_flags(const train_config& c) {
  const auto number = [](double v) { return dho2::detail::exact_text(v); };
  const auto integer = [](long long v) { return std::to_string(v); };
  const auto optional_number = [&](const std::optional<double>& v) {
    return v ? number(*v) : std::string("default");
  };
  const auto optional_integer = [&](const std::optional<long long>& v) {
    return v ? integer(*v) : std::string("default");
  };
  std::string weights;
  for (const double w : c.partition_weights) weights += (weights.empty() ? "" : ",") + number(w);
  dho2::job_settings s = {
      {"--dataset", c.dataset},
      {"--train-size", optional_integer(c.train_size)},
      {"--model", c.model},
      {"--activation", c.activation},
      {"--optimizer", c.optimizer},
      {"--lr", number(c.lr.value_or(default_learning_rate(c.optimizer)))},
      {"--momentum", optional_number(c.momentum)},
      {"--weight-decay", optional_number(c.weight_decay)},
      {"--batch", integer(c.batch)},
      {"--epochs", integer(c.epochs)},
      {"--k", integer(c.k)},
      {"--l", integer(c.l)},
      {"--m", integer(c.lanczos_steps)},
      {"--W", integer(c.warmup)},
      {"--T", integer(c.refresh_every)},
      {"--alpha", number(c.alpha)},
      {"--beta", number(c.beta)},
      {"--clip", optional_number(c.clip)},
      {"--damping", optional_number(c.damping)},
      {"--kfac-factor-decay", optional_number(c.kfac_factor_decay)},
      {"--kfac-factor-every", optional_integer(c.kfac_factor_every)},
      {"--kfac-inverse-every", optional_integer(c.kfac_inverse_every)},
      {"--kl-clip", optional_number(c.kl_clip)},
      {"--l2", number(c.l2)},
      {"--seed", std::to_string(c.seed)},
      {"--partitioner", c.partitioner + (weights.empty() ? "" : ":" + weights)},
      {"--admm-rho", optional_number(c.admm_rho)},
      {"--admm-every", optional_integer(c.admm_every)},
      {"--admm-balance", c.admm_balance ? "on" : "off"},
      {"--schedule", c.schedule},
      {"--curvature-ranks", integer(c.curvature_ranks)},
      {"--max-staleness", integer(c.max_staleness)},
      {"--on-late", c.on_late},
      {"--checkpoint-dir", c.checkpoint_dir},
      {"--checkpoint-every", integer(c.checkpoint_every)},
      {"--resume", c.resume ? "on" : "off"},
      {"--checkpoint-failure", c.checkpoint_failure},
      {"--max-skipped-steps", integer(c.max_skipped_steps)},
  };
  return s;
}

/// Checks, before any other collective of the run, that every rank was given the same training
/// settings: `agreed_flags` and, from `job`, the training set's size and the model's structure.
/// Throws the same dho2::invalid_options on every rank otherwise, naming the flag or setting and
/// each rank's value.
inline void check_ranks_agree(const train_config& c, dho2::any_transport& world,
                              const dho2::job_settings& job) {
  if (world.size() <= 1) return;
  dho2::job_settings s = agreed_flags(c);
  // The data as loaded (--train-size, and a --data directory with another training set).
  for (const dho2::job_setting& j : job) {
    if (j.name == "data.train_size") s.push_back({"--train-size (training samples)", j.value});
    if (j.name == "model.structure") s.push_back({"model structure", j.value});
  }
  dho2::check_settings_agree(world, std::span<const dho2::job_setting>(s));
}

/// --checkpoint-dir (checkpoints are saved every --checkpoint-every steps and at an interrupt,
/// and loaded with --resume): rank 0 locks the directory for the run
/// (`dho2::checkpoint_directory_lock`, returned) and, for a run without --resume, refuses a
/// directory that holds a committed checkpoint unless --overwrite-checkpoint. The ranks agree on
/// the outcome (a collective when distributed): every rank throws the same usage_error.
inline std::optional<dho2::checkpoint_directory_lock> guard_checkpoint_dir(
    const train_config& c, dho2::any_transport& world) {
  if (c.checkpoint_dir.empty()) return std::nullopt;
  std::optional<dho2::checkpoint_directory_lock> lock;
  std::string error;
  if (world.rank() == 0) {
    try {
      lock.emplace(c.checkpoint_dir);
      if (!c.resume && !c.overwrite_checkpoint && dho2::has_checkpoint(c.checkpoint_dir)) {
        std::string which = "a checkpoint";
        try {
          which = "the checkpoint of step " +
                  std::to_string(dho2::read_checkpoint_manifest(c.checkpoint_dir).identity().step);
        } catch (const dho2::checkpoint_error&) {  // NOLINT(bugprone-empty-catch): "a checkpoint"
        }
        error = "--checkpoint-dir " + c.checkpoint_dir + ": holds " + which +
                " of an earlier run, which this run would replace; pass --resume to continue "
                "it, or --overwrite-checkpoint to replace it";
      }
    } catch (const dho2::checkpoint_error& e) {
      error = std::string("--checkpoint-dir: ") + e.what();
    }
  }
  if (world.size() > 1) error = dho2::detail::all_gather_text(world, error).front();
  if (!error.empty()) throw usage_error(error);
  return lock;
}

/// --save-parameters FILE: the final parameters as n little-endian float32 values
/// (`dho2::write_output_file`: a regular file replaced atomically, a link followed, a device or
/// FIFO written directly).
inline void save_parameters(const std::string& file, const dho2::vector<scalar>& x) {
  static_assert(std::is_same_v<scalar, float>);
  const auto bytes =
      std::as_bytes(std::span<const scalar>(x.data(), static_cast<std::size_t>(x.size())));
  dho2::write_output_file(file, bytes, "--save-parameters");
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
                : std::optional<dho2::csv_history>(std::in_place, c.log_path, "--log")),
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
    if (eval_csv) eval_csv->close();
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

/// Samples the data sets will hold (for the memory estimate): --train-size and --test-size, or
/// the synthetic defaults, or all of Fashion-MNIST (read whole before it is cut).
inline double planned_samples(const train_config& c) {
  if (c.dataset == "synthetic") {
    return static_cast<double>(c.train_size.value_or(synthetic_default_train)) +
           static_cast<double>(c.test_size.value_or(synthetic_default_test));
  }
  return 70000.0;
}

/// The checks before the data is read: the output paths (`check_outputs`) and the memory the run
/// needs (`check_memory`).
inline void preflight(const train_config& c, const model_choice& m) {
  check_outputs(c);
  const std::vector<long long> widths =
      m.kind == model_kind::softmax ? std::vector<long long>{m.features, m.classes}
                                    : std::vector<long long>(m.layers.begin(), m.layers.end());
  check_memory(c, widths, planned_samples(c), m.features);
}

/// The exit status of a run that ended (its summary written), with one error line on stderr
/// unless it is 0: 0 when it completed or a callback (target, --max-steps, --time-budget)
/// stopped it; 1 after a numerical failure (--max-skipped-steps, a non-finite estimate); 128 +
/// the signal's number (130 for SIGINT, 143 for SIGTERM) when a signal interrupted it.
inline int exit_status(const train_config& c, const run_result& r) {
  const dho2::summary& s = r.summary;
  if (s.termination == dho2::termination_type::numerical_failure) {
    return print_error(
        1, "numerical failure: " + s.message + " (lower --lr; --max-skipped-steps sets the bound)");
  }
  if (s.termination != dho2::termination_type::interrupted) return 0;
  std::string message = s.message + " after step " + std::to_string(s.iterations);
  if (!c.checkpoint_dir.empty()) {
    message += r.last_checkpoint >= 0
                   ? "; the checkpoint of step " + std::to_string(r.last_checkpoint + 1) +
                         " is in " + c.checkpoint_dir + " (continue with --resume)"
                   : "; no checkpoint was saved";
  }
  const int sig = dho2::signal_guard::received();
  return print_error(sig > 0 ? 128 + sig : 1, message);
}

/// Rank 0's report: the summary block on stdout and --summary-json.
inline int report(const train_config& c, run_result& r, const model_choice& choice,
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
  if (!c.summary_json.empty()) {
    dho2::write_output_file(c.summary_json, summary_json(c, r, peak), "--summary-json");
  }
  return exit_status(c, r);
}

/// A run of dho2::optimizer (--optimizer fosi-*, dho2, or a base alone with curvature off): its
/// options and policy bundle (the transport is set per rank), and what the report says about
/// its base optimizer.
template <class Policies>
struct fosi_run {
  dho2::options options;
  Policies policies;
  double learning_rate = 0.0;
  double base_momentum = 0.0;  // heavy-ball / Nesterov mu, Adam beta1; 0 for SGD

  /// The optimizer of the rank `world` is.
  [[nodiscard]] dho2::optimizer<scalar, Policies> make_optimizer(dho2::any_transport world) const {
    Policies mine = policies;
    mine.transport = std::move(world);
    return dho2::optimizer<scalar, Policies>(options, std::move(mine));
  }

  /// Whether `opt`'s rank only estimates curvature, and the parameters whose optimizer state it
  /// keeps.
  template <class Optimizer>
  [[nodiscard]] static bool curvature_rank(const Optimizer& opt) {
    return opt.is_curvature_rank();
  }
  template <class Optimizer>
  [[nodiscard]] static long long shard(const Optimizer& opt, dho2::index n,
                                       const dho2::any_transport& world) {
    return shard_of(opt.policies(), n, world.rank(), world.size(), opt.is_curvature_rank());
  }

  /// What rank 0's report says about the optimizer after the run.
  template <class Optimizer>
  void describe(run_result& r, const Optimizer& opt, const train_config& c, dho2::index n) const {
    r.learning_rate = learning_rate;
    r.base_momentum = base_momentum;
    r.clip = c.clip.value_or(dho2::default_clip_of(opt.policies().base));
    r.lanczos_steps = static_cast<long long>(
        c.lanczos_steps > 0 ? c.lanczos_steps : dho2::default_lanczos_steps(c.k, c.l, n));
    if (opt.get_summary().admm_rounds.size() > 0) r.admm_rho = opt.penalty();
  }
};

/// A run of dho2::kfac (--optimizer kfac) over the same ranks and transports: every rank keeps
/// the whole model and its factors, inversions are spread over the ranks.
struct kfac_run {
  dho2::kfac_options options;

  /// The optimizer of the rank `world` is.
  [[nodiscard]] dho2::kfac<scalar, dho2::any_transport> make_optimizer(
      dho2::any_transport world) const {
    return dho2::kfac<scalar, dho2::any_transport>(options, std::move(world));
  }

  /// K-FAC has no curvature ranks; every rank keeps the state of all parameters.
  template <class Optimizer>
  [[nodiscard]] static bool curvature_rank(const Optimizer& /*opt*/) {
    return false;
  }
  template <class Optimizer>
  [[nodiscard]] static long long shard(const Optimizer& /*opt*/, dho2::index n,
                                       const dho2::any_transport& /*world*/) {
    return static_cast<long long>(n);
  }

  /// What rank 0's report says about the optimizer after the run.
  template <class Optimizer>
  void describe(run_result& r, const Optimizer& opt, const train_config& /*c*/,
                dho2::index /*n*/) const {
    r.learning_rate = options.learning_rate;
    r.base_momentum = options.momentum;
    r.kfac_options = options;
    r.kfac = opt.summary();
  }
};

/// --checkpoint-dir: the checkpointing callback of `opt` (before the others; it saves every
/// --checkpoint-every steps and when a signal stops the run), as a tuple of callbacks to pass;
/// empty for an optimizer without checkpoints.
template <class Optimizer>
auto checkpoint_callbacks(const train_config& c, Optimizer& opt, bool lead) {
  if constexpr (checkpointable<Optimizer>) {
    using saver_type = checkpointer<Optimizer>;
    return std::tuple<optional_callback<saver_type>>(
        !c.checkpoint_dir.empty()
            ? std::optional<saver_type>(std::in_place, opt, c.checkpoint_dir, c.checkpoint_every,
                                        c.checkpoint_failure == "continue", lead)
            : std::nullopt);
  } else {
    return std::tuple<>();
  }
}

/// The callback that stops the run after a SIGINT or SIGTERM (recorded by the signal_guard of
/// `run_command_line`); with checkpoints, at the first step where one can be saved.
template <class Optimizer>
dho2::stop_on_signal interrupt_callback(const train_config& c, const Optimizer& opt) {
  dho2::stop_on_signal stop;
  if constexpr (checkpointable<Optimizer>) {
    if (!c.checkpoint_dir.empty()) stop.ready = [&opt] { return !opt.estimate_in_flight(); };
  }
  return stop;
}

/// One rank of the run: trains `model` on its slice of every global batch with the optimizer
/// `run` makes for `world` (this rank's transport) and, on rank 0, fills `lead`. The test
/// accuracy, progress, CSV log and stopping decisions are rank 0's; the optimizer agrees the
/// stop with the others.
template <class Run, class Model>
rank_record run_rank(const train_config& c, const Model& model, const dataset& data, const Run& run,
                     dho2::any_transport world, std::optional<run_result>& lead) {
  const bool is_lead = world.rank() == 0;
  dho2::shuffling_batcher<scalar> batches(data.train, c.batch, c.seed);
  const dho2::job_settings job = job_of(c, model, data, batches.num_batches());
  // The first collectives of the run: the ranks agree on every setting, then on the checkpoint
  // directory (locked by rank 0 for the run).
  check_ranks_agree(c, world, job);
  const std::optional<dho2::checkpoint_directory_lock> lock = guard_checkpoint_dir(c, world);
  auto opt = run.make_optimizer(world);
  using optimizer_type = decltype(opt);
  dho2::vector<scalar> x = initial_parameters(model, c.seed);
  std::optional<dho2::index> resumed_at;
  if constexpr (checkpointable<optimizer_type>) {
    opt.describe_job(job);  // what its checkpoints record and a resumed run must match
    resumed_at = resume(c, opt, world, x);
  }
  auto savers = checkpoint_callbacks(c, opt, is_lead);
  rank_callbacks cbs(c, model, data, is_lead);
  const dho2::stop_on_signal interrupt = interrupt_callback(c, opt);

  run_result r;
  const double cpu0 = process_cpu_seconds();
  r.summary = std::apply(
      [&](auto&... first) {
        return opt.optimize(model, x, batches, static_cast<dho2::index>(c.epochs), first...,
                            cbs.monitor, cbs.log, cbs.progress, interrupt);
      },
      savers);
  const double cpu_end = process_cpu_seconds();
  r.cpu_seconds = cpu_end - cpu0;
  const rank_record mine = make_rank_record(r.summary, world, Run::curvature_rank(opt),
                                            Run::shard(opt, model.num_parameters(), world));
  r.ranks = gather_records(world, mine);
  if (!is_lead) return mine;
  r.resumed_at = resumed_at;
  if constexpr (std::tuple_size_v < decltype(savers) >> 0) {
    if (const auto& saver = std::get<0>(savers).get()) r.last_checkpoint = saver->last_saved();
  }
  if (!c.save_parameters.empty()) save_parameters(c.save_parameters, x);
  cbs.finish(r, x, cpu_end);
  r.parameters = static_cast<long long>(model.num_parameters());
  r.train_size = static_cast<long long>(data.train.size());
  r.test_size = static_cast<long long>(data.test.size());
  r.steps_per_epoch = static_cast<long long>(batches.num_batches());
  r.load_seconds = data.load_seconds;
  run.describe(r, opt, c, model.num_parameters());
  lead = std::move(r);
  return mine;
}

/// Loads the data, trains on every rank this process hosts with the optimizer `run` describes
/// and reports (on the process of rank 0). The options and everything else that does not need
/// the data are validated before.
template <class Run, class Model>
int train_run(const train_config& c, const Model& model, const model_choice& choice,
              const std::string& transport, const Run& run) {
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
    run_rank(c, model, data, run, t, lead);
  });
  if (!lead) return 0;  // rank 0 is another process
  return report(c, *lead, choice, transport);
}

}  // namespace dho2_train
