// dho2_train: the command line (flags, defaults, --help) parsed into a `train_config`.
#pragma once

#include <dho2/data/idx.hpp>
#include <dho2/kfac/kfac_options.hpp>
#include <dho2/transport/simulated_link.hpp>

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace dho2_train {

/// Largest --world-size (and DHO2_WORLD_SIZE): dho2::asio_options::max_size.
inline constexpr long long max_world_size = 65536;

/// Bad usage: the message goes to stderr as one line and the exit code is 2.
class usage_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Prints "dho2_train: error: <message>" as one line on stderr (line breaks become spaces) and
/// returns `code`, the exit status.
inline int print_error(int code, std::string_view message) {
  std::string line(message);
  for (char& ch : line) {
    if (ch == '\n' || ch == '\r') ch = ' ';
  }
  std::fflush(stdout);
  std::fprintf(stderr, "dho2_train: error: %s\n", line.c_str());
  return code;
}

/// Everything the command line controls. Optional fields are unset when the default depends on
/// another flag (the learning rate and the momentum depend on the optimizer, the sizes on the
/// data set).
struct train_config {
  std::string dataset = "fashion-mnist";
  std::string data_dir = std::string(dho2::fashion_mnist_default_dir);
  std::optional<long long> train_size;  // all of Fashion-MNIST, 12000 synthetic samples
  std::optional<long long> test_size;   // all of Fashion-MNIST, 2000 synthetic samples
  std::string model = "mlp:784-256-256-10";
  std::string activation = "relu";
  std::string optimizer = "fosi-adam";
  std::optional<double> lr;            // per optimizer, see default_learning_rate
  std::optional<double> weight_decay;  // adamw: decoupled weight decay lambda (default 0.01)
  std::optional<double> momentum;      // heavy ball / Nesterov mu, Adam beta1: 0.9; kfac mu: 0
  long long batch = 128;
  long long epochs = 3;
  long long k = 10;
  long long l = 0;
  long long lanczos_steps = 0;  // 0: max(4(k + l), ceil(2 ln n))
  long long warmup = 50;
  long long refresh_every = 800;
  double alpha = 0.01;
  double beta = 0.9;           // FOSI's Newton-part momentum
  std::optional<double> clip;  // 1 for Adam, 3 otherwise
  double l2 = 0.0;
  std::uint64_t seed = 1;
  long long max_skipped_steps = 20;  // consecutive non-finite steps before numerical_failure
  long long threads = 1;
  std::optional<double> target_accuracy;
  std::optional<double> target_loss;  // test loss <= X
  bool continue_after_target = false;
  std::optional<double> time_budget;  // seconds of training (evaluations excluded)
  std::string eval_log;               // --eval-log FILE.csv
  long long eval_train_size = 10000;  // training samples whose loss each evaluation reports
  // K-FAC (--optimizer kfac); unset: the dho2::kfac_options defaults.
  std::optional<double> damping;
  std::optional<double> kfac_factor_decay;
  std::optional<long long> kfac_inverse_every;
  std::optional<long long> kfac_factor_every;
  std::optional<double> kl_clip;  // 0: off
  std::string log_path;
  std::string summary_json;
  std::optional<long long> max_steps;
  long long eval_every = 0;
  bool quiet = false;
  bool help = false;
  // Distribution (see --help): how ranks talk, how parameters are sharded, how they synchronise
  // and where curvature is estimated.
  std::string transport = "auto";    // auto: mpi under mpirun (when built with MPI), else inproc
  std::optional<long long> ranks;    // inproc only: number of ranks (threads); 1
  std::string partitioner = "even";  // even | block | weighted:w0,w1,...
  std::vector<double> partition_weights;  // of weighted:...
  std::optional<double> admm_rho;         // consensus ADMM penalty (turns mode A on)
  std::optional<long long> admm_every;    // consensus ADMM local steps per round (mode A)
  bool admm_balance = false;              // residual balancing of rho (mode A)
  std::string consensus = "synchronous";  // synchronous | local-sgd | diloco (admm: --admm-*)
  std::optional<long long> tau;           // local-sgd / diloco: local steps per round
  std::optional<double> link_latency;     // simulated link: alpha, seconds per message
  std::optional<double> link_bandwidth;   // simulated link: beta, bytes per second
  std::string schedule = "synchronous";   // synchronous | split | background
  long long curvature_ranks = 1;          // split: dedicated curvature ranks
  long long max_staleness = 4;            // split / background: steps an estimate may lag
  std::string on_late;  // split / background: wait | keep-previous ("" = not given: keep-previous)
  double timeout = 60.0;                  // seconds a rank waits for its peers in one call
  bool timeout_given = false;             // --timeout on the command line (bounds mpi too)
  std::optional<long long> rank;          // asio: this rank (else DHO2_RANK)
  std::optional<long long> world_size;    // asio: number of ranks (else DHO2_WORLD_SIZE)
  std::string rendezvous;                 // asio: host:port of rank 0 (else DHO2_RENDEZVOUS)
  std::string bind_address;               // asio: address to listen on (else loopback)
  std::optional<double> connect_timeout;  // asio: seconds the rendezvous waits for every rank
  // Checkpoints (see --help).
  std::string checkpoint_dir;         // where checkpoints are committed
  long long checkpoint_every = 0;     // steps between checkpoints (0: none)
  bool resume = false;                // load the committed checkpoint, if any, before training
  bool overwrite_checkpoint = false;  // a fresh run may replace the checkpoint in the dir
  std::string checkpoint_failure = "stop";  // a failed save: stop | continue (with a warning)
  std::string save_parameters;              // file for the final parameters (raw float32)
  std::string secret_file;                  // asio: shared secret's file (else DHO2_SECRET_FILE)
};

/// True when mode A (consensus ADMM) is asked for.
inline bool uses_admm(const train_config& c) { return c.admm_rho || c.admm_every; }

/// True when Local SGD or DiLoCo (--consensus local-sgd | diloco) is asked for.
inline bool uses_local_steps(const train_config& c) { return c.consensus != "synchronous"; }

/// True when the transport is to be wrapped in a simulated link (--link-latency/-bandwidth).
inline bool uses_link(const train_config& c) { return c.link_latency || c.link_bandwidth; }

/// The simulated link of --link-latency and --link-bandwidth (the library's defaults for the one
/// not given).
inline dho2::simulated_link_options link_options_of(const train_config& c) {
  dho2::simulated_link_options o;
  if (c.link_latency) o.latency = *c.link_latency;
  if (c.link_bandwidth) o.bandwidth = *c.link_bandwidth;
  return o;
}

/// Synthetic data set sizes used when --train-size / --test-size are not given.
inline constexpr long long synthetic_default_train = 12000;
inline constexpr long long synthetic_default_test = 2000;

/// The optimizers dho2_train knows, in --help order.
inline const std::vector<std::string_view>& optimizer_names() {
  static const std::vector<std::string_view> names = {
      "sgd",           "momentum",      "nesterov",  "adam",       "adamw", "fosi-sgd",
      "fosi-momentum", "fosi-nesterov", "fosi-adam", "fosi-adamw", "dho2",  "kfac"};
  return names;
}

/// True for the fosi-* optimizers and dho2 (curvature on); sgd, momentum, nesterov and adam are
/// the same optimizer with options.use_curvature = false (kfac is dho2::kfac).
inline bool uses_curvature(std::string_view optimizer) {
  return optimizer.starts_with("fosi-") || optimizer == "dho2";
}

/// The base optimizer's name without the "fosi-" prefix (dho2 is FOSI-Adam).
inline std::string_view base_name(std::string_view optimizer) {
  if (optimizer == "dho2") return "adam";
  return optimizer.starts_with("fosi-") ? optimizer.substr(5) : optimizer;
}

/// True for --optimizer kfac (dho2::kfac, not dho2::optimizer).
inline bool is_kfac(std::string_view optimizer) { return optimizer == "kfac"; }

/// Default learning rate of an optimizer (tuned on Fashion-MNIST with the default MLP; kfac:
/// dho2::kfac_options' default).
inline double default_learning_rate(std::string_view optimizer) {
  if (is_kfac(optimizer)) return dho2::kfac_options{}.learning_rate;
  const std::string_view base = base_name(optimizer);
  if (base == "adam" || base == "adamw") return 1e-3;
  if (base == "sgd") return 0.05;
  return 0.02;  // momentum, nesterov
}

namespace detail {

// (Strings are built with append: GCC 12 at -O3 gives a false -Wrestrict for "literal" +
// temporary.)
inline std::string quoted(std::string_view s) {
  constexpr std::size_t keep = 200;  // messages echo user input: keep them short
  std::string out(1, '\'');
  out.append(s.substr(0, keep));
  out += '\'';
  if (s.size() > keep) out.append("... (" + std::to_string(s.size()) + " bytes)");
  return out;
}

inline long long parse_integer(std::string_view flag, std::string_view text, long long min,
                               long long max = std::numeric_limits<long long>::max()) {
  long long v = 0;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec == std::errc::invalid_argument || ptr != text.data() + text.size()) {
    throw usage_error(std::string(flag) + ": " + quoted(text) + " is not an integer");
  }
  if (ec == std::errc::result_out_of_range || v < min || v > max) {
    std::string range = ">= " + std::to_string(min);
    if (max != std::numeric_limits<long long>::max()) {
      range = "in [" + std::to_string(min) + ", " + std::to_string(max) + "]";
    }
    throw usage_error(std::string(flag) + ": " + std::string(text.substr(0, 200)) +
                      (text.size() > 200 ? "..." : "") + " is out of range (must be " + range +
                      ")");
  }
  return v;
}

inline std::uint64_t parse_seed(std::string_view flag, std::string_view text) {
  std::uint64_t v = 0;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || ptr != text.data() + text.size()) {
    throw usage_error(std::string(flag) + ": " + quoted(text) +
                      " is not an unsigned 64-bit integer");
  }
  return v;
}

