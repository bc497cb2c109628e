// Tests of make_teacher_classification (include/dho2/data/synthetic.hpp): shapes, determinism,
// class coverage and balance, input ranges, label noise and argument checks.
#include <dho2/data/synthetic.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

TEST_CASE("synthetic: shapes and label ranges") {
  const auto d = dho2::make_teacher_classification<float>(300, 120, 17, 5, 3);
  CHECK(d.train.size() == 300);
  CHECK(d.test.size() == 120);
  CHECK(d.train.num_features() == 17);
  CHECK(d.test.num_features() == 17);
  CHECK(d.train.labels.size() == 300);
  CHECK(d.test.labels.size() == 120);
  CHECK(d.train.num_classes == 5);
  CHECK(d.test.num_classes == 5);
  CHECK_NOTHROW(d.train.validate());
  CHECK_NOTHROW(d.test.validate());
  CHECK(d.train.inputs.allFinite());

  const auto empty = dho2::make_teacher_classification<double>(0, 0, 4, 2, 1);
  CHECK(empty.train.size() == 0);
  CHECK(empty.test.num_features() == 4);
}

TEST_CASE("synthetic: deterministic for a seed, different across seeds") {
  const auto a = dho2::make_teacher_classification<double>(200, 50, 10, 4, 11);
  const auto b = dho2::make_teacher_classification<double>(200, 50, 10, 4, 11);
  const auto c = dho2::make_teacher_classification<double>(200, 50, 10, 4, 12);
  CHECK(a.train.inputs == b.train.inputs);
  CHECK(a.train.labels == b.train.labels);
  CHECK(a.test.inputs == b.test.inputs);
  CHECK(a.test.labels == b.test.labels);
  CHECK(a.train.inputs != c.train.inputs);
  CHECK(a.train.labels != c.train.labels);

  // Train and test are independent draws; a smaller request is a prefix of a larger one.
  CHECK(a.train.inputs.leftCols(50) != a.test.inputs);
  const auto small = dho2::make_teacher_classification<double>(80, 20, 10, 4, 11);
  CHECK(small.train.inputs == a.train.inputs.leftCols(80));
  CHECK(small.train.labels == a.train.labels.head(80));
  CHECK(small.test.labels == a.test.labels.head(20));

  // float and double see the same teacher and the same labels.
  const auto f = dho2::make_teacher_classification<float>(200, 50, 10, 4, 11);
  CHECK(f.train.labels == a.train.labels);
  CHECK(f.train.inputs == a.train.inputs.cast<float>());
}

TEST_CASE("synthetic: every class appears and none dominates") {
  for (const int classes : {2, 3, 10}) {
    for (const std::uint64_t seed : {1ULL, 2ULL, 77ULL}) {
      for (const auto dist :
           {dho2::input_distribution::gaussian, dho2::input_distribution::unit_uniform}) {
        CAPTURE(classes);
        CAPTURE(seed);
        dho2::teacher_options opt;
        opt.inputs = dist;
        const auto d = dho2::make_teacher_classification<float>(2000, 500, 20, classes, seed, opt);
        const auto counts = dho2::class_histogram(d.train);
        const double share = 2000.0 / classes;
        for (const dho2::index n : counts) {
          CHECK(static_cast<double>(n) > 0.5 * share);
          CHECK(static_cast<double>(n) < 1.5 * share);
        }
        const auto test_counts = dho2::class_histogram(d.test);
        CHECK(*std::min_element(test_counts.begin(), test_counts.end()) > 0);
      }
    }
  }
}

TEST_CASE("synthetic: unit_uniform inputs lie in [0, 1], gaussian ones are standardised") {
  dho2::teacher_options opt;
  opt.inputs = dho2::input_distribution::unit_uniform;
  const auto u = dho2::make_teacher_classification<double>(500, 0, 30, 3, 5, opt);
  CHECK(u.train.inputs.minCoeff() >= 0.0);
  CHECK(u.train.inputs.maxCoeff() <= 1.0);
  CHECK(u.train.inputs.mean() == doctest::Approx(0.5).epsilon(0.02));

  const auto g = dho2::make_teacher_classification<double>(500, 0, 30, 3, 5);
  const double mean = g.train.inputs.mean();
  const double var = (g.train.inputs.array() - mean).square().mean();
  CHECK(std::abs(mean) < 0.03);
  CHECK(var == doctest::Approx(1.0).epsilon(0.05));
}

TEST_CASE("synthetic: label noise flips about the requested fraction of training labels") {
  dho2::teacher_options noisy;
  noisy.label_noise = 0.3;
  const auto clean = dho2::make_teacher_classification<double>(4000, 1000, 12, 5, 9);
  const auto d = dho2::make_teacher_classification<double>(4000, 1000, 12, 5, 9, noisy);
  CHECK(d.train.inputs == clean.train.inputs);
  CHECK(d.test.labels == clean.test.labels);  // test labels stay clean by default
  const double flipped =
      static_cast<double>((d.train.labels.array() != clean.train.labels.array()).count()) / 4000.0;
  CHECK(flipped == doctest::Approx(0.3).epsilon(0.15));
  CHECK_NOTHROW(d.train.validate());

  noisy.noisy_test = true;
  const auto t = dho2::make_teacher_classification<double>(4000, 1000, 12, 5, 9, noisy);
  CHECK(t.test.labels != clean.test.labels);
  CHECK(t.train.labels == d.train.labels);
}

TEST_CASE("synthetic: labels use every class and depend on the seed's teacher") {
  const auto a = dho2::make_teacher_classification<double>(1000, 0, 8, 3, 21);
  const auto b = dho2::make_teacher_classification<double>(1000, 0, 8, 3, 22);
  CHECK(a.train.labels.minCoeff() == 0);
  CHECK(a.train.labels.maxCoeff() == 2);
  CHECK(a.train.labels != b.train.labels);
}

TEST_CASE("synthetic: bad arguments throw invalid_options naming the field") {
  const auto message = [](auto&& f) -> std::string {
    try {
      f();
    } catch (const dho2::invalid_options& e) {
      return e.what();
    }
    return "<no invalid_options>";
  };
  CHECK(message([] {
          (void)dho2::make_teacher_classification<float>(-1, 0, 2, 2, 0);
        }).find("train_size = -1") != std::string::npos);
  CHECK(message([] {
          (void)dho2::make_teacher_classification<float>(1, 0, 0, 2, 0);
        }).find("features = 0") != std::string::npos);
  CHECK(message([] {
          (void)dho2::make_teacher_classification<float>(1, 0, 2, 1, 0);
        }).find("classes = 1") != std::string::npos);
  dho2::teacher_options opt;
  opt.label_noise = 1.5;
  CHECK(message([&] {
          (void)dho2::make_teacher_classification<float>(1, 0, 2, 2, 0, opt);
        }).find("Violated constraint: 0 <= label_noise <= 1") != std::string::npos);
  opt = {};
  opt.hidden = 0;
  CHECK(message([&] {
          (void)dho2::make_teacher_classification<float>(1, 0, 2, 2, 0, opt);
        }).find("hidden = 0") != std::string::npos);
}
