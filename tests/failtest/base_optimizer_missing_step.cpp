// DHO2_EXPECT: DHO2: base_optimizer requires `b\.step\(state, g, delta\)` \(const. g: Eigen::Ref
// A base optimizer with a state and init<S>(n) but no step(state, g, delta):
// DHO2_REQUIRE_BASE_OPTIMIZER must name exactly that missing expression.
#include <dho2/concepts/base_optimizer.hpp>
#include <dho2/core/types.hpp>

#include <cstddef>

namespace {

struct no_step {
  template <dho2::model_scalar S>
  struct state {
    [[nodiscard]] std::size_t bytes() const noexcept { return 0; }
  };

  template <dho2::model_scalar S>
  [[nodiscard]] state<S> init(dho2::index /*n*/) const {
    return {};
  }
  // Deliberately absent: void step(state<S>&, const_vector_ref<S> g, vector_ref<S> delta) const.
};

DHO2_REQUIRE_BASE_OPTIMIZER(no_step, float);

}  // namespace
