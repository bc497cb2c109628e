// Which BLAS this process actually runs, for the LibTorch peer programs (torch_train,
// bench_torch_mlp_step): the BLAS and LAPACK shared objects mapped into the process, read from
// /proc/self/maps after the libraries are loaded (Debian's libtorch links libblas.so.3, which
// update-alternatives points at the reference BLAS or at OpenBLAS), and OpenBLAS's own report
// and thread control when it is the one loaded (looked up with dlsym, so nothing links OpenBLAS).
#pragma once

#include <dlfcn.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>
#include <vector>

namespace dho2_peer {

/// Real paths of the BLAS / LAPACK shared objects mapped into this process (OpenBLAS, the
/// reference libblas / liblapack, BLIS, ATLAS, MKL), in the order first mapped, without
/// duplicates; empty when none is mapped or /proc/self/maps cannot be read.
inline std::vector<std::string> loaded_blas_libraries() {
  std::vector<std::string> found;
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    const std::size_t slash = line.find('/');
    if (slash == std::string::npos) continue;
    const std::string path = line.substr(slash);
    const std::string name = path.substr(path.rfind('/') + 1);
    const bool blas = name.find("blas") != std::string::npos ||
                      name.find("lapack") != std::string::npos ||
                      name.find("blis") != std::string::npos ||
                      name.find("atlas") != std::string::npos || name.starts_with("libmkl_");
    if (blas && name.find(".so") != std::string::npos &&
        std::find(found.begin(), found.end(), path) == found.end()) {
      found.push_back(path);
    }
  }
  return found;
}

/// The libraries of `loaded_blas_libraries()` joined by ';' ("none" when there are none).
inline std::string loaded_blas_string() {
  const std::vector<std::string> libs = loaded_blas_libraries();
  if (libs.empty()) return "none";
  std::string out;
  for (const std::string& l : libs) {
    if (!out.empty()) out += ';';
    out += l;
  }
  return out;
}

/// OpenBLAS's configuration string and core name ("OpenBLAS 0.3.21 DYNAMIC_ARCH ... / Haswell"),
/// or "" when OpenBLAS is not loaded.
inline std::string openblas_config() {
  using text_fn = char* (*)();
  const auto config = reinterpret_cast<text_fn>(::dlsym(RTLD_DEFAULT, "openblas_get_config"));
  const auto core = reinterpret_cast<text_fn>(::dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  if (config == nullptr) return "";
  std::string out = config();
  if (core != nullptr) {
    out += " / core ";
    out += core();
  }
  return out;
}

/// Sets OpenBLAS's thread count (LibTorch's set_num_threads does not: OpenBLAS's pthread build
/// otherwise uses every core inside each GEMM). Returns the count OpenBLAS reports afterwards, or
/// 0 when OpenBLAS is not loaded.
inline int set_openblas_threads(int threads) {
  using set_fn = void (*)(int);
  using get_fn = int (*)();
  const auto set = reinterpret_cast<set_fn>(::dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  const auto get = reinterpret_cast<get_fn>(::dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  if (set == nullptr || get == nullptr) return 0;
  set(threads);
  return get();
}

/// The shared object that provides `symbol` (e.g. "sgemm_") to this process by the default
/// symbol lookup (its real path, symbolic links resolved) — what an undefined reference to it in
/// the executable or in a library loaded with it (libtorch_cpu's calls into BLAS) binds to — or ""
/// when no loaded object defines it.
inline std::string symbol_provider(const char* symbol) {
  void* address = ::dlsym(RTLD_DEFAULT, symbol);
  Dl_info info{};
  if (address == nullptr || ::dladdr(address, &info) == 0 || info.dli_fname == nullptr) return "";
  std::error_code ec;
  const std::filesystem::path real = std::filesystem::canonical(info.dli_fname, ec);
  return ec ? std::string(info.dli_fname) : real.string();
}

}  // namespace dho2_peer
