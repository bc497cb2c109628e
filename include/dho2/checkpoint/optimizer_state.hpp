/// @file
/// `dho2::optimizer_snapshot`: everything one rank of a `dho2::optimizer` needs to continue a run
/// exactly, and its encoding as checkpoint sections; `dho2::data_position`, the user's place in
/// the data.
///
/// Sections of a rank file — name: element type × count — with K the retained eigenpairs and m
/// the rank's state length (its shard in mode S, n in mode A); S is f32 or f64 (the scalar):
///  - `x`: S × n — the parameters as this rank holds them;
///  - `base.<field>`: S × m for a per-parameter buffer of the base state (Adam's `m`, `v`), or
///    i64/f64 × 1 for a scalar (Adam's step count `t`);
///  - `velocity.anchor`: S × (0 or m) — anchor u₀ of the Newton velocity;
///  - `velocity.coefficients`: f64 × K — coefficients a of the velocity in span(V);
///  - `velocity.anchor_projection`: f64 × K — V u₀;
///  - `curvature.eigenvalues`: f64 × K — the retained eigenvalues;
///  - `curvature.inverses`: f64 × K — ρᵢ = 1/|λᵢ + ρ_admm|;
///  - `curvature.eigenvectors`: S × m·K — this rank's rows of V, m × K column-major;
///  - `optimizer.scalars`: f64 × 3 — anchor decay δ, base scale s, ADMM penalty ρ;
///  - `optimizer.counters`: i64 × 7 — curvature requests made (the estimator's RNG stream
///    position), ADMM local steps, top pairs retained, stopped, stop pending, epoch and batch of
///    the last `optimize` step;
///  - `admm.consensus_point`, `admm.dual`: S × n in mode A, S × 0 in mode S — z and uₚ;
///  - `summary.counters`: i64 × 13 — iterations, steps, skipped (loss), skipped (gradient),
///    estimates, failed estimates, HVPs, max staleness, epochs, late estimates, skipped
///    estimates, HVP source, termination;
///  - `summary.seconds`: f64 × 8 — final loss, then gradient, HVP, other estimate, update,
///    communication, offloaded and total seconds;
///  - `summary.bytes`: u64 × 2 — curvature bytes, optimizer state bytes;
///  - `summary.message`: u8 × any — the summary's message (UTF-8);
///  - `summary.estimates`: f64 × any — per estimate: step, retained, iterations, HVPs,
///    breakdown, failed, staleness, scale, seconds, HVP seconds, e, r, then e eigenvalues and r
///    residuals;
///  - `summary.admm_rounds`: f64 × 5·rounds — per round: round, step, primal residual, dual
///    residual, ρ;
///  - `data_position`: i64 × 2 — the user's epoch and batch.
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/base/detail/momentum_state.hpp>
#include <dho2/checkpoint/file.hpp>
#include <dho2/core/summary.hpp>
#include <dho2/core/types.hpp>

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace dho2 {

/// Where a training loop is in its data: it trains next on global batch `batch` of epoch
/// `epoch`. Saved with a checkpoint and handed back on load, so the loop can resume its batcher
/// (a `shuffling_batcher` regenerates any epoch's order from its seed: call `begin_epoch(epoch)`
/// and continue at `batch`).
struct data_position {
  /// Epoch of the next batch (≥ 0).
  index epoch = 0;
  /// Index within the epoch of the next batch (≥ 0).
  index batch = 0;
};

namespace detail {

template <model_scalar S, class F>
void visit_fields(momentum_state<S>& st, F&& f) {
  f("m", st.m);
}

// Whether a base optimizer's state can be checkpointed: it has `visit_fields(f)`, or the
// overload above applies.
struct any_field_visitor {
  template <class T>
  void operator()(std::string_view, T&) const noexcept {}
};
// clang-format off
template <class State>
concept checkpointable_state =
    requires(State& st, any_field_visitor f) { st.visit_fields(f); } ||
    requires(State& st, any_field_visitor f) { visit_fields(st, f); };
// clang-format on

// Calls f(name, field) on every field of a base optimizer's state: its own `visit_fields(f)`,
// or the overload above.
template <class State, class F>
void visit_state_fields(State& st, F&& f) {
  if constexpr (requires { st.visit_fields(f); }) {
    st.visit_fields(f);
  } else if constexpr (requires { visit_fields(st, f); }) {
    visit_fields(st, f);
  } else {
    static_assert(sizeof(State) == 0,
                  "DHO2: checkpoint: the base optimizer's state has no visit_fields(f) member "
                  "calling f(name, field) on each field (see dho2::adam::state)");
  }
}

// "name:kind," for every field of a base state: part of the options hash, so a checkpoint of
// another base optimizer is refused.
template <class State>
std::string state_signature() {
  State st{};
  std::string sig;
  visit_state_fields(st, [&](std::string_view name, const auto& field) {
    using F = std::remove_cvref_t<decltype(field)>;
    sig += std::string(name) + (std::is_arithmetic_v<F> ? ":scalar," : ":buffer,");
  });
  return sig;
}

template <class T>
std::span<const T> span_of(const T* data, index count) {
  return std::span<const T>(data, static_cast<std::size_t>(count));
}

}  // namespace detail

/// The state of one rank of an optimizer with scalar `S` and base state `BaseState`, as saved
/// in its checkpoint file (the sections listed in the file comment). `optimizer` fills one in
/// `save_checkpoint` and adopts one in `load_checkpoint`; the rules that tie the sizes together
/// are checked by `read`.
template <model_scalar S, class BaseState>
struct optimizer_snapshot {
  /// Parameters as this rank holds them (all n).
  vector<S> x;
  /// Base optimizer state (this rank's m entries).
  BaseState base{};
  /// Anchor u₀ of the Newton velocity (0 or m entries).
  vector<S> anchor;
  /// Decay δ of the anchor.
  double anchor_decay = 0.0;
  /// Velocity coefficients a (K).
  Eigen::VectorXd coefficients;
  /// V u₀ (K).
  Eigen::VectorXd anchor_projection;
  /// Retained eigenvalues (K).
  Eigen::VectorXd eigenvalues;
  /// ρᵢ (K).
  Eigen::VectorXd inverses;
  /// V, m × K.
  matrix<S> eigenvectors;
  /// Base-step scale s.
  double scale = 1.0;
  /// ADMM penalty ρ.
  double penalty = 0.0;
  /// Retained pairs that are among the largest.
  index num_top = 0;
  /// Lanczos requests made (the position in the estimator's RNG stream).
  index requests = 0;
  /// ADMM local steps done.
  index local_steps = 0;
  /// The run has stopped on a non-finite value.
  bool stopped = false;
  /// Mode A: a stop to be agreed at the next round.
  bool pending_stop = false;
  /// Epoch and batch of the last step `optimize` took (the split schedule's snapshot position).
  index batch_epoch = 0, batch_index = 0;
  /// Mode A: consensus point z (n, or 0 in mode S).
  vector<S> consensus_point;
  /// Mode A: scaled dual (n, or 0 in mode S).
  vector<S> dual;
  /// The run summary so far.
  summary stats;
  /// The user's data position.
  data_position position;

  /// Adds every section to `w`.
  void write(checkpoint_writer& w) const {
    w.add("x", detail::span_of(x.data(), x.size()));
    BaseState b = base;
    detail::visit_state_fields(b, [&](std::string_view name, auto& field) {
      using F = std::remove_cvref_t<decltype(field)>;
      const std::string key = "base." + std::string(name);
      if constexpr (std::is_arithmetic_v<F>) {
        w.add(key, std::span<const F>(&field, 1));
      } else {
        w.add(key, detail::span_of(field.data(), field.size()));
      }
    });
    w.add("velocity.anchor", detail::span_of(anchor.data(), anchor.size()));
    w.add("velocity.coefficients", detail::span_of(coefficients.data(), coefficients.size()));
    w.add("velocity.anchor_projection",
          detail::span_of(anchor_projection.data(), anchor_projection.size()));
    w.add("curvature.eigenvalues", detail::span_of(eigenvalues.data(), eigenvalues.size()));
    w.add("curvature.inverses", detail::span_of(inverses.data(), inverses.size()));
    w.add("curvature.eigenvectors", detail::span_of(eigenvectors.data(), eigenvectors.size()));
    const std::vector<double> scalars{anchor_decay, scale, penalty};
    w.add("optimizer.scalars", std::span<const double>(scalars));
    const std::vector<std::int64_t> counters{requests,        local_steps,          num_top,
                                             stopped ? 1 : 0, pending_stop ? 1 : 0, batch_epoch,
                                             batch_index};
    w.add("optimizer.counters", std::span<const std::int64_t>(counters));
    w.add("admm.consensus_point", detail::span_of(consensus_point.data(), consensus_point.size()));
    w.add("admm.dual", detail::span_of(dual.data(), dual.size()));
    write_summary(w);
    const std::vector<std::int64_t> pos{position.epoch, position.batch};
    w.add("data_position", std::span<const std::int64_t>(pos));
  }

  /// Reads every section from `r` for a rank holding `n` parameters and `m` entries of state
  /// (`consensus`: mode A, which also holds z and the dual). Throws `checkpoint_error` naming
  /// the file and the section for anything missing, of the wrong type or of the wrong size.
  void read(const checkpoint_reader& r, index n, index m, bool consensus) {
    const auto un = static_cast<std::size_t>(n);
    const auto um = static_cast<std::size_t>(m);
    read_vector<S>(r, "x", x, un);
    detail::visit_state_fields(base, [&](std::string_view name, auto& field) {
      using F = std::remove_cvref_t<decltype(field)>;
      const std::string key = "base." + std::string(name);
      if constexpr (std::is_arithmetic_v<F>) {
        field = r.read<F>(key, 1)[0];
      } else {
        read_vector<typename F::Scalar>(r, key, field, um);
      }
    });
    const auto a = r.read<S>("velocity.anchor");
    if (!a.empty() && a.size() != um) {
      r.wrong_size("velocity.anchor", a.size(), "0 or " + std::to_string(m));
    }
    anchor = Eigen::Map<const vector<S>>(a.data(), static_cast<index>(a.size()));
    const auto values = r.read<double>("curvature.eigenvalues");
    const std::size_t k = values.size();
    eigenvalues = Eigen::Map<const Eigen::VectorXd>(values.data(), static_cast<index>(k));
    read_vector<double>(r, "curvature.inverses", inverses, k);
    read_vector<double>(r, "velocity.coefficients", coefficients, k);
    read_vector<double>(r, "velocity.anchor_projection", anchor_projection, k);
    const auto v = r.read<S>("curvature.eigenvectors", um * k);
    eigenvectors = Eigen::Map<const matrix<S>>(v.data(), m, static_cast<index>(k));
    const auto scalars = r.read<double>("optimizer.scalars", 3);
    anchor_decay = scalars[0];
    scale = scalars[1];
    penalty = scalars[2];
    const auto counters = r.read<std::int64_t>("optimizer.counters", 7);
    requests = counters[0];
    local_steps = counters[1];
    num_top = counters[2];
    stopped = counters[3] != 0;
    pending_stop = counters[4] != 0;
    batch_epoch = counters[5];
    batch_index = counters[6];
    if (num_top < 0 || static_cast<std::size_t>(num_top) > k) {
      r.fail("section 'optimizer.counters': " + std::to_string(num_top) +
             " top pairs, more than the " + std::to_string(k) + " retained");
    }
    read_vector<S>(r, "admm.consensus_point", consensus_point, consensus ? un : 0);
    read_vector<S>(r, "admm.dual", dual, consensus ? un : 0);
    read_summary(r);
    const auto pos = r.read<std::int64_t>("data_position", 2);
    position = {pos[0], pos[1]};
  }

 private:
  // Section `name` (elements of `T`, exactly `expected` of them) into the Eigen vector `out`.
  template <class T, class Vec>
  static void read_vector(const checkpoint_reader& r, std::string_view name, Vec& out,
                          std::size_t expected) {
    const auto v = r.template read<T>(name, expected);
    out = Eigen::Map<const Vec>(v.data(), static_cast<index>(v.size()));
  }

  // The summary's counters (then the HVP source and the termination) and its seconds, in
  // section order.
  static constexpr std::array<index summary::*, 11> summary_counters{
      &summary::iterations,
      &summary::steps,
      &summary::skipped_nonfinite_loss,
      &summary::skipped_nonfinite_gradient,
      &summary::curvature_estimates,
      &summary::failed_estimates,
      &summary::hvps,
      &summary::max_staleness,
      &summary::epochs,
      &summary::late_estimates,
      &summary::skipped_estimates};
  static constexpr std::array<double summary::*, 8> summary_seconds{
      &summary::final_loss,
      &summary::gradient_seconds,
      &summary::hvp_seconds,
      &summary::estimate_other_seconds,
      &summary::update_seconds,
      &summary::communication_seconds,
      &summary::offloaded_estimate_seconds,
      &summary::total_seconds};

  void write_summary(checkpoint_writer& w) const {
    const summary& s = stats;
    std::vector<std::int64_t> counters;
    for (const auto field : summary_counters) counters.push_back(s.*field);
    counters.push_back(static_cast<std::int64_t>(s.hvp));
    counters.push_back(static_cast<std::int64_t>(s.termination));
    w.add("summary.counters", std::span<const std::int64_t>(counters));
    std::vector<double> secs;
    for (const auto field : summary_seconds) secs.push_back(s.*field);
    w.add("summary.seconds", std::span<const double>(secs));
    const std::vector<std::uint64_t> bytes{s.curvature_bytes, s.optimizer_state_bytes};
    w.add("summary.bytes", std::span<const std::uint64_t>(bytes));
    w.add("summary.message",
          std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(s.message.data()),
                                        s.message.size()));
    std::vector<double> est;
    for (const estimate_report& e : s.estimates) {
      const auto d = [](auto v) { return static_cast<double>(v); };
      est.insert(est.end(),
                 {d(e.step), d(e.retained), d(e.iterations), d(e.hvps), e.breakdown ? 1.0 : 0.0,
                  e.failed ? 1.0 : 0.0, d(e.staleness), e.scale, e.seconds, e.hvp_seconds,
                  d(e.eigenvalues.size()), d(e.residuals.size())});
      est.insert(est.end(), e.eigenvalues.data(), e.eigenvalues.data() + e.eigenvalues.size());
      est.insert(est.end(), e.residuals.data(), e.residuals.data() + e.residuals.size());
    }
    w.add("summary.estimates", std::span<const double>(est));
    std::vector<double> rounds;
    for (const admm_round& a : s.admm_rounds) {
      rounds.insert(rounds.end(), {static_cast<double>(a.round), static_cast<double>(a.step),
                                   a.primal_residual, a.dual_residual, a.rho});
    }
    w.add("summary.admm_rounds", std::span<const double>(rounds));
  }

  void read_summary(const checkpoint_reader& r) {
    summary& s = stats;
    s = {};
    constexpr std::size_t nc = summary_counters.size();
    const auto c = r.read<std::int64_t>("summary.counters", nc + 2);
    for (std::size_t i = 0; i < nc; ++i) s.*summary_counters[i] = c[i];
    if (c[nc] < 0 || c[nc] > 2) r.fail("section 'summary.counters': unknown HVP source");
    s.hvp = static_cast<hvp_source>(c[nc]);
    if (c[nc + 1] < 0 || c[nc + 1] > 3) {
      r.fail("section 'summary.counters': unknown termination type");
    }
    s.termination = static_cast<termination_type>(c[nc + 1]);
    const auto secs = r.read<double>("summary.seconds", summary_seconds.size());
    for (std::size_t i = 0; i < secs.size(); ++i) s.*summary_seconds[i] = secs[i];
    const auto bytes = r.read<std::uint64_t>("summary.bytes", 2);
    s.curvature_bytes = static_cast<std::size_t>(bytes[0]);
    s.optimizer_state_bytes = static_cast<std::size_t>(bytes[1]);
    const auto msg = r.read<std::uint8_t>("summary.message");
    s.message.assign(msg.begin(), msg.end());
    const auto est = r.read<double>("summary.estimates");
    for (std::size_t at = 0; at < est.size();) {
      const auto bad = [&] { r.fail("section 'summary.estimates' is malformed"); };
      if (est.size() - at < 12) bad();
      const auto i = [&](std::size_t k) { return static_cast<index>(est[at + k]); };
      estimate_report e;
      e.step = i(0);
      e.retained = i(1);
      e.iterations = i(2);
      e.hvps = i(3);
      e.breakdown = est[at + 4] != 0.0;
      e.failed = est[at + 5] != 0.0;
      e.staleness = i(6);
      e.scale = est[at + 7];
      e.seconds = est[at + 8];
      e.hvp_seconds = est[at + 9];
      const index ne = i(10);
      const index nr = i(11);
      at += 12;
      if (ne < 0 || nr < 0 || static_cast<std::size_t>(ne + nr) > est.size() - at) bad();
      e.eigenvalues = Eigen::Map<const Eigen::VectorXd>(est.data() + at, ne);
      at += static_cast<std::size_t>(ne);
      e.residuals = Eigen::Map<const Eigen::VectorXd>(est.data() + at, nr);
      at += static_cast<std::size_t>(nr);
      s.estimates.push_back(std::move(e));
    }
    const auto rounds = r.read<double>("summary.admm_rounds");
    if (rounds.size() % 5 != 0) {
      r.wrong_size("summary.admm_rounds", rounds.size(), "a multiple of 5");
    }
    for (std::size_t at = 0; at < rounds.size(); at += 5) {
      s.admm_rounds.push_back({static_cast<index>(rounds[at]), static_cast<index>(rounds[at + 1]),
                               rounds[at + 2], rounds[at + 3], rounds[at + 4]});
    }
  }
};

}  // namespace dho2
