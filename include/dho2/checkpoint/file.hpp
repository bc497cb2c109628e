/// @file
/// The DHO2 checkpoint file: a self-checking container of named, typed sections, written
/// atomically and durably (`checkpoint_writer`), read and validated (`checkpoint_reader`).
///
/// Format, version 1. Every integer is little-endian; offsets are from the start of the file:
///
/// | offset | bytes | field                                                                  |
/// |--------|-------|------------------------------------------------------------------------|
/// | 0      | 8     | magic, the ASCII bytes `DHO2CKPT`                                      |
/// | 8      | 4     | u32 format version (1)                                                 |
/// | 12     | 4     | u32 number of sections N                                               |
/// | 16     | 8     | u64 file size in bytes, this header and the checksum included          |
/// | 24     | 8     | i64 n, the number of parameters                                        |
/// | 32     | 4     | u32 world size P (ranks of the working group)                          |
/// | 36     | 4     | u32 rank of the writer                                                 |
/// | 40     | 8     | u64 layout hash (FNV-1a 64 of the shard offsets, see `optimizer`)      |
/// | 48     | 8     | u64 options hash (FNV-1a 64 of options and policy signature)           |
/// | 56     | 8     | i64 step: step calls done when the checkpoint was taken                |
/// | 64     | ...   | N sections, back to back (below)                                       |
/// | size−4 | 4     | u32 CRC-32C of bytes [0, size − 4)                                     |
///
/// A section is: u32 name length L (1 ≤ L ≤ 255), L bytes of ASCII name, u32 element type
/// (1 = u8, 2 = i64, 3 = u64, 4 = f32, 5 = f64), u32 element size in bytes (1, 8, 8, 4, 8),
/// u64 element count c, then c raw little-endian elements (IEEE 754 for f32/f64). Names are
/// unique within a file. A reader checks, in order: the file exists and can be read; it holds
/// at least the 8-byte magic and the magic matches; the version is known; it holds the whole
/// 68-byte minimum and exactly the size the header gives (shorter: truncated; longer: trailing
/// bytes); the CRC-32C matches; the section table is well formed. Then the caller asks for
/// sections by name, type and size, and checks the header against the running job
/// (`checkpoint_reader::expect`).
///
/// The job's settings beyond the header (`checkpoint_identity::settings`: the model's structure,
/// the data layout, see `dho2/core/job_settings.hpp`) travel in the u8 section `job`: for each
/// setting its name, the byte 0x1f, its value, the byte 0x1e. The writer adds it when there are
/// settings; the reader reads it into the identity.
///
/// Atomic, durable writing (`checkpoint_writer::write`, through `dho2::write_output_file` of
/// `dho2/io/output_file.hpp`): the bytes go to a temporary file `<target>.tmp.<pid>.<counter>`
/// in the target's directory, which is flushed, fsync'ed and closed, then renamed over the
/// target, and the directory is fsync'ed. A crash at any moment leaves the old file or the new
/// one, never a torn one; a stray temporary file is never read. A symbolic link in place of a
/// checkpoint file is followed (its target is replaced, keeping its mode and owner); a target
/// that is not a regular file or a new one (a directory, a device, a FIFO) is refused. POSIX
/// only; little-endian hosts only (checked at compile time).
#pragma once

#include <dho2/checkpoint/checksum.hpp>
#include <dho2/core/errors.hpp>
#include <dho2/core/job_settings.hpp>
#include <dho2/core/types.hpp>
#include <dho2/io/output_file.hpp>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

