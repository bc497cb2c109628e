// Tests of the IDX reader (include/dho2/data/idx.hpp): exact round trips of plain and gzip files,
// one test per defect checking the data_error message, and the real Fashion-MNIST if installed.
#include <dho2/data/idx.hpp>

#include <doctest/doctest.h>
#include <zlib.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace {

namespace fs = std::filesystem;
using bytes = std::vector<std::uint8_t>;

// A fresh directory under the system temporary directory, removed with its contents at scope end.
class temp_dir {
 public:
  temp_dir() {
    static std::atomic<unsigned> counter{0};
    const auto stamp = std::chrono::steady_clock::now().time_since_epoch().count();
    for (int attempt = 0; attempt < 1000; ++attempt) {
      path_ = fs::temp_directory_path() /
              ("dho2_idx_test_" + std::to_string(stamp) + "_" + std::to_string(counter++));
      if (fs::create_directory(path_)) return;
    }
    FAIL("could not create a temporary directory");
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  [[nodiscard]] fs::path operator/(std::string_view name) const { return path_ / name; }
  [[nodiscard]] const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// Header (magic, type, rank, big-endian dims) followed by `data`.
bytes idx_bytes(std::uint8_t type, const std::vector<std::uint32_t>& dims, const bytes& data) {
  bytes out = {0x00, 0x00, type, static_cast<std::uint8_t>(dims.size())};
  for (const std::uint32_t d : dims) {
    for (const unsigned shift : {24U, 16U, 8U, 0U}) {
      out.push_back(static_cast<std::uint8_t>((d >> shift) & 0xFFU));
    }
  }
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

bytes pattern(std::size_t n, unsigned mul, unsigned add) {
  bytes out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<std::uint8_t>((i * mul + add) % 256U);
  return out;
}

std::vector<char> as_chars(const bytes& b) { return {b.begin(), b.end()}; }

void write_plain(const fs::path& path, const bytes& content) {
  std::ofstream out(path, std::ios::binary);
  const std::vector<char> c = as_chars(content);
  out.write(c.data(), static_cast<std::streamsize>(c.size()));
  REQUIRE(out.good());
}

void write_gzip(const fs::path& path, const bytes& content) {
  gzFile f = gzopen(path.c_str(), "wb");
  REQUIRE(f != nullptr);
  if (!content.empty()) {
    const int n = gzwrite(f, content.data(), static_cast<unsigned>(content.size()));
    CHECK(n == static_cast<int>(content.size()));
  }
  REQUIRE(gzclose(f) == Z_OK);
}

// Writes `content` to dir/name (dir/name.gz, compressed, when gz) and returns the path.
fs::path write_idx(const temp_dir& dir, const std::string& name, const bytes& content, bool gz) {
  const fs::path path = dir / (gz ? name + ".gz" : name);
  if (gz) {
    write_gzip(path, content);
  } else {
    write_plain(path, content);
  }
  return path;
}

bytes read_all(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// The message of the data_error that f throws, or a marker that no data_error was thrown.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const dho2::data_error& e) {
    return e.what();
  }
  return "<no dho2::data_error thrown>";
}

bool contains(const std::string& text, std::string_view part) {
  return text.find(part) != std::string::npos;
}

// Checks that `message` is one line, names `path` and contains every phrase of `defect`.
void check_message(const std::string& message, const fs::path& path,
                   std::initializer_list<std::string_view> defect) {
  CAPTURE(message);
  CHECK(message.find('\n') == std::string::npos);
  CHECK(contains(message, path.string()));
  for (const std::string_view d : defect) {
    CAPTURE(d);
    CHECK(contains(message, d));
  }
}

const bool formats[] = {false, true};  // plain, gzip

}  // namespace

TEST_CASE("idx: valid files round-trip exactly, plain and gzip") {
  temp_dir dir;
  for (const bool gz : formats) {
    CAPTURE(gz);
    const bytes pixels = pattern(5 * 3 * 4, 37, 11);
    const fs::path images = write_idx(dir, "img", idx_bytes(0x08, {5, 3, 4}, pixels), gz);
    const dho2::idx_array a = dho2::read_idx_images(images);
    CHECK(a.dims == std::vector<std::uint32_t>{5, 3, 4});
    CHECK(a.data == pixels);

    const bytes labels = {0, 1, 2, 9, 3};
    const dho2::idx_array l =
        dho2::read_idx_labels(write_idx(dir, "lab", idx_bytes(0x08, {5}, labels), gz));
    CHECK(l.dims == std::vector<std::uint32_t>{5});
    CHECK(l.data == labels);

    // Any rank through read_idx, including a dimension above 2^16 and a 4-dim array.
    const bytes big = pattern(70000, 13, 1);
    const dho2::idx_array b =
        dho2::read_idx(write_idx(dir, "big", idx_bytes(0x08, {70000}, big), gz));
    CHECK(b.dims == std::vector<std::uint32_t>{70000});
    CHECK(b.data == big);
    const bytes four = pattern(2 * 3 * 1 * 2, 5, 200);
    const dho2::idx_array c =
        dho2::read_idx(write_idx(dir, "four", idx_bytes(0x08, {2, 3, 1, 2}, four), gz));
    CHECK(c.dims == std::vector<std::uint32_t>{2, 3, 1, 2});
    CHECK(c.data == four);
  }
}

TEST_CASE("idx: load_idx_dataset puts one image per column, scaled to [0, 1]") {
  temp_dir dir;
  for (const bool gz : formats) {
    CAPTURE(gz);
    bytes pixels = pattern(4 * 2 * 3, 61, 7);
    pixels[0] = 0;
    pixels[1] = 255;
    const bytes labels = {2, 0, 1, 2};
    const fs::path ip = write_idx(dir, "img", idx_bytes(0x08, {4, 2, 3}, pixels), gz);
    const fs::path lp = write_idx(dir, "lab", idx_bytes(0x08, {4}, labels), gz);
    const auto set = dho2::load_idx_dataset<double>(ip, lp, 3);
    REQUIRE(set.size() == 4);
    REQUIRE(set.num_features() == 6);
    CHECK(set.num_classes == 3);
    for (dho2::index j = 0; j < 4; ++j) {
      CHECK(set.labels(j) == labels[static_cast<std::size_t>(j)]);
      for (dho2::index f = 0; f < 6; ++f) {
        const std::uint8_t v = pixels[static_cast<std::size_t>(j * 6 + f)];
        CHECK(set.inputs(f, j) == static_cast<double>(v) / 255.0);
      }
    }
    CHECK(set.inputs(0, 0) == 0.0);
    CHECK(set.inputs(1, 0) == 1.0);
    const auto setf = dho2::load_idx_dataset<float>(ip, lp, 3);
    CHECK(setf.inputs.minCoeff() >= 0.0F);
    CHECK(setf.inputs.maxCoeff() == 1.0F);
    CHECK(setf.inputs.cast<double>().isApprox(set.inputs, 1e-6));
  }
}

TEST_CASE("idx: missing file and unopenable path are reported with the file name") {
  temp_dir dir;
  const fs::path missing = dir / "no-such-file-idx1-ubyte.gz";
  check_message(error_of([&] { (void)dho2::read_idx(missing); }), missing,
                {"cannot open", "not found"});
  check_message(error_of([&] { (void)dho2::read_idx(dir.path()); }), dir.path(),
                {"cannot open", "directory"});
}

TEST_CASE("idx: wrong magic shows the bytes found and expected") {
  temp_dir dir;
  for (const bool gz : formats) {
    CAPTURE(gz);
    bytes content = idx_bytes(0x08, {3}, {1, 2, 3});
    content[0] = 0x12;
    content[1] = 0xAB;
    const fs::path p = write_idx(dir, "magic", content, gz);
    check_message(error_of([&] { (void)dho2::read_idx(p); }), p,
                  {"wrong magic", "found bytes 0x12 0xab 0x08 0x01", "expected 0x00 0x00 0x08"});
    check_message(error_of([&] { (void)dho2::read_idx_labels(p); }), p,
                  {"wrong magic", "expected 0x00 0x00 0x08 0x01"});
  }
}

TEST_CASE("idx: unsupported element type") {
  temp_dir dir;
  for (const bool gz : formats) {
    CAPTURE(gz);
    const fs::path p = write_idx(dir, "float", idx_bytes(0x0D, {2}, pattern(8, 1, 0)), gz);
    check_message(error_of([&] { (void)dho2::read_idx(p); }), p,
                  {"unsupported element type 0x0d", "float32", "0x08 (unsigned byte)"});
    const fs::path q = write_idx(dir, "junk", idx_bytes(0x42, {2}, pattern(2, 1, 0)), gz);
    check_message(error_of([&] { (void)dho2::read_idx(q); }), q, {"unsupported element type 0x42"});
  }
}

TEST_CASE("idx: wrong number of dimensions") {
  temp_dir dir;
  for (const bool gz : formats) {
    CAPTURE(gz);
    const fs::path labels = write_idx(dir, "labels", idx_bytes(0x08, {3}, {1, 2, 3}), gz);
    check_message(error_of([&] { (void)dho2::read_idx_images(labels); }), labels,
                  {"wrong number of dimensions", "found 1, expected 3"});
    const fs::path images = write_idx(dir, "images", idx_bytes(0x08, {1, 2, 2}, {1, 2, 3, 4}), gz);
    check_message(error_of([&] { (void)dho2::read_idx_labels(images); }), images,
                  {"wrong number of dimensions", "found 3, expected 1"});
    const fs::path rank0 = write_idx(dir, "rank0", idx_bytes(0x08, {}, {}), gz);
    check_message(error_of([&] { (void)dho2::read_idx(rank0); }), rank0,
                  {"wrong number of dimensions", "found 0"});
  }
}

TEST_CASE("idx: zero dimension") {
  temp_dir dir;
  for (const bool gz : formats) {
    CAPTURE(gz);
    const fs::path p = write_idx(dir, "zero", idx_bytes(0x08, {4, 0, 28}, {}), gz);
    check_message(error_of([&] { (void)dho2::read_idx_images(p); }), p,
                  {"zero dimension", "4 x 0 x 28"});
  }
}

TEST_CASE("idx: truncated header and truncated data give expected and found sizes") {
  temp_dir dir;
  for (const bool gz : formats) {
    CAPTURE(gz);
    const fs::path empty = write_idx(dir, "empty", {}, gz);
    check_message(error_of([&] { (void)dho2::read_idx(empty); }), empty,
                  {"truncated header", "found 0"});
    bytes short_dims = idx_bytes(0x08, {2, 2, 2}, {});
    short_dims.resize(4 + 7);
    const fs::path dims = write_idx(dir, "dims", short_dims, gz);
    check_message(error_of([&] { (void)dho2::read_idx_images(dims); }), dims,
                  {"truncated header", "expected 12", "found 7"});
    const fs::path data = write_idx(dir, "data", idx_bytes(0x08, {2, 2, 2}, {1, 2, 3, 4, 5}), gz);
    check_message(error_of([&] { (void)dho2::read_idx_images(data); }), data,
                  {"truncated data", "expected 8 bytes", "found 5"});
  }
}

TEST_CASE("idx: a huge claimed size with little data is truncated, not allocated") {
  temp_dir dir;
  for (const bool gz : formats) {
    CAPTURE(gz);
    // 2^31 bytes is exactly the limit: accepted by the header check, then found truncated.
    const fs::path p = write_idx(dir, "claim", idx_bytes(0x08, {1U << 31U}, pattern(10, 3, 3)), gz);
    check_message(error_of([&] { (void)dho2::read_idx(p); }), p,
                  {"truncated data", "expected 2147483648 bytes", "found 10"});
  }
}

TEST_CASE("idx: damaged gzip streams are reported") {
  temp_dir dir;
  const bytes content = idx_bytes(0x08, {64, 8, 8}, pattern(64 * 8 * 8, 7, 1));
  const fs::path good = write_idx(dir, "good", content, true);
  const bytes packed = read_all(good);
  REQUIRE(packed.size() > 40);

  // Cut in the middle of the compressed data.
  const fs::path cut = dir / "cut.gz";
  write_plain(
      cut, bytes(packed.begin(), packed.begin() + static_cast<std::ptrdiff_t>(packed.size() / 2)));
  check_message(error_of([&] { (void)dho2::read_idx_images(cut); }), cut,
                {"truncated data", "gzip stream ends early"});

  // Only the 8-byte trailer (CRC and length) missing: the data is all there but unchecked.
  const fs::path no_trailer = dir / "no_trailer.gz";
  write_plain(no_trailer, bytes(packed.begin(), packed.end() - 8));
  check_message(error_of([&] { (void)dho2::read_idx_images(no_trailer); }), no_trailer,
                {"truncated data", "gzip stream ends early"});

  // Cut inside the gzip header, before any data.
  const fs::path head = dir / "head.gz";
  write_plain(head, bytes(packed.begin(), packed.begin() + 6));
  check_message(error_of([&] { (void)dho2::read_idx_images(head); }), head,
                {"truncated header", "found 0", "gzip stream ends early"});

  // A corrupted CRC.
  bytes bad_crc = packed;
  bad_crc[bad_crc.size() - 8] ^= 0xFFU;
  const fs::path crc = dir / "crc.gz";
  write_plain(crc, bad_crc);
  check_message(error_of([&] { (void)dho2::read_idx_images(crc); }), crc,
                {"cannot read", "corrupt gzip data"});
}

TEST_CASE("idx: trailing garbage") {
  temp_dir dir;
  for (const bool gz : formats) {
    CAPTURE(gz);
    const fs::path p = write_idx(dir, "tail", idx_bytes(0x08, {2, 2, 2}, pattern(11, 1, 0)), gz);
    check_message(error_of([&] { (void)dho2::read_idx_images(p); }), p,
                  {"trailing garbage", "3 extra bytes", "8 data bytes"});
  }
}

TEST_CASE("idx: dimension overflow is rejected before allocating") {
  temp_dir dir;
  for (const bool gz : formats) {
    CAPTURE(gz);
    const fs::path p = write_idx(dir, "huge", idx_bytes(0x08, {65536, 65536, 2}, {1, 2, 3}), gz);
    check_message(error_of([&] { (void)dho2::read_idx_images(p); }), p,
                  {"dimension overflow", "65536 x 65536 x 2", "limit of 2147483648 bytes"});
    // One past the limit in a single dimension; and a product that would wrap 64 bits.
    const fs::path q = write_idx(dir, "one", idx_bytes(0x08, {(1U << 31U) + 1U}, {1}), gz);
    check_message(error_of([&] { (void)dho2::read_idx(q); }), q, {"dimension overflow"});
    const std::vector<std::uint32_t> wrap(8, 0xFFFFFFFFU);
    const fs::path r = write_idx(dir, "wrap", idx_bytes(0x08, wrap, {1}), gz);
    check_message(error_of([&] { (void)dho2::read_idx(r); }), r, {"dimension overflow"});
  }
}

TEST_CASE("idx: image/label count mismatch names both files and both counts") {
  temp_dir dir;
  for (const bool gz : formats) {
    CAPTURE(gz);
    const fs::path ip = write_idx(dir, "img", idx_bytes(0x08, {3, 2, 2}, pattern(12, 1, 0)), gz);
    const fs::path lp = write_idx(dir, "lab", idx_bytes(0x08, {4}, {0, 1, 0, 1}), gz);
    const std::string m = error_of([&] { (void)dho2::load_idx_dataset<float>(ip, lp, 2); });
    check_message(m, ip, {"count mismatch", "3 images", "4 labels"});
    CHECK(contains(m, lp.string()));
  }
}

TEST_CASE("idx: label out of range") {
  temp_dir dir;
  for (const bool gz : formats) {
    CAPTURE(gz);
    const fs::path ip = write_idx(dir, "img", idx_bytes(0x08, {3, 2, 2}, pattern(12, 1, 0)), gz);
    const fs::path lp = write_idx(dir, "lab", idx_bytes(0x08, {3}, {0, 10, 1}), gz);
    check_message(error_of([&] { (void)dho2::load_idx_dataset<float>(ip, lp, 10); }), lp,
                  {"label out of range", "label 10 of sample 1", "[0, 10)"});
    CHECK_THROWS_AS((void)dho2::load_idx_dataset<float>(ip, lp, 0), dho2::invalid_options);
  }
}

TEST_CASE("idx: load_fashion_mnist reads the standard names, with or without .gz") {
  temp_dir dir;
  const auto put = [&](const std::string& name, const bytes& content, bool gz) {
    (void)write_idx(dir, name, content, gz);
  };
  put("train-images-idx3-ubyte", idx_bytes(0x08, {4, 2, 2}, pattern(16, 9, 2)), true);
  put("train-labels-idx1-ubyte", idx_bytes(0x08, {4}, {9, 0, 3, 5}), false);
  put("t10k-images-idx3-ubyte", idx_bytes(0x08, {2, 2, 2}, pattern(8, 5, 1)), false);
  const std::string m = error_of([&] { (void)dho2::load_fashion_mnist<float>(dir.path()); });
  check_message(m, dir / "t10k-labels-idx1-ubyte.gz", {"cannot open", "not found"});

  put("t10k-labels-idx1-ubyte", idx_bytes(0x08, {2}, {7, 1}), true);
  const auto fm = dho2::load_fashion_mnist<float>(dir.path());
  CHECK(fm.train.size() == 4);
  CHECK(fm.test.size() == 2);
  CHECK(fm.train.num_features() == 4);
  CHECK(fm.train.num_classes == 10);
  CHECK(fm.train.labels(0) == 9);
  CHECK(fm.test.labels(0) == 7);
}

TEST_CASE("idx: the installed Fashion-MNIST loads with the expected shape and balance") {
  const fs::path dir(dho2::fashion_mnist_default_dir);
  if (!fs::exists(dir / "train-images-idx3-ubyte.gz") &&
      !fs::exists(dir / "train-images-idx3-ubyte")) {
    MESSAGE("Fashion-MNIST not installed in " << dir.string() << "; test skipped");
    return;
  }
  const auto start = std::chrono::steady_clock::now();
  const auto fm = dho2::load_fashion_mnist<float>();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  MESSAGE("loading Fashion-MNIST (float) took " << seconds << " s");
  WARN(seconds < 2.0);  // Reported, not asserted: timings depend on the machine and build type.

  CHECK(fm.train.size() == 60000);
  CHECK(fm.test.size() == 10000);
  CHECK(fm.train.num_features() == 784);
  CHECK(fm.test.num_features() == 784);
  for (const auto* set : {&fm.train, &fm.test}) {
    CHECK(set->num_classes == 10);
    CHECK(set->labels.minCoeff() >= 0);
    CHECK(set->labels.maxCoeff() < 10);
    CHECK(set->inputs.minCoeff() == 0.0F);
    CHECK(set->inputs.maxCoeff() == 1.0F);
  }
  const std::vector<dho2::index> train_counts = dho2::class_histogram(fm.train);
  const std::vector<dho2::index> test_counts = dho2::class_histogram(fm.test);
  for (std::size_t c = 0; c < 10; ++c) {
    CAPTURE(c);
    CHECK(train_counts[c] == 6000);
    CHECK(test_counts[c] == 1000);
  }
}
