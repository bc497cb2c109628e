// libFuzzer target: the checkpoint reader (include/dho2/checkpoint/file.hpp) on arbitrary bytes.
// Every input must either open — and then every section it lists must read back with its type
// and count — or throw dho2::checkpoint_error; never crash, hang, read out of bounds or allocate
// beyond the file's size (ASan and UBSan watch).
//
// The CRC-32C would stop almost every mutation at the checksum, so when the input's first byte
// is odd the target drops that byte, writes the true size into the header and appends the true
// CRC: the section-table parser and the section reads then see mutated tables. When it is even,
// the bytes after it go to the reader as they are (magic, version, size and CRC checks).
//
// Built and run by tests/fuzz/run_fuzzers.sh. Seeds in tests/fuzz/corpus/checkpoint/: a valid
// checkpoint (x, counters, velocity and a byte section, written by checkpoint_writer) behind
// mode byte 0 (`valid_plain`) and, without its CRC, behind mode byte 1 (`valid_fixed_crc`).
#include <dho2/checkpoint/file.hpp>

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <vector>

namespace {

const std::filesystem::path& scratch_file() {
  static const std::filesystem::path path =
      std::filesystem::temp_directory_path() /
      ("dho2_fuzz_checkpoint_" + std::to_string(::getpid()) + ".dho2ckpt");
  return path;
}

template <class T>
void read_all(const dho2::checkpoint_reader& r, const std::string& name, std::size_t count) {
  const std::vector<T> v = r.read<T>(name);
  if (v.size() != count) std::abort();  // the table of contents lied
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::vector<std::byte> bytes(reinterpret_cast<const std::byte*>(data) + 1,
                               reinterpret_cast<const std::byte*>(data) + size);
  if ((data[0] & 1U) != 0 && bytes.size() >= dho2::checkpoint_header_bytes) {
    const std::uint64_t total = bytes.size() + 4;
    std::memcpy(bytes.data() + 16, &total, sizeof total);  // little-endian host (checked)
    const std::uint32_t crc = dho2::crc32c(bytes);
    const auto* c = reinterpret_cast<const std::byte*>(&crc);
    bytes.insert(bytes.end(), c, c + 4);
  }
  {
    std::ofstream out(scratch_file(), std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
  }
  try {
    const dho2::checkpoint_reader r(scratch_file());
    for (const auto& s : r.sections()) {
      switch (s.type) {
        case 1: read_all<std::uint8_t>(r, s.name, s.count); break;
        case 2: read_all<std::int64_t>(r, s.name, s.count); break;
        case 3: read_all<std::uint64_t>(r, s.name, s.count); break;
        case 4: read_all<float>(r, s.name, s.count); break;
        case 5: read_all<double>(r, s.name, s.count); break;
        default: std::abort();  // the reader accepted an unknown element type
      }
    }
  } catch (const dho2::checkpoint_error&) {
    // Rejected with a message naming the file and the defect.
  }
  return 0;
}
