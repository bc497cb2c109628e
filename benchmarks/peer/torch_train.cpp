// torch_train: the LibTorch peer of dho2_train (issue 4). Trains the same models on the same data
// in the same order with LibTorch's own optimizers, single process, float32, and writes the same
// evaluation log, so the benchmark harness can put the two side by side.
//
// What is shared with DHO2, so that only the training step differs:
//   data      dho2::load_fashion_mnist (DHO2's IDX reader, pixels v / 255 in [0, 1]), optionally
//   the
//             first --train-size / --test-size samples;
//   order     dho2::shuffling_batcher<float>(train, --batch, --seed): epoch e is begin_epoch(e) and
//             batch i is fill_batch(i, ...), the very batches dho2_train trains on (the last
//             partial batch of an epoch is dropped, as there);
//   init      the parameter vector dho2 starts from, copied into the torch layers: for mlp and
//             autoencoder dho2::mlp<float>(widths, relu).initialize(--seed) (He-normal
//             N(0, 2/fan_in) weights drawn in dho2's parameter order, zero biases), for softmax
//             zeros (dho2::softmax_regression::initial_point). Same draws, not only the same law.
// What is LibTorch's own: the network (torch::nn::Sequential of torch::nn::Linear and
// torch::nn::ReLU), autograd, the loss (torch::nn::functional::cross_entropy, or the squared
// error below) and the optimizers torch::optim::Adam and torch::optim::SGD.
//
// Models (--model):
//   mlp:784-256-256-10           ReLU hidden layers, softmax cross-entropy (mean over the batch);
//   autoencoder:784-256-64-256-784  ReLU hidden layers, linear output, loss (1/(2B)) Σⱼ ‖zⱼ − xⱼ‖²;
//   softmax                      784-10 linear + softmax cross-entropy;
//   cnn                          dho2::torch_lenet's layers as a torch::nn::Sequential (unflatten
//                                to 1 × 28 × 28, conv 5×5 ×16, ReLU, max-pool 2, conv 5×5 ×32,
//                                ReLU, max-pool 2, flatten, fc 64, ReLU, fc 10), initialised as
//                                dho2_train --model cnn is: torch::manual_seed(--seed), then
//                                LibTorch's default initialisation of a dho2::torch_lenet, whose
//                                parameters are copied in (same order and shapes).
// Optimizers (--optimizer): adam (torch::optim::Adam, betas (--momentum, 0.999), eps 1e-8),
// sgd (torch::optim::SGD), momentum (torch::optim::SGD with momentum --momentum: v ← μv + g,
// x ← x − ηv, the form of dho2::heavy_ball). Default learning rates are dho2_train's.
//
// --eval-log FILE.csv gets one row per evaluation (every --eval-every steps, at every epoch end,
// and where --time-budget or --max-steps stops the run):
//   step,epoch,train_seconds,cpu_seconds,test_accuracy,test_loss,train_loss
// step = steps taken so far, epoch = the 1-based epoch the evaluation falls in, train_seconds =
// wall seconds of the training loop without the evaluations, cpu_seconds = this process's CPU
// seconds over the same span (evaluations excluded), test_loss = mean loss over the test set,
// train_loss = mean loss over the first --eval-train-size training samples, test_accuracy empty
// for the autoencoder, and a non-finite loss (a diverged run) written as nan / inf.
// --summary-json FILE gets one JSON object (also printed as the last line).
//
// Threads: --threads N sets torch::set_num_threads(N), at::set_num_interop_threads(N) and
// OpenBLAS's own thread count (openblas_set_num_threads, which LibTorch does not call). The BLAS
// actually loaded is read from /proc/self/maps and reported (see blas_info.hpp).
#include "blas_info.hpp"
#include <dho2/data/batcher.hpp>
#include <dho2/data/idx.hpp>
#include <dho2/models/mlp.hpp>
#include <dho2/torch/lenet.hpp>

#include <time.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <fstream>
#include <limits>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <tuple>
#include <vector>

#ifndef DHO2_TORCH_PACKAGE
#define DHO2_TORCH_PACKAGE "unknown"
#endif

