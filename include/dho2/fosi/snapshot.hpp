/// @file
/// `dho2::optimizer_snapshot`: one rank of a `dho2::optimizer` as its checkpoint file holds it —
/// the parameters, the whole `dho2::run_state` and the user's data position — and its encoding
/// as checkpoint sections.
///
/// Sections of a rank file — name: element type × count — with K the retained eigenpairs and m
/// the rank's state length (its shard in mode S, n in mode A); S is f32 or f64 (the scalar):
///  - `x`: S × n — the parameters as this rank holds them;
///  - `base.<field>`: S × m for a per-parameter buffer of the base state (Adam's `m`, `v`), or
///    i64/f64 × 1 for a scalar (Adam's step count `t`);
///  - `admm.<field>`: the consensus policy's state, likewise (mode A: `consensus_point` and
///    `dual`, S × n; `rho`, f64; `local_steps`, i64; `pending_stop`, u8; mode S: none);
///  - `velocity.anchor`: S × (0 or m) — anchor u₀ of the Newton velocity;
///  - `velocity.coefficients`: f64 × K — coefficients a of the velocity in span(V);
///  - `velocity.anchor_projection`: f64 × K — Vᵀu₀;
///  - `curvature.eigenvalues`: f64 × K — the retained eigenvalues;
///  - `curvature.inverses`: f64 × K — ρᵢ = 1/|λᵢ + σ|;
///  - `curvature.eigenvectors`: S × m·K — this rank's rows of V, m × K column-major;
///  - `optimizer.scalars`: f64 × 2 — anchor decay δ, base scale s;
///  - `optimizer.counters`: i64 × 6 — curvature requests made (the estimator's RNG stream
///    position), top pairs retained, stopped, epoch and batch of the last `optimize` step,
///    consecutive skipped steps;
///  - `summary.*`: the summary (see `dho2/checkpoint/optimizer_state.hpp`);
///  - `data_position`: i64 × 2 — the user's epoch and batch.
#pragma once

#include <dho2/checkpoint/file.hpp>
#include <dho2/checkpoint/optimizer_state.hpp>
#include <dho2/core/data_position.hpp>
#include <dho2/core/types.hpp>
#include <dho2/fosi/run_state.hpp>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace dho2 {

/// One rank of an optimizer with scalar `S` and run state `RunState`, as saved in its
/// checkpoint file (the sections listed in the file comment).
template <model_scalar S, class RunState>
struct optimizer_snapshot {
  /// Parameters as this rank holds them (all n).
  vector<S> x;
  /// Everything the optimizer carries from step to step.
  RunState run{};
  /// The user's data position.
  data_position position;

  /// Adds every section to `w`.
  void write(checkpoint_writer& w) const {
    w.add("x", detail::span_of(x.data(), x.size()));
    RunState copy = run;
    write_fields(w, "base.", copy.base);
    write_fields(w, "admm.", copy.consensus);
    const newton_subspace<S>& v = run.newton;
    w.add("velocity.anchor", detail::span_of(v.anchor.data(), v.anchor.size()));
    w.add("velocity.coefficients", detail::span_of(v.coefficients.data(), v.coefficients.size()));
    w.add("velocity.anchor_projection",
          detail::span_of(v.anchor_projection.data(), v.anchor_projection.size()));
    w.add("curvature.eigenvalues", detail::span_of(v.eigenvalues.data(), v.eigenvalues.size()));
    w.add("curvature.inverses", detail::span_of(v.inverses.data(), v.inverses.size()));
    w.add("curvature.eigenvectors", detail::span_of(v.basis.data(), v.basis.size()));
    const std::vector<double> scalars{v.anchor_decay, v.scale};
    w.add("optimizer.scalars", std::span<const double>(scalars));
    const std::vector<std::int64_t> counters{run.requests,        v.num_top,
                                             run.stopped ? 1 : 0, run.batch_epoch,
                                             run.batch_index,     run.consecutive_skips};
    w.add("optimizer.counters", std::span<const std::int64_t>(counters));
    detail::write_summary_sections(w, run.stats);
    const std::vector<std::int64_t> pos{position.epoch, position.batch};
    w.add("data_position", std::span<const std::int64_t>(pos));
  }

