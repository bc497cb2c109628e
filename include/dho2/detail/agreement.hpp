// Cross-rank agreement on named values (options, model shapes): every rank encodes its values as
// doubles, rank 0's are broadcast, each rank marks the values that differ, and an all-reduce of
// the marks lets every rank throw the same `invalid_options` naming the first differing one. What
// to agree on is the caller's (for `dho2::options`: `detail::option_fields` in fosi/options.hpp).
#pragma once

#include <dho2/detail/internal_header_check.hpp>

#include <dho2/core/errors.hpp>

#include <cstddef>
#include <cstring>
#include <span>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace dho2::detail {

// A value the ranks must agree on, with the name an invalid_options message gives it.
struct named_field {
  std::string name;
  double value;
};

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
    std::ostringstream value;
    value.precision(17);
    value << fields[i].value << " on rank " << t.rank() << ", " << root[i] << " on rank 0";
    std::ostringstream rule;
    rule.precision(17);
    rule << "identical on all " << t.size() << " ranks (" << differs[i] << " differ from rank 0)";
    throw invalid_options(fields[i].name, value.str(), rule.str());
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
