// Cross-rank agreement of job settings (dho2::check_settings_agree), the models' structure
// fingerprints, the optimizer's set-up agreement and checkpoint settings, and the checkpoint
// directory lock.
#include "distributed_fixture.hpp"
#include <dho2/checkpoint/directory.hpp>
#include <dho2/checkpoint/file.hpp>
#include <dho2/core/job_settings.hpp>
#include <dho2/data/batcher.hpp>
#include <dho2/dho2.hpp>
#include <dho2/models/mlp.hpp>
#include <dho2/models/quadratic.hpp>
#include <dho2/models/softmax_regression.hpp>
#include <dho2/transport/inproc.hpp>

#include <doctest/doctest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace {

namespace fs = std::filesystem;

// What one rank caught: the invalid_options parts, or empty strings if nothing was thrown.
struct caught {
  std::string field;
  std::string value;
  std::string constraint;
};

template <class F>
caught invalid_options_of(F&& f) {
  try {
    f();
  } catch (const dho2::invalid_options& e) {
    return {std::string(e.field()), std::string(e.value()), std::string(e.constraint())};
  }
  return {};
}

// On `ranks` inproc ranks, each checking the settings `settings_of(rank)`; what each caught.
template <class Settings>
std::vector<caught> agree_on(int ranks, Settings settings_of) {
  return dho2_test::on_inproc_ranks(
      ranks,
      [&](dho2::inproc_transport& t) {
        const dho2::job_settings mine = settings_of(t.rank());
        return invalid_options_of(
            [&] { dho2::check_settings_agree(t, std::span<const dho2::job_setting>(mine)); });
      },
      std::chrono::seconds(20));
}

// A directory of this process for one test, removed when the test ends.
struct scratch_dir {
  fs::path path;
  explicit scratch_dir(const std::string& name)
      : path(fs::temp_directory_path() /
             ("dho2_agreement_test_" + std::to_string(::getpid()) + "_" + name)) {
    fs::remove_all(path);
  }
  scratch_dir(const scratch_dir&) = delete;
  scratch_dir& operator=(const scratch_dir&) = delete;
  ~scratch_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

// A model without structure(): its fingerprint is its parameter count.
struct plain_model {
  using scalar_type = double;
  using batch_type = int;
  [[nodiscard]] dho2::index num_parameters() const { return 7; }
  double loss_and_gradient(dho2::const_vector_ref<double> /*x*/, const int& /*batch*/,
                           dho2::vector_ref<double> g) const {
    g.setZero();
    return 0.0;
  }
};

}  // namespace

TEST_CASE("check_settings_agree: every rank names the setting and each rank's value") {
  SUBCASE("two ranks, one value each") {
    const auto result = agree_on(2, [](int rank) {
      return dho2::job_settings{{"epochs", rank == 0 ? "3" : "5"}, {"batch", "20"}};
    });
    for (const caught& c : result) {
      CHECK(c.field == "epochs");
      CHECK(c.value == "3 on rank 0, 5 on rank 1");
      CHECK(c.constraint == "identical on all 2 ranks");
    }
  }
  SUBCASE("three ranks: ranks of one value are grouped, the first differing setting is named") {
    const auto result = agree_on(3, [](int rank) {
      return dho2::job_settings{{"batch", "20"},
                                {"activation", rank == 1 ? "tanh" : "relu"},
                                {"epochs", std::to_string(rank)}};
    });
    for (const caught& c : result) {
      CHECK(c.field == "activation");
      CHECK(c.value == "relu on ranks 0, 2; tanh on rank 1");
      CHECK(c.constraint == "identical on all 3 ranks");
    }
  }
  SUBCASE("a setting one rank lacks shows (none)") {
    const auto result = agree_on(2, [](int rank) {
      dho2::job_settings s{{"batch", "20"}};
      if (rank == 1) s.push_back({"model.layers()[3]", "10"});
      return s;
    });
    for (const caught& c : result) {
      CHECK(c.field == "model.layers()[3]");
      CHECK(c.value == "(none) on rank 0, 10 on rank 1");
    }
  }
  SUBCASE("values that differ only past the first bytes, and long values") {
    const std::string long_value(1000, 'x');
    const auto result = agree_on(2, [&](int rank) {
      return dho2::job_settings{{"model.structure", long_value + (rank == 0 ? "a" : "b")}};
    });
    for (const caught& c : result) {
      CHECK(c.field == "model.structure");
      CHECK(c.value == long_value + "a on rank 0, " + long_value + "b on rank 1");
    }
  }
  SUBCASE("identical settings pass on every rank") {
    const auto result = agree_on(3, [](int /*rank*/) {
      return dho2::job_settings{{"epochs", "3"}, {"model.structure", "mlp 4-3-2 relu"}};
    });
    for (const caught& c : result) CHECK_MESSAGE(c.field.empty(), "expected no error: " << c.value);
  }
}

