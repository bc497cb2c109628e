/// @file
/// Settings of a job beyond `dho2::options` that every rank must share and that a checkpoint
/// must match: the model's structure (`model_structure`), the data layout, the epoch count, …
/// as named text values (`job_setting`), and the collective check that the ranks agree on them
/// (`check_settings_agree`).
///
/// The model's structure is a fingerprint of its architecture, not only its parameter count:
/// two models with the same n but other layer widths, another activation or another kind give
/// different structures. A model tells its own with the optional member `m.structure()` (see
/// `dho2/concepts/differentiable_model.hpp`); `dho2::mlp`, `dho2::softmax_regression` and
/// `dho2::quadratic` do. For a model without it the structure is its parameter count alone.
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/core/types.hpp>
#include <dho2/detail/agreement.hpp>

#include <concepts>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace dho2 {

/// One setting every rank of a job must share, and that a checkpoint records and a resumed job
/// must match: its name in messages ("model.structure", "data.batch_size") and its value as
/// text (compared as text).
struct job_setting {
  /// The setting's name, as messages give it.
  std::string name;
  /// Its value, as text.
  std::string value;

  /// Same name and value.
  friend bool operator==(const job_setting&, const job_setting&) = default;
};

/// An ordered list of settings.
using job_settings = std::vector<job_setting>;

/// The structure of `model`: `model.structure()` when the model has that member (a string that
/// tells its architecture apart: kind, layer widths, activation, loss), otherwise
/// "parameters=" followed by `model.num_parameters()`.
template <class M>
[[nodiscard]] std::string model_structure(const M& model) {
  if constexpr (requires {
                  { model.structure() } -> std::convertible_to<std::string>;
                }) {
    return std::string(model.structure());
  } else {
    return "parameters=" + std::to_string(static_cast<long long>(model.num_parameters()));
  }
}

/// The settings of `model` a job records: "model.structure" (`model_structure`) and
/// "model.num_parameters()".
template <class M>
[[nodiscard]] job_settings model_settings(const M& model) {
  return {
      {"model.structure", model_structure(model)},
      {"model.num_parameters()", std::to_string(static_cast<long long>(model.num_parameters()))}};
}

/// Checks that every rank of `t` has the same `settings` (names, values and order); a
/// collective: every rank calls it with its own list, before any other collective that depends
/// on them. Throws the same `dho2::invalid_options` on every rank otherwise, with `field()` the
/// first setting that differs (in rank 0's order) and `value()` each rank's value, ranks of one
/// value grouped ("3 on rank 0, 5 on rank 1"; "relu on ranks 0, 2; tanh on rank 1"; a setting a
/// rank lacks shows "(none)"), constraint "identical on all P ranks". Costs two all-gathers
/// (the lists' lengths, then the lists); nothing with one rank.
template <class Transport>
void check_settings_agree(Transport& t, std::span<const job_setting> settings) {
  std::vector<std::pair<std::string, std::string>> pairs;
  pairs.reserve(settings.size());
  for (const job_setting& s : settings) pairs.emplace_back(s.name, s.value);
  detail::check_settings_agree(t, std::span<const std::pair<std::string, std::string>>(pairs));
}

}  // namespace dho2
