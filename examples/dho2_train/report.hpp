// dho2_train: what a run produced, the final summary block on stdout (around the library's own
// report of the optimizer's summary) and the --summary-json object.
#pragma once

#include "callbacks.hpp"
#include "config.hpp"
#include "distributed.hpp"
#include "json_writer.hpp"
#include <dho2/core/summary.hpp>
#include <dho2/kfac/kfac_options.hpp>
#include <dho2/kfac/kfac_summary.hpp>

#include <sys/resource.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <fstream>
#include <limits>
#include <optional>
#include <string>
#include <vector>

namespace dho2_train {

/// Everything a finished run reports.
struct run_result {
  dho2::summary summary;
  std::string model_name;  // --model: "mlp:784-256-256-10", "autoencoder:...", "softmax"
  long long parameters = 0;
  long long train_size = 0;
  long long test_size = 0;
  long long features = 0;
  long long classes = 0;  // outputs: the classes, or the features of the autoencoder
  long long steps_per_epoch = 0;
  double learning_rate = 0.0;
  double base_momentum = 0.0;   // heavy-ball / Nesterov mu, Adam beta1; 0 for SGD
  double clip = 1.0;            // effective FOSI clip c
  long long lanczos_steps = 0;  // effective m
  double final_test_accuracy = std::numeric_limits<double>::quiet_NaN();  // NaN: autoencoder
  double final_test_loss = std::numeric_limits<double>::quiet_NaN();
  double final_eval_train_loss = std::numeric_limits<double>::quiet_NaN();
  target_record target;
  bool max_steps_reached = false;
  bool time_budget_reached = false;
  bool target_loss = false;     // the target is --target-loss (else --target-accuracy)
  bool stop_at_target = false;  // the target stops the run (no --continue-after-target)
  double load_seconds = 0.0;
  double eval_seconds = 0.0;
  double cpu_seconds = 0.0;       // process CPU seconds of the training run (all threads)
  double eval_cpu_seconds = 0.0;  // of which evaluating the test accuracy
  long long evaluations_count = 0;
  std::vector<evaluation_record> evaluations;
  std::vector<epoch_record> epochs;
  int eigen_threads = 1;
  std::string transport = "inproc";     // resolved --transport
  std::vector<rank_record> ranks;       // every rank's measured costs, in rank order
  std::optional<double> admm_rho;       // mode A: the penalty in force at the end
  std::optional<long long> resumed_at;  // --resume: the step of the checkpoint loaded
  long long last_checkpoint = -1;  // 0-based step of the last checkpoint this run saved (-1: none)
  std::optional<dho2::kfac_summary> kfac;          // --optimizer kfac: rank 0's counters
  std::optional<dho2::kfac_options> kfac_options;  // --optimizer kfac: the options in force
};

/// Peak resident set size of this process in bytes: VmHWM from /proc/self/status, or
/// getrusage's ru_maxrss (KiB on Linux) when /proc is not available.
inline std::size_t peak_rss_bytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.starts_with("VmHWM:")) {
      const unsigned long long kib = std::strtoull(line.c_str() + 6, nullptr, 10);
      if (kib > 0) return static_cast<std::size_t>(kib) * 1024U;
    }
  }
  rusage usage{};
  if (::getrusage(RUSAGE_SELF, &usage) == 0 && usage.ru_maxrss > 0) {
    return static_cast<std::size_t>(usage.ru_maxrss) * 1024U;
  }
  return 0;
}

namespace detail {

inline std::string mib(std::size_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
  return buf;
}

inline std::string why_stopped(const run_result& r) {
  if (r.summary.termination != dho2::termination_type::stopped_by_callback) {
    return r.summary.message;
  }
  if (r.target.reached && r.stop_at_target) {
    return r.target_loss ? "target test loss reached" : "target accuracy reached";
  }
  if (r.max_steps_reached) return "--max-steps reached";
  if (r.time_budget_reached) return "--time-budget reached";
  return r.summary.message;
}

// K-FAC's factor and inverse seconds (0 for the other optimizers).
inline double factor_seconds(const run_result& r) { return r.kfac ? r.kfac->factor_seconds : 0.0; }
inline double inverse_seconds(const run_result& r) {
  return r.kfac ? r.kfac->inverse_seconds : 0.0;
}

inline double other_seconds(const run_result& r) {
  const dho2::summary& s = r.summary;
  return std::max(0.0, s.total_seconds - s.gradient_seconds - s.hvp_seconds -
                           s.estimate_other_seconds - s.update_seconds - s.communication_seconds -
                           factor_seconds(r) - inverse_seconds(r) - r.eval_seconds);
}

}  // namespace detail