TEST_CASE("model_structure tells apart architectures with the same parameter count") {
  // Both have 94 parameters: 20·4 + 4 + 4·2 + 2 = 20·2 + 2 + 2·10 + 10 + 10·2 + 2.
  const dho2::mlp<double> narrow({20, 4, 2});
  const dho2::mlp<double> deep({20, 2, 10, 2});
  const dho2::mlp<double> narrow_tanh({20, 4, 2}, dho2::activation::tanh);
  REQUIRE(narrow.num_parameters() == deep.num_parameters());
  CHECK(dho2::model_structure(narrow) == "mlp 20-4-2 relu softmax_cross_entropy");
  CHECK(dho2::model_structure(deep) == "mlp 20-2-10-2 relu softmax_cross_entropy");
  CHECK(dho2::model_structure(narrow_tanh) == "mlp 20-4-2 tanh softmax_cross_entropy");
  const dho2::mlp<double> autoencoder({6, 2, 6}, dho2::activation::relu, 0.0,
                                      dho2::mlp_loss::squared_error_reconstruction);
  CHECK(dho2::model_structure(autoencoder) == "mlp 6-2-6 relu squared_error_reconstruction");
  // softmax_regression 20-2 and mlp 20-2 have the same parameters but are different models.
  const dho2::softmax_regression<double> softmax(20, 2);
  CHECK(dho2::model_structure(softmax) == "softmax_regression 20-2");
  // quadratic: the planted problem (eigenvalues, minimiser, seed) is its structure.
  const dho2::quadratic<double> q1(Eigen::VectorXd::LinSpaced(3, 1.0, 3.0), 7);
  const dho2::quadratic<double> q2(Eigen::VectorXd::LinSpaced(3, 1.0, 4.0), 7);
  CHECK(dho2::model_structure(q1).starts_with("quadratic n=3 seed=7 spectrum="));
  CHECK(dho2::model_structure(q1) != dho2::model_structure(q2));
  // A model without structure(): its parameter count.
  CHECK(dho2::model_structure(plain_model{}) == "parameters=7");
  const dho2::job_settings s = dho2::model_settings(deep);
  REQUIRE(s.size() == 2);
  CHECK(s[0] == dho2::job_setting{"model.structure", "mlp 20-2-10-2 relu softmax_cross_entropy"});
  CHECK(s[1] == dho2::job_setting{"model.num_parameters()", "94"});
}

TEST_CASE("optimizer: the first step's set-up agrees the policies and the job across ranks") {
  const dho2_test::mlp_problem p;
  SUBCASE("base optimizer hyper-parameters") {
    const auto result = dho2_test::on_inproc_ranks(2, [&](dho2::inproc_transport& t) {
      using P = dho2::default_policies::with_transport<dho2::inproc_transport>;
      const double lr = t.rank() == 0 ? 1e-3 : 2e-3;
      dho2::optimizer<double, P> opt(dho2_test::fosi_test_options(),
                                     P{.base = {.learning_rate = lr}, .transport = std::move(t)});
      Eigen::VectorXd x = p.x0;
      dho2::classification_batch<double> batch;
      batch.inputs = p.data.train.inputs.leftCols(4);
      batch.labels = p.data.train.labels.head(4);
      return invalid_options_of([&] { opt.step(p.model, x, batch); });
    });
    for (const caught& c : result) {
      CHECK(c.field == "policies.base");
      CHECK(c.value ==
            "adam learning_rate=0.001 beta1=0.9 beta2=0.999 epsilon=1e-08 on rank 0, adam "
            "learning_rate=0.002 beta1=0.9 beta2=0.999 epsilon=1e-08 on rank 1");
    }
  }
  SUBCASE("the job's settings (here the data layout a rank was described with)") {
    const auto result = dho2_test::on_inproc_ranks(2, [&](dho2::inproc_transport& t) {
      const int rank = t.rank();
      using P = dho2::default_policies::with_transport<dho2::inproc_transport>;
      dho2::optimizer<double, P> opt(dho2_test::fosi_test_options(), P{.transport = std::move(t)});
      dho2::job_settings job = dho2::model_settings(p.model);
      job.push_back({"data.batch_size", rank == 0 ? "24" : "12"});
      opt.describe_job(job);
      Eigen::VectorXd x = p.x0;
      return invalid_options_of([&] { opt.save_checkpoint(fs::path("/nonexistent"), x); });
    });
    for (const caught& c : result) {
      CHECK(c.field == "data.batch_size");
      CHECK(c.value == "24 on rank 0, 12 on rank 1");
    }
  }
  SUBCASE("a described model structure is checked against the model") {
    dho2::optimizer<double> opt(dho2_test::fosi_test_options());
    opt.describe_job(dho2::model_settings(dho2::mlp<double>({6, 4, 3})));
    Eigen::VectorXd x = p.x0;
    dho2::classification_batch<double> batch;
    batch.inputs = p.data.train.inputs.leftCols(4);
    batch.labels = p.data.train.labels.head(4);
    const caught c = invalid_options_of([&] { opt.step(p.model, x, batch); });
    CHECK(c.field == "model.structure");
    CHECK(c.value == "mlp 6-5-3 tanh softmax_cross_entropy");
    CHECK(c.constraint ==
          "the structure the job was described with (mlp 6-4-3 relu softmax_cross_entropy)");
    // describe_job after the set-up is refused.
    dho2::optimizer<double> stepped(dho2_test::fosi_test_options());
    stepped.step(p.model, x, batch);
    CHECK(invalid_options_of([&] { stepped.describe_job({}); }).field == "describe_job");
    CHECK(stepped.job_description() == dho2::model_settings(p.model));
  }
}

