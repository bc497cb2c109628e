/// @file
/// `dho2::synchronous_schedule`: every rank pauses and joins the estimate (the reference's
/// behaviour).
#pragma once

#include <dho2/concepts/schedule.hpp>

#include <optional>
#include <string>

namespace dho2 {

/// Estimates before the 0-based steps W − 1, W − 1 + T, W − 1 + 2T, … (the reference's indices),
/// on the current parameters, every rank of the group taking part; the step itself already uses
/// the new curvature.
struct synchronous_schedule {
  /// Nothing is kept between steps.
  struct state {};

  /// Estimates inline at the reference's steps.
  template <class Context>
  void before_step(state& /*st*/, Context& ctx) const {
    if (ctx.reference_step_due()) ctx.estimate_now();
  }
  /// Nothing is in flight.
  template <class Host>
  void finish(state& /*st*/, Host& /*host*/) const {}
  /// Nothing is in flight.
  [[nodiscard]] std::optional<estimate_in_flight> in_flight(const state& /*st*/) const {
    return std::nullopt;
  }
  /// What a resumed run must share with the saver.
  [[nodiscard]] std::string identity() const { return "synchronous_schedule"; }
};

static_assert(schedule<synchronous_schedule>);

}  // namespace dho2
