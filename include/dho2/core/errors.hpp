/// @file
/// The exceptions DHO2 throws. Numerical trouble during a run is never thrown: it is reported in
/// the `dho2::summary`. Exceptions are for bad input and broken
/// infrastructure, and are raised before any state changes.
#pragma once

#include <cstddef>
#include <stdexcept>
#include <string>
#include <string_view>

namespace dho2 {

/// Base class of every exception DHO2 throws.
class error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Bad options. The message has the form
/// `"<field> = <value>. Violated constraint: <constraint>"` (Ceres style) and is thrown before
/// any communication or state change. Thrown with the three parts (as DHO2's own checks do),
/// it also keeps them: `field()`, `value()` and `constraint()`; thrown with a bare message,
/// those are empty.
class invalid_options : public error {
 public:
  /// A bare message: `field()`, `value()` and `constraint()` are empty.
  explicit invalid_options(const std::string& message) : error(message) {}
  /// A bare message: `field()`, `value()` and `constraint()` are empty.
  explicit invalid_options(const char* message) : error(message) {}
  /// The message `"<field> = <value>. Violated constraint: <constraint>"`, keeping its parts.
  invalid_options(std::string_view field, std::string_view value, std::string_view constraint)
      : error(compose(field, value, constraint)),
        field_size_(field.size()),
        value_size_(value.size()) {}

  /// The field that violates its constraint, as named in the message ("options.k",
  /// "adam::learning_rate", "weighted_partitioner weights[2]", …); empty for a bare message.
  /// Valid as long as this exception is.
  [[nodiscard]] std::string_view field() const noexcept {
    return has_parts() ? std::string_view(what()).substr(0, field_size_) : std::string_view();
  }
  /// The offending value as the message shows it ("-1", "0.5", "2 on rank 1, 3 on rank 0");
  /// empty for a bare message.
  [[nodiscard]] std::string_view value() const noexcept {
    return has_parts()
               ? std::string_view(what()).substr(field_size_ + separator.size(), value_size_)
               : std::string_view();
  }
  /// The violated constraint (">= 1", "k + l < n (l = 1, n = 4)", …); empty for a bare message.
  [[nodiscard]] std::string_view constraint() const noexcept {
    return has_parts() ? std::string_view(what()).substr(field_size_ + separator.size() +
                                                         value_size_ + rule_prefix.size())
                       : std::string_view();
  }

 private:
  static constexpr std::string_view separator = " = ";
  static constexpr std::string_view rule_prefix = ". Violated constraint: ";
  static constexpr std::size_t no_parts = static_cast<std::size_t>(-1);

  static std::string compose(std::string_view field, std::string_view value,
                             std::string_view constraint) {
    std::string message;
    message.reserve(field.size() + separator.size() + value.size() + rule_prefix.size() +
                    constraint.size());
    message.append(field).append(separator).append(value).append(rule_prefix).append(constraint);
    return message;
  }
  [[nodiscard]] bool has_parts() const noexcept { return field_size_ != no_parts; }

  // The parts are kept as sizes into what(), so that copies stay noexcept.
  std::size_t field_size_ = no_parts;
  std::size_t value_size_ = 0;
};

/// Bad input data (a malformed IDX file, a batch of the wrong shape, ...). The message names the
/// file or object and the defect.
class data_error : public error {
 public:
  using error::error;
};

/// Failure of a transport routine (a lost peer, a timeout, a malformed frame). The message names
/// the routine and the cause.
class transport_error : public error {
 public:
  using error::error;
};

/// An output file could not be written, or its path names something that is not written (a
/// directory, a socket, a block device; see `dho2/io/output_file.hpp`). The message has the form
/// `"<label> '<path>': <defect>"`, the label naming what the path is for (a command-line flag, or
/// "checkpoint file").
class output_error : public error {
 public:
  using error::error;
};

/// A checkpoint could not be written, or a checkpoint file is unusable (missing, wrong magic,
/// unknown version, checksum mismatch, truncated, a section missing or of the wrong size, or
/// written by a job with another parameter count, world size, rank, partition or options). The
/// message has the form `"checkpoint file '<path>': <defect>"`. Thrown before any state of the
/// optimizer or any existing file changes.
class checkpoint_error : public error {
 public:
  using error::error;
};

}  // namespace dho2