namespace dho2 {

static_assert(std::endian::native == std::endian::little,
              "DHO2: checkpoints are raw little-endian data; this host is big-endian");

/// Format version written by this library.
inline constexpr std::uint32_t checkpoint_format_version = 1;
/// Bytes of the fixed header (before the first section).
inline constexpr std::size_t checkpoint_header_bytes = 64;
/// Smallest possible file: header and checksum, no sections.
inline constexpr std::size_t checkpoint_min_bytes = checkpoint_header_bytes + 4;

/// Who wrote a checkpoint, and at which step: the header fields a reader checks against the
/// running job.
struct checkpoint_identity {
  /// Number of parameters n.
  index n = 0;
  /// World size P (ranks of the working group).
  int world_size = 1;
  /// Rank of the writer.
  int rank = 0;
  /// Hash of the partition (the shard offsets of every rank).
  std::uint64_t layout_hash = 0;
  /// Hash of the options and the policy signature.
  std::uint64_t options_hash = 0;
  /// Step calls done when the checkpoint was taken.
  index step = 0;
  /// The job's settings a resumed job must match (model structure, data layout; section `job`),
  /// empty for none.
  job_settings settings{};
};

/// Element type codes of sections (see the format table).
template <class T>
constexpr std::uint32_t checkpoint_type_code() noexcept {
  if constexpr (std::is_same_v<T, std::uint8_t>)
    return 1;
  else if constexpr (std::is_same_v<T, std::int64_t>)
    return 2;
  else if constexpr (std::is_same_v<T, std::uint64_t>)
    return 3;
  else if constexpr (std::is_same_v<T, float>)
    return 4;
  else if constexpr (std::is_same_v<T, double>)
    return 5;
  else
    static_assert(sizeof(T) == 0, "DHO2: checkpoint sections hold u8, i64, u64, f32 or f64");
}

/// Name of an element type code ("f64", …).
[[nodiscard]] inline std::string_view checkpoint_type_name(std::uint32_t code) noexcept {
  switch (code) {
    case 1: return "u8";
    case 2: return "i64";
    case 3: return "u64";
    case 4: return "f32";
    case 5: return "f64";
    default: return "unknown";
  }
}

namespace detail {

template <class T>
void put_le(std::vector<std::byte>& out, T v) {
  const auto* p = reinterpret_cast<const std::byte*>(&v);
  out.insert(out.end(), p, p + sizeof(T));
}

template <class T>
T get_le(const std::vector<std::byte>& in, std::size_t at) {
  T v;
  std::memcpy(&v, in.data() + at, sizeof(T));
  return v;
}

inline std::string file_message(const std::filesystem::path& file, std::string_view defect) {
  return "checkpoint file '" + file.string() + "': " + std::string(defect);
}

}  // namespace detail

/// Builds a checkpoint file in memory: the identity, then sections added by name, then `write`
/// (atomic, durable) or `bytes`.
class checkpoint_writer {
 public:
  /// A writer whose header holds `id`.
  explicit checkpoint_writer(const checkpoint_identity& id) : id_(id) {}

  /// Adds section `name` (1 to 255 ASCII characters, unique) holding `values`. Throws
  /// `checkpoint_error` for a bad or repeated name.
  template <class T>
  void add(std::string_view name, std::span<const T> values) {
    if (name.empty() || name.size() > 255) {
      throw checkpoint_error("checkpoint section name '" + std::string(name) +
                             "': must have 1 to 255 characters");
    }
    for (const auto& n : names_) {
      if (n == name) throw checkpoint_error("checkpoint section '" + n + "' added twice");
    }
    names_.emplace_back(name);
    encode(body_, name, values);
  }

  /// The whole file: header, sections, checksum (and the section `job` of the identity's
  /// settings, unless a section of that name was added).
  [[nodiscard]] std::vector<std::byte> bytes() const {
    std::vector<std::byte> job;
    if (!id_.settings.empty() && std::find(names_.begin(), names_.end(), "job") == names_.end()) {
      std::string text;
      for (const job_setting& s : id_.settings) {
        text.append(s.name).append(1, '\x1f').append(s.value).append(1, '\x1e');
      }
      encode(job, "job",
             std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(text.data()),
                                           text.size()));
    }
    const std::size_t sections = names_.size() + (job.empty() ? 0 : 1);
    std::vector<std::byte> out;
    out.reserve(checkpoint_min_bytes + body_.size() + job.size());
    const char magic[8] = {'D', 'H', 'O', '2', 'C', 'K', 'P', 'T'};
    const auto* m = reinterpret_cast<const std::byte*>(magic);
    out.insert(out.end(), m, m + 8);
    detail::put_le(out, checkpoint_format_version);
    detail::put_le(out, static_cast<std::uint32_t>(sections));
    detail::put_le(out,
                   static_cast<std::uint64_t>(checkpoint_min_bytes + body_.size() + job.size()));
    detail::put_le(out, static_cast<std::int64_t>(id_.n));
    detail::put_le(out, static_cast<std::uint32_t>(id_.world_size));
    detail::put_le(out, static_cast<std::uint32_t>(id_.rank));
    detail::put_le(out, id_.layout_hash);
    detail::put_le(out, id_.options_hash);
    detail::put_le(out, static_cast<std::int64_t>(id_.step));
    out.insert(out.end(), body_.begin(), body_.end());
    out.insert(out.end(), job.begin(), job.end());
    detail::put_le(out, crc32c(out));
    return out;
  }