namespace {

using dho2::index;

/// Bad usage: one line on stderr, exit status 2.
class usage_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct config {
  std::string data_dir = std::string(dho2::fashion_mnist_default_dir);
  std::optional<long long> train_size;
  std::optional<long long> test_size;
  std::string model = "mlp:784-256-256-10";
  std::string optimizer = "adam";
  std::optional<double> lr;
  double momentum = 0.9;
  long long batch = 128;
  long long epochs = 3;
  std::uint64_t seed = 1;
  long long threads = 1;
  long long eval_every = 0;
  long long eval_train_size = 10000;
  std::optional<double> time_budget;
  std::optional<long long> max_steps;
  std::string eval_log;
  std::string summary_json;
  bool quiet = false;
  bool help = false;
};

const char* const usage_text =
    "usage: torch_train [FLAG VALUE | FLAG=VALUE]...\n"
    "Trains on Fashion-MNIST with LibTorch's own optimizers, on DHO2's data pipeline and initial\n"
    "parameters (the LibTorch peer of dho2_train).\n\n"
    "  --data DIR              Fashion-MNIST directory [default: "
    "/usr/share/datasets/fashion-mnist]\n"
    "  --train-size N          first N training samples [default: all]\n"
    "  --test-size N           first N test samples [default: all]\n"
    "  --model SPEC            mlp:784-...-10 | autoencoder:784-...-784 | softmax | cnn\n"
    "                          [default: mlp:784-256-256-10]\n"
    "  --optimizer NAME        adam | sgd | momentum [default: adam]\n"
    "  --lr X                  learning rate [default: 1e-3 adam, 0.05 sgd, 0.02 momentum]\n"
    "  --momentum X            heavy-ball mu, or Adam beta1 [default: 0.9]\n"
    "  --batch N               mini-batch size [default: 128]\n"
    "  --epochs N              epochs [default: 3]\n"
    "  --seed N                seed of the initial weights and of the batch order [default: 1]\n"
    "  --threads N             intra-op, inter-op and OpenBLAS threads [default: 1]\n"
    "  --eval-every N          also evaluate every N steps [default: 0 = epoch ends only]\n"
    "  --eval-train-size N     training samples the train loss is measured on [default: 10000]\n"
    "  --time-budget SECONDS   stop when the training time (evaluations excluded) reaches it\n"
    "  --max-steps N           stop after N steps\n"
    "  --eval-log FILE.csv     one row per evaluation (see the source's header)\n"
    "  --summary-json FILE     the run summary as one JSON object\n"
    "  --quiet                 no per-evaluation lines\n"
    "  --help                  this text\n"
    "\nExit status: 0 on success, 2 on bad usage, 1 on runtime errors (missing data, I/O).\n";

long long parse_integer(std::string_view flag, std::string_view text, long long min) {
  long long v = 0;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || ptr != text.data() + text.size()) {
    throw usage_error(std::string(flag) + ": '" + std::string(text) + "' is not an integer");
  }
  if (v < min) {
    throw usage_error(std::string(flag) + ": " + std::string(text) +
                      " is out of range (must be >= " + std::to_string(min) + ")");
  }
  return v;
}

double parse_number(std::string_view flag, std::string_view text) {
  double v = 0.0;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || ptr != text.data() + text.size() || !std::isfinite(v)) {
    throw usage_error(std::string(flag) + ": '" + std::string(text) + "' is not a finite number");
  }
  return v;
}

