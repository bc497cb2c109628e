// dho2_train: the checks made before any data is read or any large allocation is made, so that a
// run fails at once, naming the flag or file, instead of after an epoch: the output paths (what
// they name, and no two the same file), the memory the model, the optimizer and the curvature
// would take against the memory available, and every data set against the model.
#pragma once

#include "config.hpp"
#include <dho2/curvature/lanczos.hpp>
#include <dho2/io/output_file.hpp>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace dho2_train {

/// The output flags and their paths (those given).
inline std::vector<std::pair<std::string_view, std::string>> output_paths(const train_config& c) {
  std::vector<std::pair<std::string_view, std::string>> out;
  const std::pair<std::string_view, const std::string*> all[] = {
      {"--summary-json", &c.summary_json},
      {"--save-parameters", &c.save_parameters},
      {"--log", &c.log_path},
      {"--eval-log", &c.eval_log}};
  for (const auto& [flag, path] : all) {
    if (!path->empty()) out.emplace_back(flag, *path);
  }
  return out;
}

/// The input files that exist (Fashion-MNIST's four IDX files under --data, --secret-file), each
/// with the flag that names it, for `check_outputs`.
inline std::vector<std::pair<std::string, std::filesystem::path>> input_files(
    const train_config& c) {
  std::vector<std::pair<std::string, std::filesystem::path>> out;
  std::error_code ec;
  const auto add = [&](const std::string& flag, const std::filesystem::path& p) {
    if (std::filesystem::is_regular_file(p, ec)) out.emplace_back(flag, p);
  };
  if (c.dataset == "fashion-mnist") {
    for (const char* name : {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"}) {
      for (const char* suffix : {".gz", ""}) {
        add("--data", std::filesystem::path(c.data_dir) / (std::string(name) + suffix));
      }
    }
  }
  if (!c.secret_file.empty()) add("--secret-file", c.secret_file);
  return out;
}

/// Checks every output path before the run (`dho2::resolve_output`): a directory, a socket, a
/// block device or a missing directory throws `dho2::output_error` naming the flag and the path;
/// two flags naming the same file (after links, dot and dot-dot; character devices such as
/// /dev/null excepted, which any number of outputs may share), or an output naming an input file
/// (`input_files`), throw `usage_error` naming both flags.
inline void check_outputs(const train_config& c) {
  std::vector<std::pair<std::string_view, dho2::output_target>> targets;
  const auto inputs = input_files(c);
  for (const auto& [flag, path] : output_paths(c)) {
    dho2::output_target t = dho2::resolve_output(path, flag);
    for (const auto& [other_flag, other] : targets) {
      if (t.kind != dho2::output_kind::character_device && t.same_file_as(other)) {
        throw usage_error(std::string(other_flag) + " '" + other.path.string() + "' and " +
                          std::string(flag) + " '" + path +
                          "' are the same file: each output needs a file of its own");
      }
    }
    if (t.kind == dho2::output_kind::regular_file) {
      for (const auto& [input_flag, input] : inputs) {
        std::error_code ec;
        if (std::filesystem::equivalent(input, path, ec)) {
          throw usage_error(std::string(flag) + " '" + path + "' is the input file '" +
                            input.string() + "' of " + input_flag +
                            ": an output must not overwrite an input");
        }
      }
    }
    targets.emplace_back(flag, std::move(t));
  }
}

/// Bytes of memory this process may still use: MemAvailable of /proc/meminfo (else the free
/// physical pages), lowered to the room left under the cgroup's memory.max when there is one;
/// nullopt when none can be read.
inline std::optional<double> available_memory_bytes(std::string* source) {
  std::optional<double> bytes;
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  double kib = 0.0;
  std::string unit;
  while (meminfo >> key >> kib >> unit) {
    if (key == "MemAvailable:") {
      bytes = kib * 1024.0;
      *source = "MemAvailable of /proc/meminfo";
      break;
    }
  }
  if (!bytes) {
    const long pages = ::sysconf(_SC_AVPHYS_PAGES);
    const long page = ::sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0) {
      bytes = static_cast<double>(pages) * static_cast<double>(page);
      *source = "free physical memory (sysconf)";
    }
  }
  std::ifstream max_file("/sys/fs/cgroup/memory.max");
  std::ifstream current_file("/sys/fs/cgroup/memory.current");
  double max = 0.0;
  double current = 0.0;
  if (max_file >> max && current_file >> current && max > current) {
    if (!bytes || max - current < *bytes) {
      bytes = max - current;
      *source = "the cgroup's memory.max less memory.current";
    }
  }
  return bytes;
}

