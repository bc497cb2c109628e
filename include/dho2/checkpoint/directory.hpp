/// @file
/// The layout of a checkpoint directory and its commit point, the manifest.
///
/// A checkpoint of a job of P ranks taken after t step calls is the files
/// `<dir>/rank-<r>.step-<t>.dho2ckpt` (r = 0 … P − 1, one per rank, written by that rank) and
/// `<dir>/manifest.dho2ckpt`, a small checkpoint file (same container, see
/// `dho2/checkpoint/file.hpp`) written by rank 0 whose header names the step t, n, P and the
/// options hash, with one section `manifest` (i64: t, P). The manifest is the commit point:
/// readers open only the rank files of the step it names, so rank files of a newer step whose
/// save did not complete, and stray temporary files, are ignored. Every write is atomic
/// (temporary file, fsync, rename, directory fsync).
///
/// Commit protocol (`optimizer::save_checkpoint`): (1) every rank writes its step-tagged rank
/// file; (2) an all-reduce agrees that every rank succeeded — otherwise every rank throws and
/// the manifest still names the previous checkpoint; (3) rank 0 renames the new manifest into
/// place; (4) a second all-reduce agrees that the commit succeeded, so no rank returns before
/// the checkpoint is committed; (5) each rank removes its own files of other steps. A crash at
/// any point leaves the previous complete checkpoint or the new one as the manifest names it,
/// never a mix of steps.
#pragma once

#include <dho2/checkpoint/file.hpp>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace dho2 {

/// File of rank `rank` for the checkpoint taken after `step` step calls:
/// `<dir>/rank-<rank>.step-<step>.dho2ckpt`.
[[nodiscard]] inline std::filesystem::path checkpoint_rank_file(const std::filesystem::path& dir,
                                                                int rank, index step) {
  return dir / ("rank-" + std::to_string(rank) + ".step-" + std::to_string(step) + ".dho2ckpt");
}

/// The manifest of a checkpoint directory: `<dir>/manifest.dho2ckpt`.
[[nodiscard]] inline std::filesystem::path checkpoint_manifest_file(
    const std::filesystem::path& dir) {
  return dir / "manifest.dho2ckpt";
}

/// Whether `dir` holds a committed checkpoint (its manifest exists; its validity is checked when
/// it is loaded). What a training program asks before resuming.
[[nodiscard]] inline bool has_checkpoint(const std::filesystem::path& dir) {
  std::error_code ec;
  return std::filesystem::is_regular_file(checkpoint_manifest_file(dir), ec);
}

/// Commits the checkpoint of `job` (its step, n, world size, options hash): writes the manifest
/// atomically. Throws `checkpoint_error` naming the manifest file.
inline void write_checkpoint_manifest(const std::filesystem::path& dir,
                                      const checkpoint_identity& job) {
  checkpoint_identity id = job;
  id.rank = 0;
  checkpoint_writer w(id);
  const std::vector<std::int64_t> body{job.step, job.world_size};
  w.add("manifest", std::span<const std::int64_t>(body));
  w.write(checkpoint_manifest_file(dir));
}

/// Reads and validates the manifest of `dir` and returns its identity (the step of the committed
/// checkpoint, n, world size, options hash). Throws `checkpoint_error` naming the manifest file
/// and the defect (missing included).
[[nodiscard]] inline checkpoint_reader read_checkpoint_manifest(const std::filesystem::path& dir) {
  checkpoint_reader r(checkpoint_manifest_file(dir));
  const auto body = r.read<std::int64_t>("manifest", 2);
  if (body[0] != r.identity().step || body[1] != r.identity().world_size) {
    r.fail("section 'manifest' disagrees with the header");
  }
  return r;
}