config parse_args(int argc, char** argv) {
  config c;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    std::string_view value;
    bool has_value = false;
    if (const std::size_t eq = arg.find('='); arg.starts_with("--") && eq != arg.npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      has_value = true;
    }
    if (arg == "--help") {
      c.help = true;
      continue;
    }
    if (arg == "--quiet") {
      c.quiet = true;
      continue;
    }
    if (!has_value) {
      if (i + 1 >= argc) throw usage_error(std::string(arg) + ": missing value");
      value = argv[++i];
    }
    if (arg == "--data") {
      c.data_dir = std::string(value);
    } else if (arg == "--train-size") {
      c.train_size = parse_integer(arg, value, 1);
    } else if (arg == "--test-size") {
      c.test_size = parse_integer(arg, value, 1);
    } else if (arg == "--model") {
      c.model = std::string(value);
    } else if (arg == "--optimizer") {
      if (value != "adam" && value != "sgd" && value != "momentum") {
        throw usage_error("--optimizer: unknown value '" + std::string(value) +
                          "' (expected adam|sgd|momentum)");
      }
      c.optimizer = std::string(value);
    } else if (arg == "--lr") {
      c.lr = parse_number(arg, value);
      if (!(*c.lr > 0.0)) throw usage_error("--lr: must be > 0");
    } else if (arg == "--momentum") {
      c.momentum = parse_number(arg, value);
      if (!(c.momentum >= 0.0 && c.momentum < 1.0))
        throw usage_error("--momentum: must be in [0, 1)");
    } else if (arg == "--batch") {
      c.batch = parse_integer(arg, value, 1);
    } else if (arg == "--epochs") {
      c.epochs = parse_integer(arg, value, 0);
    } else if (arg == "--seed") {
      c.seed = static_cast<std::uint64_t>(parse_integer(arg, value, 0));
    } else if (arg == "--threads") {
      c.threads = parse_integer(arg, value, 1);
      if (c.threads > 1024) throw usage_error("--threads: must be <= 1024");
    } else if (arg == "--eval-every") {
      c.eval_every = parse_integer(arg, value, 0);
    } else if (arg == "--eval-train-size") {
      c.eval_train_size = parse_integer(arg, value, 0);
    } else if (arg == "--time-budget") {
      c.time_budget = parse_number(arg, value);
      if (!(*c.time_budget > 0.0)) throw usage_error("--time-budget: must be > 0");
    } else if (arg == "--max-steps") {
      c.max_steps = parse_integer(arg, value, 1);
    } else if (arg == "--eval-log") {
      c.eval_log = std::string(value);
    } else if (arg == "--summary-json") {
      c.summary_json = std::string(value);
    } else {
      throw usage_error("unknown flag '" + std::string(arg) + "' (see --help)");
    }
  }
  return c;
}

enum class model_kind { mlp, autoencoder, softmax, cnn };

struct model_spec {
  model_kind kind = model_kind::mlp;
  std::vector<index> widths;
  [[nodiscard]] bool classifier() const { return kind != model_kind::autoencoder; }
};

model_spec parse_model(const std::string& spec, index features, index classes) {
  model_spec m;
  const auto widths_of = [&](std::string_view rest) {
    try {
      return dho2::parse_mlp_layers(rest);
    } catch (const dho2::invalid_options& e) {
      throw usage_error("--model: " + std::string(e.what()));
    }
  };
  if (spec == "softmax") {
    m.kind = model_kind::softmax;
    m.widths = {features, classes};
  } else if (spec == "cnn") {
    m.kind = model_kind::cnn;
    m.widths = {features, classes};
    if (features != 28 * 28) {
      throw usage_error("--model cnn: takes 28 x 28 images; the data has " +
                        std::to_string(features) + " features");
    }
  } else if (spec.starts_with("mlp:")) {
    m.kind = model_kind::mlp;
    m.widths = widths_of(std::string_view(spec).substr(4));
    if (m.widths.back() != classes) {
      throw usage_error("--model: " + spec + " has " + std::to_string(m.widths.back()) +
                        " outputs; the data has " + std::to_string(classes) + " classes");
    }
  } else if (spec.starts_with("autoencoder:")) {
    m.kind = model_kind::autoencoder;
    m.widths = widths_of(std::string_view(spec).substr(12));
    if (m.widths.back() != features) {
      throw usage_error("--model: " + spec + " has " + std::to_string(m.widths.back()) +
                        " outputs; an autoencoder reconstructs its " + std::to_string(features) +
                        " inputs");
    }
  } else {
    throw usage_error(
        "--model: unknown value '" + spec +
        "' (expected mlp:<in>-...-<classes> | autoencoder:<in>-...-<in> | softmax | cnn)");
  }
  if (m.widths.front() != features) {
    throw usage_error("--model: " + spec + " has " + std::to_string(m.widths.front()) +
                      " inputs; the data has " + std::to_string(features) + " features");
  }
  return m;
}

double process_cpu_seconds() {
  timespec ts{};
  if (::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) != 0) return 0.0;
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

double wall_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

/// The network: Linear layers with ReLU between them (none after the last); for the CNN the
/// layers of dho2::torch_lenet.
torch::nn::Sequential make_network(const model_spec& m) {
  torch::nn::Sequential net;
  if (m.kind == model_kind::cnn) {
    namespace nn = torch::nn;
    net->push_back(nn::Unflatten(nn::UnflattenOptions(1, {1, 28, 28})));
    net->push_back(nn::Conv2d(nn::Conv2dOptions(1, 16, 5)));
    net->push_back(nn::ReLU());
    net->push_back(nn::MaxPool2d(nn::MaxPool2dOptions(2)));
    net->push_back(nn::Conv2d(nn::Conv2dOptions(16, 32, 5)));
    net->push_back(nn::ReLU());
    net->push_back(nn::MaxPool2d(nn::MaxPool2dOptions(2)));
    net->push_back(nn::Flatten());
    net->push_back(nn::Linear(32 * 4 * 4, 64));
    net->push_back(nn::ReLU());
    net->push_back(nn::Linear(64, m.widths.back()));
    return net;
  }
  for (std::size_t l = 0; l + 1 < m.widths.size(); ++l) {
    net->push_back(torch::nn::Linear(m.widths[l], m.widths[l + 1]));
    if (l + 2 < m.widths.size()) net->push_back(torch::nn::ReLU());
  }
  return net;
}

