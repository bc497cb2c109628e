// Helpers that throw `invalid_options` as "<field> = <value>. Violated constraint: ...", keeping
// the field, the value and the constraint as the exception's data.
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

// Throws `invalid_options` for `field` = `value` violating `rule`, with the three parts kept
// (`invalid_options::field()`, `value()`, `constraint()`).
template <class T>
[[noreturn]] void throw_invalid(std::string_view field, const T& value, std::string_view rule) {
  throw invalid_options(field, format_value(value), rule);
}

template <class T>
void require(bool ok, std::string_view field, const T& value, std::string_view rule) {
  if (!ok) throw_invalid(field, value, rule);
}

// The common rules: a predicate and its text each (field lists that check fields themselves use
// them too, so that the text is the same everywhere).
inline constexpr std::string_view finite_nonnegative_rule = "finite and >= 0";
inline constexpr std::string_view finite_positive_rule = "finite and > 0";
inline constexpr std::string_view unit_interval_rule = "0 <= value < 1";

inline bool is_finite_nonnegative(double v) { return std::isfinite(v) && v >= 0.0; }
inline bool is_finite_positive(double v) { return std::isfinite(v) && v > 0.0; }
inline bool is_unit_interval(double v) { return std::isfinite(v) && v >= 0.0 && v < 1.0; }

inline void require_finite_nonnegative(std::string_view field, double v) {
  require(is_finite_nonnegative(v), field, v, finite_nonnegative_rule);
}

inline void require_finite_positive(std::string_view field, double v) {
  require(is_finite_positive(v), field, v, finite_positive_rule);
}

inline void require_unit_interval(std::string_view field, double v) {
  require(is_unit_interval(v), field, v, unit_interval_rule);
}

}  // namespace dho2::detail