inline double parse_number(std::string_view flag, std::string_view text) {
  double v = 0.0;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || ptr != text.data() + text.size() || !std::isfinite(v)) {
    throw usage_error(std::string(flag) + ": " + quoted(text) + " is not a finite number");
  }
  return v;
}

inline std::string parse_choice(std::string_view flag, std::string_view text,
                                const std::vector<std::string_view>& choices) {
  for (const std::string_view c : choices) {
    if (text == c) return std::string(text);
  }
  std::string list;
  for (const std::string_view c : choices) {
    if (!list.empty()) list += '|';
    list.append(c);
  }
  throw usage_error(std::string(flag) + ": unknown value " + quoted(text) + " (expected " + list +
                    ")");
}

// --partitioner even | block | weighted:w0,w1,...
inline void parse_partitioner(train_config& o, std::string_view v) {
  o.partition_weights.clear();
  if (v == "even" || v == "block") {
    o.partitioner = std::string(v);
    return;
  }
  if (!v.starts_with("weighted:")) {
    throw usage_error("--partitioner: unknown value " + quoted(v) +
                      " (expected even|block|weighted:w0,w1,...)");
  }
  o.partitioner = "weighted";
  std::string_view rest = v.substr(9);
  while (true) {
    const std::size_t comma = rest.find(',');
    const double w = parse_number("--partitioner weight", rest.substr(0, comma));
    if (w < 0.0)
      throw usage_error("--partitioner: weight " + quoted(rest.substr(0, comma)) + " is negative");
    o.partition_weights.push_back(w);
    if (comma == rest.npos) break;
    rest = rest.substr(comma + 1);
  }
}

