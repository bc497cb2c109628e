/// @file
/// `dho2::checkpoint_error`: a checkpoint that cannot be written or read.
#pragma once

#include <dho2/core/errors.hpp>

namespace dho2 {

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
