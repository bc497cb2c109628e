// Checkpoint and resume: T steps + save + load into a fresh optimizer + T steps equals 2T steps
// bit for bit (mode S at P = 1 2, consensus ADMM at P = 1 2, DiLoCo at P = 2, background
// schedule), with curvature
// estimates before and after the save; every reader defect is refused naming the file and the
// defect, changing nothing; an interrupted save leaves the previous checkpoint in use.
#include "distributed_fixture.hpp"
#include <dho2/admm/consensus.hpp>
#include <dho2/admm/diloco.hpp>
#include <dho2/base/heavy_ball.hpp>
#include <dho2/checkpoint/directory.hpp>
#include <dho2/checkpoint/file.hpp>
#include <dho2/data/batcher.hpp>
#include <dho2/dho2.hpp>
#include <dho2/schedule/background.hpp>
#include <dho2/schedule/split.hpp>
#include <dho2/transport/inproc.hpp>

#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace {

namespace fs = std::filesystem;
using Eigen::VectorXd;
using problem = dho2_test::mlp_problem;

// T: estimates run before steps 2 and 6 (before the save) and 10 (after it). The save falls
// between two estimates, after one that anchored a non-zero Newton velocity, so the velocity
// (anchor, decay, coefficients), not only the curvature, must be carried over.
constexpr int half = 7;
constexpr dho2::index global_batch = 24;

// The directory under which the tests of this process write, removed when the program ends.
fs::path test_root() {
  return fs::temp_directory_path() / ("dho2_checkpoint_test_" + std::to_string(::getpid()));
}
const struct remove_test_root {
  remove_test_root() = default;
  remove_test_root(const remove_test_root&) = delete;
  remove_test_root& operator=(const remove_test_root&) = delete;
  ~remove_test_root() {
    std::error_code ec;
    fs::remove_all(test_root(), ec);
  }
} remove_test_root_at_exit;

