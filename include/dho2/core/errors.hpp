/// @file
/// The exceptions DHO2 throws. Numerical trouble during a run is never thrown: it is reported in
/// the `dho2::summary`. Exceptions are for bad input and broken
/// infrastructure, and are raised before any state changes.
#pragma once

#include <stdexcept>
#include <string>

namespace dho2 {

/// Base class of every exception DHO2 throws.
class error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Bad options. The message has the form
/// `"<field> = <value>. Violated constraint: <constraint>"` (Ceres style) and is thrown before
/// any communication or state change.
class invalid_options : public error {
 public:
  using error::error;
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