/// The optimizer's own report: dho2::summary::full_report() for dho2::optimizer; for K-FAC the
/// run's brief report (termination, steps, loss, wall time) and dho2::kfac_summary::full_report().
/// The termination's message is the reason dho2_train stopped (target, --max-steps, ...).
inline std::string optimizer_report(const run_result& r) {
  dho2::summary s = r.summary;
  s.message = detail::why_stopped(r);
  if (!r.kfac) return s.full_report();
  return "termination      " + s.brief_report() + "\n" + r.kfac->full_report();
}

/// The final summary block (human-readable): what ran on what, the optimizer's report (the
/// library's), the evaluations, the process's costs and, over several ranks, every rank's.
inline void print_summary(const train_config& c, const run_result& r, std::size_t peak_rss,
                          std::FILE* out) {
  const dho2::summary& s = r.summary;
  std::fprintf(out, "\n== dho2_train summary ==\n");
  std::fprintf(out, "optimizer        %s (lr %g", c.optimizer.c_str(), r.learning_rate);
  if (base_name(c.optimizer) != "sgd") std::fprintf(out, ", momentum %g", r.base_momentum);
  if (r.kfac_options) {
    const dho2::kfac_options& k = *r.kfac_options;
    std::fprintf(out, "; damping %g, factor decay %g, factors every %lld, inverses every %lld",
                 k.damping, k.factor_decay, static_cast<long long>(k.factor_every),
                 static_cast<long long>(k.inverse_every));
    if (k.kl_clip) {
      std::fprintf(out, ", KL clip %g", *k.kl_clip);
    } else {
      std::fprintf(out, ", no KL clip");
    }
  }
  if (uses_curvature(c.optimizer)) {
    std::fprintf(out, "; k %lld, l %lld, m %lld, W %lld, T %lld, alpha %g, beta %g, clip %g", c.k,
                 c.l, r.lanczos_steps, c.warmup, c.refresh_every, c.alpha, c.beta, r.clip);
  }
  std::fprintf(out, ")\n");
  const bool autoencoder = r.model_name.starts_with("autoencoder:");
  const std::string activation =
      r.model_name.starts_with("mlp:") || autoencoder ? " " + c.activation : "";
  std::fprintf(out, "model            %s%s, %lld parameters, l2 %g\n", r.model_name.c_str(),
               activation.c_str(), r.parameters, c.l2);
  std::fprintf(out,
               "data             %s: %lld train / %lld test, %lld features, %lld %s; batch %lld, "
               "%lld steps per epoch\n",
               c.dataset.c_str(), r.train_size, r.test_size, r.features, r.classes,
               autoencoder ? "outputs (labels unused)" : "classes", c.batch, r.steps_per_epoch);
  std::fputs(optimizer_report(r).c_str(), out);
  std::fprintf(out, "result           ");
  if (!autoencoder) std::fprintf(out, "test accuracy %.4f, ", r.final_test_accuracy);
  std::fprintf(out, "test loss %.6g", r.final_test_loss);
  if (std::isfinite(r.final_eval_train_loss)) {
    std::fprintf(out, ", on %lld training samples %.6g",
                 std::min<long long>(c.eval_train_size, r.train_size), r.final_eval_train_loss);
  }
  std::fprintf(out, "\n");
  if (c.target_accuracy || c.target_loss) {
    char goal[64];
    if (c.target_accuracy) {
      std::snprintf(goal, sizeof goal, "test accuracy >= %g", *c.target_accuracy);
    } else {
      std::snprintf(goal, sizeof goal, "test loss <= %g", *c.target_loss);
    }
    if (r.target.reached) {
      std::fprintf(out,
                   "time to target   %.2f s wall to %s at step %lld (%.2f s of it evaluating; "
                   "%.2f s CPU without evaluation)\n",
                   r.target.elapsed_s, goal, r.target.step, r.target.eval_s, r.target.cpu_s);
    } else {
      std::fprintf(out, "time to target   not reached (%s)\n", goal);
    }
  }
  std::fprintf(out, "evaluation       %lld evaluation(s): %.2f s wall (%s), %.2f s CPU\n",
               r.evaluations_count, r.eval_seconds,
               r.kfac ? "between the steps" : "in the time split's other", r.eval_cpu_seconds);
  std::fprintf(out, "process          CPU %.2f s; data load %.2f s; %d thread(s); peak RSS %s\n",
               r.cpu_seconds, r.load_seconds, r.eigen_threads, detail::mib(peak_rss).c_str());
  if (r.ranks.size() > 1) {
    std::fprintf(out, "ranks            %zu over %s; partitioner %s, schedule %s%s%s\n",
                 r.ranks.size(), r.transport.c_str(), c.partitioner.c_str(), c.schedule.c_str(),
                 uses_admm(c)          ? ", consensus ADMM"
                 : uses_local_steps(c) ? ", consensus "
                                       : "",
                 uses_local_steps(c) ? c.consensus.c_str() : "");
    if (uses_local_steps(c)) {
      std::fprintf(out, "                 %s: %zu rounds, one every %lld steps\n",
                   c.consensus.c_str(), s.admm_rounds.size(), c.tau.value_or(8));
    }
    if (uses_link(c)) {
      const dho2::simulated_link_options link = link_options_of(c);
      std::fprintf(out,
                   "                 simulated link: latency %g s, bandwidth %g bytes/s (each "
                   "transport call also sleeps for its alpha-beta time)\n",
                   link.latency, link.bandwidth);
    }
    if (r.admm_rho && uses_admm(c)) {
      std::fprintf(out, "                 ADMM: %zu rounds, rho %g at the end\n",
                   s.admm_rounds.size(), *r.admm_rho);
    }
    std::fprintf(out,
                 "  rank role       shard   curvature   opt state        sent    received"
                 "   comm s  staleness\n");
    for (const rank_record& k : r.ranks) {
      std::fprintf(out, "  %4d %-9s %7lld %11s %11s %11s %11s %8.2f %10lld\n", k.rank,
                   k.curvature_rank ? "curvature" : "trainer", k.shard,
                   detail::mib(static_cast<std::size_t>(k.curvature_bytes)).c_str(),
                   detail::mib(static_cast<std::size_t>(k.optimizer_state_bytes)).c_str(),
                   detail::mib(static_cast<std::size_t>(k.bytes_sent)).c_str(),
                   detail::mib(static_cast<std::size_t>(k.bytes_received)).c_str(), k.transport_s,
                   k.max_staleness);
    }
  }
  std::fflush(out);
}

