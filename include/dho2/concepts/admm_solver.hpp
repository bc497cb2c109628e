/// @file
/// The `admm_solver` concept: a consensus policy — what happens across ranks between steps.
///
/// Role: the optimizer computes curvature, owns the FOSI update and the base optimizer; the
/// consensus policy decides how the ranks' work becomes one model. Mode S
/// (`dho2::synchronous_admm`) averages gradients at every step and shards one shared state;
/// mode A (`dho2::consensus_admm`) lets each rank take local steps on its own objective and
/// reconciles the ranks every τ steps. Other schemes — over-relaxed ADMM, elastic averaging,
/// local SGD — are policies of this kind, written without touching the optimizer.
///
/// A type `A` models `admm_solver` when, for S = `float` and `double`:
///  1. `typename A::template state<S>` is the policy's run state on one rank, default
///     constructible, with `st.bytes()` (bytes it holds, for the memory report);
///  2. `A::shards_state` is a `static constexpr bool`: true when the ranks share one optimizer
///     state in shards (each rank updates the partitioner's shard; the FOSI update then sums
///     its projections over the ranks), false when each rank keeps the whole state;
///  3. `a.template init<S>(x)` on a `const A&`, with x a `dho2::const_vector_ref<S>` of the
///     parameters at the first step, returns the initial state;
///  4. `a.step(st, ctx)` on a `const A&` takes one training step and returns a
///     `dho2::step_status`; `ctx` is a `dho2::step_context` (see `dho2/fosi/step_context.hpp`):
///     the policy calls `ctx.loss_and_gradient()`, then rejects the step or calls
///     `ctx.update(g)` (the FOSI step of the rank's state) inside `ctx.timed_update`, and runs
///     its collectives on `ctx.transport()` inside `ctx.communicate`. Every rank must call the
///     same collectives in the same order, and a numerical problem must never throw (agree on
///     it, or stop at the next synchronisation).
///
/// Not required, used when present:
///  - `a.validate()`: throws `dho2::invalid_options` for bad hyper-parameters (at construction);
///  - `a.curvature_point(st, x)`: the parameters curvature is estimated at (default: x);
///  - `a.proximal_shift(st)`: σ the local objective adds to every Hessian eigenvalue (a proximal
///    term (ρ/2)‖x − z‖² adds ρ; default 0); the policy calls `ctx.set_proximal_shift` when it
///    changes;
///  - `a.identity()`: a `std::string` of the fields a resumed run must share with the run that
///    saved the checkpoint (hashed into the checkpoint's identity);
///  - `st.visit_fields(f)`: the state's fields by name, for checkpoints (as base states do).
///
/// Does not require: any particular communication pattern, or that the state be sharded.
/// Shipped models: `synchronous_admm` (mode S), `consensus_admm` (mode A), and the
/// low-communication consensus policies `local_sgd` and `diloco`. A conforming
/// minimal type: `dho2::testing::admm_solver_archetype`.
#pragma once

#include <dho2/core/step_status.hpp>
#include <dho2/core/summary.hpp>
#include <dho2/core/types.hpp>

#include <concepts>
#include <cstddef>
#include <utility>

namespace dho2 {

/// What happens across ranks between steps (see the file comment for the `step` requirement,
/// which the optimizer checks against its own context).
template <class A>
concept admm_solver = std::copy_constructible<A> &&
    requires(const A& a, const_vector_ref<float> xf, const_vector_ref<double> xd) {
  { A::shards_state } -> std::convertible_to<bool>;
  { a.template init<float>(xf) } -> std::same_as<typename A::template state<float>>;
  { a.template init<double>(xd) } -> std::same_as<typename A::template state<double>>;
  { std::as_const(std::declval<typename A::template state<double>&>()).bytes() }
      -> std::convertible_to<std::size_t>;
};

namespace detail {
template <class A, class S>
constexpr bool check_admm_solver_for() {
  if constexpr (!requires { typename A::template state<S>; }) {
    static_assert(requires { typename A::template state<S>; },
                  "DHO2: admm_solver requires the member template `A::state<S>`");
    return false;
  } else if constexpr (!requires(const A& a, const_vector_ref<S> x) {
                         { a.template init<S>(x) } -> std::same_as<typename A::template state<S>>;
                       }) {
    static_assert(requires(const A& a, const_vector_ref<S> x) {
                    { a.template init<S>(x) } -> std::same_as<typename A::template state<S>>;
                  },
                  "DHO2: admm_solver requires `a.init<S>(x)` (const; x: "
                  "Eigen::Ref<const dho2::vector<S>>) returning `A::state<S>`");
    return false;
  } else {
    constexpr bool ok = requires(const typename A::template state<S>& st) {
      { st.bytes() } -> std::convertible_to<std::size_t>;
    };
    static_assert(ok, "DHO2: admm_solver requires `state.bytes()` (const, returning the bytes "
                      "the state holds)");
    return ok;
  }
}
template <class A>
constexpr bool check_admm_solver() {
  if constexpr (!requires { A::shards_state; }) {
    static_assert(requires { A::shards_state; },
                  "DHO2: admm_solver requires `static constexpr bool A::shards_state`");
    return false;
  } else {
    return check_admm_solver_for<A, float>() && check_admm_solver_for<A, double>() &&
           std::copy_constructible<A>;
  }
}
}  // namespace detail

}  // namespace dho2

/// Fails compilation with a message starting "DHO2:" naming the first requirement of
/// `dho2::admm_solver<A>` that `A` does not meet (`step` is checked by the optimizer against its
/// context).
#define DHO2_REQUIRE_ADMM_SOLVER(A) \
  static_assert(::dho2::detail::check_admm_solver<A>(), "DHO2: see the message above")
