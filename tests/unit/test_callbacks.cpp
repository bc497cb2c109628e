// Tests of optimizer::optimize's callback protocol (include/dho2/callbacks/events.hpp) and of the
// shipped callbacks (evaluate, early_stop_at, csv_history, progress_bar), driven by a tiny model
// whose every number is known: f(x) = ½‖x‖², plain SGD with η = 0.5, so each step halves x and
// each epoch of 2 batches quarters it. From x₀ = (1, 0):
//   epoch 1: losses 0.5, 0.125      → train_loss 0.3125,          ‖x‖ = 0.25
//   epoch 2: losses 0.03125, 0.0078125 → train_loss 0.01953125,   ‖x‖ = 0.0625
//   epoch 3: losses 0.001953125, 0.00048828125 → 0.001220703125,  ‖x‖ = 0.015625
#include <dho2/base/sgd.hpp>
#include <dho2/callbacks/callbacks.hpp>
#include <dho2/core/errors.hpp>
#include <dho2/fosi/optimizer.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace {

// f(x) = ½‖x‖² on R²; the batch only says which (epoch, batch) it is.
struct tiny_model {
  using scalar_type = double;
  struct batch_type {
    dho2::index epoch = -1;
    dho2::index index = -1;
  };
  [[nodiscard]] dho2::index num_parameters() const { return 2; }
  double loss_and_gradient(dho2::const_vector_ref<double> x, const batch_type& /*batch*/,
                           dho2::vector_ref<double> g) const {
    g = x;
    return 0.5 * x.squaredNorm();
  }
};

// A batch_source of `batches` batches per epoch that logs begin_epoch.
struct tiny_batches {
  dho2::index batches = 2;
  std::vector<std::string>* log = nullptr;
  dho2::index epoch = -1;

  [[nodiscard]] dho2::index num_batches() const { return batches; }
  void begin_epoch(dho2::index e) {
    epoch = e;
    if (log != nullptr) log->push_back("begin_epoch " + std::to_string(e));
  }
  void fill_batch(dho2::index i, tiny_model::batch_type& b) const { b = {epoch, i}; }
};

using sgd_optimizer = dho2::optimizer<double, dho2::default_policies::with_base<dho2::sgd>>;

sgd_optimizer make_optimizer() {
  dho2::options opts;
  opts.use_curvature = false;
  return sgd_optimizer(opts, {.base = {.learning_rate = 0.5}});
}

dho2::vector<double> start() { return dho2::vector<double>::Unit(2, 0); }

// Shortest text that reads back exactly.
std::string num(double v) {
  char buf[64];
  return std::string(buf, std::to_chars(buf, buf + sizeof buf, v).ptr);
}

// Logs every hook with the facts it was given.
struct recorder {
  std::vector<std::string>* log;
  void on_begin(const dho2::run_info& info) {
    log->push_back("begin n=" + std::to_string(info.parameters) +
                   " epochs=" + std::to_string(info.epochs) +
                   " per_epoch=" + std::to_string(info.batches_per_epoch));
  }
  void on_step(const dho2::step_info<double>& info) {
    log->push_back("step " + std::to_string(info.epoch) + "." + std::to_string(info.batch) + "/" +
                   std::to_string(info.batches_per_epoch) +
                   " it=" + std::to_string(info.iteration) + " loss=" + num(info.loss) +
                   " x=" + num(info.parameters(0)) +
                   (info.status == dho2::step_status::taken ? "" : " not-taken"));
  }
  void on_epoch_end(dho2::epoch_info<double>& info) {
    log->push_back("epoch_end " + std::to_string(info.epoch) + "/" + std::to_string(info.epochs) +
                   " it=" + std::to_string(info.iterations) +
                   " train_loss=" + num(info.train_loss) + " x=" + num(info.parameters(0)));
  }
  void on_end(const dho2::summary& s) {
    log->push_back("end " + std::string(dho2::to_string(s.termination)));
  }
};

// Counts hooks; on_step asks to stop at iteration `stop_at` (never if negative).
struct counter {
  int begins = 0, steps = 0, epoch_ends = 0, ends = 0;
  dho2::index stop_at = -1;
  void on_begin(const dho2::run_info& /*info*/) { ++begins; }
  bool on_step(const dho2::step_info<double>& info) {
    ++steps;
    return info.iteration == stop_at;
  }
  void on_epoch_end(const dho2::epoch_info<double>& /*info*/) { ++epoch_ends; }
  void on_end(const dho2::summary& /*s*/) { ++ends; }
};

