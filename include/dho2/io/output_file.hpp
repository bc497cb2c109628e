/// @file
/// Writing output files the way a user expects a path to be written: the one place where DHO2
/// and `dho2_train` turn a path into written bytes (checkpoints, the CSV history, the summary,
/// the parameters, the evaluation log).
///
/// What a path may name, after following symbolic links to their final target (`resolve_output`):
///
/// | target                          | whole-file write (`write_output_file`)  | stream
/// (`output_stream`) |
/// |---------------------------------|-----------------------------------------|--------------------------|
/// | nothing (a new file)            | created atomically, mode 0666 & ~umask  | created | | a
/// regular file                  | replaced atomically, mode and owner kept| truncated, written |
/// | a character device (/dev/null)  | written directly (no temporary file)    | written | | a FIFO
/// | written directly (no temporary file)    | written                  | | a directory, a socket,
/// a block device, anything else | refused          | refused                  |
///
/// A symbolic link is followed, never replaced: the bytes go to its final target (created when
/// the link dangles). An atomic replacement writes a temporary file
/// `<target>.tmp.<pid>.<counter>` in the target's directory, fsyncs it, gives it the old file's
/// mode and owner, renames it over the target and fsyncs the directory: a crash leaves the old
/// file or the new one, never a torn one. It is not possible, and the regular file is then
/// truncated and written in place (still following the rules above), when the file has other hard
/// links (replacing it would detach it from them), when its owner cannot be kept (a user who is
/// not root writing another user's file), when the directory does not let a temporary file be
/// created, or when the file is this process's standard output or error (for example
/// `/dev/stdout` redirected to a file), which is appended to instead.
///
/// Every failure throws `dho2::output_error` whose message has the form
/// `"<label> '<path>': <defect>"`, the label naming what the path is for (a command-line flag
/// such as "--summary-json", or "checkpoint file"). POSIX only.
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/core/errors.hpp>
#include <dho2/io/detail/output_file.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <utility>

namespace dho2 {

/// What an output path names once its symbolic links are followed.
enum class output_kind {
  /// Nothing exists there yet (also the final target of a dangling symbolic link).
  new_file,
  /// An existing regular file.
  regular_file,
  /// A character device, such as `/dev/null` or a terminal.
  character_device,
  /// A FIFO (named pipe), or a pipe reached through `/dev/fd`.
  fifo,
};

/// The name of an output kind ("new file", "regular file", "character device", "FIFO").
[[nodiscard]] inline std::string_view output_kind_name(output_kind kind) noexcept {
  switch (kind) {
    case output_kind::new_file: return "new file";
    case output_kind::regular_file: return "regular file";
    case output_kind::character_device: return "character device";
    case output_kind::fifo: return "FIFO";
  }
  return "unknown";
}

/// An output path resolved by `resolve_output`: what it names and where the bytes go.
struct output_target {
  /// The path as given.
  std::filesystem::path path;
  /// The final target: for a regular file its canonical path, for a new file the path it will
  /// be created at (after the symbolic links that lead there), else the path as given.
  std::filesystem::path file;
  /// What the path names.
  output_kind kind = output_kind::new_file;
  /// Device and inode of the target when it exists, else of the directory it will be created in.
  detail::file_identity identity;