  /// Writes the file to `file` atomically and durably (see the file comment). `before_rename`,
  /// when set, is called with the temporary file's path once it is complete and durable and
  /// before the rename (a fault-injection point for tests: if it throws, the temporary file is
  /// removed and the exception propagates; `file` is untouched). Throws `checkpoint_error`
  /// ("checkpoint file '<file>': <defect>", naming the failed step and the system's error); on
  /// any failure before the rename the temporary file is removed and `file` is untouched.
  void write(const std::filesystem::path& file,
             const std::function<void(const std::filesystem::path&)>& before_rename = {}) const {
    const auto b = bytes();
    try {
      write_output_file(file, b, "checkpoint file",
                        {.allow_streams = false, .before_rename = before_rename});
    } catch (const output_error& e) {
      throw checkpoint_error(e.what());
    }
  }

 private:
  // Appends section `name` holding `values` (see the format table).
  template <class T>
  static void encode(std::vector<std::byte>& out, std::string_view name,
                     std::span<const T> values) {
    detail::put_le(out, static_cast<std::uint32_t>(name.size()));
    const auto* chars = reinterpret_cast<const std::byte*>(name.data());
    out.insert(out.end(), chars, chars + name.size());
    detail::put_le(out, checkpoint_type_code<T>());
    detail::put_le(out, static_cast<std::uint32_t>(sizeof(T)));
    detail::put_le(out, static_cast<std::uint64_t>(values.size()));
    const auto raw = std::as_bytes(values);
    out.insert(out.end(), raw.begin(), raw.end());
  }

  checkpoint_identity id_;
  std::vector<std::string> names_;
  std::vector<std::byte> body_;
};

/// Reads a checkpoint file and validates its container (magic, version, size, checksum, section
/// table) at construction; then hands out sections by name, type and size. Every defect throws
/// `checkpoint_error` naming the file and the defect. Reading never modifies any file.
class checkpoint_reader {
 public:
  /// Reads and validates `file` (see the file comment for the order of the checks).
  explicit checkpoint_reader(std::filesystem::path file) : file_(std::move(file)) {
    std::error_code ec;
    if (!std::filesystem::exists(file_, ec)) fail("missing: no such file");
    std::ifstream in(file_, std::ios::binary);
    if (!in) fail("cannot be opened for reading");
    in.seekg(0, std::ios::end);
    const auto end = in.tellg();
    in.seekg(0, std::ios::beg);
    if (end < 0) fail("cannot be read");
    bytes_.resize(static_cast<std::size_t>(end));
    in.read(reinterpret_cast<char*>(bytes_.data()), static_cast<std::streamsize>(bytes_.size()));
    if (!in) fail("cannot be read");
    parse();
  }

  /// The file read.
  [[nodiscard]] const std::filesystem::path& file() const noexcept { return file_; }
  /// The identity in the header.
  [[nodiscard]] const checkpoint_identity& identity() const noexcept { return id_; }