// A callback with no hooks at all: allowed, and ignored.
struct no_hooks {};

// Sets "first_only" at the first epoch end and "late" from the second one on.
struct metric_setter {
  void on_epoch_end(dho2::epoch_info<double>& info) {
    if (info.epoch == 0) info.set_metric("first_only", 1.5);
    if (info.epoch >= 1) info.set_metric("late", 2.0);
  }
};

// A unique path in the temporary directory, removed when the guard goes out of scope.
struct temp_file {
  std::filesystem::path path;
  explicit temp_file(const std::string& stem) {
    std::random_device rd;
    const auto ticks = std::chrono::steady_clock::now().time_since_epoch().count();
    path = std::filesystem::temp_directory_path() /
           ("dho2_" + stem + "_" + std::to_string(ticks) + "_" + std::to_string(rd()) + ".csv");
  }
  temp_file(const temp_file&) = delete;
  temp_file& operator=(const temp_file&) = delete;
  ~temp_file() {
    std::error_code ec;
    std::filesystem::remove(path, ec);
  }
};

std::vector<std::string> read_lines(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// Splits a CSV row without quoted fields.
std::vector<std::string> split_fields(const std::string& row) {
  std::vector<std::string> fields;
  std::string field;
  for (const char c : row) {
    if (c == ',') {
      fields.push_back(field);
      field.clear();
    } else {
      field += c;
    }
  }
  fields.push_back(field);
  return fields;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

TEST_CASE("callbacks: hooks run in order, once per event, in the order the callbacks are given") {
  std::vector<std::string> log;
  tiny_batches batches{.batches = 2, .log = &log};
  auto opt = make_optimizer();
  dho2::vector<double> x = start();
  counter count;
  const dho2::summary s =
      opt.optimize(tiny_model{}, x, batches, 2, recorder{&log}, count, no_hooks{});

  const std::vector<std::string> expected = {
      "begin n=2 epochs=2 per_epoch=2",
      "begin_epoch 0",
      "step 0.0/2 it=0 loss=0.5 x=0.5",
      "step 0.1/2 it=1 loss=0.125 x=0.25",
      "epoch_end 0/2 it=2 train_loss=0.3125 x=0.25",
      "begin_epoch 1",
      "step 1.0/2 it=2 loss=0.03125 x=0.125",
      "step 1.1/2 it=3 loss=0.0078125 x=0.0625",
      "epoch_end 1/2 it=4 train_loss=0.01953125 x=0.0625",
      "end completed",
  };
  CHECK(log == expected);
  CHECK(count.begins == 1);
  CHECK(count.steps == 4);
  CHECK(count.epoch_ends == 2);
  CHECK(count.ends == 1);
  CHECK(s.termination == dho2::termination_type::completed);
  CHECK(s.epochs == 2);
  CHECK(s.iterations == 4);
  CHECK(s.final_loss == 0.01953125);
  CHECK(x(0) == 0.0625);
}

TEST_CASE("callbacks: a bool-returning on_step stops the run") {
  tiny_batches batches;
  auto opt = make_optimizer();
  dho2::vector<double> x = start();
  counter count{.stop_at = 2};  // the first step of the second epoch
  const dho2::summary s = opt.optimize(tiny_model{}, x, batches, 5, count);
  CHECK(s.termination == dho2::termination_type::stopped_by_callback);
  CHECK(s.iterations == 3);
  CHECK(count.begins == 1);
  CHECK(count.steps == 3);
  CHECK(count.ends == 1);
  CHECK(x(0) == 0.125);
}

TEST_CASE("callbacks: early_stop_at stops at the epoch the metric reaches the target") {
  tiny_batches batches;
  dho2::vector<double> x = start();
  auto norm = [](dho2::const_vector_ref<double> p) { return p.norm(); };
  auto closeness = [](dho2::const_vector_ref<double> p) { return 1.0 - p.norm(); };

  SUBCASE("minimize: ‖x‖ = 0.25, 0.0625, 0.015625 <= 0.05 at epoch 3") {
    auto opt = make_optimizer();
    dho2::early_stop_at stop{"norm", 0.05, dho2::metric_direction::minimize};
    const auto s = opt.optimize(tiny_model{}, x, batches, 10, dho2::evaluate("norm", norm), stop);
    CHECK(s.termination == dho2::termination_type::stopped_by_callback);
    CHECK(s.epochs == 3);
    CHECK(s.iterations == 6);
    CHECK(stop.reached());
    CHECK(stop.reached_epoch() == 3);
    CHECK(stop.reached_value() == 0.015625);
    CHECK(stop.reached_seconds() >= 0.0);
    CHECK(stop.reached_seconds() <= s.total_seconds);
    CHECK(x(0) == 0.015625);
  }
  SUBCASE("maximize (default), inclusive: 1 − ‖x‖ = 0.75, 0.9375 >= 0.9375 at epoch 2") {
    auto opt = make_optimizer();
    dho2::early_stop_at stop{"closeness", 0.9375};
    CHECK(stop.direction() == dho2::metric_direction::maximize);
    const auto s =
        opt.optimize(tiny_model{}, x, batches, 10, dho2::evaluate("closeness", closeness), stop);
    CHECK(s.termination == dho2::termination_type::stopped_by_callback);
    CHECK(s.epochs == 2);
    CHECK(stop.reached_epoch() == 2);
    CHECK(stop.reached_value() == 0.9375);
  }
  SUBCASE("train_loss means epoch_info::train_loss: 0.3125, 0.01953125 <= 0.02 at epoch 2") {
    auto opt = make_optimizer();
    dho2::early_stop_at stop{"train_loss", 0.02, dho2::metric_direction::minimize};
    const auto s = opt.optimize(tiny_model{}, x, batches, 10, stop);
    CHECK(s.epochs == 2);
    CHECK(stop.reached_value() == 0.01953125);
  }
  SUBCASE("a missing metric never stops") {
    auto opt = make_optimizer();
    dho2::early_stop_at stop{"absent", 0.0, dho2::metric_direction::minimize};
    const auto s = opt.optimize(tiny_model{}, x, batches, 4, stop);
    CHECK(s.termination == dho2::termination_type::completed);
    CHECK(s.epochs == 4);
    CHECK_FALSE(stop.reached());
    CHECK(stop.reached_epoch() == 0);
    CHECK(std::isnan(stop.reached_seconds()));
  }
  SUBCASE("a NaN metric never stops") {
    auto opt = make_optimizer();
    dho2::early_stop_at stop{"bad", 0.0};
    const auto s = opt.optimize(
        tiny_model{}, x, batches, 3,
        dho2::evaluate("bad", [](auto) { return std::numeric_limits<double>::quiet_NaN(); }), stop);
    CHECK(s.termination == dho2::termination_type::completed);
    CHECK_FALSE(stop.reached());
  }
  SUBCASE("placed before the evaluate that sets its metric, it sees no metric") {
    auto opt = make_optimizer();
    dho2::early_stop_at stop{"norm", 1.0, dho2::metric_direction::minimize};
    const auto s = opt.optimize(tiny_model{}, x, batches, 3, stop, dho2::evaluate("norm", norm));
    CHECK(s.termination == dho2::termination_type::completed);
    CHECK_FALSE(stop.reached());
  }
  SUBCASE("the record describes the last run") {
    auto opt = make_optimizer();
    dho2::early_stop_at stop{"norm", 0.05, dho2::metric_direction::minimize};
    opt.optimize(tiny_model{}, x, batches, 10, dho2::evaluate("norm", norm), stop);
    REQUIRE(stop.reached());
    auto opt2 = make_optimizer();
    dho2::vector<double> y = start();
    opt2.optimize(tiny_model{}, y, batches, 1, dho2::evaluate("norm", norm), stop);
    CHECK_FALSE(stop.reached());
  }
}

TEST_CASE("callbacks: evaluate sets a metric that csv_history writes, one flushed row per epoch") {
  const temp_file file("history");
  tiny_batches batches;
  auto opt = make_optimizer();
  dho2::vector<double> x = start();
  dho2::csv_history csv(file.path.string());
  CHECK(csv.path() == file.path.string());
  CHECK(std::filesystem::exists(file.path));  // opened at construction

  // Reads the file back right after csv_history's hook: the row must already be on disk.
  std::vector<std::size_t> lines_seen;
  struct reader {
    const std::filesystem::path* path;
    std::vector<std::size_t>* seen;
    void on_epoch_end(const dho2::epoch_info<double>& /*info*/) {
      seen->push_back(read_lines(*path).size());
    }
  } check_flushed{&file.path, &lines_seen};

  const auto s = opt.optimize(
      tiny_model{}, x, batches, 3,
      dho2::evaluate("norm", [](dho2::const_vector_ref<double> p) { return p.norm(); }),
      dho2::evaluate("a,b", [](dho2::const_vector_ref<double> p) { return 1.0 - p.norm(); }),
      metric_setter{}, csv, check_flushed);
  REQUIRE(s.epochs == 3);
  CHECK(lines_seen == std::vector<std::size_t>{2, 3, 4});
  CHECK(csv.rows() == 3);
  CHECK(csv.metric_columns() == std::vector<std::string>{"norm", "a,b", "first_only"});

  const auto lines = read_lines(file.path);
  REQUIRE(lines.size() == 4);
  // Columns fixed by the first epoch: "late" (set from epoch 2 on) is not a column; a name with
  // a comma is quoted.
  CHECK(lines[0] == "epoch,iterations,train_loss,elapsed_s,norm,\"a,b\",first_only");
  // epoch, iterations, train_loss, norm, 1 − norm, first_only (missing after epoch 1 → empty).
  const double train_loss[] = {0.3125, 0.01953125, 0.001220703125};
  const double norms[] = {0.25, 0.0625, 0.015625};
  double previous_elapsed = 0.0;
  for (std::size_t r = 0; r < 3; ++r) {
    CAPTURE(r);
    const auto f = split_fields(lines[r + 1]);
    REQUIRE(f.size() == 7);
    CHECK(f[0] == std::to_string(r + 1));
    CHECK(f[1] == std::to_string(2 * (r + 1)));
    CHECK(std::stod(f[2]) == train_loss[r]);
    const double elapsed = std::stod(f[3]);
    CHECK(elapsed >= previous_elapsed);
    previous_elapsed = elapsed;
    CHECK(std::stod(f[4]) == norms[r]);
    CHECK(std::stod(f[5]) == 1.0 - norms[r]);
    CHECK(f[6] == (r == 0 ? "1.5" : ""));
  }
}

TEST_CASE("callbacks: csv_history on an unwritable path throws naming the path") {
  const std::string path = "/nonexistent-dho2-directory/sub/history.csv";
  std::string message;
  try {
    dho2::csv_history csv(path);
  } catch (const dho2::error& e) {
    message = e.what();
  }
  CAPTURE(message);
  CHECK(contains(message, path));
  CHECK(contains(message, "csv_history"));
}

TEST_CASE("callbacks: progress_bar in plain mode writes one line per epoch with loss and metric") {
  tiny_batches batches;
  auto opt = make_optimizer();
  dho2::vector<double> x = start();
  std::ostringstream os;
  dho2::progress_bar bar(os, dho2::progress_mode::plain);
  CHECK_FALSE(bar.draws_bar());
  opt.optimize(tiny_model{}, x, batches, 3,
               dho2::evaluate("test_accuracy",
                              [](dho2::const_vector_ref<double> p) { return 1 - p.norm(); }),
               bar);

  const std::string out = os.str();
  CAPTURE(out);
  CHECK_FALSE(contains(out, "\r"));
  const auto lines = split_lines(out);
  REQUIRE(lines.size() == 4);  // 3 epochs + the final line
  CHECK(lines[0].rfind("epoch 1/3", 0) == 0);
  CHECK(contains(lines[0], "train_loss 0.3125"));
  CHECK(contains(lines[0], "test_accuracy 0.75"));
  CHECK(contains(lines[0], "elapsed "));
  CHECK(lines[1].rfind("epoch 2/3", 0) == 0);
  CHECK(contains(lines[1], "train_loss 0.0195"));
  CHECK(contains(lines[1], "test_accuracy 0.9375"));
  CHECK(lines[2].rfind("epoch 3/3", 0) == 0);
  CHECK(contains(lines[2], "train_loss 0.0012207"));
  CHECK(contains(lines[2], "test_accuracy 0.984375"));
  CHECK(lines[3].rfind("done: completed", 0) == 0);
  CHECK(contains(lines[3], "3 epochs, 6 steps"));
}

TEST_CASE("callbacks: progress_bar plain step lines every N batches") {
  tiny_batches batches{.batches = 4};
  auto opt = make_optimizer();
  dho2::vector<double> x = start();
  std::ostringstream os;
  opt.optimize(tiny_model{}, x, batches, 2, dho2::progress_bar(os, dho2::progress_mode::plain, 2));
  const auto lines = split_lines(os.str());
  CAPTURE(os.str());
  // Per epoch: batch 2/4, batch 4/4, the epoch line; then the final line.
  REQUIRE(lines.size() == 7);
  CHECK(lines[0].rfind("epoch 1/2  batch 2/4  loss 0.125", 0) == 0);  // ½·0.5² before step 2
  CHECK(lines[1].rfind("epoch 1/2  batch 4/4", 0) == 0);
  CHECK(lines[2].rfind("epoch 1/2  train_loss", 0) == 0);
  CHECK(lines[3].rfind("epoch 2/2  batch 2/4", 0) == 0);
  CHECK(lines[5].rfind("epoch 2/2  train_loss", 0) == 0);
  CHECK(lines[6].rfind("done: completed", 0) == 0);
}

TEST_CASE("callbacks: progress_bar on a C stream that is not a terminal writes plain lines") {
  std::FILE* file = std::tmpfile();
  REQUIRE(file != nullptr);
  {
    tiny_batches batches;
    auto opt = make_optimizer();
    dho2::vector<double> x = start();
    dho2::progress_bar bar(file);  // automatic: a temporary file is not a terminal
    CHECK_FALSE(bar.draws_bar());
    opt.optimize(tiny_model{}, x, batches, 2, bar);
  }
  std::rewind(file);
  std::string out;
  for (int c = std::fgetc(file); c != EOF; c = std::fgetc(file)) out += static_cast<char>(c);
  std::fclose(file);
  CAPTURE(out);
  const auto lines = split_lines(out);
  REQUIRE(lines.size() == 3);
  CHECK(lines[0].rfind("epoch 1/2  train_loss 0.3125", 0) == 0);
  CHECK(lines[1].rfind("epoch 2/2", 0) == 0);
  CHECK(lines[2].rfind("done: completed", 0) == 0);
  CHECK_THROWS_AS(dho2::progress_bar(static_cast<std::FILE*>(nullptr)), dho2::invalid_options);
}

TEST_CASE("callbacks: progress_bar in bar mode redraws in place, throttled") {
  constexpr dho2::index per_epoch = 200;
  tiny_batches batches{.batches = per_epoch};
  auto opt = make_optimizer();
  dho2::vector<double> x = start();
  std::ostringstream os;
  dho2::progress_bar bar(os, dho2::progress_mode::bar);
  CHECK(bar.draws_bar());
  const auto s = opt.optimize(tiny_model{}, x, batches, 3, bar);
  const std::string out = os.str();

  // Per epoch: a redraw at its first batch, at most one per 0.1 s after that, and the epoch line.
  const auto redraws = static_cast<double>(std::count(out.begin(), out.end(), '\r'));
  CHECK(redraws >= 6.0);
  CHECK(redraws <= 3.0 * 2.0 + s.total_seconds / dho2::progress_bar::redraw_interval_seconds + 3.0);
  CHECK(redraws < 3.0 * static_cast<double>(per_epoch));

  // Each epoch ends its line: the text after the last '\r' of each line is the epoch line.
  const auto lines = split_lines(out);
  REQUIRE(lines.size() == 4);
  for (std::size_t e = 0; e < 3; ++e) {
    CAPTURE(e);
    CHECK(lines[e].front() == '\r');
    const std::string last = lines[e].substr(lines[e].rfind('\r') + 1);
    CHECK(last.rfind("epoch " + std::to_string(e + 1) + "/3  train_loss", 0) == 0);
    // The first draw of the epoch is a bar: "epoch e/3 [#...-] 1/200 ... loss ...".
    CHECK(contains(lines[e], "epoch " + std::to_string(e + 1) + "/3 ["));
    CHECK(contains(lines[e], "] 1/200"));
    CHECK(contains(lines[e], "steps/s  ETA "));
  }
  CHECK(lines[3].rfind("done: completed", 0) == 0);
}
