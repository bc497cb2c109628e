// The bound on an estimate's staleness that the snapshot schedules share.
#pragma once

#include <dho2/detail/internal_header_check.hpp>

#include <dho2/core/types.hpp>
#include <dho2/detail/validate.hpp>

#include <string>

namespace dho2::detail {

// s ≥ 0, and s < T while curvature is in use, so at most one estimate is in flight.
template <class Host>
void check_staleness(index staleness, const Host& host) {
  require(staleness >= 0, "schedule staleness", staleness, ">= 0");
  if (host.uses_curvature() && staleness > 0) {
    require(staleness < host.refresh_every(), "schedule staleness", staleness,
            "< options.refresh_every = " + std::to_string(host.refresh_every()) +
                " (at most one estimate in flight)");
  }
}

}  // namespace dho2::detail