// A fresh, empty directory for one test.
fs::path fresh_dir(std::string_view name) {
  const fs::path dir = test_root() / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::vector<char> file_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void put_bytes(const fs::path& p, const std::vector<char>& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

bool bitwise_equal(const VectorXd& a, const VectorXd& b) {
  return a.size() == b.size() && (a.array() == b.array()).all();
}

// The message of the checkpoint_error `f()` throws, or "" if it throws none.
template <class F>
std::string checkpoint_error_of(F&& f) {
  try {
    f();
  } catch (const dho2::checkpoint_error& e) {
    return e.what();
  }
  return "";
}

// Steps `opt` on global batches [from, to) of `batches`, on rank `rank`'s slices.
template <class Optimizer, class Batches>
void run_steps(Optimizer& opt, const problem& p, VectorXd& x, Batches& batches, int from, int to,
               int rank = 0, int ranks = 1) {
  dho2::classification_batch<double> batch;
  for (int s = from; s < to; ++s) {
    batches.fill_batch(s, rank, ranks, batch);
    opt.step(p.model, x, batch);
  }
}

struct rank_result {
  VectorXd x;
  VectorXd z;
  dho2::summary summary;
  double penalty = 0.0;
  dho2::data_position position;
  dho2::summary loaded;  // the summary right after load_checkpoint
};

// The three runs of a resume test on `ranks` in-process ranks with optimizers built by
// `make(transport)`: 2T steps straight; T steps and a save; a fresh optimizer that loads and
// takes T more steps. Checks the resumed parameters (and, in mode A, consensus points) equal
// the straight run's bit for bit on every rank.
template <class Make>
void check_resume_equals_straight_run(int ranks, const fs::path& dir, Make make) {
  const problem p;
  // Each rank has its own batcher (begin_epoch regenerates the order: sharing one between rank
  // threads would be a data race).
  const auto make_batches = [&] {
    return dho2::shuffling_batcher<double>(p.data.train, global_batch, 3);
  };
  const auto straight = dho2_test::on_inproc_ranks(ranks, [&](dho2::inproc_transport& t) {
    const int rank = t.rank();
    auto batches = make_batches();
    auto opt = make(std::move(t));
    rank_result r{p.x0, {}, {}, 0.0, {}, {}};
    run_steps(*opt, p, r.x, batches, 0, 2 * half, rank, ranks);
    r.z = opt->consensus_point();
    r.summary = opt->get_summary();
    r.penalty = opt->penalty();
    return r;
  });
  const auto saved = dho2_test::on_inproc_ranks(ranks, [&](dho2::inproc_transport& t) {
    const int rank = t.rank();
    auto batches = make_batches();
    auto opt = make(std::move(t));
    rank_result r{p.x0, {}, {}, 0.0, {}, {}};
    run_steps(*opt, p, r.x, batches, 0, half, rank, ranks);
    opt->save_checkpoint(dir, r.x, {.epoch = 0, .batch = half});
    r.summary = opt->get_summary();
    return r;
  });
  const auto resumed = dho2_test::on_inproc_ranks(ranks, [&](dho2::inproc_transport& t) {
    const int rank = t.rank();
    auto batches = make_batches();
    auto opt = make(std::move(t));
    rank_result r{VectorXd::Zero(p.x0.size()), {}, {}, 0.0, {}, {}};
    r.position = opt->load_checkpoint(dir, r.x);
    r.loaded = opt->get_summary();
    batches.begin_epoch(r.position.epoch);  // same order: regenerated from (seed, epoch)
    run_steps(*opt, p, r.x, batches, static_cast<int>(r.position.batch), 2 * half, rank, ranks);
    r.z = opt->consensus_point();
    r.summary = opt->get_summary();
    r.penalty = opt->penalty();
    return r;
  });
  for (int rank = 0; rank < ranks; ++rank) {
    const auto i = static_cast<std::size_t>(rank);
    INFO("P = ", ranks, ", rank ", rank);
    INFO("expected: at least one curvature estimate before the save (got ",
         saved[i].summary.curvature_estimates, ") and one after it (total ",
         resumed[i].summary.curvature_estimates, ")");
    CHECK(saved[i].summary.curvature_estimates >= 1);
    CHECK(resumed[i].summary.curvature_estimates > saved[i].summary.curvature_estimates);
    INFO("expected: the data position saved (epoch 0, batch ", half, ") back, got (",
         resumed[i].position.epoch, ", ", resumed[i].position.batch, ")");
    CHECK(resumed[i].position.epoch == 0);
    CHECK(resumed[i].position.batch == half);
    INFO("expected: resumed parameters bit-identical to the straight run's; max |diff| = ",
         dho2_test::max_abs_diff(resumed[i].x, straight[i].x));
    CHECK(bitwise_equal(resumed[i].x, straight[i].x));
    CHECK(bitwise_equal(resumed[i].z, straight[i].z));
    CHECK(resumed[i].penalty == straight[i].penalty);
    CHECK(resumed[i].summary.iterations == straight[i].summary.iterations);
    CHECK(resumed[i].summary.steps == straight[i].summary.steps);
    CHECK(resumed[i].summary.curvature_estimates == straight[i].summary.curvature_estimates);
    CHECK(resumed[i].summary.hvps == straight[i].summary.hvps);
    CHECK(resumed[i].summary.estimates.size() == straight[i].summary.estimates.size());
    CHECK(resumed[i].summary.admm_rounds.size() == straight[i].summary.admm_rounds.size());
    // (The total communication goes on after the write: saving has collectives of its own.)
    INFO("expected: the estimates' communication saved back bit for bit (",
         saved[i].summary.estimate_communication_seconds, " s), got ",
         resumed[i].loaded.estimate_communication_seconds, " s");
    CHECK(resumed[i].loaded.estimate_communication_seconds ==
          saved[i].summary.estimate_communication_seconds);
  }
}

using inproc_adam = dho2::default_policies::with_transport<dho2::inproc_transport>;
using inproc_admm = dho2::default_policies::with_base<dho2::heavy_ball>::with_transport<
    dho2::inproc_transport>::with_admm<dho2::consensus_admm>;
using mode_s_optimizer = dho2::optimizer<double, inproc_adam>;

auto make_mode_s(dho2::inproc_transport t) {
  return std::make_unique<mode_s_optimizer>(
      dho2_test::fosi_test_options(),
      inproc_adam{.base = {.learning_rate = 0.01}, .transport = std::move(t)});
}

// A single-process optimizer with the options of the mode S runs (it reads their P = 1 files).
using single = dho2::optimizer<double>;
std::unique_ptr<single> make_single(dho2::options o = dho2_test::fosi_test_options()) {
  return std::make_unique<single>(o, dho2::default_policies{.base = {.learning_rate = 0.01}});
}

// Saves a P = 1 mode S checkpoint after `half` steps into `dir`; returns the parameters saved.
VectorXd save_good(const fs::path& dir) {
  const problem p;
  dho2::shuffling_batcher<double> batches(p.data.train, global_batch, 3);
  auto opt = make_single();
  VectorXd x = p.x0;
  run_steps(*opt, p, x, batches, 0, half);
  opt->save_checkpoint(dir, x, {.epoch = 0, .batch = half});
  return x;
}

// Copies every file of `from` into a fresh directory `name`.
fs::path copy_dir(const fs::path& from, std::string_view name) {
  const fs::path to = fresh_dir(name);
  for (const auto& e : fs::directory_iterator(from))
    fs::copy_file(e.path(), to / e.path().filename());
  return to;
}

// Every file of a directory and its bytes.
std::vector<std::pair<std::string, std::vector<char>>> snapshot_dir(const fs::path& dir) {
  std::vector<std::pair<std::string, std::vector<char>>> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    out.emplace_back(e.path().filename().string(), file_bytes(e.path()));
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Loading `dir` into a fresh single-process optimizer throws checkpoint_error naming `file` and
// containing `defect`; x and every file of `dir` are unchanged.
void check_load_refused(const fs::path& dir, const fs::path& file, std::string_view defect,
                        dho2::options o = dho2_test::fosi_test_options(),
                        dho2::index n = problem{}.x0.size()) {
  auto opt = make_single(o);
  const VectorXd sentinel = VectorXd::Constant(n, 0.25);
  VectorXd x = sentinel;
  const auto files_before = snapshot_dir(dir);
  const std::string message = checkpoint_error_of([&] { opt->load_checkpoint(dir, x); });
  INFO("expected a checkpoint_error naming '", file.string(), "' and '", defect, "'; got: '",
       message, "'");
  CHECK(message.find(file.string()) != std::string::npos);
  CHECK(message.find(defect) != std::string::npos);
  INFO("expected: x and the files unchanged by a refused load");
  CHECK(bitwise_equal(x, sentinel));
  CHECK(opt->get_summary().iterations == 0);
  CHECK(opt->eigenvalues().size() == 0);
  CHECK(snapshot_dir(dir) == files_before);
}

// Loads `dir` into a fresh single-process optimizer and checks it gives `expected` at step half.
void check_loads(const fs::path& dir, const VectorXd& expected) {
  auto opt = make_single();
  VectorXd x = VectorXd::Zero(expected.size());
  const auto pos = opt->load_checkpoint(dir, x);
  INFO("expected: the good checkpoint of step ", half, " loads and gives its parameters");
  CHECK(bitwise_equal(x, expected));
  CHECK(opt->get_summary().iterations == half);
  CHECK(pos.batch == half);
}

// Rewrites a checkpoint file through `edit(reader, writer)`, with a valid checksum.
void rewrite(const fs::path& file,
             const std::function<void(const dho2::checkpoint_reader&, dho2::checkpoint_writer&,
                                      const std::string&)>& copy_section) {
  const dho2::checkpoint_reader r(file);
  dho2::checkpoint_writer w(r.identity());
  for (const auto& s : r.sections()) copy_section(r, w, s.name);
  w.write(file);
}

// Copies section `name` unchanged.
void copy_as_is(const dho2::checkpoint_reader& r, dho2::checkpoint_writer& w,
                const std::string& name) {
  for (const auto& s : r.sections()) {
    if (s.name != name) continue;
    switch (s.type) {
      case 1: w.add(name, std::span<const std::uint8_t>(r.read<std::uint8_t>(name))); break;
      case 2: w.add(name, std::span<const std::int64_t>(r.read<std::int64_t>(name))); break;
      case 3: w.add(name, std::span<const std::uint64_t>(r.read<std::uint64_t>(name))); break;
      case 4: w.add(name, std::span<const float>(r.read<float>(name))); break;
      default: w.add(name, std::span<const double>(r.read<double>(name))); break;
    }
  }
}

bool has_temp_files(const fs::path& dir) {
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().filename().string().find(".tmp.") != std::string::npos) return true;
  }
  return false;
}

}  // namespace

