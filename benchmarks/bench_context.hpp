// Context shared by the DHO2 benchmarks: the git revision the binary was built from, which each
// benchmark records with benchmark::AddCustomContext("git_revision", ...).
//
// benchmarks/CMakeLists.txt regenerates dho2_bench_revision.h at every build (target
// dho2_bench_revision: `git describe --always --dirty` of the source tree, or "unknown" outside
// a git checkout), so the recorded revision is the one the binary was built from.
#pragma once

#if __has_include("dho2_bench_revision.h")
#include "dho2_bench_revision.h"
#endif

#include <string>

namespace dho2_bench {

/// The git revision of the sources this benchmark was built from ("-dirty" when they had
/// uncommitted changes), or "unknown".
inline std::string git_revision() {
#ifdef DHO2_GIT_REVISION
  return DHO2_GIT_REVISION;
#else
  return "unknown";
#endif
}

}  // namespace dho2_bench
