/// @file
/// Reader for IDX files, the format of MNIST and Fashion-MNIST, plain or gzip-compressed.
///
/// Layout of an IDX file (all integers big-endian):
/// ```
/// byte 0, 1   0x00 0x00                  magic
/// byte 2      element type               only 0x08 (unsigned byte) is supported
/// byte 3      number of dimensions r     >= 1 (3 for images, 1 for labels)
/// 4r bytes    r 32-bit dimension sizes   outermost first (count, rows, columns)
/// rest        the elements, row-major    exactly the product of the dimensions, nothing after
/// ```
/// zlib's `gzread` reads gzip and plain files alike, so `.gz` files need no special handling.
/// Every defect throws `dho2::data_error` with a one-line message that names the file and the
/// defect. Nothing is allocated from an unvalidated length: the product of the dimensions is
/// checked against `idx_max_bytes` first, and the buffer then grows only as data actually arrives,
/// so a short file that claims a huge payload costs no more memory than its real contents.
///
/// This header needs zlib: link `dho2::data` (not only `dho2::dho2`).
#pragma once

#include <dho2/core/errors.hpp>
#include <dho2/core/types.hpp>
#include <dho2/data/classification_set.hpp>

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace dho2 {

/// Largest payload (product of the dimensions, in bytes) that `read_idx` accepts: 2^31 bytes
/// (2 GiB). Fashion-MNIST's largest file holds 47 MB. Larger claims are rejected as a
/// "dimension overflow" before anything is allocated.
inline constexpr std::uint64_t idx_max_bytes = std::uint64_t{1} << 31U;

/// Contents of an unsigned-byte IDX file.
struct idx_array {
  /// Sizes of the dimensions, outermost first (images: count, rows, columns; labels: count).
  std::vector<std::uint32_t> dims;
  /// The elements in row-major order (last dimension fastest); as many as the product of `dims`.
  std::vector<std::uint8_t> data;
};

/// Directory where Debian's `dataset-fashion-mnist` package installs the Fashion-MNIST files.
inline constexpr std::string_view fashion_mnist_default_dir = "/usr/share/datasets/fashion-mnist";

/// Number of classes of Fashion-MNIST (and MNIST).
inline constexpr int fashion_mnist_num_classes = 10;

namespace detail {

inline std::string idx_prefix(const std::filesystem::path& path) {
  return "IDX file '" + path.string() + "': ";
}

inline std::string hex_byte(std::uint8_t b) {
  constexpr std::string_view digits = "0123456789abcdef";
  std::string s = "0x";
  s += digits[static_cast<std::size_t>(b >> 4U)];
  s += digits[static_cast<std::size_t>(b & 0x0FU)];
  return s;
}

inline std::string dims_string(const std::vector<std::uint32_t>& dims) {
  std::string s;
  for (std::size_t i = 0; i < dims.size(); ++i) {
    s += (i == 0 ? "" : " x ") + std::to_string(dims[i]);
  }
  return s;
}

inline std::string idx_type_name(std::uint8_t type) {
  switch (type) {
    case 0x08: return "unsigned byte";
    case 0x09: return "signed byte";
    case 0x0B: return "int16";
    case 0x0C: return "int32";
    case 0x0D: return "float32";
    case 0x0E: return "float64";
    default: return "not an IDX type";
  }
}

// Owns a zlib file handle opened for reading (gzip or plain); closes it on every path.
class gz_reader {
 public:
  explicit gz_reader(const std::filesystem::path& path) : path_(path) {
    std::error_code ec;
    const auto st = std::filesystem::status(path, ec);
    if (st.type() == std::filesystem::file_type::not_found) {
      throw data_error(idx_prefix(path) + "cannot open: file not found");
    }
    if (ec) throw data_error(idx_prefix(path) + "cannot open: " + ec.message());
    if (std::filesystem::is_directory(st)) {
      throw data_error(idx_prefix(path) + "cannot open: is a directory");
    }
    errno = 0;
#if defined(_WIN32)
    file_ = gzopen_w(path.c_str(), "rb");
#else
    file_ = gzopen(path.c_str(), "rb");
#endif
    if (file_ == nullptr) {
      const int e = errno;
      throw data_error(
          idx_prefix(path) + "cannot open: " +
          (e != 0 ? std::generic_category().message(e) : std::string("out of memory")));
    }
    gzbuffer(file_, 1U << 17U);
  }
  gz_reader(const gz_reader&) = delete;
  gz_reader& operator=(const gz_reader&) = delete;
  ~gz_reader() { gzclose(file_); }

  // Reads up to n bytes into buf; fewer only at the end of the data. Throws on a read error.
  std::size_t read(std::uint8_t* buf, std::size_t n) {
    std::size_t got = 0;
    while (got < n) {
      const auto want =
          static_cast<unsigned>(std::min<std::size_t>(n - got, std::size_t{1} << 24U));
      errno = 0;
      const int r = gzread(file_, buf + got, want);
      if (r < 0) {
        int errnum = Z_OK;
        std::string msg = gzerror(file_, &errnum);
        // zlib prefixes its messages with the path, which the prefix already names.
        const std::string path_colon = path_.string() + ": ";
        if (msg.starts_with(path_colon)) msg.erase(0, path_colon.size());
        const std::string why = errnum == Z_ERRNO ? std::generic_category().message(errno)
                                                  : "corrupt gzip data (" + msg + ")";
        throw data_error(idx_prefix(path_) + "cannot read: " + why);
      }
      if (r == 0) break;
      got += static_cast<std::size_t>(r);
    }
    return got;
  }

  // True if zlib met the end of the file in the middle of a gzip stream.
  bool gzip_truncated() {
    int errnum = Z_OK;
    gzerror(file_, &errnum);
    return errnum == Z_BUF_ERROR;
  }

  // Suffix for a "truncated" message: says so when the gzip stream itself was cut.
  std::string truncation_note() { return gzip_truncated() ? " (gzip stream ends early)" : ""; }

 private:
  std::filesystem::path path_;
  gzFile file_ = nullptr;
};

// expected_rank 0 accepts any rank >= 1; role names what the caller wanted ("images", "labels").
inline idx_array read_idx(const std::filesystem::path& path, unsigned expected_rank,
                          std::string_view role) {
  const std::string where = idx_prefix(path);
  gz_reader in(path);

  std::array<std::uint8_t, 4> magic{};
  const std::size_t got_magic = in.read(magic.data(), magic.size());
  if (got_magic < magic.size()) {
    throw data_error(where + "truncated header: expected 4 magic bytes, found " +
                     std::to_string(got_magic) + in.truncation_note());
  }
  if (magic[0] != 0 || magic[1] != 0) {
    throw data_error(where + "wrong magic: found bytes " + hex_byte(magic[0]) + " " +
                     hex_byte(magic[1]) + " " + hex_byte(magic[2]) + " " + hex_byte(magic[3]) +
                     ", expected 0x00 0x00 0x08 " +
                     (expected_rank != 0 ? hex_byte(static_cast<std::uint8_t>(expected_rank))
                                         : std::string("<rank>")) +
                     " (IDX, unsigned byte)");
  }
  if (magic[2] != 0x08) {
    throw data_error(where + "unsupported element type " + hex_byte(magic[2]) + " (" +
                     idx_type_name(magic[2]) + "); only 0x08 (unsigned byte) is supported");
  }
  const unsigned rank = magic[3];
  if (rank == 0 || (expected_rank != 0 && rank != expected_rank)) {
    throw data_error(
        where + "wrong number of dimensions: found " + std::to_string(rank) + ", expected " +
        (expected_rank != 0 ? std::to_string(expected_rank) + " (" + std::string(role) + ")"
                            : std::string("at least 1")));
  }

  std::vector<std::uint8_t> raw(4 * std::size_t{rank});
  const std::size_t got_dims = in.read(raw.data(), raw.size());
  if (got_dims < raw.size()) {
    throw data_error(where + "truncated header: expected " + std::to_string(raw.size()) +
                     " bytes of dimension sizes, found " + std::to_string(got_dims) +
                     in.truncation_note());
  }
  idx_array out;
  out.dims.resize(rank);
  for (std::size_t i = 0; i < rank; ++i) {
    out.dims[i] = (std::uint32_t{raw[4 * i]} << 24U) | (std::uint32_t{raw[4 * i + 1]} << 16U) |
                  (std::uint32_t{raw[4 * i + 2]} << 8U) | std::uint32_t{raw[4 * i + 3]};
  }
  std::uint64_t total = 1;
  for (std::size_t i = 0; i < rank; ++i) {
    if (out.dims[i] == 0) {
      throw data_error(where + "zero dimension: dimension " + std::to_string(i) + " of " +
                       dims_string(out.dims) + " is 0");
    }
  }
  for (const std::uint32_t d : out.dims) {
    if (d > idx_max_bytes / total) {
      throw data_error(where + "dimension overflow: " + dims_string(out.dims) +
                       " exceeds the limit of " + std::to_string(idx_max_bytes) + " bytes");
    }
    total *= d;
  }

  // Grow the buffer only as data arrives (capacity never above `total`, validated above).
  const auto expected = static_cast<std::size_t>(total);
  constexpr std::size_t chunk = std::size_t{1} << 20U;
  std::size_t have = 0;
  while (have < expected) {
    const std::size_t want = std::min(chunk, expected - have);
    if (have + want > out.data.capacity()) {
      out.data.reserve(std::min(expected, std::max(2 * out.data.capacity(), have + want)));
    }
    out.data.resize(have + want);
    const std::size_t got = in.read(out.data.data() + have, want);
    have += got;
    if (got < want) {
      out.data.resize(have);
      break;
    }
  }
  if (have < expected) {
    throw data_error(where + "truncated data: expected " + std::to_string(expected) +
                     " bytes (dims " + dims_string(out.dims) + "), found " + std::to_string(have) +
                     in.truncation_note());
  }

  std::array<std::uint8_t, 4096> tail{};
  std::size_t extra = 0;
  constexpr std::size_t max_counted = std::size_t{1} << 20U;
  while (extra < max_counted) {
    const std::size_t got = in.read(tail.data(), tail.size());
    extra += got;
    if (got < tail.size()) break;
  }
  if (extra > 0) {
    throw data_error(where +
                     "trailing garbage: " + (extra >= max_counted ? "at least " : std::string()) +
                     std::to_string(extra) + " extra bytes after the " + std::to_string(expected) +
                     " data bytes the header describes (dims " + dims_string(out.dims) + ")");
  }
  if (in.gzip_truncated()) {
    throw data_error(where + "truncated data: all " + std::to_string(expected) +
                     " data bytes present but the gzip stream ends early (CRC trailer missing)");
  }
  return out;
}

inline std::filesystem::path find_idx_file(const std::filesystem::path& dir,
                                           std::string_view name) {
  std::filesystem::path gz = dir / (std::string(name) + ".gz");
  std::filesystem::path plain = dir / std::string(name);
  std::error_code ec;
  if (std::filesystem::exists(gz, ec)) return gz;
  if (std::filesystem::exists(plain, ec)) return plain;
  throw data_error(idx_prefix(gz) + "cannot open: file not found (nor '" + plain.string() + "')");
}

}  // namespace detail

/// Reads an unsigned-byte IDX file of any rank (plain or gzip). Throws `data_error` naming the
/// file and the defect: file not found or cannot open, wrong magic, unsupported element type,
/// wrong number of dimensions (0), zero dimension, dimension overflow (payload above
/// `idx_max_bytes`), truncated header or data, trailing garbage, corrupt gzip data.
[[nodiscard]] inline idx_array read_idx(const std::filesystem::path& path) {
  return detail::read_idx(path, 0, "");
}

/// Reads an IDX image file: exactly 3 dimensions (count, rows, columns); otherwise as `read_idx`.
[[nodiscard]] inline idx_array read_idx_images(const std::filesystem::path& path) {
  return detail::read_idx(path, 3, "images");
}

/// Reads an IDX label file: exactly 1 dimension (count); otherwise as `read_idx`.
[[nodiscard]] inline idx_array read_idx_labels(const std::filesystem::path& path) {
  return detail::read_idx(path, 1, "labels");
}

/// Loads an image file and a label file into a `classification_set<S>`: `inputs` is
/// (rows·columns) × count with pixel values scaled from 0..255 to [0, 1] (v / 255, so 0 and 255
/// map exactly to 0 and 1), pixels of an image in row-major order down its column; `labels` are
/// the label bytes. Besides the defects of `read_idx`, throws `data_error` when a label is not in
/// [0, num_classes) (naming the label file, the sample and the label) and when the image and label
/// counts differ (naming both files and both counts); throws `invalid_options` unless
/// 1 <= num_classes <= 256.
template <model_scalar S>
[[nodiscard]] classification_set<S> load_idx_dataset(const std::filesystem::path& images_path,
                                                     const std::filesystem::path& labels_path,
                                                     int num_classes) {
  if (num_classes < 1 || num_classes > 256) {
    throw invalid_options("num_classes = " + std::to_string(num_classes) +
                          ". Violated constraint: 1 <= num_classes <= 256");
  }
  const idx_array labels = read_idx_labels(labels_path);
  for (std::size_t j = 0; j < labels.data.size(); ++j) {
    if (labels.data[j] >= num_classes) {
      throw data_error(detail::idx_prefix(labels_path) + "label out of range: label " +
                       std::to_string(labels.data[j]) + " of sample " + std::to_string(j) +
                       " is not in [0, " + std::to_string(num_classes) + ")");
    }
  }
  const idx_array images = read_idx_images(images_path);
  if (images.dims[0] != labels.dims[0]) {
    throw data_error("IDX files '" + images_path.string() + "' and '" + labels_path.string() +
                     "': image/label count mismatch: " + std::to_string(images.dims[0]) +
                     " images but " + std::to_string(labels.dims[0]) + " labels");
  }

  const auto count = static_cast<index>(images.dims[0]);
  const auto features = static_cast<index>(images.dims[1]) * static_cast<index>(images.dims[2]);
  std::array<S, 256> scale{};
  for (std::size_t v = 0; v < scale.size(); ++v) {
    scale[v] = static_cast<S>(v) / S{255};
  }
  classification_set<S> out;
  out.num_classes = num_classes;
  out.inputs.resize(features, count);
  // IDX is image-major and Eigen column-major, so image j, pixel f is element j·features + f.
  S* dst = out.inputs.data();
  for (std::size_t i = 0; i < images.data.size(); ++i) {
    dst[i] = scale[images.data[i]];
  }
  out.labels.resize(count);
  for (index j = 0; j < count; ++j) {
    out.labels(j) = labels.data[static_cast<std::size_t>(j)];
  }
  return out;
}

/// Loads Fashion-MNIST (Xiao, Rasul & Vollgraf 2017) from `dir`: 60000 training and 10000 test
/// images of 28×28 = 784 pixels in [0, 1], labels in [0, 10). Reads
/// `{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`, or the same names without `.gz` when the
/// compressed file is absent. Throws `data_error` as `load_idx_dataset` does, and names the
/// missing file when neither variant exists.
template <model_scalar S>
[[nodiscard]] train_test_sets<S> load_fashion_mnist(
    const std::filesystem::path& dir = std::filesystem::path(fashion_mnist_default_dir)) {
  train_test_sets<S> out;
  out.train = load_idx_dataset<S>(detail::find_idx_file(dir, "train-images-idx3-ubyte"),
                                  detail::find_idx_file(dir, "train-labels-idx1-ubyte"),
                                  fashion_mnist_num_classes);
  out.test = load_idx_dataset<S>(detail::find_idx_file(dir, "t10k-images-idx3-ubyte"),
                                 detail::find_idx_file(dir, "t10k-labels-idx1-ubyte"),
                                 fashion_mnist_num_classes);
  return out;
}

}  // namespace dho2
