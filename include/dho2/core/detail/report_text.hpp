// Text helpers of the summaries' reports (`summary::full_report`, `kfac_summary::full_report`):
// numbers as printf's "%.<p>f" and "%.<p>g" print them (without printf), byte counts in MiB, and
// report lines ("<label padded to 17 columns><text>\n").
#pragma once

#include <dho2/detail/internal_header_check.hpp>

#include <charconv>
#include <cstddef>
#include <string>
#include <string_view>
#include <system_error>

namespace dho2::detail {

// `v` with `precision` digits after the point, as printf("%.<precision>f").
inline std::string fixed_text(double v, int precision) {
  char buf[512];  // enough for any double with up to 150 digits after the point
  const auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed, precision);
  if (r.ec != std::errc()) return "(out of range)";
  return std::string(buf, r.ptr);
}

// `v` with `precision` significant digits, as printf("%.<precision>g").
inline std::string general_text(double v, int precision = 6) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::general, precision);
  if (r.ec != std::errc()) return "(out of range)";
  return std::string(buf, r.ptr);
}

// A byte count in MiB with one decimal ("12.3 MiB").
inline std::string mib_text(std::size_t bytes) {
  return fixed_text(static_cast<double>(bytes) / (1024.0 * 1024.0), 1) + " MiB";
}

// Column at which the text of a report line starts.
inline constexpr std::size_t report_label_width = 17;

// Appends "<label padded to report_label_width columns><text>\n" (an empty label continues the
// previous line's item).
inline void append_report_line(std::string& out, std::string_view label, std::string_view text) {
  out.append(label);
  if (label.size() < report_label_width) out.append(report_label_width - label.size(), ' ');
  out.append(text);
  out += '\n';
}

}  // namespace dho2::detail