TEST_CASE("checkpoint: CRC-32C and the container round-trip") {
  const std::string_view check = "123456789";
  INFO("expected: the CRC-32C check value 0xE3069283");
  CHECK(dho2::crc32c(std::as_bytes(std::span<const char>(check.data(), check.size()))) ==
        0xE3069283U);
  const fs::path dir = fresh_dir("container");
  dho2::checkpoint_writer w(
      {.n = 3, .world_size = 2, .rank = 1, .layout_hash = 7, .options_hash = 9, .step = 42});
  const std::vector<double> v{1.5, -2.0, 3.25};
  w.add("v", std::span<const double>(v));
  w.write(dir / "f");
  const dho2::checkpoint_reader r(dir / "f");
  CHECK(r.identity().n == 3);
  CHECK(r.identity().world_size == 2);
  CHECK(r.identity().rank == 1);
  CHECK(r.identity().step == 42);
  CHECK(r.read<double>("v", 3) == v);
  CHECK_THROWS_WITH_AS((void)r.read<float>("v"), doctest::Contains("holds f64, expected f32"),
                       dho2::checkpoint_error);
}

TEST_CASE("checkpoint: mode S resume equals the straight run bit for bit at P = 1 2") {
  for (int ranks : {1, 2}) {
    check_resume_equals_straight_run(ranks, fresh_dir("mode_s_" + std::to_string(ranks)),
                                     make_mode_s);
  }
}