  /// Throws `checkpoint_error` naming the first header field that differs from the running job's
  /// `job`: "n", "world size", "rank" (only when `check_rank`), "partition" (the layout hash,
  /// only when `check_rank`), "options", then each of `job.settings` the file does not record
  /// with the same value (the message names the setting and both values; settings the job does
  /// not name are not compared). The step is not compared.
  void expect(const checkpoint_identity& job, bool check_rank = true) const {
    const auto differ = [&](std::string_view what, auto file_value, auto job_value) {
      fail(std::string(what) + " differs: the checkpoint has " + std::to_string(file_value) +
           ", this job has " + std::to_string(job_value));
    };
    if (id_.n != job.n) differ("n (number of parameters)", id_.n, job.n);
    if (id_.world_size != job.world_size) differ("world size", id_.world_size, job.world_size);
    if (check_rank && id_.rank != job.rank) differ("rank", id_.rank, job.rank);
    if (check_rank && id_.layout_hash != job.layout_hash) {
      fail("partition (shard offsets) differs from this job's (layout hash " +
           hex(id_.layout_hash) + " in the file, " + hex(job.layout_hash) + " here)");
    }
    if (id_.options_hash != job.options_hash) {
      fail("options differ from this job's (options hash " + hex(id_.options_hash) +
           " in the file, " + hex(job.options_hash) +
           " here): dho2::options, the scalar type, the ADMM solver's tau, the schedule and the "
           "base optimizer's state layout must be those of the job that saved it");
    }
    for (const job_setting& wanted : job.settings) {
      const job_setting* found = nullptr;
      for (const job_setting& s : id_.settings) {
        if (s.name == wanted.name) found = &s;
      }
      if (found == nullptr) {
        fail(wanted.name + " is not recorded (this job has " + wanted.value +
             "): the checkpoint was written without it, so it cannot be checked");
      }
      if (found->value != wanted.value) {
        fail(wanted.name + " differs: the checkpoint has " + found->value + ", this job has " +
             wanted.value);
      }
    }
  }

  /// What the table of contents says about one section.
  struct section_info {
    /// Section name.
    std::string name;
    /// Element type code (see the format table; `checkpoint_type_name`).
    std::uint32_t type;
    /// Number of elements.
    std::size_t count;
  };

  /// Every section, ordered by name.
  [[nodiscard]] std::vector<section_info> sections() const {
    std::vector<section_info> out;
    for (const auto& [name, s] : sections_) out.push_back({name, s.type, s.count});
    return out;
  }

  /// Whether section `name` exists.
  [[nodiscard]] bool has(std::string_view name) const { return sections_.contains(name); }

  /// Section `name` as elements of `T`. Throws `checkpoint_error` if it is missing or holds
  /// another element type.
  template <class T>
  [[nodiscard]] std::vector<T> read(std::string_view name) const {
    const section& s = find(name);
    if (s.type != checkpoint_type_code<T>()) {
      fail("section '" + std::string(name) + "' holds " +
           std::string(checkpoint_type_name(s.type)) + ", expected " +
           std::string(checkpoint_type_name(checkpoint_type_code<T>())));
    }
    std::vector<T> out(s.count);
    if (s.count > 0) std::memcpy(out.data(), bytes_.data() + s.offset, s.count * sizeof(T));
    return out;
  }

  /// Section `name`, which must hold exactly `expected` elements of `T` (else
  /// `checkpoint_error`: "section '<name>' has <c> elements, expected <expected>").
  template <class T>
  [[nodiscard]] std::vector<T> read(std::string_view name, std::size_t expected) const {
    auto v = read<T>(name);
    if (v.size() != expected) wrong_size(name, v.size(), std::to_string(expected));
    return v;
  }

  /// Throws `checkpoint_error`: section `name` has `count` elements, expected `what`.
  [[noreturn]] void wrong_size(std::string_view name, std::size_t count,
                               std::string_view what) const {
    fail("section '" + std::string(name) + "' has " + std::to_string(count) +
         " elements, expected " + std::string(what));
  }

  /// Throws `checkpoint_error` "checkpoint file '<file>': <defect>".
  [[noreturn]] void fail(std::string_view defect) const {
    throw checkpoint_error(detail::file_message(file_, defect));
  }

 private:
  struct section {
    std::uint32_t type;
    std::size_t count;
    std::size_t offset;
  };

  static std::string hex(std::uint64_t v) {
    char buf[19];
    std::snprintf(buf, sizeof buf, "0x%016llx", static_cast<unsigned long long>(v));
    return buf;
  }

  [[nodiscard]] const section& find(std::string_view name) const {
    const auto it = sections_.find(name);
    if (it == sections_.end()) fail("missing section '" + std::string(name) + "'");
    return it->second;
  }

