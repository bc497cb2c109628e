/// @file
/// The `schedule` concept: when curvature is estimated (DESIGN §2.6).
///
/// A type `C` models `schedule` when, on a `const C&` named `c`:
///  1. `c.estimate_before(step, warmup, refresh_every)` with `dho2::index` arguments returns
///     whether a curvature estimate runs before the 0-based step `step`, given the options'
///     warm-up W and refresh period T (convertible to `bool`).
///
/// Semantic requirements: a pure function of its arguments (every rank agrees).
/// `dho2::synchronous_schedule` is the shipped default; schedules that estimate on other ranks
/// or threads refine this concept.
#pragma once

#include <dho2/core/types.hpp>

#include <concepts>

namespace dho2 {

/// Decides at which steps curvature is (re-)estimated (see the file comment).
template <class C>
concept schedule = std::copy_constructible<C> && requires(const C& c, index step) {
  { c.estimate_before(step, step, step) } -> std::convertible_to<bool>;
};

}  // namespace dho2
