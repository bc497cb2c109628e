/// @file
/// The `admm_solver` concept: what happens across ranks between steps (DESIGN §2.4, §2.5).
///
/// A type `A` models `admm_solver` when, on a `const A&` named `a`:
///  1. `A::consensus` is a `static constexpr bool`: false for mode S (gradients are averaged at
///     every step and ranks hold shards of one shared state), true for consensus ADMM (each rank
///     keeps a full local state and takes local steps; parameters are averaged every
///     `local_steps()` steps);
///  2. `a.penalty()` returns the initial penalty ρ ≥ 0 (convertible to `double`; 0 in mode S);
///  3. `a.local_steps()` returns τ ≥ 1, the local steps between consensus rounds (1 in mode S);
///  4. `a.rebalance(primal, dual, rho)` returns the penalty for the next round given the last
///     round's primal residual ‖x − z‖, dual residual ρ‖zₖ − zₖ₋₁‖ and the current ρ (return `rho`
///     to keep it fixed). When it changes ρ, DHO2 rescales the scaled duals u by ρ_old/ρ_new.
///
/// Not required: `a.validate()` (throws `dho2::invalid_options`), called at construction.
/// Shipped models: `synchronous_admm` (mode S) and `consensus_admm` (mode A).
#pragma once

#include <dho2/core/types.hpp>

#include <concepts>

namespace dho2 {

/// What happens across ranks between steps (see the file comment).
template <class A>
concept admm_solver = std::copy_constructible<A> && requires(const A& a, double r) {
  { A::consensus } -> std::convertible_to<bool>;
  { a.penalty() } -> std::convertible_to<double>;
  { a.local_steps() } -> std::convertible_to<index>;
  { a.rebalance(r, r, r) } -> std::convertible_to<double>;
};

}  // namespace dho2
