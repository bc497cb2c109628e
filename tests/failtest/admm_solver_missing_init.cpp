// DHO2_EXPECT: DHO2: admm_solver requires `a\.init<S>\(x\)`
// A consensus policy with a state and step but no init<S>(x): DHO2_REQUIRE_ADMM_SOLVER must name
// exactly that missing expression.
#include <dho2/concepts/admm_solver.hpp>

#include <cstddef>

namespace {

struct no_init {
  static constexpr bool shards_state = true;
  template <dho2::model_scalar S>
  struct state {
    [[nodiscard]] std::size_t bytes() const noexcept { return 0; }
  };
  // Deliberately absent: template <S> state<S> init(dho2::const_vector_ref<S> x) const.
};

DHO2_REQUIRE_ADMM_SOLVER(no_init);

}  // namespace
