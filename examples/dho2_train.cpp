// dho2_train: trains a classifier or an autoencoder on Fashion-MNIST (or on synthetic teacher
// data, which needs no files) with DHO2's FOSI optimizer, with its base optimizer alone, or with
// K-FAC, and reports test accuracy and loss, time to a target, curvature work, a time split and
// memory. `dho2_train --help` lists the flags and their defaults.
//
//   dho2_train                                    # fosi-adam, MLP 784-256-256-10, 3 epochs
//   dho2_train --optimizer adam --target-accuracy 0.85 --summary-json adam.json
//   dho2_train --dataset synthetic --epochs 1 --max-steps 60 --quiet
//
// fosi-<base> runs dho2::optimizer<float> with the base as a dho2::any_base (one instantiation
// for every base) and the schedule and consensus policies the flags ask for; <base> alone runs
// the same optimizer with options.use_curvature = false. kfac runs dho2::kfac<float,
// dho2::any_transport>. This file parses the flags, builds the model --model names (the CNN in
// dho2_train/cnn.cpp) and maps the fields of invalid options back to their flags;
// dho2_train/train.hpp maps the flags to the library's options and policies, and one runner
// (dho2_train/runner.hpp) trains with either optimizer over the same ranks, transports, data
// pipeline, evaluations and reports.
// Bad usage prints one line "dho2_train: error: ..." on stderr and exits with 2; runtime
// failures (missing data files, I/O) do the same with exit code 1.
#include "dho2_train/cnn.hpp"
#include "dho2_train/config.hpp"
#include "dho2_train/distributed.hpp"
#include "dho2_train/runner.hpp"
#include "dho2_train/train.hpp"
#include <dho2/dho2.hpp>
#include <dho2/kfac/kfac.hpp>
#include <dho2/models/mlp.hpp>
#include <dho2/models/softmax_regression.hpp>
#include <dho2/transport/any.hpp>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <exception>
#include <limits>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace dho2_train {
namespace {

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
    // The class count is an int (labels, the synthetic teacher), and n = sum of s_i s_{i+1} +
    // s_{i+1} must fit in dho2::index: both checked here, before anything wraps.
    if (m.layers.back() > std::numeric_limits<int>::max()) {
      throw usage_error(
          "--model " + c.model + ": the last width " + std::to_string(m.layers.back()) +
          " is out of range (must be <= " + std::to_string(std::numeric_limits<int>::max()) + ")");
    }
    double n = 0.0;
    for (std::size_t i = 0; i + 1 < m.layers.size(); ++i) {
      n += static_cast<double>(m.layers[i]) * static_cast<double>(m.layers[i + 1]) +
           static_cast<double>(m.layers[i + 1]);
    }
    if (n >= 0x1p62) {
      char count[64];
      std::snprintf(count, sizeof count, "%.0f", n);
      throw usage_error("--model " + c.model + ": " + count +
                        " parameters is out of range (must be < 2^62)");
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
  } else if (c.model == "cnn") {
    if (!has_cnn) {
      throw usage_error(
          "--model cnn: this dho2_train was built without LibTorch (install Debian's "
          "libtorch-dev, then configure again: CMake option DHO2_WITH_TORCH=AUTO or ON)");
    }
    m.kind = model_kind::cnn;
    m.features = image_features;
    m.classes = image_classes;
  } else {
    throw usage_error("--model: unknown model '" + c.model +
                      "' (expected mlp:<in>-<hidden>...-<classes>, e.g. mlp:784-256-256-10, "
                      "autoencoder:<in>-<hidden>...-<in>, e.g. autoencoder:784-256-64-256-784, "
                      "softmax, or cnn)");
  }
  if (m.is_autoencoder() && c.target_accuracy) {
    throw usage_error("--target-accuracy: the autoencoder has no accuracy (use --target-loss)");
  }
  if (is_kfac(c.optimizer) && m.kind == model_kind::cnn) {
    throw usage_error(
        "--optimizer kfac: does not support --model cnn (K-FAC here preconditions the dense "
        "layers of dho2::mlp; it has no factors for convolutions); use mlp:... or another "
        "optimizer");
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

/// Builds the model --model names and trains it over `transport`.
int run(const train_config& c, const std::string& transport) {
  Eigen::setNbThreads(static_cast<int>(c.threads));
  const model_choice choice = parse_model(c);
  if (choice.kind == model_kind::cnn) {
    if constexpr (has_cnn) return train_cnn(c, choice, transport);
  }
  if (choice.is_mlp()) {
    const dho2::mlp<scalar> model(
        choice.layers, c.activation == "tanh" ? dho2::activation::tanh : dho2::activation::relu,
        c.l2,
        choice.is_autoencoder() ? dho2::mlp_loss::squared_error_reconstruction
                                : dho2::mlp_loss::softmax_cross_entropy);
    return train(c, model, choice, transport);
  }
  const dho2::softmax_regression<scalar> model(choice.features, choice.classes, c.l2);
  return train(c, model, choice, transport);
}

/// The flag behind the field of an invalid option (`dho2::invalid_options::field()`), so that
/// the error names what the user typed: the fields of dho2::options by their name in its field
/// list, the others (base optimizers, K-FAC, model, distribution) by the name their check gives
/// them; "" for a field no flag sets.
std::string flag_of_field(std::string_view field) {
  std::string flag;
  for_each_option_flag([&](auto member, std::string_view name, auto /*flag_value*/) {
    if (dho2::options::field_name(member) == field) flag = name;
  });
  if (!flag.empty()) return flag;
  static constexpr std::pair<std::string_view, std::string_view> fields[] = {
      {"sgd::learning_rate", "--lr"},
      {"heavy_ball::learning_rate", "--lr"},
      {"nesterov::learning_rate", "--lr"},
      {"adam::learning_rate", "--lr"},
      {"heavy_ball::momentum", "--momentum"},
      {"nesterov::momentum", "--momentum"},
      {"adam::beta1", "--momentum"},
      {"adamw::learning_rate", "--lr"},
      {"adamw::beta1", "--momentum"},
      {"adamw::weight_decay", "--weight-decay"},
      {"kfac_options.learning_rate", "--lr"},
      {"kfac_options.momentum", "--momentum"},
      {"kfac_options.damping", "--damping"},
      {"kfac_options.factor_decay", "--kfac-factor-decay"},
      {"kfac_options.kl_clip", "--kl-clip"},
      {"kfac_options.max_consecutive_skips", "--max-skipped-steps"},
      {"l2", "--l2"},
      {"split_schedule::curvature_group", "--curvature-ranks"},
      {"split_schedule::max_staleness", "--max-staleness"},
      {"background_schedule::max_staleness", "--max-staleness"},
      {"split_schedule::on_late", "--on-late"},
      {"schedule staleness", "--max-staleness"},
      {"transport size", "--schedule background"},
      {"consensus_admm::rho", "--admm-rho"},
      {"consensus_admm::tau", "--admm-every"},
      {"local_sgd::tau", "--tau"},
      {"diloco::tau", "--tau"},
      {"weighted_partitioner ranks", "--partitioner"},
      {"weighted_partitioner weights", "--partitioner"},
      {"weighted_partitioner sum of the weights", "--partitioner"},
      {"asio_options::rank", "--rank"},
      {"asio_options::size", "--world-size"},
      {"asio_options::host", "--rendezvous"},
      {"asio_options::port", "--rendezvous"},
      {"asio_options::bind_address", "--bind"}};
  field = field.substr(0, field.find('['));  // weights[2] -> weights
  for (const auto& [name, flag_name] : fields) {
    if (field == name) return std::string(flag_name);
  }
  return {};
}

/// Prints "dho2_train: error: <message>" as one line on stderr and returns `code`.
int fail(int code, std::string_view message) { return print_error(code, message); }

/// Exit code and message of the exception in flight: 2 for bad usage and invalid options (which
/// every rank detects alike), 1 for everything else.
std::pair<int, std::string> describe_current_exception() {
  try {
    throw;
  } catch (const usage_error& e) {
    return {2, e.what()};
  } catch (const dho2::invalid_options& e) {
    const std::string flag = flag_of_field(e.field());
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

/// `code`, or 1 with a message when writing stdout failed (a closed pipe, a full disk) and
/// nothing else went wrong.
int check_stdout(int code) {
  const bool failed = std::fflush(stdout) != 0 || std::ferror(stdout) != 0;
  if (!failed || code != 0) return code;
  return fail(1,
              "stdout: writing failed (a closed pipe or a full device); the run finished and "
              "its other outputs were written");
}

#if DHO2_TRAIN_WITH_MPI
/// Under mpirun: every rank's command-line error (`mine`, empty for none) gathered over `world`.
/// Returns nullopt when no rank has one; otherwise rank 0 prints each distinct message once
/// (naming the ranks when not all of them met it) and every rank gets the exit code (its own,
/// or 2 when only its peers failed), so that a bad flag given to one rank only still ends the
/// job with its message. Then the ranks agree on the flags that must agree (`agreed_flags`),
/// so that the usage checks that follow meet every rank alike (throws dho2::invalid_options on
/// every rank otherwise).
std::optional<int> agree_on_command_line(const boost::mpi::communicator& world,
                                         const std::optional<std::pair<int, std::string>>& mine,
                                         const train_config& c) {
  dho2::mpi_transport t(world);
  t.set_timeout(timeout_of(c));
  const std::vector<std::string> all =
      dho2::detail::all_gather_text(t, mine ? mine->second : std::string());
  std::vector<std::pair<std::string, std::vector<int>>> distinct;
  for (std::size_t r = 0; r < all.size(); ++r) {
    if (all[r].empty()) continue;
    auto it = std::find_if(distinct.begin(), distinct.end(),
                           [&](const auto& d) { return d.first == all[r]; });
    if (it == distinct.end()) it = distinct.insert(distinct.end(), {all[r], {}});
    it->second.push_back(static_cast<int>(r));
  }
  if (distinct.empty()) {
    const dho2::job_settings flags = agreed_flags(c);
    dho2::check_settings_agree(t, std::span<const dho2::job_setting>(flags));
    return std::nullopt;
  }
  if (t.rank() == 0) {
    for (const auto& [message, ranks] : distinct) {
      if (ranks.size() == all.size()) {
        fail(2, message);
        continue;
      }
      std::string who = ranks.size() == 1 ? "rank " : "ranks ";
      for (std::size_t i = 0; i < ranks.size(); ++i) {
        who += (i > 0 ? ", " : "") + std::to_string(ranks[i]);
      }
      fail(2, who + " (of " + std::to_string(all.size()) + "): " + message);
    }
  }
  return mine ? mine->first : 2;
}
#endif

/// Parses the command line, sets up MPI when it is the transport, and runs.
int run_command_line(int argc, char** argv) {
  const std::vector<std::string_view> args(argv + (argc > 0 ? 1 : 0), argv + argc);
  const std::optional<int> launched_rank = launcher_rank();
  train_config c;
  std::string transport;
  std::optional<std::pair<int, std::string>> usage_failure;
  try {
    c = parse_args(args);
    if (c.help) {
      if (launched_rank.value_or(0) == 0) std::fputs(usage().c_str(), stdout);
      return 0;
    }
    transport = resolved_transport(c);
  } catch (...) {
    usage_failure = describe_current_exception();
    if (!launched_rank || !with_mpi) return report_current_exception(launched_rank);
  }
#if DHO2_TRAIN_WITH_MPI
  if (transport == "mpi" || usage_failure) {
    // Exceptions are reported here; a rank that fails alone aborts the job, so that no peer
    // waits forever in a collective. Command-line errors are first gathered from every rank,
    // so that one rank's bad flag is printed and ends the job.
    const boost::mpi::environment env(argc, argv, false);
    const boost::mpi::communicator world;
    try {
      if (const std::optional<int> code = agree_on_command_line(world, usage_failure, c))
        return *code;
    } catch (...) {
      const int code = report_current_exception(world.rank());
      if (code != 2 && world.size() > 1) world.abort(code);
      return code;
    }
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

int main(int argc, char** argv) {
  // A closed stdout (`dho2_train ... | head -1`) must not end the run before its summary and
  // checkpoints are written: writes to it fail instead, and the exit status says so.
  std::signal(SIGPIPE, SIG_IGN);
  // SIGINT / SIGTERM: every rank finishes its step, a checkpoint is saved (with
  // --checkpoint-dir), the summary says "interrupted" and the exit status is 128 + the signal;
  // a second signal ends the process at once.
  const dho2::signal_guard guard;
  const int code = dho2_train::run_command_line(argc, argv);
  return dho2_train::check_stdout(code);
}
