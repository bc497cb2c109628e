// DHO2_EXPECT: DHO2: schedule requires `c\.in_flight\(state\)`
// A schedule with a state and before_step/finish but no in_flight(state): DHO2_REQUIRE_SCHEDULE
// must name exactly that missing expression.
#include <dho2/concepts/schedule.hpp>

namespace {

struct no_in_flight {
  struct state {};
  template <class Context>
  void before_step(state& /*st*/, Context& /*ctx*/) const {}
  template <class Host>
  void finish(state& /*st*/, Host& /*host*/) const {}
  // Deliberately absent: std::optional<dho2::estimate_in_flight> in_flight(const state&) const.
};

DHO2_REQUIRE_SCHEDULE(no_in_flight);

}  // namespace