TEST_CASE("checkpoint: consensus ADMM resume equals the straight run bit for bit at P = 1 2") {
  for (int ranks : {1, 2}) {
    // τ = 4 and a save after 7 steps: the save falls inside a round (local counter 3 of 4);
    // residual balancing changes ρ, which the checkpoint must carry.
    check_resume_equals_straight_run(
        ranks, fresh_dir("admm_" + std::to_string(ranks)), [](dho2::inproc_transport t) {
          return std::make_unique<dho2::optimizer<double, inproc_admm>>(
              dho2_test::fosi_test_options(),
              inproc_admm{
                  .base = {.learning_rate = 0.01},
                  .transport = std::move(t),
                  .admm = {.rho = 0.5, .tau = 4, .residual_balancing = true, .balance_mu = 1.5}});
        });
  }
}

TEST_CASE("checkpoint: DiLoCo resume equals the straight run bit for bit at P = 2") {
  // τ = 4 and a save after 7 steps: inside the second round, after one outer step, so the outer
  // velocity, x_g and the inner Adam states must all be carried.
  using diloco_policies =
      dho2::default_policies::with_transport<dho2::inproc_transport>::with_admm<dho2::diloco>;
  check_resume_equals_straight_run(2, fresh_dir("diloco_2"), [](dho2::inproc_transport t) {
    return std::make_unique<dho2::optimizer<double, diloco_policies>>(
        dho2_test::fosi_test_options(),
        diloco_policies{
            .base = {.learning_rate = 0.01}, .transport = std::move(t), .admm = {.tau = 4}});
  });
}

TEST_CASE(
    "checkpoint: background schedule resumes bit for bit, a save with an estimate in "
    "flight is refused") {
  using policies = dho2::default_policies::with_schedule<dho2::background_schedule>;
  const auto make = [] {
    return std::make_unique<dho2::optimizer<double, policies>>(
        dho2_test::fosi_test_options(),
        policies{.base = {.learning_rate = 0.01},
                 .schedule = {.max_staleness = 2, .on_late = dho2::late_estimate_policy::wait}});
  };
  // Staleness 2: the estimates of steps 2 and 6 are in use before steps 4 and 8, so step 5 is a
  // save point with none in flight (estimates before it: 2; after it: 6).
  constexpr int save_at = 5;
  constexpr int total = 10;
  const problem p;
  dho2::shuffling_batcher<double> batches(p.data.train, global_batch, 3);
  const fs::path dir = fresh_dir("background");
  auto straight = make();
  VectorXd xs = p.x0;
  run_steps(*straight, p, xs, batches, 0, total);

  auto first = make();
  VectorXd x = p.x0;
  run_steps(*first, p, x, batches, 0, 3);  // the estimate of step 2 is due before step 4
  const std::string message = checkpoint_error_of([&] { first->save_checkpoint(dir, x); });
  INFO("expected: a save while an estimate is in flight is refused; got '", message, "'");
  CHECK(message.find("in flight") != std::string::npos);
  CHECK(!dho2::has_checkpoint(dir));
  run_steps(*first, p, x, batches, 3, save_at);
  first->save_checkpoint(dir, x, {.epoch = 0, .batch = save_at});

  auto second = make();
  VectorXd y = VectorXd::Zero(p.x0.size());
  second->load_checkpoint(dir, y);
  run_steps(*second, p, y, batches, save_at, total);
  INFO("expected: resumed parameters bit-identical; max |diff| = ", dho2_test::max_abs_diff(y, xs));
  CHECK(bitwise_equal(y, xs));
  CHECK(second->get_summary().curvature_estimates == straight->get_summary().curvature_estimates);
  CHECK(second->get_summary().max_staleness == 2);
}

