// Cross-rank agreement on options: every rank encodes its fields as doubles, rank 0's are
// broadcast, each rank marks the fields that differ, and an all-reduce of the marks lets every
// rank throw the same `invalid_options` naming the first differing field.
#pragma once

#include <dho2/detail/internal_header_check.hpp>

#include <dho2/core/errors.hpp>
#include <dho2/core/options.hpp>

#include <cstddef>
#include <cstring>
#include <span>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace dho2::detail {

struct named_field {
  std::string name;
  double value;
};

inline std::vector<named_field> option_fields(const options& o, index n) {
  const auto d = [](auto v) { return static_cast<double>(v); };
  return {
      {"model.num_parameters()", d(n)},
      {"options.use_curvature", o.use_curvature ? 1.0 : 0.0},
      {"options.k", d(o.k)},
      {"options.l", d(o.l)},
      {"options.lanczos_steps", d(o.lanczos_steps)},
      {"options.warmup", d(o.warmup)},
      {"options.refresh_every", d(o.refresh_every)},
      {"options.alpha", o.alpha},
      {"options.momentum", o.momentum},
      {"options.momentum_form", d(static_cast<int>(o.momentum_form))},
      {"options.clip", o.clip.value_or(-1.0)},
      {"options.eigenvalue_floor", o.eigenvalue_floor},
      {"options.on_nonfinite", d(static_cast<int>(o.on_nonfinite))},
      {"options.seed (high 32 bits)", d(o.seed >> 32U)},
      {"options.seed (low 32 bits)", d(o.seed & 0xffffffffULL)},
  };
}

template <class Transport>
void check_fields_agree(Transport& t, const std::vector<named_field>& fields) {
  const std::size_t count = fields.size();
  std::vector<double> root(count);
  for (std::size_t i = 0; i < count; ++i) root[i] = fields[i].value;
  t.broadcast(std::as_writable_bytes(std::span<double>(root)), 0);
  std::vector<double> differs(count);
  for (std::size_t i = 0; i < count; ++i) {
    // Bitwise comparison: NaN options are rejected by validate(), and -0.0 vs 0.0 differ.
    differs[i] = std::memcmp(&root[i], &fields[i].value, sizeof(double)) != 0 ? 1.0 : 0.0;
  }
  t.all_reduce_sum(std::span<double>(differs));
  for (std::size_t i = 0; i < count; ++i) {
    if (differs[i] == 0.0) continue;
    std::ostringstream os;
    os.precision(17);
    os << fields[i].name << " = " << fields[i].value << " on rank " << t.rank() << ", "
       << root[i] << " on rank 0. Violated constraint: identical on all " << t.size()
       << " ranks (" << differs[i] << " differ from rank 0)";
    throw invalid_options(os.str());
  }
}

// Samples in a batch, when the model can tell (`m.batch_size(b)`); 1 otherwise.
template <class M, class B>
double batch_weight(const M& model, const B& batch) {
  if constexpr (requires { model.batch_size(batch); }) {
    return static_cast<double>(model.batch_size(batch));
  } else {
    return 1.0;
  }
}

}  // namespace dho2::detail
