// The checkpoint protocol of one optimizer rank: write this rank's file, agree, commit the
// manifest on rank 0, agree; read the committed manifest and this rank's file, agree. Every
// failure is agreed before anyone throws, so all ranks throw alike and nobody waits.
#pragma once

#include <dho2/detail/internal_header_check.hpp>

#include <dho2/checkpoint/directory.hpp>
#include <dho2/checkpoint/file.hpp>
#include <dho2/core/errors.hpp>
#include <dho2/core/types.hpp>

#include <exception>
#include <filesystem>
#include <span>
#include <string>
#include <system_error>

namespace dho2::detail {

// True on every rank of `job` when `ok` is true on all of them (`communicate` times the call).
template <class Transport, class Communicate>
bool all_ranks_succeeded(Transport& job, bool ok, Communicate&& communicate) {
  if (job.size() == 1) return ok;
  double failed = ok ? 0.0 : 1.0;
  communicate([&] { job.all_reduce_sum(std::span<double>(&failed, 1)); });
  return failed == 0.0;
}

// Writes `snap` as rank id.rank's file of the checkpoint of step id.step in `dir`, then commits
// the checkpoint (the protocol of dho2/checkpoint/directory.hpp); `agree(ok)` is true on every
// rank when ok is true on all.
template <class Snapshot, class Agree>
void commit_checkpoint(const std::filesystem::path& dir, const Snapshot& snap,
                       const checkpoint_identity& id, Agree&& agree) {
  std::string error;
  try {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (!std::filesystem::is_directory(dir)) {
      throw checkpoint_error("checkpoint directory '" + dir.string() +
                             "': cannot be created: " + ec.message());
    }
    checkpoint_writer w(id);
    snap.write(w);
    w.write(checkpoint_rank_file(dir, id.rank, id.step));
  } catch (const std::exception& e) {
    error = e.what();
  }
  const std::string not_saved = "checkpoint directory '" + dir.string() +
                                "': the checkpoint of step " + std::to_string(id.step) +
                                " was not committed (the previous one stays in use)";
  if (!agree(error.empty())) {
    throw checkpoint_error(error.empty() ? not_saved + ": another rank failed to save"
                                         : error + "; " + not_saved);
  }
  if (id.rank == 0) {
    try {
      write_checkpoint_manifest(dir, id);
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  if (!agree(error.empty())) {
    throw checkpoint_error(error.empty() ? not_saved + ": rank 0 failed to write the manifest"
                                         : error + "; " + not_saved);
  }
  remove_stale_checkpoint_files(dir, id.rank, id.step);
}

// Reads the checkpoint committed in `dir` into `snap` (n parameters, m entries of state) for
// the job `job`; throws checkpoint_error on every rank if any rank fails.
template <class Snapshot, class Agree>
void read_checkpoint(const std::filesystem::path& dir, const checkpoint_identity& job,
                     Snapshot& snap, index n, index m, Agree&& agree) {
  std::string error;
  try {
    const checkpoint_reader manifest = read_checkpoint_manifest(dir);
    manifest.expect(job, false);
    const index step = manifest.identity().step;
    const checkpoint_reader file(checkpoint_rank_file(dir, job.rank, step));
    file.expect(job, true);
    if (file.identity().step != step) {
      file.fail("step " + std::to_string(file.identity().step) + " differs from the step " +
                std::to_string(step) + " the manifest commits");
    }
    snap.read(file, n, m);
  } catch (const std::exception& e) {
    error = e.what();
  }
  if (!agree(error.empty())) {
    throw checkpoint_error(error.empty() ? "checkpoint directory '" + dir.string() +
                                               "': not loaded: another rank could not load "
                                               "its file"
                                         : error);
  }
}

}  // namespace dho2::detail