struct flag {
  std::string_view name;
  std::string_view metavar;  // empty for switches without a value
  std::string_view default_text;
  std::string_view help;
  std::function<void(train_config&, std::string_view)> set;
};

inline const std::vector<flag>& flags() {
  using c = train_config;
  static const std::vector<flag> table = {
      {"--dataset", "NAME", "fashion-mnist",
       "fashion-mnist | synthetic (teacher network, no files)",
       [](c& o, std::string_view v) {
         o.dataset = parse_choice("--dataset", v, {"fashion-mnist", "synthetic"});
       }},
      {"--data", "DIR", dho2::fashion_mnist_default_dir, "Fashion-MNIST directory (IDX, .gz)",
       [](c& o, std::string_view v) { o.data_dir = std::string(v); }},
      {"--train-size", "N", "all | 12000 synthetic", "training samples (first N)",
       [](c& o, std::string_view v) { o.train_size = parse_integer("--train-size", v, 1); }},
      {"--test-size", "N", "all | 2000 synthetic", "test samples (first N)",
       [](c& o, std::string_view v) { o.test_size = parse_integer("--test-size", v, 1); }},
      {"--model", "SPEC", "mlp:784-256-256-10",
       "mlp:<in>-<hidden>...-<classes> | autoencoder:<in>-<hidden>...-<in> | softmax | cnn "
       "(LeNet-style CNN for 28x28 images through LibTorch; only when built with LibTorch)",
       [](c& o, std::string_view v) { o.model = std::string(v); }},
      {"--activation", "NAME", "relu", "hidden activation of the MLP: relu | tanh",
       [](c& o, std::string_view v) {
         o.activation = parse_choice("--activation", v, {"relu", "tanh"});
       }},
      {"--optimizer", "NAME", "fosi-adam",
       "sgd | momentum | nesterov | adam | adamw, fosi-<one of them> (FOSI on that base), dho2 "
       "(FOSI-Adam with the distribution flags below), kfac (K-FAC; mlp, autoencoder)",
       [](c& o, std::string_view v) {
         o.optimizer = parse_choice("--optimizer", v, optimizer_names());
       }},
      {"--lr", "X", "1e-3 adam, 0.05 sgd, 0.02 momentum/nesterov, 0.1 kfac",
       "base learning rate (kfac: of the preconditioned step)",
       [](c& o, std::string_view v) { o.lr = parse_number("--lr", v); }},
      {"--weight-decay", "X", "0.01",
       "adamw: decoupled weight decay lambda (the step adds -lr*lambda*x)",
       [](c& o, std::string_view v) { o.weight_decay = parse_number("--weight-decay", v); }},
      {"--momentum", "X", "0.9; kfac 0",
       "base momentum (heavy-ball/Nesterov mu, Adam beta1; kfac: heavy-ball mu)",
       [](c& o, std::string_view v) { o.momentum = parse_number("--momentum", v); }},
      {"--batch", "N", "128", "mini-batch size",
       [](c& o, std::string_view v) { o.batch = parse_integer("--batch", v, 1); }},
      {"--epochs", "N", "3", "epochs",
       [](c& o, std::string_view v) { o.epochs = parse_integer("--epochs", v, 0); }},
      {"--k", "N", "10", "FOSI: largest eigenpairs in the Newton subspace",
       [](c& o, std::string_view v) { o.k = parse_integer("--k", v, 0); }},
      {"--l", "N", "0", "FOSI: smallest eigenpairs in the Newton subspace",
       [](c& o, std::string_view v) { o.l = parse_integer("--l", v, 0); }},
      {"--m", "N", "0 = max(4(k+l), 2 ln n)", "FOSI: Lanczos steps per estimate",
       [](c& o, std::string_view v) { o.lanczos_steps = parse_integer("--m", v, 0); }},
      {"--W", "N", "50", "FOSI: warm-up, first estimate before step W-1",
       [](c& o, std::string_view v) { o.warmup = parse_integer("--W", v, 1); }},
      {"--T", "N", "800", "FOSI: re-estimate curvature every T steps",
       [](c& o, std::string_view v) { o.refresh_every = parse_integer("--T", v, 1); }},
      {"--alpha", "X", "0.01", "FOSI: scale of the Newton step",
       [](c& o, std::string_view v) { o.alpha = parse_number("--alpha", v); }},
      {"--beta", "X", "0.9", "FOSI: momentum of the Newton part",
       [](c& o, std::string_view v) { o.beta = parse_number("--beta", v); }},
      {"--clip", "X", "1 adam/adamw, 3 others", "FOSI: clip c of the base-step scale",
       [](c& o, std::string_view v) { o.clip = parse_number("--clip", v); }},
      {"--damping", "X", "1e-3", "kfac: Tikhonov damping gamma (split by the trace norm)",
       [](c& o, std::string_view v) { o.damping = parse_number("--damping", v); }},
      {"--kfac-factor-decay", "X", "0.95", "kfac: decay of the factors' moving averages",
       [](c& o, std::string_view v) {
         o.kfac_factor_decay = parse_number("--kfac-factor-decay", v);
       }},
      {"--kfac-factor-every", "N", "1", "kfac: update the factors every N steps",
       [](c& o, std::string_view v) {
         o.kfac_factor_every = parse_integer("--kfac-factor-every", v, 1);
       }},
      {"--kfac-inverse-every", "N", "10", "kfac: invert the damped factors every N steps (T_inv)",
       [](c& o, std::string_view v) {
         o.kfac_inverse_every = parse_integer("--kfac-inverse-every", v, 1);
       }},
      {"--kl-clip", "X", "1e-3", "kfac: KL clipping kappa of the step (0: off)",
       [](c& o, std::string_view v) { o.kl_clip = parse_number("--kl-clip", v); }},
      {"--l2", "X", "0", "L2 weight decay, in the loss (weights only)",
       [](c& o, std::string_view v) { o.l2 = parse_number("--l2", v); }},
      {"--seed", "N", "1", "seed of initial weights, shuffling, synthetic data, Lanczos",
       [](c& o, std::string_view v) { o.seed = parse_seed("--seed", v); }},
      {"--max-skipped-steps", "N", "20",
       "stop (numerical_failure, exit 1) after N consecutive steps skipped for a non-finite "
       "loss or gradient (0: no bound)",
       [](c& o, std::string_view v) {
         o.max_skipped_steps = parse_integer("--max-skipped-steps", v, 0);
       }},
      {"--threads", "N", "1", "Eigen threads (Eigen::setNbThreads; needs OpenMP)",
       [](c& o, std::string_view v) { o.threads = parse_integer("--threads", v, 1, 1024); }},
      {"--target-accuracy", "X", "none", "stop when test accuracy >= X; record time_to_target_s",
       [](c& o, std::string_view v) { o.target_accuracy = parse_number("--target-accuracy", v); }},
      {"--target-loss", "X", "none", "stop when test loss <= X; record time_to_target_s",
       [](c& o, std::string_view v) { o.target_loss = parse_number("--target-loss", v); }},
      {"--continue-after-target", "", "off", "record the time to target but do not stop",
       [](c& o, std::string_view) { o.continue_after_target = true; }},
      {"--eval-every", "N", "0 = epoch ends only", "also evaluate every N steps",
       [](c& o, std::string_view v) { o.eval_every = parse_integer("--eval-every", v, 0); }},
      {"--eval-train-size", "N", "10000",
       "train_loss of an evaluation: on the first N training samples (0: none)",
       [](c& o, std::string_view v) {
         o.eval_train_size = parse_integer("--eval-train-size", v, 0);
       }},
      {"--eval-log", "FILE.csv", "none", "one CSV row per evaluation (columns below)",
       [](c& o, std::string_view v) { o.eval_log = std::string(v); }},
      {"--max-steps", "N", "none", "stop after N steps in total",
       [](c& o, std::string_view v) { o.max_steps = parse_integer("--max-steps", v, 1); }},
      {"--time-budget", "SECONDS", "none",
       "stop once the training time (evaluations excluded) exceeds it",
       [](c& o, std::string_view v) {
         o.time_budget = parse_number("--time-budget", v);
         if (!(*o.time_budget > 0.0)) throw usage_error("--time-budget: must be > 0");
       }},
      {"--log", "FILE.csv", "none", "per-epoch history as CSV",
       [](c& o, std::string_view v) { o.log_path = std::string(v); }},
      {"--summary-json", "FILE", "none", "write the run summary as one JSON object",
       [](c& o, std::string_view v) { o.summary_json = std::string(v); }},
      {"--quiet", "", "off", "no progress or epoch lines (the final summary is printed)",
       [](c& o, std::string_view) { o.quiet = true; }},
      {"--transport", "NAME", "auto",
       "inproc (ranks are threads) | mpi (run under mpirun) | asio (TCP); auto: mpi under "
       "mpirun, else inproc",
       [](c& o, std::string_view v) {
         o.transport = parse_choice("--transport", v, {"auto", "inproc", "mpi", "asio"});
       }},
      {"--ranks", "P", "1", "inproc: number of ranks (threads of this process)",
       [](c& o, std::string_view v) { o.ranks = parse_integer("--ranks", v, 1, 1024); }},
      {"--partitioner", "NAME", "even",
       "even | block (shards on layer boundaries) | weighted:w0,w1,... (one weight per trainer)",
       [](c& o, std::string_view v) { parse_partitioner(o, v); }},
      {"--admm-rho", "X", "1 with --admm-every", "consensus ADMM (mode A): penalty rho",
       [](c& o, std::string_view v) { o.admm_rho = parse_number("--admm-rho", v); }},
      {"--admm-every", "N", "8 with --admm-rho", "consensus ADMM (mode A): local steps per round",
       [](c& o, std::string_view v) { o.admm_every = parse_integer("--admm-every", v, 1); }},
      {"--admm-balance", "", "off", "consensus ADMM: residual balancing of rho",
       [](c& o, std::string_view) { o.admm_balance = true; }},
      {"--consensus", "NAME", "synchronous",
       "local-sgd (average the parameters every --tau steps) | diloco (an outer Nesterov step, "
       "lr 0.7, momentum 0.9, every --tau steps); consensus ADMM: --admm-rho/--admm-every",
       [](c& o, std::string_view v) {
         o.consensus = parse_choice("--consensus", v, {"synchronous", "local-sgd", "diloco"});
       }},
      {"--tau", "N", "8", "local-sgd / diloco: local steps per round",
       [](c& o, std::string_view v) { o.tau = parse_integer("--tau", v, 1); }},
      {"--link-latency", "SECONDS", "2e-05 with --link-bandwidth",
       "simulate a slower network: every transport call also sleeps for its alpha-beta time; "
       "alpha, seconds per message",
       [](c& o, std::string_view v) { o.link_latency = parse_number("--link-latency", v); }},
      {"--link-bandwidth", "BYTES/S", "1.25e9 with --link-latency",
       "simulated network: beta, bytes per second",
       [](c& o, std::string_view v) { o.link_bandwidth = parse_number("--link-bandwidth", v); }},
      {"--schedule", "NAME", "synchronous",
       "where curvature is estimated: synchronous | split (dedicated ranks) | background "
       "(a thread; one rank)",
       [](c& o, std::string_view v) {
         o.schedule = parse_choice("--schedule", v, {"synchronous", "split", "background"});
       }},
      {"--curvature-ranks", "C", "1", "split: ranks that only estimate curvature (the last C)",
       [](c& o, std::string_view v) {
         o.curvature_ranks =
             parse_integer("--curvature-ranks", v, 1, std::numeric_limits<int>::max());
       }},
      {"--max-staleness", "S", "4", "split / background: steps an estimate may lag (exactly S)",
       [](c& o, std::string_view v) { o.max_staleness = parse_integer("--max-staleness", v, 0); }},
      {"--on-late", "NAME", "keep-previous",
       "split / background: an estimate not ready after S steps: training goes on with the "
       "curvature in use (keep-previous: never stalls) or waits for it (wait: deterministic)",
       [](c& o, std::string_view v) {
         o.on_late = parse_choice("--on-late", v, {"wait", "keep-previous"});
       }},
      {"--timeout", "SECONDS", "60",
       "how long a rank waits for its peers in one call (mpi: a watchdog ends a stuck rank; "
       "given explicitly, mpi collectives run non-blocking against the deadline, about "
       "1.3-1.8x slower, and a late one aborts the job)",
       [](c& o, std::string_view v) {
         // At least a millisecond (asio counts whole milliseconds), at most 10^6 s (so that
         // milliseconds and deadlines stay far from overflow).
         o.timeout = parse_number("--timeout", v);
         o.timeout_given = true;
         if (!(o.timeout >= 1e-3 && o.timeout <= 1e6)) {
           throw usage_error("--timeout: " + std::string(v) +
                             " is out of range (must be in [0.001, 1000000] seconds)");
         }
       }},
      {"--rank", "R", "$DHO2_RANK", "asio: this process's rank",
       [](c& o,
          std::string_view v) { o.rank = parse_integer("--rank", v, 0, max_world_size - 1); }},
      {"--world-size", "P", "$DHO2_WORLD_SIZE", "asio: number of ranks (at most 65536)",
       [](c& o, std::string_view v) {
         o.world_size = parse_integer("--world-size", v, 1, max_world_size);
       }},
      {"--rendezvous", "HOST:PORT", "$DHO2_RENDEZVOUS", "asio: address of rank 0",
       [](c& o, std::string_view v) { o.rendezvous = std::string(v); }},
      {"--bind", "ADDRESS", "loopback",
       "asio: address this rank listens on (not loopback: needs --secret-file)",
       [](c& o, std::string_view v) { o.bind_address = std::string(v); }},
      {"--connect-timeout", "SECONDS", "max(60, --timeout)",
       "asio: how long the rendezvous waits for every rank to join before the job fails",
       [](c& o, std::string_view v) {
         o.connect_timeout = parse_number("--connect-timeout", v);
         if (!(*o.connect_timeout >= 1e-3 && *o.connect_timeout <= 1e6)) {
           throw usage_error("--connect-timeout: " + std::string(v) +
                             " is out of range (must be in [0.001, 1000000] seconds)");
         }
       }},
      {"--secret-file", "PATH", "$DHO2_SECRET_FILE",
       "asio: file with the job's secret (>= 16 bytes, same on every rank) that peers prove; "
       "a regular file of at most 4096 bytes, best chmod 600; needed if --bind is not loopback",
       [](c& o, std::string_view v) { o.secret_file = std::string(v); }},
      {"--checkpoint-dir", "DIR", "none",
       "checkpoints go to DIR (one file per rank and a manifest, committed atomically)",
       [](c& o, std::string_view v) { o.checkpoint_dir = std::string(v); }},
      {"--checkpoint-every", "N", "0 = never", "save a checkpoint after every N steps",
       [](c& o, std::string_view v) {
         o.checkpoint_every = parse_integer("--checkpoint-every", v, 0);
       }},
      {"--resume", "", "off",
       "continue from the checkpoint in --checkpoint-dir (bit for bit); start fresh if none",
       [](c& o, std::string_view) { o.resume = true; }},
      {"--overwrite-checkpoint", "", "off",
       "a run without --resume may replace the checkpoint already in --checkpoint-dir (else it "
       "refuses to start)",
       [](c& o, std::string_view) { o.overwrite_checkpoint = true; }},
      {"--checkpoint-failure", "NAME", "stop",
       "a checkpoint that cannot be saved (disk full): stop (non-zero exit) | continue (warn "
       "and train on); the previous checkpoint stays committed either way",
       [](c& o, std::string_view v) {
         o.checkpoint_failure = parse_choice("--checkpoint-failure", v, {"stop", "continue"});
       }},
      {"--save-parameters", "FILE", "none", "write the final parameters (n float32, little-endian)",
       [](c& o, std::string_view v) { o.save_parameters = std::string(v); }},
      {"--help", "", "", "show this help and exit", [](c& o, std::string_view) { o.help = true; }},
  };
  return table;
}

}  // namespace detail

