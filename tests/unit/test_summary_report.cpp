// Tests of the summaries' reports (include/dho2/core/summary.hpp, kfac/kfac_summary.hpp):
// brief_report() is one line with the termination, steps, epochs, loss, estimates and time;
// full_report() is a block of labelled lines (termination, steps, curvature and the last estimate,
// staleness, ADMM, time split, memory) with the numbers formatted as printf's %.Nf / %.Ng would.
#include <dho2/core/summary.hpp>
#include <dho2/kfac/kfac_summary.hpp>

#include <doctest/doctest.h>

#include <cstddef>
#include <string>
#include <vector>

namespace {

// The lines of a report (without their '\n'); fails the test if the text does not end in '\n'.
std::vector<std::string> lines_of(const std::string& text) {
  CHECK((text.empty() || text.back() == '\n'));
  std::vector<std::string> lines;
  std::size_t start = 0;
  while (start < text.size()) {
    const std::size_t end = text.find('\n', start);
    lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

// The line whose label is `label` ("" if none).
std::string line_labelled(const std::vector<std::string>& lines, const std::string& label) {
  for (const std::string& line : lines) {
    if (line.starts_with(label + ' ')) return line;
  }
  return "";
}

// A finished FOSI run: 23 steps in one epoch, 3 estimates, the last one before step 20.
dho2::summary fosi_run() {
  dho2::summary s;
  s.termination = dho2::termination_type::completed;
  s.message = "all 1 epochs done";
  s.iterations = 25;
  s.steps = 23;
  s.skipped_nonfinite_loss = 1;
  s.skipped_nonfinite_gradient = 1;
  s.epochs = 1;
  s.final_loss = 1.1108342;
  s.curvature_estimates = 3;
  s.hvps = 78;
  s.hvp = dho2::hvp_source::model;
  s.total_seconds = 1.93;
  s.gradient_seconds = 0.05;
  s.hvp_seconds = 0.38;
  s.estimate_other_seconds = 1.43;
  s.update_seconds = 0.02;
  s.communication_seconds = 0.001;
  s.curvature_bytes = 56'000'000;
  s.optimizer_state_bytes = 3'250'000;
  dho2::estimate_report e;
  e.step = 20;
  e.retained = 4;
  e.eigenvalues.resize(4);
  e.eigenvalues << 124.93, 50.0, 40.0, 32.4381;
  e.scale = 1.0;
  e.seconds = 0.554;
  s.estimates.push_back(e);
  return s;
}

}  // namespace

TEST_CASE("summary: brief_report is one line with the termination, steps, loss and time") {
  const std::string brief = fosi_run().brief_report();
  CHECK(brief.find('\n') == std::string::npos);
  CHECK(brief ==
        "completed (all 1 epochs done): 23 steps (2 skipped) in 1 epoch(s), final loss 1.11083, "
        "3 curvature estimate(s) (0 failed), 1.93 s");

  SUBCASE("without an epoch, estimates or a message, those parts are left out") {
    dho2::summary s;
    s.termination = dho2::termination_type::stopped_by_callback;
    s.steps = 4;
    s.total_seconds = 0.123;
    CHECK(s.brief_report() == "stopped_by_callback: 4 steps (0 skipped) in 0 epoch(s), 0.12 s");
  }
  SUBCASE("ADMM rounds are counted") {
    dho2::summary s = fosi_run();
    s.admm_rounds.resize(5);
    CHECK(s.brief_report().find(", 5 ADMM round(s), 1.93 s") != std::string::npos);
  }
}

TEST_CASE("summary: full_report has the termination, steps, estimates, time split and memory") {
  const dho2::summary s = fosi_run();
  const std::vector<std::string> lines = lines_of(s.full_report());
  REQUIRE(lines.size() == 6);
  CHECK(lines[0] == "termination      completed (all 1 epochs done)");
  CHECK(lines[1] ==
        "steps            23 in 1 epoch(s), 25 step call(s); 2 skipped (1 non-finite loss, 1 "
        "non-finite gradient); last epoch's mean loss 1.11083");
  CHECK(lines[2] == "curvature        3 estimate(s) (0 failed), 78 HVPs from model");
  CHECK(lines[3] ==
        "                 last before step 20: 4 pairs kept, lambda_max 124.9, lambda_4 32.44, "
        "scale 1, 0.55 s");
  CHECK(lines[4] ==
        "time             wall 1.93 s = gradient 0.05 + HVP 0.38 + Lanczos other 1.43 + update "
        "0.02 + communication 0.00 + other 0.05");
  CHECK(lines[5] == "memory           curvature 53.4 MiB, optimizer state 3.1 MiB (this rank)");
  CHECK(s.other_seconds() == doctest::Approx(0.049));

  SUBCASE("staleness, ADMM rounds and estimates beside training get their lines when present") {
    dho2::summary t = s;
    t.max_staleness = 2;
    t.late_estimates = 1;
    t.offloaded_estimate_seconds = 0.75;
    t.admm_rounds.push_back({0, 3, 0.5, 0.25, 1.0});
    t.admm_rounds.push_back({1, 7, 0.0123, 0.00456, 0.5});
    const std::vector<std::string> more = lines_of(t.full_report());
    REQUIRE(more.size() == 9);
    CHECK(more[4] == "                 staleness up to 2 step(s); 1 late, 0 skipped estimate(s)");
    CHECK(more[5] ==
          "ADMM             2 round(s); the last after step 7: primal residual 0.0123, dual "
          "residual 0.00456, rho 0.5");
    CHECK(line_labelled(more, "time").starts_with("time             wall 1.93 s = "));
    CHECK(more[7] == "                 estimates beside training 0.75 s");
  }
  SUBCASE("the estimates' share of the communication is named when there is one") {
    dho2::summary t = s;
    t.total_seconds = 2.5;
    t.communication_seconds = 0.5;
    t.estimate_communication_seconds = 0.3;
    CHECK(line_labelled(lines_of(t.full_report()), "time") ==
          "time             wall 2.50 s = gradient 0.05 + HVP 0.38 + Lanczos other 1.43 + update "
          "0.02 + communication 0.50 (estimates 0.30) + other 0.12");
    CHECK(t.step_communication_seconds() == doctest::Approx(0.2));
    CHECK(s.step_communication_seconds() == doctest::Approx(0.001));
  }
  SUBCASE("a summary without steps or estimates still reports every section") {
    const std::vector<std::string> empty = lines_of(dho2::summary{}.full_report());
    REQUIRE(empty.size() == 5);
    CHECK(empty[0] == "termination      running");
    CHECK(empty[1] == "steps            0 in 0 epoch(s), 0 step call(s); 0 skipped");
    CHECK(empty[2] == "curvature        0 estimate(s) (0 failed), 0 HVPs from none");
    CHECK(empty[4] == "memory           curvature 0.0 MiB, optimizer state 0.0 MiB (this rank)");
  }
  SUBCASE("a numerical failure reports its message") {
    dho2::summary t = s;
    t.termination = dho2::termination_type::numerical_failure;
    t.message = "non-finite loss at step 7";
    CHECK(lines_of(t.full_report())[0] ==
          "termination      numerical_failure (non-finite loss at step 7)");
    CHECK(t.brief_report().starts_with("numerical_failure (non-finite loss at step 7): 23 steps"));
  }
}

TEST_CASE("kfac_summary: brief_report and full_report have the steps, factors and time split") {
  dho2::kfac_summary k;
  k.iterations = 24;
  k.steps = 23;
  k.skipped_nonfinite = 1;
  k.factor_updates = 23;
  k.inverse_updates = 3;
  k.factors_inverted = 6;
  k.failed_inversions = 1;
  k.last_kl_scale = 0.05142;
  k.total_seconds = 1.5;
  k.gradient_seconds = 0.05;
  k.factor_seconds = 0.13;
  k.inverse_seconds = 0.23;
  k.update_seconds = 0.38;
  k.communication_seconds = 0.69;
  k.curvature_bytes = 14'000'000;
  k.optimizer_state_bytes = 33'500'000;
  k.communicated_bytes = 227'000'000;

  CHECK(k.brief_report() ==
        "K-FAC: 23 steps (1 skipped), 23 factor updates, 3 inverse refreshes (1 failed "
        "inversions), last KL scale 0.0514, 1.50 s in step");
  const std::vector<std::string> lines = lines_of(k.full_report());
  REQUIRE(lines.size() == 4);
  CHECK(lines[0] == "steps            23 in 24 step call(s); 1 skipped (non-finite)");
  CHECK(lines[1] ==
        "curvature        K-FAC: 23 factor updates, 3 inverse refreshes (6 factors inverted on "
        "this rank, 1 failed), last KL scale 0.0514");
  CHECK(lines[2] ==
        "time             in step 1.50 s = gradient 0.05 + factors 0.13 + inverses 0.23 + update "
        "0.38 + communication 0.69 + other 0.02");
  CHECK(lines[3] ==
        "memory           factors and inverses 13.4 MiB of optimizer state 31.9 MiB (this rank); "
        "216.5 MiB passed into collectives");
  CHECK(k.other_seconds() == doctest::Approx(0.02));
}