TEST_CASE("checkpoint: every file defect is refused naming the file and the defect") {
  const fs::path good = fresh_dir("good");
  const VectorXd saved = save_good(good);
  const fs::path rank_name = dho2::checkpoint_rank_file(good, 0, half).filename();
  const fs::path manifest_name = dho2::checkpoint_manifest_file(good).filename();
  const auto good_files = snapshot_dir(good);
  const std::vector<char> bytes = file_bytes(good / rank_name);
  REQUIRE(bytes.size() > dho2::checkpoint_min_bytes);

  SUBCASE("missing rank file") {
    const fs::path dir = copy_dir(good, "missing_rank");
    fs::remove(dir / rank_name);
    check_load_refused(dir, dir / rank_name, "missing");
  }
  SUBCASE("missing manifest") {
    const fs::path dir = copy_dir(good, "missing_manifest");
    fs::remove(dir / manifest_name);
    check_load_refused(dir, dir / manifest_name, "missing");
  }
  SUBCASE("wrong magic") {
    const fs::path dir = copy_dir(good, "magic");
    auto b = bytes;
    b[0] = 'X';
    put_bytes(dir / rank_name, b);
    check_load_refused(dir, dir / rank_name, "wrong magic");
  }
  SUBCASE("unknown version") {
    const fs::path dir = copy_dir(good, "version");
    auto b = bytes;
    b[8] = 2;
    put_bytes(dir / rank_name, b);
    check_load_refused(dir, dir / rank_name, "unknown format version 2");
  }
  SUBCASE("checksum mismatch, in the header and in the data") {
    for (std::size_t at : {std::size_t{30}, bytes.size() / 2, bytes.size() - 1}) {
      const fs::path dir = copy_dir(good, "checksum");
      auto b = bytes;
      b[at] = static_cast<char>(b[at] ^ 0x10);
      put_bytes(dir / rank_name, b);
      INFO("byte ", at, " flipped");
      check_load_refused(dir, dir / rank_name, "checksum mismatch");
    }
  }
  SUBCASE("truncation at every length") {
    const fs::path dir = copy_dir(good, "truncated");
    const fs::path file = dir / rank_name;
    int refused = 0;
    for (std::size_t len = 0; len < bytes.size(); ++len) {
      // A new file each time: rewriting one in place makes ext4 flush it on every close.
      const fs::path cut = dir / ("cut-" + std::to_string(len));
      put_bytes(cut, std::vector<char>(bytes.begin(), bytes.begin() + static_cast<long>(len)));
      try {
        const dho2::checkpoint_reader r(cut);
      } catch (const dho2::checkpoint_error& e) {
        const std::string m = e.what();
        if (m.find("truncated") != std::string::npos && m.find(cut.string()) != std::string::npos) {
          ++refused;
        } else {
          INFO("length ", len, ": ", m);
          CHECK(false);
        }
      }
      fs::remove(cut);
    }
    INFO("expected: every one of the ", bytes.size(), " shorter lengths refused as truncated");
    CHECK(refused == static_cast<int>(bytes.size()));
    put_bytes(file, std::vector<char>(bytes.begin(), bytes.end() - 1));
    check_load_refused(dir, file, "truncated");
  }
  SUBCASE("trailing bytes") {
    const fs::path dir = copy_dir(good, "trailing");
    auto b = bytes;
    b.push_back('!');
    put_bytes(dir / rank_name, b);
    check_load_refused(dir, dir / rank_name, "trailing bytes");
  }
  SUBCASE("missing section") {
    const fs::path dir = copy_dir(good, "missing_section");
    rewrite(dir / rank_name, [](const auto& r, auto& w, const std::string& name) {
      if (name != "velocity.anchor") copy_as_is(r, w, name);
    });
    check_load_refused(dir, dir / rank_name, "missing section 'velocity.anchor'");
  }
  SUBCASE("section of the wrong size") {
    const fs::path dir = copy_dir(good, "wrong_size");
    rewrite(dir / rank_name, [](const auto& r, auto& w, const std::string& name) {
      if (name != "x") return copy_as_is(r, w, name);
      auto v = r.template read<double>(name);
      v.pop_back();
      w.add(name, std::span<const double>(v));
    });
    const auto n = std::to_string(saved.size());
    check_load_refused(
        dir, dir / rank_name,
        "section 'x' has " + std::to_string(saved.size() - 1) + " elements, expected " + n);
  }
  SUBCASE("other options") {
    dho2::options o = dho2_test::fosi_test_options();
    o.alpha = 0.3;
    check_load_refused(good, good / manifest_name, "options differ", o);
  }
  SUBCASE("other number of parameters") {
    check_load_refused(good, good / manifest_name,
                       "n (number of parameters) differs: the "
                       "checkpoint has " +
                           std::to_string(saved.size()) + ", this job has 40",
                       dho2_test::fosi_test_options(), 40);
  }
  CHECK(snapshot_dir(good) == good_files);
  check_loads(good, saved);
}

