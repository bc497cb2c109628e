// torch_cnn: a LibTorch module trained with DHO2. The network is an ordinary torch::nn::Module
// (the LeNet-style CNN of dho2/torch/lenet.hpp: conv 5×5 ×16, pool, conv 5×5 ×32, pool, fc 64,
// fc 10, ReLU, softmax cross-entropy); dho2::torch_module_model turns it and its loss into a
// dho2::hvp_model (gradient by autograd, exact Hessian-vector products by double backward), and
// FOSI-Adam trains it on Fashion-MNIST for a short budget, then prints the test accuracy.
//
//   torch_cnn [--data DIR] [--steps N] [--batch N] [--lr X] [--threads N] [--seed N]
//             [--train-size N] [--test-size N] [--synthetic] [--measure N]
//
// --synthetic trains on a small generated image set instead (no files needed; what CTest runs).
// --measure N only times N gradients and N exact HVPs of the CNN at batch --batch through the
// adapter, and the flat-vector copies the adapter makes per call, and prints them.
#include <dho2/data/batcher.hpp>
#include <dho2/data/idx.hpp>
#include <dho2/data/synthetic.hpp>
#include <dho2/dho2.hpp>
#include <dho2/torch.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <exception>
#include <string>
#include <string_view>

namespace {

struct config {
  std::string data = std::string(dho2::fashion_mnist_default_dir);
  long long steps = 400;
  long long batch = 128;
  double lr = 1e-3;
  int threads = 2;
  std::uint64_t seed = 1;
  long long train_size = 0;  // 0: all
  long long test_size = 0;
  bool synthetic = false;
  long long measure = 0;
};

config parse(int argc, char** argv) {
  config c;
  for (int i = 1; i < argc; ++i) {
    const std::string_view flag = argv[i];
    if (flag == "--synthetic") {
      c.synthetic = true;
      continue;
    }
    if (i + 1 >= argc) throw std::invalid_argument("missing value after " + std::string(flag));
    const std::string value = argv[++i];
    if (flag == "--data") {
      c.data = value;
    } else if (flag == "--steps") {
      c.steps = std::stoll(value);
    } else if (flag == "--batch") {
      c.batch = std::stoll(value);
    } else if (flag == "--lr") {
      c.lr = std::stod(value);
    } else if (flag == "--threads") {
      c.threads = std::stoi(value);
    } else if (flag == "--seed") {
      c.seed = std::stoull(value);
    } else if (flag == "--train-size") {
      c.train_size = std::stoll(value);
    } else if (flag == "--test-size") {
      c.test_size = std::stoll(value);
    } else if (flag == "--measure") {
      c.measure = std::stoll(value);
    } else {
      throw std::invalid_argument("unknown flag " + std::string(flag));
    }
  }
  if (c.steps < 1 || c.batch < 1 || c.threads < 1 || !(c.lr > 0.0)) {
    throw std::invalid_argument("--steps, --batch, --threads and --lr must be positive");
  }
  return c;
}

// The first `size` samples of a set (all when size is 0 or larger).
dho2::classification_set<float> first(const dho2::classification_set<float>& set, long long size) {
  if (size <= 0 || size >= set.size()) return set;
  dho2::classification_set<float> out;
  out.inputs = set.inputs.leftCols(size);
  out.labels = set.labels.head(size);
  out.num_classes = set.num_classes;
  return out;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

double cpu_seconds_since(std::clock_t start) {
  return static_cast<double>(std::clock() - start) / CLOCKS_PER_SEC;
}

using cnn_model = dho2::torch_module_model<float, dho2::torch_lenet, dho2::torch_cross_entropy>;

// Times `repeats` gradients and exact HVPs at one batch, and the adapter's flat copies: a
// gradient copies x in and the gradient out (2n scalars), a product x and v in and H·v out (3n).
void measure(const cnn_model& model, const dho2::classification_batch<float>& batch,
             long long repeats) {
  const dho2::index n = model.num_parameters();
  const Eigen::VectorXf x = model.initial_point();
  const Eigen::VectorXf v = Eigen::VectorXf::Random(n);
  Eigen::VectorXf g(n);
  Eigen::VectorXf hv(n);
  static_cast<void>(model.loss_and_gradient(x, batch, g));  // warm-up: replica, allocator
  model.hessian_vector_product(x, batch, v, hv);
  auto start = std::chrono::steady_clock::now();
  std::clock_t cpu_start = std::clock();
  for (long long r = 0; r < repeats; ++r) static_cast<void>(model.loss_and_gradient(x, batch, g));
  const double gradient = seconds_since(start) / static_cast<double>(repeats);
  const double gradient_cpu = cpu_seconds_since(cpu_start) / static_cast<double>(repeats);
  start = std::chrono::steady_clock::now();
  cpu_start = std::clock();
  for (long long r = 0; r < repeats; ++r) model.hessian_vector_product(x, batch, v, hv);
  const double product = seconds_since(start) / static_cast<double>(repeats);
  const double product_cpu = cpu_seconds_since(cpu_start) / static_cast<double>(repeats);
  // The copies alone: n scalars into a flat tensor and n out, as the adapter does them.
  const torch::Tensor flat = torch::zeros({static_cast<std::int64_t>(n)}, torch::kFloat32);
  const long long copy_repeats = 2000;
  start = std::chrono::steady_clock::now();
  for (long long r = 0; r < copy_repeats; ++r) {
    Eigen::Map<Eigen::VectorXf>(flat.data_ptr<float>(), n) = x;
    g = Eigen::Map<const Eigen::VectorXf>(flat.data_ptr<float>(), n);
  }
  const double copy = seconds_since(start) / static_cast<double>(copy_repeats) / 2.0;
  std::printf("n = %lld, batch %lld, %d torch threads, %lld repeats\n", static_cast<long long>(n),
              static_cast<long long>(batch.size()), torch::get_num_threads(), repeats);
  std::printf("wall: gradient %.3f ms, exact HVP %.3f ms (%.2fx the gradient)\n", 1e3 * gradient,
              1e3 * product, product / gradient);
  std::printf("CPU:  gradient %.3f ms, exact HVP %.3f ms (%.2fx the gradient)\n",
              1e3 * gradient_cpu, 1e3 * product_cpu, product_cpu / gradient_cpu);
  std::printf(
      "one flat copy of n floats %.2f us: %.3f%% of a gradient (2 copies), %.3f%% of an "
      "HVP (3 copies)\n",
      1e6 * copy, 100.0 * 2.0 * copy / gradient, 100.0 * 3.0 * copy / product);
}

int run(const config& c) {
  torch::set_num_threads(c.threads);
  torch::manual_seed(c.seed);
  dho2::train_test_sets<float> data;
  if (c.synthetic) {
    data = dho2::make_teacher_classification<float>(
        2000, 500, 784, 10, c.seed, {.inputs = dho2::input_distribution::unit_uniform});
  } else {
    data = dho2::load_fashion_mnist<float>(c.data);
  }
  data.train = first(data.train, c.train_size);
  data.test = first(data.test, c.test_size);

  // The LibTorch side: a module (any torch::nn::Module would do) and its loss on DHO2's batches.
  const cnn_model model(dho2::torch_lenet(10, torch::kFloat32),
                        dho2::torch_cross_entropy{{1, 28, 28}}, {.name = "lenet"});
  dho2::shuffling_batcher<float> batches(data.train, c.batch, c.seed);
  if (c.measure > 0) {
    batches.begin_epoch(0);
    measure(model, batches.batch(0), c.measure);
    return 0;
  }

  // FOSI-Adam: 5 curvature directions, estimated before step 49 and then every 100 steps.
  dho2::options opts;
  opts.k = 5;
  opts.warmup = 50;
  opts.refresh_every = 100;
  dho2::optimizer<float> opt(opts, {.base = {.learning_rate = c.lr}});
  Eigen::VectorXf x = model.initial_point();
  const dho2::classification_batch<float> test{data.test.inputs, data.test.labels};
  const double initial_test_loss = dho2::torch_chunked_loss(model, x, test);
  std::printf(
      "LeNet CNN, %lld parameters (%s), %lld training samples, batch %lld, %d torch "
      "threads\n",
      static_cast<long long>(model.num_parameters()), model.structure().c_str(),
      static_cast<long long>(data.train.size()), c.batch, c.threads);

  const auto start = std::chrono::steady_clock::now();
  dho2::classification_batch<float> batch;
  long long step = 0;
  for (dho2::index epoch = 0; step < c.steps; ++epoch) {
    batches.begin_epoch(epoch);
    for (dho2::index i = 0; i < batches.num_batches() && step < c.steps; ++i, ++step) {
      batches.fill_batch(i, batch);
      opt.step(model, x, batch);
      if ((step + 1) % 50 == 0) {
        std::printf("step %4lld  epoch %lld  loss %.4f  %.1f s\n", step + 1,
                    static_cast<long long>(epoch), opt.last_loss(), seconds_since(start));
      }
    }
  }
  const double train_seconds = seconds_since(start);

  // Evaluation with LibTorch: a module with the trained parameters.
  dho2::torch_lenet trained = model.make_module(x);
  trained->eval();
  const double accuracy = dho2::torch_accuracy(trained, test, {1, 28, 28});
  std::printf("%s\n", opt.get_summary().brief_report().c_str());
  const double test_loss = dho2::torch_chunked_loss(model, x, test);
  std::printf(
      "test accuracy %.4f, test loss %.4f (initially %.4f) on %lld samples after %lld "
      "steps (%.1f s of training)\n",
      accuracy, test_loss, initial_test_loss, static_cast<long long>(test.size()), step,
      train_seconds);
  // What CTest checks: training lowered the test loss.
  return test_loss < initial_test_loss ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse(argc, argv));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "torch_cnn: error: %s\n", e.what());
    return 2;
  }
}
