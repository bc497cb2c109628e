/// @file
/// The `base_optimizer` concept: the first-order optimizer FOSI runs on the part of the gradient
/// outside the curvature subspace (the step: docs/algorithm.md, "The FOSI step").
///
/// Two levels, as in ensmallen's update policies: the policy object holds copyable
/// hyper-parameters; its typed run state lives in `B::state<S>`. A type `B` models
/// `base_optimizer<B, S>` for a scalar `S` (float or double) when:
///  1. `typename B::template state<S>` is the run state for a shard of parameters;
///  2. `b.template init<S>(n)` on a `const B&` returns a fresh state for n parameters;
///  3. `b.step(state, g, delta)` on a `const B&`, with `g` an `Eigen::Ref<const dho2::vector<S>>`
///     and `delta` an `Eigen::Ref<dho2::vector<S>>` of the state's length, advances the state
///     and writes the step to *add* to the parameters (already negated and scaled by the learning
///     rate: plain SGD writes −lr·g);
///  4. `state.bytes()` returns the bytes the state holds (for the summary's memory report).
///
/// Not required, used when present:
///  - `b.validate()`: throws `dho2::invalid_options` for bad hyper-parameters (called before any
///    state change);
///  - `B::default_clip`: a `static constexpr double`, FOSI's default scaling clip c for this base
///    (1 for Adam, whose per-coordinate scaling makes c > 1 unsafe; 3 otherwise);
///  - `b.scaling_clip()` (const, returning `double`): the default clip decided at run time, used
///    instead of `B::default_clip` (`dho2::any_base`, whose wrapped base is chosen at run time);
///  - `b.learning_rate`: a `double` field, the rate `optimizer::learning_rate()` reads and
///    `optimizer::set_learning_rate` (learning-rate schedules) changes between steps;
///  - `state.visit_fields(f)`: calls `f(name, field)` for every field of the state — `name` a
///    `const char*` unique within the state, `field` a `dho2::vector<S>&` or an integer or
///    floating-point scalar by reference — so that `optimizer::save_checkpoint` and
///    `load_checkpoint` can write and restore it (required only by them; without it they fail to
///    compile with a "DHO2: checkpoint:" message). See `dho2::adam::state` for an example;
///  - `b.decay(x, delta)` on a `const B&`, with `x` an `Eigen::Ref<const dho2::vector<S>>` (the
///    parameters before the step, on the state's layout) and `delta` the finished step: adds a
///    term that depends on the parameters, not the gradient — decoupled weight decay
///    (`dho2::adamw` adds −ηλx). `dho2::optimizer` calls it after the FOSI combination, so the
///    term is outside the Newton subspace split (not projected, not scaled by s) and the
///    curvature estimate never sees it (`detail::apply_decay`). It must be element-wise in `x`.
///
///  - `b.begin_step(state)` on a `const B&`: advances the state's per-step scalars (Adam's step
///    count) and returns a *step kernel* `k`, a callable such that `k(begin, g, delta)` — `g` and
///    `delta` as in `step`, of equal length L — performs this step on entries
///    [begin, begin + L) of the state. Calling it on consecutive blocks that cover [0, n) once
///    each must give what `step` gives (`step` may simply be `begin_step(st)(0, g, delta)`).
///    FOSI's update then runs the base step inside its pass over V, block by block while the
///    block is in cache (`newton_subspace::step`); without it the update calls `step` on the
///    whole shard, which costs two more passes over it and one more over V.
///
/// The step must be element-wise in `g` (coordinate i of `delta` depends only on coordinate i of
/// `g` and of the state): DHO2 shards the parameters over ranks and runs `step` on each shard.
/// Coupled (L2) weight decay belongs in the model's loss, where the curvature sees it; decoupled
/// decay belongs in `decay`, never in `step` (which sees only the part of g outside V).
#pragma once

#include <dho2/core/types.hpp>

#include <concepts>
#include <cstddef>
#include <utility>

