/// @file
/// What checkpoints of any optimizer share: how a policy's state is visited field by field
/// (`visit_fields`), and the sections of a `dho2::summary`. The sections of a FOSI rank file are
/// listed in `dho2/fosi/snapshot.hpp`.
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/base/detail/momentum_state.hpp>
#include <dho2/checkpoint/file.hpp>
#include <dho2/core/data_position.hpp>
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

// The summary's counters (then the HVP source and the termination) and its seconds, in
// section order.
inline constexpr std::array<index summary::*, 11> summary_counters{
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
inline constexpr std::array<double summary::*, 8> summary_seconds{
    &summary::final_loss,
    &summary::gradient_seconds,
    &summary::hvp_seconds,
    &summary::estimate_other_seconds,
    &summary::update_seconds,
    &summary::communication_seconds,
    &summary::offloaded_estimate_seconds,
    &summary::total_seconds};

inline void write_summary_sections(checkpoint_writer& w, const summary& s) {
  std::vector<std::int64_t> counters;
  for (const auto field : summary_counters) counters.push_back(s.*field);
  counters.push_back(static_cast<std::int64_t>(s.hvp));
  counters.push_back(static_cast<std::int64_t>(s.termination));
  w.add("summary.counters", std::span<const std::int64_t>(counters));
  std::vector<double> secs;
  for (const auto field : summary_seconds) secs.push_back(s.*field);
  w.add("summary.seconds", std::span<const double>(secs));
  // A section of its own, so that checkpoints written before it existed still load (as 0).
  const double estimate_communication = s.estimate_communication_seconds;
  w.add("summary.estimate_communication", std::span<const double>(&estimate_communication, 1));
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

inline void read_summary_sections(const checkpoint_reader& r, summary& s) {
  s = {};
  constexpr std::size_t nc = summary_counters.size();
  const auto c = r.read<std::int64_t>("summary.counters", nc + 2);
  for (std::size_t i = 0; i < nc; ++i) s.*summary_counters[i] = c[i];
  if (c[nc] < 0 || c[nc] > 2) r.fail("section 'summary.counters': unknown HVP source");
  s.hvp = static_cast<hvp_source>(c[nc]);
  if (c[nc + 1] < 0 || c[nc + 1] > static_cast<std::int64_t>(termination_type::interrupted)) {
    r.fail("section 'summary.counters': unknown termination type");
  }
  s.termination = static_cast<termination_type>(c[nc + 1]);
  const auto secs = r.read<double>("summary.seconds", summary_seconds.size());
  for (std::size_t i = 0; i < secs.size(); ++i) s.*summary_seconds[i] = secs[i];
  if (r.has("summary.estimate_communication")) {
    s.estimate_communication_seconds = r.read<double>("summary.estimate_communication", 1)[0];
  }
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

}  // namespace detail

}  // namespace dho2