/// The --summary-json document.
inline std::string summary_json(const train_config& c, const run_result& r, std::size_t peak_rss) {
  const dho2::summary& s = r.summary;
  const auto ll = [](auto v) { return static_cast<long long>(v); };
  const auto optional_number = [](json_writer& j, std::string_view name,
                                  const std::optional<double>& v) {
    j.key(name);
    if (v) {
      j.value(*v);
    } else {
      j.null();
    }
  };
  json_writer j;
  j.begin_object();
  j.member("program", "dho2_train");
  j.member("optimizer", c.optimizer);
  j.member("model", r.model_name);
  j.member("dataset", c.dataset);
  j.member("ranks", static_cast<long long>(std::max<std::size_t>(r.ranks.size(), 1)));
  j.member("transport", r.transport);
  j.member("partitioner", c.partitioner);
  j.member("schedule", c.schedule);
  j.member("admm", uses_admm(c));
  j.member("consensus", uses_admm(c) ? std::string("admm") : c.consensus);
  j.member("epochs", ll(s.epochs));
  j.member("steps", ll(s.steps));
  j.member("iterations", ll(s.iterations));
  j.member("steps_per_epoch", r.steps_per_epoch);
  j.member("epochs_fractional", r.steps_per_epoch > 0 ? static_cast<double>(s.iterations) /
                                                            static_cast<double>(r.steps_per_epoch)
                                                      : 0.0);
  j.member("termination", std::string(dho2::to_string(s.termination)));
  j.member("termination_reason", detail::why_stopped(r));
  j.member("wall_s", s.total_seconds);
  j.member("cpu_s", r.cpu_seconds);
  j.member("final_test_accuracy", r.final_test_accuracy);
  j.member("final_test_loss", r.final_test_loss);
  j.member("final_eval_train_loss", r.final_eval_train_loss);
  j.member("final_train_loss", s.final_loss);
  optional_number(j, "target_accuracy", c.target_accuracy);
  optional_number(j, "target_loss", c.target_loss);
  optional_number(j, "time_budget_s", c.time_budget);
  j.member("time_budget_reached", r.time_budget_reached);
  optional_number(j, "time_to_target_s",
                  r.target.reached ? std::optional<double>(r.target.elapsed_s) : std::nullopt);
  optional_number(j, "time_to_target_excluding_eval_s",
                  r.target.reached ? std::optional<double>(r.target.elapsed_s - r.target.eval_s)
                                   : std::nullopt);
  optional_number(j, "time_to_target_cpu_s",
                  r.target.reached ? std::optional<double>(r.target.cpu_s) : std::nullopt);
  j.key("steps_to_target");
  if (r.target.reached) {
    j.value(r.target.step);
  } else {
    j.null();
  }
  j.member("curvature_estimates", ll(s.curvature_estimates));
  j.member("failed_estimates", ll(s.failed_estimates));
  j.member("hvps", ll(s.hvps));
  j.member("hvp_source", std::string(dho2::to_string(s.hvp)));
  j.member("skipped_steps", ll(s.skipped_steps()));
  j.member("peak_rss_bytes", static_cast<unsigned long long>(peak_rss));
  j.member("max_staleness", ll(s.max_staleness));
  j.member("late_estimates", ll(s.late_estimates));
  j.member("skipped_estimates", ll(s.skipped_estimates));
  j.key("resumed_from_step");
  if (r.resumed_at) {
    j.value(*r.resumed_at);
  } else {
    j.null();
  }
  j.key("last_checkpoint_step");
  if (r.last_checkpoint >= 0) {
    j.value(r.last_checkpoint + 1);
  } else {
    j.null();
  }
  j.member("curvature_bytes_per_rank", static_cast<unsigned long long>(s.curvature_bytes));
  j.member("optimizer_state_bytes_per_rank",
           static_cast<unsigned long long>(s.optimizer_state_bytes));
  j.member("parameters", r.parameters);

  j.key("time_s").begin_object();
  j.member("wall", s.total_seconds);
  j.member("gradient", s.gradient_seconds);
  j.member("hvp", s.hvp_seconds);
  j.member("estimate_other", s.estimate_other_seconds);
  j.member("update", s.update_seconds);
  j.member("communication", s.communication_seconds);
  j.member("estimate_communication", s.estimate_communication_seconds);
  j.member("offloaded_estimates", s.offloaded_estimate_seconds);
  j.member("factor", detail::factor_seconds(r));
  j.member("inverse", detail::inverse_seconds(r));
  j.member("evaluation", r.eval_seconds);
  j.member("evaluation_cpu", r.eval_cpu_seconds);
  j.member("other", detail::other_seconds(r));
  j.member("data_load", r.load_seconds);
  j.end_object();

  j.key("options").begin_object();
  j.member("dataset", c.dataset);
  j.member("data_dir", c.dataset == "synthetic" ? std::string() : c.data_dir);
  j.member("train_size", r.train_size);
  j.member("test_size", r.test_size);
  j.member("model", c.model);
  j.member("activation", c.activation);
  j.member("optimizer", c.optimizer);
  j.member("use_curvature", uses_curvature(c.optimizer));
  j.member("lr", r.learning_rate);
  j.member("momentum", r.base_momentum);
  j.member("batch", c.batch);
  j.member("epochs", c.epochs);
  j.member("k", c.k);
  j.member("l", c.l);
  j.member("m", r.lanczos_steps);
  j.member("W", c.warmup);
  j.member("T", c.refresh_every);
  j.member("alpha", c.alpha);
  j.member("beta", c.beta);
  j.member("clip", r.clip);
  j.member("l2", c.l2);
  j.member("seed", static_cast<unsigned long long>(c.seed));
  j.member("threads", c.threads);
  j.member("eigen_threads", r.eigen_threads);
  optional_number(j, "target_accuracy", c.target_accuracy);
  optional_number(j, "target_loss", c.target_loss);
  optional_number(j, "time_budget", c.time_budget);
  j.member("continue_after_target", c.continue_after_target);
  j.key("max_steps");
  if (c.max_steps) {
    j.value(*c.max_steps);
  } else {
    j.null();
  }
  j.member("eval_every", c.eval_every);
  j.member("eval_train_size", c.eval_train_size);
  j.member("eval_log", c.eval_log);
  if (r.kfac_options) {
    const dho2::kfac_options& k = *r.kfac_options;
    j.member("damping", k.damping);
    j.member("kfac_factor_decay", k.factor_decay);
    j.member("kfac_factor_every", static_cast<long long>(k.factor_every));
    j.member("kfac_inverse_every", static_cast<long long>(k.inverse_every));
    j.member("kl_clip", k.kl_clip.value_or(0.0));
  }
  j.member("transport", c.transport);
  j.member("partitioner", c.partitioner);
  j.member("schedule", c.schedule);
  j.member("curvature_ranks", c.curvature_ranks);
  j.member("max_staleness", c.max_staleness);
  j.member("on_late", c.on_late.empty() ? std::string("keep-previous") : c.on_late);
  optional_number(j, "admm_rho", c.admm_rho);
  j.key("admm_every");
  if (c.admm_every) {
    j.value(*c.admm_every);
  } else {
    j.null();
  }
  j.member("admm_balance", c.admm_balance);
  j.end_object();

  j.key("per_rank").begin_array();
  for (const rank_record& k : r.ranks) {
    const auto ull = [](double v) { return static_cast<unsigned long long>(v); };
    j.begin_object(true);
    j.member("rank", k.rank).member("role", k.curvature_rank ? "curvature" : "trainer");
    j.member("shard_parameters", k.shard).member("steps", k.steps);
    j.member("curvature_estimates", k.curvature_estimates).member("hvps", k.hvps);
    j.member("curvature_bytes", ull(k.curvature_bytes));
    j.member("optimizer_state_bytes", ull(k.optimizer_state_bytes));
    j.member("bytes_sent", ull(k.bytes_sent)).member("bytes_received", ull(k.bytes_received));
    j.member("communication_s", k.communication_s).member("transport_s", k.transport_s);
    j.member("transport_calls", k.transport_calls).member("max_staleness", k.max_staleness);
    j.member("wall_s", k.wall_s);
    j.end_object();
  }
  j.end_array();

  if (r.kfac) {
    const dho2::kfac_summary& k = *r.kfac;
    j.key("kfac").begin_object();
    j.member("factor_updates", ll(k.factor_updates));
    j.member("inverse_updates", ll(k.inverse_updates));
    j.member("factors_inverted_rank0", ll(k.factors_inverted));
    j.member("failed_inversions", ll(k.failed_inversions));
    j.member("skipped_nonfinite", ll(k.skipped_nonfinite));
    j.member("last_kl_scale", k.last_kl_scale);
    j.member("communicated_bytes_rank0", static_cast<unsigned long long>(k.communicated_bytes));
    j.member("factor_and_inverse_bytes_per_rank",
             static_cast<unsigned long long>(k.curvature_bytes));
    j.member("state_bytes_per_rank", static_cast<unsigned long long>(k.optimizer_state_bytes));
    j.end_object();
  }

  if (!s.admm_rounds.empty()) {
    j.key("admm_rounds").begin_array();
    for (const dho2::admm_round& a : s.admm_rounds) {
      j.begin_object(true);
      j.member("round", ll(a.round)).member("step", ll(a.step));
      j.member("primal_residual", a.primal_residual).member("dual_residual", a.dual_residual);
      j.member("rho", a.rho);
      j.end_object();
    }
    j.end_array();
  }

  j.key("history").begin_array();
  for (const epoch_record& e : r.epochs) {
    j.begin_object(true);
    j.member("epoch", e.epoch).member("steps", e.steps).member("train_loss", e.train_loss);
    j.member("test_accuracy", e.test_accuracy).member("test_loss", e.test_loss);
    j.member("elapsed_s", e.elapsed_s);
    j.end_object();
  }
  j.end_array();

  j.key("evaluations").begin_array();
  for (const evaluation_record& e : r.evaluations) {
    j.begin_object(true);
    j.member("step", e.step).member("epoch", e.epoch).member("elapsed_s", e.elapsed_s);
    j.member("train_s", e.train_s).member("cpu_s", e.cpu_s);
    j.member("test_accuracy", e.metrics.test_accuracy).member("test_loss", e.metrics.test_loss);
    j.member("train_loss", e.metrics.train_loss);
    j.end_object();
  }
  j.end_array();

  j.key("estimates").begin_array();
  for (const dho2::estimate_report& e : s.estimates) {
    j.begin_object();
    j.member("step", ll(e.step)).member("retained", ll(e.retained));
    j.member("iterations", ll(e.iterations)).member("hvps", ll(e.hvps));
    j.member("breakdown", e.breakdown).member("failed", e.failed).member("scale", e.scale);
    j.member("seconds", e.seconds).member("hvp_seconds", e.hvp_seconds);
    j.member("staleness", ll(e.staleness));
    j.key("eigenvalues").begin_array(true);
    for (dho2::index i = 0; i < e.eigenvalues.size(); ++i) j.value(e.eigenvalues(i));
    j.end_array();
    j.key("residuals").begin_array(true);
    for (dho2::index i = 0; i < e.residuals.size(); ++i) j.value(e.residuals(i));
    j.end_array();
    j.end_object();
  }
  j.end_array();
  j.end_object();
  return j.str();
}

}  // namespace dho2_train