TEST_CASE("checkpoints record the job's settings and refuse a job whose settings differ") {
  const dho2_test::mlp_problem p;
  const scratch_dir dir("settings");
  dho2::job_settings job = dho2::model_settings(p.model);
  job.push_back({"data.batch_size", "24"});
  {
    dho2::optimizer<double> opt(dho2_test::fosi_test_options());
    opt.describe_job(job);
    Eigen::VectorXd x = p.x0;
    opt.save_checkpoint(dir.path, x);
  }
  const dho2::checkpoint_reader manifest = dho2::read_checkpoint_manifest(dir.path);
  CHECK(manifest.identity().settings == job);
  const auto load_with = [&](const dho2::job_settings& settings) -> std::string {
    dho2::optimizer<double> opt(dho2_test::fosi_test_options());
    if (!settings.empty()) opt.describe_job(settings);
    Eigen::VectorXd x = Eigen::VectorXd::Zero(p.model.num_parameters());
    try {
      opt.load_checkpoint(dir.path, x);
    } catch (const dho2::checkpoint_error& e) {
      CHECK(x.isZero());  // nothing changed
      return e.what();
    }
    return "";
  };
  CHECK(load_with(job) == "");
  CHECK(load_with({}) == "");  // a job that names no settings checks none
  dho2::job_settings other_batch = job;
  other_batch.back().value = "12";
  CHECK(load_with(other_batch) ==
        "checkpoint file '" + dho2::checkpoint_manifest_file(dir.path).string() +
            "': data.batch_size differs: the checkpoint has 24, this job has 12");
  dho2::job_settings other_model = job;
  other_model.front().value = "mlp 6-5-3 relu softmax_cross_entropy";
  CHECK(load_with(other_model) ==
        "checkpoint file '" + dho2::checkpoint_manifest_file(dir.path).string() +
            "': model.structure differs: the checkpoint has mlp 6-5-3 tanh "
            "softmax_cross_entropy, this job has mlp 6-5-3 relu softmax_cross_entropy");
  dho2::job_settings more = job;
  more.push_back({"data.train_size", "400"});
  CHECK(load_with(more) == "checkpoint file '" + dho2::checkpoint_manifest_file(dir.path).string() +
                               "': data.train_size is not recorded (this job has 400): the "
                               "checkpoint was written without it, so it cannot be checked");
}

TEST_CASE("checkpoint_directory_lock keeps a second holder out until the first releases") {
  const scratch_dir dir("lock");
  std::optional<dho2::checkpoint_directory_lock> first(std::in_place, dir.path / "sub");
  CHECK(fs::is_directory(dir.path / "sub"));  // created
  std::string message;
  try {
    const dho2::checkpoint_directory_lock second(dir.path / "sub");
  } catch (const dho2::checkpoint_error& e) {
    message = e.what();
  }
  CHECK(message == "checkpoint directory '" + (dir.path / "sub").string() +
                       "': in use by another job (process " + std::to_string(::getpid()) +
                       " holds '" + dho2::checkpoint_lock_file(dir.path / "sub").string() +
                       "'); wait for it to end or use another directory");
  // Moving keeps the lock held; destroying releases it.
  dho2::checkpoint_directory_lock moved(std::move(*first));
  first.reset();
  CHECK_THROWS_AS(dho2::checkpoint_directory_lock(dir.path / "sub"), dho2::checkpoint_error);
  { const dho2::checkpoint_directory_lock released = std::move(moved); }
  CHECK_NOTHROW(dho2::checkpoint_directory_lock(dir.path / "sub"));
}
