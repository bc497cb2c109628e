/// @file
/// `dho2::synchronous_admm`: mode S (DESIGN §2.4) — every step is synchronised, so the
/// parameters are the consensus after every step and nothing happens between steps.
#pragma once

namespace dho2 {

/// Mode S: no local steps, no duals. On one process this is the plain FOSI step.
struct synchronous_admm {};

}  // namespace dho2
