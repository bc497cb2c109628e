// Helpers that format `invalid_options` messages as "<field> = <value>. Violated constraint: ...".
#pragma once

#include <dho2/core/errors.hpp>

#include <cmath>
#include <sstream>
#include <string_view>

namespace dho2::detail {

template <class T>
[[noreturn]] void throw_invalid(std::string_view field, const T& value, std::string_view rule) {
  std::ostringstream os;
  os.precision(17);
  os << field << " = " << value << ". Violated constraint: " << rule;
  throw invalid_options(os.str());
}

template <class T>
void require(bool ok, std::string_view field, const T& value, std::string_view rule) {
  if (!ok) throw_invalid(field, value, rule);
}

inline void require_finite_nonnegative(std::string_view field, double v) {
  require(std::isfinite(v) && v >= 0.0, field, v, "finite and >= 0");
}

inline void require_finite_positive(std::string_view field, double v) {
  require(std::isfinite(v) && v > 0.0, field, v, "finite and > 0");
}

inline void require_unit_interval(std::string_view field, double v) {
  require(std::isfinite(v) && v >= 0.0 && v < 1.0, field, v, "0 <= value < 1");
}

}  // namespace dho2::detail