/// The --help text.
inline std::string usage() {
  std::string text =
      "usage: dho2_train [FLAG VALUE | FLAG=VALUE]...\n"
      "Trains a classifier (or an autoencoder) with DHO2's FOSI optimizer (fosi-*, dho2), its\n"
      "base optimizer alone (same code path with curvature off) or K-FAC (kfac), and prints\n"
      "per-epoch test metrics and a summary.\n\n";
  for (const detail::flag& f : detail::flags()) {
    std::string left = "  ";
    left.append(f.name);
    if (!f.metavar.empty()) {
      left += ' ';
      left.append(f.metavar);
    }
    if (left.size() < 26) left.append(26 - left.size(), ' ');
    std::string line = left;
    line.append(f.help);
    if (!f.default_text.empty()) {
      std::string tag = " [default: ";
      tag.append(f.default_text);
      tag += ']';
      if (line.size() + tag.size() > 100) {  // continue on the next line, under the help text
        line += '\n';
        line.append(left.size() - 1, ' ');
      }
      line += tag;
    }
    text += line;
    text += '\n';
  }
  text +=
      "\nTimes: wall_s and time_to_target_s are wall-clock seconds of the training loop (test\n"
      "evaluations included, data loading excluded); cpu_s and time_to_target_cpu_s count this\n"
      "process's CPU time, a better guide than the wall clock on a busy machine.\n"
      "Evaluations (rank 0; every --eval-every steps, every epoch end, and the final parameters\n"
      "of a run stopped between those) report test accuracy (classifiers), test loss and the\n"
      "loss on the first --eval-train-size training samples; losses are the training objective\n"
      "(mean data loss plus the --l2 term). The autoencoder's loss is (1/(2B)) sum ||z - x||^2\n"
      "(labels unused). --eval-log columns:\n"
      "  step,epoch,train_seconds,cpu_seconds,test_accuracy,test_loss,train_loss\n"
      "train_seconds and cpu_seconds are the training loop's wall and process CPU seconds up to\n"
      "the evaluation, all evaluations excluded (--time-budget counts the same train_seconds);\n"
      "test_accuracy is empty for the autoencoder, train_loss with --eval-train-size 0.\n"
      "\nExit status: 0 on success, 2 on bad usage (unknown flag, bad value, invalid options),\n"
      "1 on runtime errors (missing or corrupt data files, I/O errors).\n";
  return text;
}

