// libFuzzer target: the IDX reader (include/dho2/data/idx.hpp) on arbitrary bytes, plain or
// gzip (zlib reads both). Every input must either parse into dims whose product is the data
// size, or throw dho2::data_error — never crash, hang, read out of bounds, or allocate more than
// the header's validated size (AddressSanitizer and UndefinedBehaviorSanitizer watch).
//
// Built and run by tests/fuzz/run_fuzzers.sh (clang++ -fsanitize=fuzzer,address,undefined);
// seed corpus in tests/fuzz/corpus/idx/.
#include <dho2/data/idx.hpp>

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace {

// The reader takes a path, so each input goes through one file per fuzzing process.
const std::filesystem::path& scratch_file() {
  static const std::filesystem::path path =
      std::filesystem::temp_directory_path() /
      ("dho2_fuzz_idx_" + std::to_string(::getpid()) + ".idx");
  return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  {
    std::ofstream out(scratch_file(), std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  try {
    const dho2::idx_array a = dho2::read_idx(scratch_file());
    std::uint64_t total = 1;
    for (const std::uint32_t d : a.dims) total *= d;
    if (a.dims.empty() || total != a.data.size()) std::abort();  // a parse that lies
  } catch (const dho2::data_error&) {
    // Rejected with a message: the expected outcome for most inputs.
  }
  return 0;
}
