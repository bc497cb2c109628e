// DHO2_EXPECT: DHO2: curvature_estimator requires `e\.estimate\(op, request\)` \(const. op: dho2
// An estimator whose estimate() takes (op, k) instead of (op, request):
// DHO2_REQUIRE_CURVATURE_ESTIMATOR must name the expected signature.
#include <dho2/concepts/curvature_estimator.hpp>
#include <dho2/core/types.hpp>

namespace {

struct wrong_estimator {
  [[nodiscard]] dho2::eigen_estimate estimate(dho2::hvp_operator& /*op*/, dho2::index k) const {
    dho2::eigen_estimate out;
    out.num_largest = k;
    return out;
  }
};

DHO2_REQUIRE_CURVATURE_ESTIMATOR(wrong_estimator);

}  // namespace
