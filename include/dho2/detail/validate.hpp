// Helpers that format `invalid_options` messages as "<field> = <value>. Violated constraint: ...".
#pragma once

#include <dho2/detail/internal_header_check.hpp>

#include <dho2/core/errors.hpp>

#include <charconv>
#include <cmath>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>

namespace dho2::detail {

// Shortest text that reads back as the same value (1.1, not 1.1000000000000001).
template <class T>
std::string format_value(const T& value) {
  if constexpr (std::is_floating_point_v<T>) {
    char buf[64];
    const auto r = std::to_chars(buf, buf + sizeof buf, value);
    return std::string(buf, r.ptr);
  } else {
    std::ostringstream os;
    os << value;
    return os.str();
  }
}

template <class T>
[[noreturn]] void throw_invalid(std::string_view field, const T& value, std::string_view rule) {
  std::ostringstream os;
  os << field << " = " << format_value(value) << ". Violated constraint: " << rule;
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
