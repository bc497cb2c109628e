/// @file
/// `dho2::synchronous_admm`: mode S (DESIGN §2.4) — every step is synchronised, so the
/// parameters are the consensus after every step and nothing happens between steps.
#pragma once

#include <dho2/concepts/admm_solver.hpp>

namespace dho2 {

/// Mode S: gradients are reduce-scattered at every step, each rank updates its shard, and the
/// parameters are all-gathered; no local steps, no duals. On one process, the plain FOSI step.
struct synchronous_admm {
  /// Mode S is not a consensus method.
  static constexpr bool consensus = false;
  /// No proximal term.
  [[nodiscard]] constexpr double penalty() const noexcept { return 0.0; }
  /// Every step is synchronised.
  [[nodiscard]] constexpr index local_steps() const noexcept { return 1; }
  /// Nothing to rebalance.
  [[nodiscard]] constexpr double rebalance(double /*primal*/, double /*dual*/,
                                           double rho) const noexcept {
    return rho;
  }
};

static_assert(admm_solver<synchronous_admm>);

}  // namespace dho2