/// Copies a parameter vector in dho2::mlp's layout (per layer Wₗ, sₗ × sₗ₋₁ column-major, then
/// bₗ) into the Linear layers (weight sₗ × sₗ₋₁ row-major, bias sₗ).
void load_parameters(torch::nn::Sequential& net, const dho2::vector<float>& x) {
  torch::NoGradGuard no_grad;
  index offset = 0;
  for (auto& module : net->children()) {
    auto* linear = module->as<torch::nn::Linear>();
    if (linear == nullptr) continue;
    const std::int64_t out = linear->options.out_features();
    const std::int64_t in = linear->options.in_features();
    // Column-major out × in is row-major in × out: transpose into the weight.
    float* w = const_cast<float*>(x.data()) + offset;
    linear->weight.copy_(torch::from_blob(w, {in, out}, torch::kFloat).t());
    offset += out * in;
    linear->bias.copy_(torch::from_blob(w + out * in, {out}, torch::kFloat));
    offset += out;
  }
  if (offset != x.size()) throw std::logic_error("load_parameters: parameter count mismatch");
}

/// The columns [first, first + count) of a column-major features × N matrix as a count × features
/// tensor (no copy).
torch::Tensor rows_of(const dho2::matrix<float>& inputs, index first, index count) {
  return torch::from_blob(const_cast<float*>(inputs.data()) + first * inputs.rows(),
                          {count, inputs.rows()}, torch::kFloat);
}

torch::Tensor labels_of(const Eigen::VectorXi& labels, index first, index count) {
  return torch::from_blob(const_cast<int*>(labels.data()) + first, {count}, torch::kInt)
      .to(torch::kLong);
}

/// Sum over the samples of the per-sample loss (cross-entropy, or ½‖z − x‖²).
torch::Tensor summed_loss(const model_spec& m, const torch::Tensor& out, const torch::Tensor& x,
                          const torch::Tensor& y) {
  if (m.classifier()) {
    namespace F = torch::nn::functional;
    return F::cross_entropy(out, y, F::CrossEntropyFuncOptions().reduction(torch::kSum));
  }
  return 0.5 * (out - x).square().sum();
}

struct evaluation {
  double loss = 0.0;
  double accuracy = std::numeric_limits<double>::quiet_NaN();
};

/// Mean loss (and accuracy for a classifier) over the first `size` samples of `set`.
evaluation evaluate(torch::nn::Sequential& net, const model_spec& m,
                    const dho2::classification_set<float>& set, index size) {
  torch::NoGradGuard no_grad;
  // Small chunks for the CNN: LibTorch's CPU convolutions cost 3-5x more per image in chunks of
  // 500-1000 images than in chunks of 32-256.
  const index chunk = m.kind == model_kind::cnn ? 128 : 1024;
  double loss = 0.0;
  std::int64_t correct = 0;
  for (index start = 0; start < size; start += chunk) {
    const index count = std::min(chunk, size - start);
    const torch::Tensor x = rows_of(set.inputs, start, count);
    const torch::Tensor y = labels_of(set.labels, start, count);
    const torch::Tensor out = net->forward(x);
    loss += summed_loss(m, out, x, y).item<double>();
    if (m.classifier()) correct += out.argmax(1).eq(y).sum().item<std::int64_t>();
  }
  evaluation e;
  if (size == 0) return e;
  e.loss = loss / static_cast<double>(size);
  if (m.classifier()) e.accuracy = static_cast<double>(correct) / static_cast<double>(size);
  return e;
}

std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (const char ch : s) {
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += ch;
    } else if (static_cast<unsigned char>(ch) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(ch));
      out += buf;
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