/// Removes, best effort, rank `rank`'s files in `dir` other than those of step `keep_step`
/// (older checkpoints, uncommitted newer ones, stray temporary files), and with `rank` 0 stray
/// temporary manifests. Called after a commit; never throws.
inline void remove_stale_checkpoint_files(const std::filesystem::path& dir, int rank,
                                          index keep_step) noexcept {
  try {
    const std::string prefix = "rank-" + std::to_string(rank) + ".";
    const std::string keep = checkpoint_rank_file(dir, rank, keep_step).filename().string();
    const std::string manifest_temp = checkpoint_manifest_file(dir).filename().string() + ".tmp.";
    std::error_code ec;
    std::vector<std::filesystem::path> doomed;
    for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
      const std::string name = entry.path().filename().string();
      const bool mine = name.starts_with(prefix) && name != keep;
      const bool stray_manifest = rank == 0 && name.starts_with(manifest_temp);
      if (mine || stray_manifest) doomed.push_back(entry.path());
    }
    for (const auto& p : doomed) std::filesystem::remove(p, ec);
  } catch (...) {  // NOLINT(bugprone-empty-catch): clean-up is best effort
  }
}

/// The lock file of a checkpoint directory: `<dir>/lock`.
[[nodiscard]] inline std::filesystem::path checkpoint_lock_file(const std::filesystem::path& dir) {
  return dir / "lock";
}

/// An exclusive lock on a checkpoint directory, held while the object lives, so that a second
/// job cannot write into (or delete the files of) a directory in use. It is a `flock` on
/// `<dir>/lock` (created if needed, never removed; it holds the process id of the holder, for
/// messages): the kernel releases it when the holding process ends, even by a crash or
/// `SIGKILL`, so a stale lock cannot outlive its job. One process of a job takes it (e.g. the
/// process of rank 0, before any rank writes). `flock` locks are advisory and, on network file
/// systems, as reliable as the file system's lock support. Move-only.
class checkpoint_directory_lock {
 public:
  /// Creates `dir` if needed and locks it without waiting. Throws `checkpoint_error` naming the
  /// directory when it is locked by another process (with that process's id when known) or when
  /// the directory or lock file cannot be created or locked.
  explicit checkpoint_directory_lock(const std::filesystem::path& dir) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (!std::filesystem::is_directory(dir)) {
      throw checkpoint_error("checkpoint directory '" + dir.string() +
                             "': cannot be created: " + ec.message());
    }
    const std::filesystem::path file = checkpoint_lock_file(dir);
    fd_ = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) fail(dir, "cannot open the lock file '" + file.string() + "'", errno);
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      std::string holder;
      if (err == EWOULDBLOCK) {
        char text[32] = {};
        const ::ssize_t got = ::pread(fd_, text, sizeof text - 1, 0);
        if (got > 0) holder = std::string(text, static_cast<std::size_t>(got));
        while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) {
          holder.pop_back();
        }
      }
      ::close(fd_);
      fd_ = -1;
      if (err == EWOULDBLOCK) {
        throw checkpoint_error(
            "checkpoint directory '" + dir.string() + "': in use by another job (" +
            (holder.empty() ? std::string("its lock file") : "process " + holder + " holds") +
            " '" + file.string() + "'); wait for it to end or use another directory");
      }
      fail(dir, "cannot lock '" + file.string() + "'", err);
    }
    const std::string pid = std::to_string(::getpid()) + "\n";
    if (::ftruncate(fd_, 0) == 0) {
      [[maybe_unused]] const ::ssize_t put = ::pwrite(fd_, pid.data(), pid.size(), 0);
    }
  }
  /// Not copyable: one object holds the lock.
  checkpoint_directory_lock(const checkpoint_directory_lock&) = delete;
  /// Not copyable.
  checkpoint_directory_lock& operator=(const checkpoint_directory_lock&) = delete;
  /// Takes over `other`'s lock.
  checkpoint_directory_lock(checkpoint_directory_lock&& other) noexcept
      : fd_(std::exchange(other.fd_, -1)) {}
  /// Releases this lock (if any) and takes over `other`'s.
  checkpoint_directory_lock& operator=(checkpoint_directory_lock&& other) noexcept {
    if (this != &other) {
      release();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  /// Releases the lock.
  ~checkpoint_directory_lock() { release(); }

 private:
  [[noreturn]] static void fail(const std::filesystem::path& dir, const std::string& what,
                                int err) {
    throw checkpoint_error("checkpoint directory '" + dir.string() + "': " + what + ": " +
                           std::generic_category().message(err));
  }
  void release() noexcept {
    if (fd_ >= 0) ::close(fd_);  // closing the descriptor releases the flock
    fd_ = -1;
  }

  int fd_ = -1;
};

}  // namespace dho2