TEST_CASE("checkpoint: world size and rank mismatches are refused on every rank") {
  const problem p;
  dho2::shuffling_batcher<double> batches(p.data.train, global_batch, 3);
  const fs::path dir = fresh_dir("two_ranks");
  dho2_test::on_inproc_ranks(2, [&](dho2::inproc_transport& t) {
    const int rank = t.rank();
    auto opt = make_mode_s(std::move(t));
    VectorXd x = p.x0;
    run_steps(*opt, p, x, batches, 0, half, rank, 2);
    opt->save_checkpoint(dir, x);
    return 0;
  });
  // P = 2 checkpoint, P = 1 job.
  check_load_refused(dir, dho2::checkpoint_manifest_file(dir),
                     "world size differs: the checkpoint has 2, this job has 1");
  // Rank files swapped: each rank reads the other's.
  const fs::path swapped = copy_dir(dir, "swapped");
  const auto f0 = dho2::checkpoint_rank_file(swapped, 0, half);
  const auto f1 = dho2::checkpoint_rank_file(swapped, 1, half);
  fs::rename(f0, swapped / "tmp");
  fs::rename(f1, f0);
  fs::rename(swapped / "tmp", f1);
  const auto messages = dho2_test::on_inproc_ranks(2, [&](dho2::inproc_transport& t) {
    auto opt = make_mode_s(std::move(t));
    VectorXd x = p.x0;
    const std::string m = checkpoint_error_of([&] { opt->load_checkpoint(swapped, x); });
    return (m.empty() ? std::string("loaded") : m) + (bitwise_equal(x, p.x0) ? "" : " [x changed]");
  });
  for (int r = 0; r < 2; ++r) {
    const auto& m = messages[static_cast<std::size_t>(r)];
    const std::string expected = "rank differs: the checkpoint has " + std::to_string(1 - r) +
                                 ", this job has " + std::to_string(r);
    INFO("rank ", r, ": expected '", expected, "' naming its file; got '", m, "'");
    CHECK(m.find(expected) != std::string::npos);
    CHECK(m.find(dho2::checkpoint_rank_file(swapped, r, half).string()) != std::string::npos);
    CHECK(m.find("[x changed]") == std::string::npos);
  }
}