  /// Whether both resolve to the same file (the same existing file, or the same name in the same
  /// directory for new files), whichever path leads there (symbolic links, dot and dot-dot
  /// components).
  [[nodiscard]] bool same_file_as(const output_target& other) const noexcept {
    return identity == other.identity;
  }
  /// True for the kinds written directly, without a temporary file: character devices and FIFOs.
  [[nodiscard]] bool is_stream() const noexcept {
    return kind == output_kind::character_device || kind == output_kind::fifo;
  }
};

/// Resolves the output path `path`, used for `label` (a flag or "checkpoint file"), without
/// changing anything: follows its symbolic links and says what the final target is. Throws
/// `output_error` ("<label> '<path>': <defect>") when the target is a directory, a socket, a
/// block device or another kind of file that is not written, when the directory a new file
/// would go in does not exist or is not a directory, when the links loop, or when the path
/// cannot be examined (the system's error). What a training program calls before it starts, so
/// that a bad output path fails before the work.
[[nodiscard]] inline output_target resolve_output(const std::filesystem::path& path,
                                                  std::string_view label) {
  const detail::output_failure fail{label, path};
  if (path.empty()) fail.throw_with("is empty");
  output_target t;
  t.path = path;
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {
    t.identity = {st.st_dev, st.st_ino, {}};
    if (S_ISREG(st.st_mode)) {
      std::error_code ec;
      t.file = std::filesystem::canonical(path, ec);
      if (ec) fail.throw_with("cannot be resolved: " + ec.message());
      t.kind = output_kind::regular_file;
      return t;
    }
    t.file = path;
    if (S_ISCHR(st.st_mode)) {
      t.kind = output_kind::character_device;
      return t;
    }
    if (S_ISFIFO(st.st_mode)) {
      t.kind = output_kind::fifo;
      return t;
    }
    fail.throw_with(std::string("is a ") + detail::file_type_name(st.st_mode) +
                    "; expected a regular file, a new file, a character device or a FIFO");
  }
  if (errno != ENOENT) fail.throw_errno("cannot be examined", errno);
  t.file = detail::follow_dangling_links(path, fail);
  t.kind = output_kind::new_file;
  const std::filesystem::path dir =
      t.file.has_parent_path() ? t.file.parent_path() : std::filesystem::path(".");
  struct stat dst {};
  if (::stat(dir.c_str(), &dst) != 0) {
    fail.throw_with("directory '" + dir.string() + "' does not exist");
  }
  if (!S_ISDIR(dst.st_mode)) fail.throw_with("'" + dir.string() + "' is not a directory");
  t.identity = {dst.st_dev, dst.st_ino, t.file.filename().string()};
  return t;
}

/// Options of `write_output_file`.
struct output_write_options {
  /// Accept character devices and FIFOs (written directly). False for files that must hold what
  /// was written, such as checkpoints: the target must then be a regular file or a new one.
  bool allow_streams = true;
  /// Called with the temporary file's path once it is complete and durable and before it is
  /// renamed over the target (a fault-injection point for tests: if it throws, the temporary
  /// file is removed and the exception propagates; the target is untouched). Not called for
  /// direct writes.
  std::function<void(const std::filesystem::path&)> before_rename = {};
};

/// Writes `bytes` as the whole content of the output `path` (see the file comment): a regular
/// file is replaced atomically and durably keeping its mode and owner, a new file is created
/// atomically with the umask's mode, a symbolic link is followed, a character device or FIFO is
/// written directly (unless `options.allow_streams` is false), anything else is refused. Throws
/// `output_error` ("<label> '<path>': <defect>", the defect naming the failed step and the
/// system's error, e.g. "write failed: No space left on device"); on a failure before the rename
/// the temporary file is removed and the target is untouched.
inline void write_output_file(const std::filesystem::path& path, std::span<const std::byte> bytes,
                              std::string_view label, const output_write_options& options = {}) {
  const detail::output_failure fail{label, path};
  const output_target t = resolve_output(path, label);
  if (t.is_stream()) {
    if (!options.allow_streams) {
      fail.throw_with("is a " + std::string(output_kind_name(t.kind)) +
                      "; expected a regular file or a new file");
    }
    detail::write_directly(path, bytes, fail, O_WRONLY);
    return;
  }
  if (t.kind == output_kind::regular_file && detail::is_standard_output_or_error(t.identity)) {
    detail::write_directly(path, bytes, fail, O_WRONLY | O_APPEND);
    return;
  }
  if (!detail::write_replacing(t.file, t.kind == output_kind::regular_file, bytes, fail,
                               options.before_rename)) {
    detail::write_directly(t.file, bytes, fail, O_WRONLY | O_TRUNC);
  }
}

/// `write_output_file` of text.
inline void write_output_file(const std::filesystem::path& path, std::string_view text,
                              std::string_view label, const output_write_options& options = {}) {
  write_output_file(path, std::as_bytes(std::span<const char>(text.data(), text.size())), label,
                    options);
}

/// An output written piece by piece (a log that grows during a run): opened at construction
/// under the rules of the file comment (a regular file is truncated and written in place, a new
/// file created with the umask's mode, a symbolic link followed, a character device or FIFO
/// written, anything else refused), then each `write` goes straight to the file (one system
/// call, no buffering, so a crash loses at most the piece being written). Every failure throws
/// `output_error` naming the label, the path and the cause. Move-only: it owns the descriptor.
class output_stream {
 public:
  /// Opens `path` for `label` (a flag such as "--log"). Opening a FIFO waits for a reader.
  output_stream(std::filesystem::path path, std::string label)
      : path_(std::move(path)), label_(std::move(label)) {
    const detail::output_failure fail{label_, path_};
    const output_target t = resolve_output(path_, label_);
    const bool append =
        t.kind == output_kind::regular_file && detail::is_standard_output_or_error(t.identity);
    fd_ = detail::open_checked(path_, O_WRONLY | O_CREAT | (append ? O_APPEND : 0), fail);
    struct stat st {};
    if (::fstat(fd_, &st) != 0) {
      const int err = errno;
      close_quietly();
      fail.throw_errno("cannot be examined", err);
    }
    if (!S_ISREG(st.st_mode) && !S_ISCHR(st.st_mode) && !S_ISFIFO(st.st_mode)) {
      close_quietly();
      fail.throw_with(std::string("is a ") + detail::file_type_name(st.st_mode) +
                      "; expected a regular file, a new file, a character device or a FIFO");
    }
    if (S_ISREG(st.st_mode) && !append && ::ftruncate(fd_, 0) != 0) {
      const int err = errno;
      close_quietly();
      fail.throw_errno("truncation failed", err);
    }
  }
  /// Takes over the open file of `other`, which is left closed.
  output_stream(output_stream&& other) noexcept
      : path_(std::move(other.path_)),
        label_(std::move(other.label_)),
        fd_(std::exchange(other.fd_, -1)) {}
  /// Closes this file (errors ignored) and takes over the open file of `other`.
  output_stream& operator=(output_stream&& other) noexcept {
    if (this != &other) {
      close_quietly();
      path_ = std::move(other.path_);
      label_ = std::move(other.label_);
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  output_stream(const output_stream&) = delete;
  output_stream& operator=(const output_stream&) = delete;
  /// Closes the file (errors ignored: call `close` to see them).
  ~output_stream() { close_quietly(); }

  /// The path as given.
  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }
  /// What the path is for (the label of the error messages).
  [[nodiscard]] const std::string& label() const noexcept { return label_; }
  /// Whether the file is open (not yet closed).
  [[nodiscard]] bool is_open() const noexcept { return fd_ >= 0; }

  /// Writes all of `text`. Throws `output_error` ("<label> '<path>': write failed: <cause>",
  /// e.g. "No space left on device") if the file is closed or the write fails.
  void write(std::string_view text) const {
    const detail::output_failure fail{label_, path_};
    if (fd_ < 0) fail.throw_with("write after close");
    detail::write_all(fd_, std::as_bytes(std::span<const char>(text.data(), text.size())), fail);
  }

  /// Closes the file; throws `output_error` if close reports an error (a delayed write error).
  void close() {
    if (fd_ < 0) return;
    const int fd = std::exchange(fd_, -1);
    if (::close(fd) != 0) detail::output_failure{label_, path_}.throw_errno("close failed", errno);
  }

 private:
  void close_quietly() noexcept {
    if (fd_ >= 0) ::close(std::exchange(fd_, -1));
  }

  std::filesystem::path path_;
  std::string label_;
  int fd_ = -1;
};

}  // namespace dho2