  void parse() {
    const std::size_t size = bytes_.size();
    const auto truncated = [&](std::size_t expected) {
      fail("truncated: " + std::to_string(size) + " bytes, expected " + std::to_string(expected));
    };
    if (size < 8) truncated(checkpoint_min_bytes);
    if (std::memcmp(bytes_.data(), "DHO2CKPT", 8) != 0) {
      fail("wrong magic: not a DHO2 checkpoint (expected the bytes 'DHO2CKPT')");
    }
    if (size < 12) truncated(checkpoint_min_bytes);
    const auto version = detail::get_le<std::uint32_t>(bytes_, 8);
    if (version != checkpoint_format_version) {
      fail("unknown format version " + std::to_string(version) + " (this library reads " +
           std::to_string(checkpoint_format_version) + ")");
    }
    if (size < checkpoint_min_bytes) truncated(checkpoint_min_bytes);
    const auto declared = detail::get_le<std::uint64_t>(bytes_, 16);
    if (size < declared) truncated(static_cast<std::size_t>(declared));
    if (size > declared) {
      fail("trailing bytes: " + std::to_string(size) + " bytes, the header says " +
           std::to_string(declared));
    }
    const auto stored = detail::get_le<std::uint32_t>(bytes_, size - 4);
    const std::uint32_t computed = crc32c(std::span<const std::byte>(bytes_.data(), size - 4));
    if (stored != computed) {
      fail("checksum mismatch: CRC-32C " + hex(computed) + " of the contents, " + hex(stored) +
           " stored (the file is corrupt)");
    }
    const auto count = detail::get_le<std::uint32_t>(bytes_, 12);
    id_.n = static_cast<index>(detail::get_le<std::int64_t>(bytes_, 24));
    id_.world_size = static_cast<int>(detail::get_le<std::uint32_t>(bytes_, 32));
    id_.rank = static_cast<int>(detail::get_le<std::uint32_t>(bytes_, 36));
    id_.layout_hash = detail::get_le<std::uint64_t>(bytes_, 40);
    id_.options_hash = detail::get_le<std::uint64_t>(bytes_, 48);
    id_.step = static_cast<index>(detail::get_le<std::int64_t>(bytes_, 56));
    std::size_t at = checkpoint_header_bytes;
    const std::size_t end = size - 4;
    const auto malformed = [&](std::string_view why) {
      fail("malformed section table at byte " + std::to_string(at) + ": " + std::string(why));
    };
    for (std::uint32_t s = 0; s < count; ++s) {
      if (end - at < 4) malformed("section header past the end");
      const auto len = detail::get_le<std::uint32_t>(bytes_, at);
      if (len == 0 || len > 255 || end - at - 4 < len + 16) malformed("bad section name");
      std::string name(reinterpret_cast<const char*>(bytes_.data() + at + 4), len);
      at += 4 + len;
      section sec{};
      sec.type = detail::get_le<std::uint32_t>(bytes_, at);
      const auto elem = detail::get_le<std::uint32_t>(bytes_, at + 4);
      const auto n = detail::get_le<std::uint64_t>(bytes_, at + 8);
      at += 16;
      const std::uint32_t expected_elem = sec.type == 1 ? 1 : sec.type == 4 ? 4 : 8;
      if (sec.type < 1 || sec.type > 5 || elem != expected_elem) malformed("bad element type");
      if (n > (end - at) / elem) malformed("section '" + name + "' runs past the end");
      sec.count = static_cast<std::size_t>(n);
      sec.offset = at;
      at += sec.count * elem;
      if (!sections_.emplace(std::move(name), sec).second) malformed("repeated section name");
    }
    if (at != end) malformed("bytes left after the last section");
    if (const auto job = sections_.find("job"); job != sections_.end() && job->second.type == 1) {
      const std::string_view text(reinterpret_cast<const char*>(bytes_.data() + job->second.offset),
                                  job->second.count);
      for (auto& [name, value] : detail::parse_settings(text)) {
        id_.settings.push_back({std::move(name), std::move(value)});
      }
    }
  }

  std::filesystem::path file_;
  std::vector<std::byte> bytes_;
  checkpoint_identity id_;
  std::map<std::string, section, std::less<>> sections_;
};

}  // namespace dho2