TEST_CASE("checkpoint: an interrupted save leaves the previous checkpoint in use") {
  const problem p;
  dho2::shuffling_batcher<double> batches(p.data.train, global_batch, 3);
  const fs::path dir = fresh_dir("interrupted");
  auto opt = make_single();
  VectorXd x = p.x0;
  run_steps(*opt, p, x, batches, 0, half);
  opt->save_checkpoint(dir, x, {.epoch = 0, .batch = half});
  const VectorXd saved = x;
  run_steps(*opt, p, x, batches, half, 2 * half);

  SUBCASE("the new rank file cannot be written") {
    // A directory in the way of the rank file: the write refuses it (a checkpoint file is a
    // regular file or a new one) before any temporary file is made.
    fs::create_directory(dho2::checkpoint_rank_file(dir, 0, 2 * half));
    const std::string message = checkpoint_error_of([&] { opt->save_checkpoint(dir, x); });
    INFO(
        "expected: the save refuses the directory and says the checkpoint was not committed; "
        "got '",
        message, "'");
    CHECK(message.find("is a directory") != std::string::npos);
    CHECK(message.find("not committed") != std::string::npos);
    CHECK(!has_temp_files(dir));
    check_loads(dir, saved);
    fs::remove(dho2::checkpoint_rank_file(dir, 0, 2 * half));
    opt->save_checkpoint(dir, x);  // the next save works and replaces the old checkpoint
    auto fresh = make_single();
    VectorXd y(x.size());
    fresh->load_checkpoint(dir, y);
    CHECK(bitwise_equal(y, x));
    CHECK(!fs::exists(dho2::checkpoint_rank_file(dir, 0, half)));
  }
  SUBCASE("a crash left temporary files and an uncommitted rank file") {
    put_bytes(dir / "rank-0.step-12.dho2ckpt.tmp.999.0", {'t', 'o', 'r', 'n'});
    put_bytes(dir / "manifest.dho2ckpt.tmp.999.1", {'t', 'o', 'r', 'n'});
    put_bytes(dho2::checkpoint_rank_file(dir, 0, 18), {'n', 'e', 'w'});
    check_loads(dir, saved);
    opt->save_checkpoint(dir, x);
    INFO("expected: the next committed save removes the stray files");
    CHECK(!has_temp_files(dir));
    CHECK(!fs::exists(dho2::checkpoint_rank_file(dir, 0, 18)));
  }
  SUBCASE("a failure between the temporary write and the rename") {
    const fs::path target = dho2::checkpoint_manifest_file(dir);
    const auto before = file_bytes(target);
    dho2::checkpoint_writer w(
        {.n = 1, .world_size = 1, .rank = 0, .layout_hash = 0, .options_hash = 0, .step = 99});
    fs::path temp;
    CHECK_THROWS_AS(w.write(target,
                            [&](const fs::path& t) {
                              temp = t;
                              CHECK(fs::exists(t));
                              throw std::runtime_error("simulated crash before rename");
                            }),
                    std::runtime_error);
    INFO("expected: the old manifest untouched and the temporary file gone");
    CHECK(file_bytes(target) == before);
    CHECK(!fs::exists(temp));
    check_loads(dir, saved);
  }
}