/// What `estimate_memory` counts.
struct memory_estimate {
  double parameters = 0.0;  // n
  double bytes = 0.0;
  std::string detail;  // the terms, for the message
};

/// Lower estimate of the bytes the run allocates for the model's parameters n (parameters and
/// gradient on each of the `ranks` ranks this process hosts), the base optimizer's state, the
/// curvature (k + l eigenvectors and a Lanczos basis of m vectors; K-FAC: two factors and their
/// inverses per layer, in double) and the data sets (`samples` of `features` floats). `layers`
/// are the widths of an MLP (or {features, classes} of softmax regression).
inline memory_estimate estimate_memory(const train_config& c, const std::vector<long long>& layers,
                                       double samples, long long features) {
  memory_estimate e;
  double kfac_doubles = 0.0;
  for (std::size_t i = 0; i + 1 < layers.size(); ++i) {
    const double in = static_cast<double>(layers[i]);
    const double out = static_cast<double>(layers[i + 1]);
    e.parameters += in * out + out;
    kfac_doubles += 2.0 * ((in + 1.0) * (in + 1.0) + out * out);
  }
  const double n = e.parameters;
  const double ranks = static_cast<double>(
      c.transport == "inproc" || c.transport == "auto" ? c.ranks.value_or(1) : 1);
  constexpr double bytes = sizeof(float);
  const std::string_view base = base_name(c.optimizer);
  const double state = base == "adam" || base == "adamw" ? 2.0
                       : base == "sgd"                   ? 0.0
                                                         : 1.0;  // vectors of n
  double curvature_vectors = 0.0;
  double curvature_bytes = 0.0;
  if (uses_curvature(c.optimizer)) {
    const auto m = c.lanczos_steps > 0
                       ? static_cast<double>(c.lanczos_steps)
                       : static_cast<double>(dho2::default_lanczos_steps(
                             c.k, c.l, static_cast<dho2::index>(std::min(n, 9.0e18))));
    curvature_vectors = static_cast<double>(c.k + c.l) + m;
    curvature_bytes = curvature_vectors * n * bytes;
  } else if (is_kfac(c.optimizer)) {
    curvature_bytes = kfac_doubles * sizeof(double) * ranks;
  }
  const double params_bytes = 2.0 * n * bytes * ranks;
  const double state_bytes = (is_kfac(c.optimizer) ? ranks : state) * n * bytes;
  const double data_bytes = samples * static_cast<double>(features) * bytes;
  e.bytes = params_bytes + state_bytes + curvature_bytes + data_bytes;
  char text[256];
  std::snprintf(text, sizeof text,
                "parameters and gradient %.0f, optimizer state %.0f, curvature %.0f, data %.0f",
                params_bytes, state_bytes, curvature_bytes, data_bytes);
  e.detail = text;
  return e;
}

/// Throws `std::runtime_error` naming --model, the samples, the estimate in bytes
/// (`estimate_memory`, with its terms) and the memory available when the run would not fit,
/// before anything large is allocated.
inline void check_memory(const train_config& c, const std::vector<long long>& layers,
                         double samples, long long features) {
  const memory_estimate e = estimate_memory(c, layers, samples, features);
  std::string source;
  const std::optional<double> available = available_memory_bytes(&source);
  if (!available || e.bytes <= *available) return;
  char text[640];
  std::snprintf(text, sizeof text,
                "not enough memory: --model %s (%.0f parameters) with --optimizer %s on %.0f "
                "samples needs an estimated %.0f bytes (%s), more than the %.0f bytes available "
                "(%s)",
                c.model.c_str(), e.parameters, c.optimizer.c_str(), samples, e.bytes,
                e.detail.c_str(), *available, source.c_str());
  throw std::runtime_error(text);
}

}  // namespace dho2_train
