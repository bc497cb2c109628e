// The system-call work of dho2/io/output_file.hpp: messages, link following, whole writes, the
// atomic replacement of a regular file.
#pragma once

#include <dho2/detail/internal_header_check.hpp>

#include <dho2/core/errors.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace dho2::detail {

// Device and inode of a file; for a file still to be created, of its directory plus its name.
struct file_identity {
  std::uint64_t device = 0;
  std::uint64_t inode = 0;
  std::string name;
  bool operator==(const file_identity&) const = default;
};

// Throws output_error "<label> '<path>': <defect>".
struct output_failure {
  std::string_view label;
  const std::filesystem::path& path;

  [[noreturn]] void throw_with(std::string_view defect) const {
    std::string m(label);
    m += " '";
    m += path.string();
    m += "': ";
    m += defect;
    throw output_error(m);
  }
  [[noreturn]] void throw_errno(std::string_view what, int err) const {
    std::string defect(what);
    defect += ": ";
    defect += std::generic_category().message(err);
    throw_with(defect);
  }
};

inline const char* file_type_name(unsigned mode) noexcept {
  if (S_ISDIR(mode)) return "directory";
  if (S_ISSOCK(mode)) return "socket";
  if (S_ISBLK(mode)) return "block device";
  if (S_ISLNK(mode)) return "symbolic link";
  return "file of an unsupported type";
}

// The path a dangling chain of symbolic links starting at `path` ends at (`path` itself when it
// is no link); ELOOP after 40 links, as the kernel.
inline std::filesystem::path follow_dangling_links(const std::filesystem::path& path,
                                                   const output_failure& fail) {
  std::filesystem::path p = path;
  for (int hops = 0; hops <= 40; ++hops) {
    struct stat st {};
    if (::lstat(p.c_str(), &st) != 0) {
      if (errno == ENOENT) return p;
      fail.throw_errno("cannot be examined", errno);
    }
    if (!S_ISLNK(st.st_mode)) fail.throw_with("changed while being examined");
    std::vector<char> buf(static_cast<std::size_t>(st.st_size > 0 ? st.st_size : 255) + 1);
    const ::ssize_t len = ::readlink(p.c_str(), buf.data(), buf.size());
    if (len < 0) fail.throw_errno("reading the symbolic link failed", errno);
    if (static_cast<std::size_t>(len) >= buf.size()) fail.throw_with("changed while being read");
    const std::filesystem::path next(std::string(buf.data(), static_cast<std::size_t>(len)));
    p = next.is_absolute() ? next : p.parent_path() / next;
  }
  fail.throw_errno("cannot be resolved", ELOOP);
}

// Whether `id` is the file this process's standard output or error writes to.
inline bool is_standard_output_or_error(const file_identity& id) noexcept {
  for (const int fd : {STDOUT_FILENO, STDERR_FILENO}) {
    struct stat st {};
    if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
        file_identity{st.st_dev, st.st_ino, {}} == id) {
      return true;
    }
  }
  return false;
}

inline int open_checked(const std::filesystem::path& path, int flags, const output_failure& fail) {
  int fd = -1;
  do {
    fd = ::open(path.c_str(), flags | O_CLOEXEC | O_NOCTTY, 0666);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) fail.throw_errno("cannot be opened for writing", errno);
  return fd;
}

inline void write_all(int fd, std::span<const std::byte> bytes, const output_failure& fail) {
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ::ssize_t w = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail.throw_errno("write failed", errno);
    }
    done += static_cast<std::size_t>(w);
  }
}

// Opens `path` with `flags` (no O_CREAT unless given), writes all of `bytes`, closes; fsync only
// for regular files (devices and pipes do not support it).
inline void write_directly(const std::filesystem::path& path, std::span<const std::byte> bytes,
                           const output_failure& fail, int flags) {
  const int fd = open_checked(path, flags, fail);
  try {
    write_all(fd, bytes, fail);
    struct stat st {};
    if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && ::fsync(fd) != 0) {
      fail.throw_errno("fsync failed", errno);
    }
  } catch (...) {
    ::close(fd);
    throw;
  }
  if (::close(fd) != 0) fail.throw_errno("close failed", errno);
}

inline std::atomic<std::uint64_t>& output_temp_counter() {
  static std::atomic<std::uint64_t> counter{0};
  return counter;
}

// fsync of a directory, so that a rename in it is durable.
inline bool sync_directory(const std::filesystem::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool ok = ::fsync(fd) == 0;
  return ::close(fd) == 0 && ok;
}

// Writes `bytes` to a temporary file beside `file` and renames it over `file`; an existing file
// (`existing`) keeps its mode and owner. Returns false, with nothing changed, when the
// replacement is not possible (other hard links, a directory without room for a temporary file,
// an owner that cannot be kept): the caller then writes in place.
inline bool write_replacing(const std::filesystem::path& file, bool existing,
                            std::span<const std::byte> bytes, const output_failure& fail,
                            const std::function<void(const std::filesystem::path&)>& hook) {
  struct stat old {};
  if (existing) {
    if (::stat(file.c_str(), &old) != 0) fail.throw_errno("cannot be examined", errno);
    if (old.st_nlink > 1) return false;
  }
  const std::filesystem::path dir =
      file.has_parent_path() ? file.parent_path() : std::filesystem::path(".");
  const std::filesystem::path temp =
      dir / (file.filename().string() + ".tmp." + std::to_string(::getpid()) + "." +
             std::to_string(output_temp_counter().fetch_add(1)));
  const int fd =
      ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, existing ? 0600 : 0666);
  if (fd < 0) {
    const int err = errno;
    if (existing && (err == EACCES || err == EPERM || err == EROFS)) return false;
    fail.throw_errno("creating the temporary file '" + temp.string() + "' failed", err);
  }
  const auto abandon = [&](bool open) {
    if (open) ::close(fd);
    ::unlink(temp.c_str());
  };
  if (existing) {
    struct stat now {};
    const bool owner_kept =
        ::fstat(fd, &now) == 0 && ((now.st_uid == old.st_uid && now.st_gid == old.st_gid) ||
                                   ::fchown(fd, old.st_uid, old.st_gid) == 0);
    if (!owner_kept) {
      abandon(true);
      return false;
    }
    if (::fchmod(fd, old.st_mode & 07777) != 0) {
      const int err = errno;
      abandon(true);
      fail.throw_errno("setting the mode of the temporary file failed", err);
    }
  }
  try {
    write_all(fd, bytes, fail);
  } catch (...) {
    abandon(true);
    throw;
  }
  if (::fsync(fd) != 0) {
    const int err = errno;
    abandon(true);
    fail.throw_errno("fsync failed", err);
  }
  if (::close(fd) != 0) {
    const int err = errno;
    abandon(false);
    fail.throw_errno("close failed", err);
  }
  if (hook) {
    try {
      hook(temp);
    } catch (...) {
      abandon(false);
      throw;
    }
  }
  if (::rename(temp.c_str(), file.c_str()) != 0) {
    const int err = errno;
    abandon(false);
    fail.throw_errno("rename failed", err);
  }
  if (!sync_directory(dir))
    fail.throw_errno("fsync of the directory '" + dir.string() + "'", errno);
  return true;
}

}  // namespace dho2::detail