  /// Reads every section from `r` for a rank holding `n` parameters and `m` entries of state.
  /// `run` must hold a freshly initialised state (its base and consensus buffers have the sizes
  /// the file must have). Throws `checkpoint_error` naming the file and the section for
  /// anything missing, of the wrong type or of the wrong size.
  void read(const checkpoint_reader& r, index n, index m) {
    const auto um = static_cast<std::size_t>(m);
    read_vector<S>(r, "x", x, static_cast<std::size_t>(n));
    read_fields(r, "base.", run.base);
    read_fields(r, "admm.", run.consensus);
    newton_subspace<S>& v = run.newton;
    const auto a = r.read<S>("velocity.anchor");
    if (!a.empty() && a.size() != um) {
      r.wrong_size("velocity.anchor", a.size(), "0 or " + std::to_string(m));
    }
    v.anchor = Eigen::Map<const vector<S>>(a.data(), static_cast<index>(a.size()));
    const auto values = r.read<double>("curvature.eigenvalues");
    const std::size_t k = values.size();
    v.eigenvalues = Eigen::Map<const Eigen::VectorXd>(values.data(), static_cast<index>(k));
    read_vector<double>(r, "curvature.inverses", v.inverses, k);
    read_vector<double>(r, "velocity.coefficients", v.coefficients, k);
    read_vector<double>(r, "velocity.anchor_projection", v.anchor_projection, k);
    const auto e = r.read<S>("curvature.eigenvectors", um * k);
    v.basis = Eigen::Map<const matrix<S>>(e.data(), m, static_cast<index>(k));
    const auto scalars = r.read<double>("optimizer.scalars", 2);
    v.anchor_decay = scalars[0];
    v.scale = scalars[1];
    const auto counters = r.read<std::int64_t>("optimizer.counters", 6);
    run.requests = counters[0];
    v.num_top = counters[1];
    run.stopped = counters[2] != 0;
    run.batch_epoch = counters[3];
    run.batch_index = counters[4];
    run.consecutive_skips = counters[5];
    if (run.consecutive_skips < 0) {
      r.fail("section 'optimizer.counters': negative count of consecutive skipped steps");
    }
    if (v.num_top < 0 || static_cast<std::size_t>(v.num_top) > k) {
      r.fail("section 'optimizer.counters': " + std::to_string(v.num_top) +
             " top pairs, more than the " + std::to_string(k) + " retained");
    }
    detail::read_summary_sections(r, run.stats);
    const auto pos = r.read<std::int64_t>("data_position", 2);
    position = {pos[0], pos[1]};
  }

 private:
  template <class State>
  static void write_fields(checkpoint_writer& w, std::string_view prefix, State& st) {
    detail::visit_state_fields(st, [&](std::string_view name, auto& field) {
      using F = std::remove_cvref_t<decltype(field)>;
      const std::string key = std::string(prefix) + std::string(name);
      if constexpr (std::is_arithmetic_v<F>) {
        w.add(key, std::span<const F>(&field, 1));
      } else {
        w.add(key, detail::span_of(field.data(), field.size()));
      }
    });
  }

  // Fields of a freshly initialised state: each buffer must have the length it has now.
  template <class State>
  static void read_fields(const checkpoint_reader& r, std::string_view prefix, State& st) {
    detail::visit_state_fields(st, [&](std::string_view name, auto& field) {
      using F = std::remove_cvref_t<decltype(field)>;
      const std::string key = std::string(prefix) + std::string(name);
      if constexpr (std::is_arithmetic_v<F>) {
        field = r.read<F>(key, 1)[0];
      } else {
        read_vector<typename F::Scalar>(r, key, field, static_cast<std::size_t>(field.size()));
      }
    });
  }

  // Section `name` (elements of `T`, exactly `expected` of them) into the Eigen vector `out`.
  template <class T, class Vec>
  static void read_vector(const checkpoint_reader& r, std::string_view name, Vec& out,
                          std::size_t expected) {
    const auto v = r.template read<T>(name, expected);
    out = Eigen::Map<const Vec>(v.data(), static_cast<index>(v.size()));
  }
};

}  // namespace dho2