namespace dho2 {

/// A first-order optimizer policy for parameters of scalar `S` (see the file comment).
template <class B, class S>
concept base_optimizer =
    model_scalar<S> && std::copy_constructible<B> &&
    requires(const B& b, index n) {
      typename B::template state<S>;
      { b.template init<S>(n) } -> std::same_as<typename B::template state<S>>;
    } &&
    requires(const B& b, typename B::template state<S>& st, const_vector_ref<S> g,
             vector_ref<S> delta) {
      b.step(st, g, delta);
      { std::as_const(st).bytes() } -> std::convertible_to<std::size_t>;
    };

/// FOSI's default scaling clip c for base optimizer `B`: `B::default_clip` if declared, else 3.
template <class B>
constexpr double default_clip_for() {
  if constexpr (requires { B::default_clip; }) {
    return static_cast<double>(B::default_clip);
  } else {
    return 3.0;
  }
}

/// FOSI's default scaling clip c for the base optimizer `b`: `b.scaling_clip()` if it has one
/// (a clip known only at run time), else `default_clip_for<B>()`.
template <class B>
double default_clip_of(const B& b) {
  if constexpr (requires { b.scaling_clip(); }) {
    return static_cast<double>(b.scaling_clip());
  } else {
    return default_clip_for<B>();
  }
}

namespace detail {
// Whether base optimizer B has a `learning_rate` field a schedule can set between steps.
template <class B>
concept has_learning_rate = requires(B& b, double v) {
  b.learning_rate = v;
  { b.learning_rate } -> std::convertible_to<double>;
};

// Whether base optimizer B provides a step kernel (`b.begin_step(state)`, see the file comment).
template <class B, class S>
concept has_step_kernel = requires(const B& b, typename B::template state<S>& st, index begin,
                                   const_vector_ref<S> g, vector_ref<S> delta) {
  b.begin_step(st)(begin, g, delta);
};

// delta += base's parameter term (b.decay(x, delta)) when the base has one; nothing otherwise.
template <class S, class B>
void apply_decay(const B& b, const_vector_ref<S> x, vector_ref<S> delta) {
  if constexpr (requires { b.decay(x, delta); }) b.decay(x, delta);
}

template <class B, class S>
constexpr bool check_base_optimizer() {
  if constexpr (!requires { typename B::template state<S>; }) {
    static_assert(requires { typename B::template state<S>; },
                  "DHO2: base_optimizer requires the member template `B::state<S>`");
    return false;
  } else if constexpr (!requires(const B& b, index n) {
                         { b.template init<S>(n) } -> std::same_as<typename B::template state<S>>;
                       }) {
    static_assert(requires(const B& b, index n) {
                    { b.template init<S>(n) } -> std::same_as<typename B::template state<S>>;
                  },
                  "DHO2: base_optimizer requires `b.init<S>(n)` (const) returning `B::state<S>`");
    return false;
  } else if constexpr (!requires(const B& b, typename B::template state<S>& st,
                                 const_vector_ref<S> g, vector_ref<S> d) { b.step(st, g, d); }) {
    static_assert(requires(const B& b, typename B::template state<S>& st, const_vector_ref<S> g,
                           vector_ref<S> d) { b.step(st, g, d); },
                  "DHO2: base_optimizer requires `b.step(state, g, delta)` (const; g: "
                  "Eigen::Ref<const dho2::vector<S>>, delta: Eigen::Ref<dho2::vector<S>>)");
    return false;
  } else {
    constexpr bool ok = requires(const typename B::template state<S>& st) {
      { st.bytes() } -> std::convertible_to<std::size_t>;
    };
    static_assert(ok, "DHO2: base_optimizer requires `state.bytes()` (const, returning the bytes "
                      "the state holds)");
    return ok && std::copy_constructible<B>;
  }
}
}  // namespace detail

}  // namespace dho2

/// Fails compilation with a message starting "DHO2:" naming the first requirement of
/// `dho2::base_optimizer<B, S>` that `B` does not meet.
#define DHO2_REQUIRE_BASE_OPTIMIZER(B, S) \
  static_assert(::dho2::detail::check_base_optimizer<B, S>(), "DHO2: see the message above")