/// Checks the K-FAC flags: only with --optimizer kfac, and kfac only with what it supports.
inline void check_kfac(const train_config& c) {
  if (!is_kfac(c.optimizer)) {
    const char* given = c.damping              ? "--damping"
                        : c.kfac_factor_decay  ? "--kfac-factor-decay"
                        : c.kfac_factor_every  ? "--kfac-factor-every"
                        : c.kfac_inverse_every ? "--kfac-inverse-every"
                        : c.kl_clip            ? "--kl-clip"
                                               : nullptr;
    if (given != nullptr) throw usage_error(std::string(given) + ": only with --optimizer kfac");
    return;
  }
  const char* unsupported = c.schedule != "synchronous" ? "--schedule"
                            : uses_admm(c)              ? "--admm-rho/--admm-every"
                            : uses_local_steps(c)       ? "--consensus"
                            : c.partitioner != "even"   ? "--partitioner"
                            : !c.checkpoint_dir.empty() ? "--checkpoint-dir"
                                                        : nullptr;
  if (unsupported != nullptr) {
    throw usage_error(std::string(unsupported) +
                      ": not with --optimizer kfac (data parallel K-FAC: every rank keeps the "
                      "whole model; no checkpoints)");
  }
}

/// Checks the distribution flags against each other (what does not need the world size).
inline void check_distribution(const train_config& c) {
  if (c.ranks && c.transport != "inproc" && c.transport != "auto") {
    throw usage_error(
        "--ranks: only with --transport inproc (the world size of mpi is "
        "mpirun's -np, of asio --world-size)");
  }
  const bool asio_flag = c.rank || c.world_size || !c.rendezvous.empty() ||
                         !c.bind_address.empty() || !c.secret_file.empty() ||
                         c.connect_timeout.has_value();
  if (asio_flag && c.transport != "asio") {
    throw usage_error(
        "--rank/--world-size/--rendezvous/--bind/--secret-file/--connect-timeout: only with "
        "--transport asio");
  }
  if (c.schedule != "synchronous") {
    if (!uses_curvature(c.optimizer)) {
      throw usage_error("--schedule " + c.schedule + ": needs --optimizer dho2 or fosi-<base>");
    }
    if (uses_admm(c)) {
      throw usage_error("--schedule " + c.schedule +
                        ": not with consensus ADMM (--admm-rho/--admm-every); use synchronous");
    }
    if (uses_local_steps(c)) {
      throw usage_error("--schedule " + c.schedule + ": not with --consensus " + c.consensus +
                        "; use synchronous");
    }
  } else if (c.curvature_ranks != 1) {
    throw usage_error("--curvature-ranks: only with --schedule split");
  } else if (!c.on_late.empty()) {
    throw usage_error("--on-late: only with --schedule split or background");
  }
  if ((c.checkpoint_every > 0 || c.resume) && c.checkpoint_dir.empty()) {
    throw usage_error(std::string(c.resume ? "--resume" : "--checkpoint-every") +
                      ": needs --checkpoint-dir");
  }
  if (uses_admm(c)) {
    if (is_kfac(c.optimizer)) throw usage_error("--admm-rho/--admm-every: not with kfac");
    if (c.admm_rho && *c.admm_rho < 0.0) throw usage_error("--admm-rho: must be >= 0");
  } else if (c.admm_balance) {
    throw usage_error("--admm-balance: needs --admm-rho or --admm-every");
  }
  if (uses_local_steps(c)) {
    if (is_kfac(c.optimizer)) throw usage_error("--consensus " + c.consensus + ": not with kfac");
    if (uses_admm(c)) {
      throw usage_error("--consensus " + c.consensus + ": not with --admm-rho/--admm-every");
    }
  } else if (c.tau) {
    throw usage_error("--tau: needs --consensus local-sgd or diloco");
  }
  if (c.weight_decay && base_name(c.optimizer) != "adamw") {
    throw usage_error("--weight-decay: only with --optimizer adamw or fosi-adamw");
  }
  if (c.link_latency && *c.link_latency < 0.0) throw usage_error("--link-latency: must be >= 0");
  if (c.link_bandwidth && !(*c.link_bandwidth > 0.0)) {
    throw usage_error("--link-bandwidth: must be > 0");
  }
}