// A CSV field: "nan" / "inf" / "-inf" for a diverged run's loss (an empty field means "not
// measured": test_accuracy of the autoencoder).
std::string csv_number(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

dho2::classification_set<float> first(dho2::classification_set<float> set,
                                      std::optional<long long> size, const char* flag) {
  if (!size) return set;
  if (*size > set.size()) {
    throw usage_error(std::string(flag) + ": " + std::to_string(*size) + " > " +
                      std::to_string(set.size()) + " samples in the data set");
  }
  return set.subset(0, *size);
}

int run(const config& c) {
  // Threads first: set_num_interop_threads must precede any inter-op parallel work.
  torch::set_num_threads(static_cast<int>(c.threads));
  at::set_num_interop_threads(static_cast<int>(c.threads));
  const int blas_threads = dho2_peer::set_openblas_threads(static_cast<int>(c.threads));

  dho2::train_test_sets<float> data = dho2::load_fashion_mnist<float>(c.data_dir);
  data.train = first(std::move(data.train), c.train_size, "--train-size");
  data.test = first(std::move(data.test), c.test_size, "--test-size");
  const model_spec spec = parse_model(c.model, data.train.num_features(), data.train.num_classes);
  const double lr = c.lr.value_or(c.optimizer == "adam"  ? 1e-3
                                  : c.optimizer == "sgd" ? 0.05
                                                         : 0.02);

  torch::nn::Sequential net = make_network(spec);
  if (spec.kind == model_kind::cnn) {
    // dho2_train's initial CNN: LibTorch's default initialisation after manual_seed(--seed).
    torch::manual_seed(c.seed);
    const dho2::torch_lenet init(spec.widths.back(), torch::kFloat32);
    torch::NoGradGuard no_grad;
    const std::vector<torch::Tensor> from = init->parameters();
    std::vector<torch::Tensor> to = net->parameters();
    if (from.size() != to.size()) throw std::logic_error("cnn: parameter count mismatch");
    for (std::size_t i = 0; i < to.size(); ++i) to[i].copy_(from[i]);
  } else {
    load_parameters(
        net, spec.kind == model_kind::softmax
                 ? dho2::vector<float>::Zero(spec.widths[0] * spec.widths[1] + spec.widths[1])
                 : dho2::mlp<float>(spec.widths).initialize(c.seed));
  }

  std::int64_t parameter_count = 0;
  for (const torch::Tensor& p : net->parameters()) parameter_count += p.numel();

  std::unique_ptr<torch::optim::Optimizer> opt;
  if (c.optimizer == "adam") {
    opt = std::make_unique<torch::optim::Adam>(
        net->parameters(),
        torch::optim::AdamOptions(lr).betas(std::make_tuple(c.momentum, 0.999)).eps(1e-8));
  } else {
    opt = std::make_unique<torch::optim::SGD>(
        net->parameters(),
        torch::optim::SGDOptions(lr).momentum(c.optimizer == "momentum" ? c.momentum : 0.0));
  }

  std::ofstream log;
  if (!c.eval_log.empty()) {
    log.open(c.eval_log);
    if (!log) throw std::runtime_error("--eval-log: cannot open '" + c.eval_log + "'");
    log << "step,epoch,train_seconds,cpu_seconds,test_accuracy,test_loss,train_loss\n";
  }

  dho2::shuffling_batcher<float> batches(data.train, c.batch, c.seed);
  const index eval_train = std::min<index>(c.eval_train_size, data.train.size());
  dho2::classification_batch<float> batch;
  long long steps = 0;
  double eval_wall = 0.0;
  double eval_cpu = 0.0;
  evaluation last_test;
  evaluation last_train;
  long long evaluations = 0;
  std::string stopped_by = "epochs";
  const double wall0 = wall_seconds();
  const double cpu0 = process_cpu_seconds();
  const auto train_seconds = [&] { return wall_seconds() - wall0 - eval_wall; };
  const auto record = [&](long long epoch) {
    const double train_s = train_seconds();
    const double cpu_s = process_cpu_seconds() - cpu0 - eval_cpu;
    const double w0 = wall_seconds();
    const double c0 = process_cpu_seconds();
    net->eval();
    last_test = evaluate(net, spec, data.test, data.test.size());
    last_train = evaluate(net, spec, data.train, eval_train);
    net->train();
    eval_wall += wall_seconds() - w0;
    eval_cpu += process_cpu_seconds() - c0;
    ++evaluations;
    if (log) {
      log << steps << ',' << epoch << ',' << csv_number(train_s) << ',' << csv_number(cpu_s) << ','
          << (spec.classifier() ? csv_number(last_test.accuracy) : std::string()) << ','
          << csv_number(last_test.loss) << ',' << csv_number(last_train.loss) << '\n';
      log.flush();
    }
    if (!c.quiet) {
      std::printf("step %lld epoch %lld train %.3f s cpu %.3f s test_loss %.5f train_loss %.5f",
                  steps, epoch, train_s, cpu_s, last_test.loss, last_train.loss);
      if (spec.classifier()) std::printf(" test_accuracy %.4f", last_test.accuracy);
      std::printf("\n");
      std::fflush(stdout);
    }
  };

  bool stop = false;
  for (long long e = 0; e < c.epochs && !stop; ++e) {
    batches.begin_epoch(e);
    const index nb = batches.num_batches();
    for (index i = 0; i < nb; ++i) {
      batches.fill_batch(i, batch);
      const torch::Tensor xb = rows_of(batch.inputs, 0, batch.size());
      const torch::Tensor yb = labels_of(batch.labels, 0, batch.size());
      opt->zero_grad();
      const torch::Tensor loss =
          summed_loss(spec, net->forward(xb), xb, yb) / static_cast<double>(batch.size());
      loss.backward();
      opt->step();
      ++steps;
      const bool epoch_end = i + 1 == nb;
      if (c.max_steps && steps >= *c.max_steps) {
        stopped_by = "max_steps";
        stop = true;
      } else if (c.time_budget && train_seconds() >= *c.time_budget) {
        stopped_by = "time_budget";
        stop = true;
      }
      if (stop || epoch_end || (c.eval_every > 0 && steps % c.eval_every == 0)) record(e + 1);
      if (stop) break;
    }
  }
  if (evaluations == 0) record(0);  // --epochs 0: the initial point
  const double wall = wall_seconds() - wall0;
  const double train_s = wall - eval_wall;
  const double cpu_s = process_cpu_seconds() - cpu0 - eval_cpu;

  std::ostringstream j;
  j << "{\"program\":\"torch_train\",\"torch_version\":" << json_string(TORCH_VERSION)
    << ",\"torch_package\":" << json_string(DHO2_TORCH_PACKAGE)
    << ",\"blas\":" << json_string(dho2_peer::loaded_blas_string())
    << ",\"sgemm_provider\":" << json_string(dho2_peer::symbol_provider("sgemm_"))
    << ",\"openblas\":" << json_string(dho2_peer::openblas_config())
    << ",\"threads\":" << torch::get_num_threads()
    << ",\"interop_threads\":" << at::get_num_interop_threads()
    << ",\"blas_threads\":" << blas_threads << ",\"model\":" << json_string(c.model)
    << ",\"parameters\":" << parameter_count << ",\"init\":"
    << json_string(spec.kind == model_kind::softmax ? "zeros"
                   : spec.kind == model_kind::cnn   ? "torch::manual_seed(seed); dho2::torch_lenet"
                                                    : "dho2::mlp<float>::initialize(seed)")
    << ",\"optimizer\":" << json_string(c.optimizer) << ",\"lr\":" << json_number(lr)
    << ",\"momentum\":" << json_number(c.momentum) << ",\"batch\":" << c.batch
    << ",\"epochs\":" << c.epochs << ",\"seed\":" << c.seed
    << ",\"train_size\":" << data.train.size() << ",\"test_size\":" << data.test.size()
    << ",\"steps\":" << steps << ",\"stopped_by\":" << json_string(stopped_by)
    << ",\"wall_seconds\":" << json_number(wall) << ",\"train_seconds\":" << json_number(train_s)
    << ",\"eval_seconds\":" << json_number(eval_wall) << ",\"cpu_seconds\":" << json_number(cpu_s)
    << ",\"evaluations\":" << evaluations
    << ",\"test_accuracy\":" << json_number(last_test.accuracy)
    << ",\"test_loss\":" << json_number(last_test.loss)
    << ",\"train_loss\":" << json_number(last_train.loss) << "}";
  if (!c.summary_json.empty()) {
    std::ofstream out(c.summary_json);
    out << j.str() << '\n';
    if (!out) throw std::runtime_error("--summary-json: cannot write '" + c.summary_json + "'");
  }
  std::printf("%s\n", j.str().c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const config c = parse_args(argc, argv);
    if (c.help) {
      std::fputs(usage_text, stdout);
      return 0;
    }
    return run(c);
  } catch (const usage_error& e) {
    std::fprintf(stderr, "torch_train: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "torch_train: %s\n", e.what());
    return 1;
  }
}