TEST_CASE("checkpoint: split schedule resumes bit for bit, the curvature ranks join the save") {
  // 2 trainers + 1 curvature rank, staleness 2: estimates of steps 2, 6, 10, … are in use
  // before steps 4, 8, 12, …; the save after step call 4 has none in flight, one before it
  // (anchoring the velocity) and several after it.
  using policies = dho2::default_policies::with_schedule<dho2::split_schedule>::with_transport<
      dho2::inproc_transport>;
  constexpr int ranks = 3;
  constexpr dho2::index epochs = 2;
  const problem p;
  const fs::path dir = fresh_dir("split");
  const auto make = [](dho2::inproc_transport t) {
    return std::make_unique<dho2::optimizer<double, policies>>(
        dho2_test::fosi_test_options(),
        policies{.base = {.learning_rate = 0.01},
                 .schedule = {.curvature_group = 1,
                              .max_staleness = 2,
                              .on_late = dho2::late_estimate_policy::wait},
                 .transport = std::move(t)});
  };
  using optimizer_type = dho2::optimizer<double, policies>;
  struct split_result {
    VectorXd x;
    dho2::summary summary;
    dho2::data_position position;
    bool curvature_rank = false;
  };
  // Saves after step call `at` with the position of the next batch, then stops the run.
  struct save_and_stop {
    optimizer_type* opt;
    fs::path dir;
    dho2::index at;
    bool on_step(const dho2::step_info<double>& s) {
      if (s.iteration != at) return false;
      opt->save_checkpoint(dir, s.parameters, {s.epoch, s.batch + 1});
      return true;
    }
  };
  const auto run = [&](bool save, bool load) {
    return dho2_test::on_inproc_ranks(ranks, [&](dho2::inproc_transport& t) {
      dho2::shuffling_batcher<double> batches(p.data.train, global_batch, 3);
      auto opt = make(std::move(t));
      split_result r{p.x0, {}, {}, false};
      if (load) r.position = opt->load_checkpoint(dir, r.x);
      if (save) {
        opt->optimize(p.model, r.x, batches, epochs, save_and_stop{opt.get(), dir, 4});
      } else {
        opt->optimize(p.model, r.x, batches, epochs);
      }
      r.summary = opt->get_summary();
      r.curvature_rank = opt->is_curvature_rank();
      return r;
    });
  };
  const auto straight = run(false, false);
  const auto saved = run(true, false);
  INFO("expected: every rank (the curvature rank too) wrote its file and rank 0 committed");
  for (int r = 0; r < ranks; ++r) CHECK(fs::exists(dho2::checkpoint_rank_file(dir, r, 5)));
  CHECK(dho2::has_checkpoint(dir));
  const auto resumed = run(false, true);
  for (int rank = 0; rank < ranks; ++rank) {
    const auto i = static_cast<std::size_t>(rank);
    INFO("rank ", rank, (resumed[i].curvature_rank ? " (curvature rank)" : " (trainer)"));
    CHECK(resumed[i].curvature_rank == (rank == 2));
    if (rank == 2) {
      // Its summary (1 estimate served before the save) was restored and it served the rest.
      INFO("expected: the curvature rank's estimates total the straight run's, ",
           straight[i].summary.curvature_estimates,
           "; before the save: ", saved[i].summary.curvature_estimates);
      CHECK(saved[i].summary.curvature_estimates == 1);
      CHECK(resumed[i].summary.curvature_estimates == straight[i].summary.curvature_estimates);
      continue;
    }
    CHECK(resumed[i].position.epoch == 0);
    CHECK(resumed[i].position.batch == 5);
    CHECK(saved[i].summary.curvature_estimates == 1);
    INFO("expected: resumed parameters bit-identical to the straight run's; max |diff| = ",
         dho2_test::max_abs_diff(resumed[i].x, straight[i].x));
    CHECK(bitwise_equal(resumed[i].x, straight[i].x));
    CHECK(resumed[i].summary.iterations == straight[i].summary.iterations);
    CHECK(resumed[i].summary.curvature_estimates == straight[i].summary.curvature_estimates);
    CHECK(resumed[i].summary.max_staleness == 2);
  }
}

TEST_CASE("checkpoint: optimize resumes at the saved data position, bit for bit") {
  const problem p;
  dho2::shuffling_batcher<double> batches(p.data.train, global_batch, 3);
  const fs::path dir = fresh_dir("optimize");
  auto straight = make_single();
  VectorXd xs = p.x0;
  straight->optimize(p.model, xs, batches, 2);

  // Saves after step call `at` with the position of the next batch, then stops the run.
  struct save_and_stop {
    single* opt;
    fs::path dir;
    dho2::index at;
    bool on_step(const dho2::step_info<double>& s) {
      if (s.iteration != at) return false;
      const dho2::data_position next = s.batch + 1 < s.batches_per_epoch
                                           ? dho2::data_position{s.epoch, s.batch + 1}
                                           : dho2::data_position{s.epoch + 1, 0};
      opt->save_checkpoint(dir, s.parameters, next);
      return true;
    }
  };
  auto first = make_single();
  VectorXd x = p.x0;
  first->optimize(p.model, x, batches, 2, save_and_stop{first.get(), dir, 20});

  auto second = make_single();
  VectorXd y(p.x0.size());
  second->load_checkpoint(dir, y);
  const auto pos = second->resume_position();
  INFO("expected: resume at epoch 1, batch 5 (step call 20 was batch 4 of epoch 1); got (",
       pos.epoch, ", ", pos.batch, ")");
  CHECK(pos.epoch == 1);
  CHECK(pos.batch == 5);
  const auto summary = second->optimize(p.model, y, batches, 2);
  INFO("expected: resumed parameters bit-identical to two straight epochs; max |diff| = ",
       dho2_test::max_abs_diff(y, xs));
  CHECK(bitwise_equal(y, xs));
  CHECK(summary.iterations == straight->get_summary().iterations);
  CHECK(summary.curvature_estimates == straight->get_summary().curvature_estimates);
  CHECK(summary.epochs == 2);
  CHECK(summary.termination == dho2::termination_type::completed);
}