/// Parses the arguments (argv[1..]). Throws `usage_error` for an unknown flag, a missing value
/// or a value that does not parse; model specs and options are checked later.
inline train_config parse_args(const std::vector<std::string_view>& args) {
  train_config config;
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string_view arg = args[i];
    if (arg == "-h") arg = "--help";
    std::optional<std::string_view> inline_value;
    if (const std::size_t eq = arg.find('='); arg.starts_with("--") && eq != arg.npos) {
      inline_value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
    }
    const detail::flag* match = nullptr;
    for (const detail::flag& f : detail::flags()) {
      if (f.name == arg) match = &f;
    }
    if (match == nullptr) {
      throw usage_error(arg.starts_with("-")
                            ? "unknown flag '" + std::string(arg) + "' (see --help)"
                            : "unexpected argument '" + std::string(arg) +
                                  "' (flags start with --; see --help)");
    }
    if (match->metavar.empty()) {
      if (inline_value) throw usage_error(std::string(arg) + " takes no value");
      match->set(config, {});
      continue;
    }
    std::string_view value;
    if (inline_value) {
      value = *inline_value;
    } else if (i + 1 < args.size() && !args[i + 1].starts_with("--")) {
      value = args[++i];
    } else {
      throw usage_error(std::string(arg) + ": missing value (" + std::string(match->metavar) + ")");
    }
    match->set(config, value);
  }
  if (config.target_accuracy &&
      !(*config.target_accuracy > 0.0 && *config.target_accuracy <= 1.0)) {
    char text[32];
    std::snprintf(text, sizeof text, "%g", *config.target_accuracy);
    throw usage_error(std::string("--target-accuracy: ") + text +
                      " is out of range (must be in (0, 1])");
  }
  if (config.target_accuracy && config.target_loss) {
    throw usage_error("--target-loss: not with --target-accuracy (one target per run)");
  }
  if (config.continue_after_target && !config.target_accuracy && !config.target_loss) {
    throw usage_error("--continue-after-target needs --target-accuracy or --target-loss");
  }
  check_distribution(config);
  check_kfac(config);
  return config;
}

}  // namespace dho2_train
