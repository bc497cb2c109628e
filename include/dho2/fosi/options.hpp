/// @file
/// `dho2::options`: FOSI's hyper-parameters and guards (see docs/algorithm.md), validated
/// before use, and their field list (`options::for_each_field`): each field's name and
/// constraint, said once. Validation, the values the ranks agree on (`detail::option_fields`, also
/// the options part of a checkpoint's identity) and programs' flag tables (`options::field_name`)
/// derive from it.
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/core/types.hpp>
#include <dho2/detail/agreement.hpp>
#include <dho2/detail/validate.hpp>

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace dho2 {

/// How the velocity u of the Newton part accumulates g₁ (the gradient inside span(V)).
enum class momentum_kind {
  /// u ← β u + (1 − β) g₁ (the reference's default, an exponential moving average).
  ema,
  /// u ← g₁ + β u (heavy-ball form).
  heavy_ball,
  /// u = g₁ (no momentum).
  none,
};

/// What a step does when the loss, the gradient or a Hessian-vector product is not finite.
enum class nonfinite_policy {
  /// Skip the step (or keep the previous curvature), count it in the summary and go on.
  skip,
  /// Stop the run: the step reports `step_status::stopped`, the summary's termination is
  /// `numerical_failure`, and no state is updated with a non-finite value.
  stop,
};

struct options;

/// One entry of the options' field list (`options::for_each_field`): a member of `dho2::options`,
/// its name and its constraint.
template <class T>
struct option_field {
  /// The field's name in messages and in the cross-rank agreement ("options.k").
  std::string_view name;
  /// The member (`&options::k`).
  T options::*member;
  /// The constraint: the text of the first rule the field breaks in `o` for a model with n
  /// parameters (">= 0", "k + l < n (l = 1, n = 4)"), or nullopt when it keeps them all. Null
  /// for a field without constraint. Fields are checked in list order, so a rule may assume
  /// the fields before it valid.
  std::optional<std::string> (*violated)(const options& o, index n) = nullptr;
};

/// Options of a FOSI run. Defaults follow the reference implementation (Sivan et al., 2024)
/// except the guards, which the reference lacks. `validate(n)` checks every field.
struct options {
  /// Use curvature at all. False gives the base optimizer alone (k and l are then ignored).
  bool use_curvature = true;
  /// k: number of largest Hessian eigenpairs in the Newton subspace.
  index k = 5;
  /// l: number of smallest (most negative) eigenpairs in the Newton subspace.
  index l = 0;
  /// m: Lanczos steps per estimate; 0 selects max(4(k + l), ⌈2 ln n⌉) capped at n.
  index lanczos_steps = 0;
  /// W: the first estimate runs before step W − 1 (0-based), so steps 0 … W − 2 are pure base
  /// steps.
  index warmup = 100;
  /// T: later estimates run before steps W − 1 + T, W − 1 + 2T, …
  index refresh_every = 100;
  /// α: scale of the Newton direction inside span(V).
  double alpha = 0.1;
  /// β: momentum of the Newton part's velocity.
  double momentum = 0.9;
  /// Form of the Newton part's momentum.
  momentum_kind momentum_form = momentum_kind::ema;
  /// c: clip of the base-step scale s = clip(λ_max/λ_min over the top k, 1, c); unset selects
  /// the base optimizer's default (1 for Adam, 3 otherwise).
  std::optional<double> clip{};
  /// Eigenpairs with |λ| < floor·max|λ| are dropped, not inverted (relative; in [0, 1)).
  double eigenvalue_floor = 1e-4;
  /// What to do with a non-finite loss, gradient or Hessian-vector product.
  nonfinite_policy on_nonfinite = nonfinite_policy::skip;
  /// Under `nonfinite_policy::skip`: the run stops with `termination_type::numerical_failure`
  /// once this many consecutive steps were skipped for a non-finite loss or gradient (a diverged
  /// run would otherwise skip every remaining step and end "completed"); 0 = no bound.
  index max_consecutive_skips = 20;
  /// Gradient-norm clipping (as `torch.nn.utils.clip_grad_norm_`): before the FOSI step splits
  /// the gradient g, it is scaled by `max_gradient_norm`/‖g‖₂ when ‖g‖₂ exceeds this bound, so
  /// the step acts on a gradient of norm at most the bound; 0 (the default) turns clipping off.
  /// ‖g‖₂ is the norm of the whole gradient the step uses: in mode S the global mean gradient
  /// (its shards' squared norms summed across ranks, one extra all-reduce of one double per
  /// step), in mode A each rank's local gradient (with the proximal term). No ε is added to the
  /// norm, so a clipped gradient has norm `max_gradient_norm` up to rounding.
  /// `optimizer::last_gradient_norm()` reports the norm before clipping.
  double max_gradient_norm = 0.0;
  /// Seed of the curvature estimator's RNG.
  std::uint64_t seed = 0x5eed;

  /// The field list: calls `visit(option_field<T>{name, member, constraint})` for every field
  /// above, in declaration order. A new field is added here (and nowhere else) to be validated,
  /// agreed across ranks and part of a checkpoint's identity.
  template <class Visitor>
  static constexpr void for_each_field(Visitor&& visit);

  /// The name of `member` in the field list ("options.k" for `&options::k`), for tables keyed on
  /// `dho2::invalid_options::field()`; empty for a member that is not in the list.
  template <class T>
  [[nodiscard]] static constexpr std::string_view field_name(T options::*member);

  /// Throws `dho2::invalid_options` ("<field> = <value>. Violated constraint: …", with
  /// `field()` the field's name in the field list) for the first invalid field, given n
  /// parameters (first of all n itself: "number of parameters n", >= 1). Changes nothing.
  void validate(index n) const;
};

namespace detail {

// A rule's text when `ok` is false.
inline std::optional<std::string> unless(bool ok, std::string_view rule) {
  if (ok) return std::nullopt;
  return std::string(rule);
}

// A field's value as an invalid_options message shows it (an unset optional is never invalid).
template <class T>
auto shown_value(const T& v) {
  if constexpr (std::is_enum_v<T>) {
    return static_cast<std::underlying_type_t<T>>(v);
  } else if constexpr (std::is_same_v<T, std::optional<double>>) {
    return v.value_or(0.0);
  } else {
    return v;
  }
}

}  // namespace detail

template <class Visitor>
constexpr void options::for_each_field(Visitor&& visit) {
  using rule = std::optional<std::string>;
  using detail::unless;
  constexpr auto field = []<class T>(std::string_view name, T options::*member,
                                     rule (*violated)(const options&, index) = nullptr) {
    return option_field<T>{name, member, violated};
  };
  visit(field("options.use_curvature", &options::use_curvature));
  visit(field("options.k", &options::k, [](const options& o, index n) -> rule {
    if (o.k < 0) return ">= 0";
    if (!o.use_curvature || o.l < 0) return std::nullopt;  // (a negative l is reported first)
    const std::string l_text = std::to_string(o.l);
    if (o.k == 0 && o.l == 0) return "k + l >= 1 when use_curvature is true (l = " + l_text + ")";
    // k + l < n, compared without forming k + l (which overflows for k, l near 2^63).
    return unless(o.k < n && o.l < n - o.k,
                  "k + l < n (l = " + l_text + ", n = " + std::to_string(n) + ")");
  }));
  visit(field("options.l", &options::l,
              [](const options& o, index) -> rule { return unless(o.l >= 0, ">= 0"); }));
  visit(field("options.lanczos_steps", &options::lanczos_steps, [](const options& o, index n) {
    if (o.use_curvature) {
      if (o.lanczos_steps != 0 && o.lanczos_steps < o.k + o.l) {
        return rule("0 (default) or >= k + l (k + l = " + std::to_string(o.k + o.l) + ")");
      }
      if (o.lanczos_steps > n) return rule("<= n (n = " + std::to_string(n) + ")");
    }
    return unless(o.lanczos_steps >= 0, ">= 0");
  }));
  visit(field("options.warmup", &options::warmup,
              [](const options& o, index) { return unless(o.warmup >= 1, ">= 1"); }));
  visit(field("options.refresh_every", &options::refresh_every,
              [](const options& o, index) { return unless(o.refresh_every >= 1, ">= 1"); }));
  visit(field("options.alpha", &options::alpha, [](const options& o, index) {
    return unless(detail::is_finite_nonnegative(o.alpha), detail::finite_nonnegative_rule);
  }));
  visit(field("options.momentum", &options::momentum, [](const options& o, index) {
    return unless(detail::is_unit_interval(o.momentum), detail::unit_interval_rule);
  }));
  visit(field("options.momentum_form", &options::momentum_form));
  visit(field("options.clip", &options::clip, [](const options& o, index) {
    return unless(!o.clip || (std::isfinite(*o.clip) && *o.clip >= 1.0), "finite and >= 1");
  }));
  visit(field("options.eigenvalue_floor", &options::eigenvalue_floor, [](const options& o, index) {
    return unless(detail::is_unit_interval(o.eigenvalue_floor), detail::unit_interval_rule);
  }));
  visit(field("options.on_nonfinite", &options::on_nonfinite));
  visit(
      field("options.max_consecutive_skips", &options::max_consecutive_skips,
            [](const options& o, index) { return unless(o.max_consecutive_skips >= 0, ">= 0"); }));
  visit(
      field("options.max_gradient_norm", &options::max_gradient_norm, [](const options& o, index) {
        return unless(detail::is_finite_nonnegative(o.max_gradient_norm),
                      "finite and >= 0 (0 turns clipping off)");
      }));
  visit(field("options.seed", &options::seed));
}

template <class T>
constexpr std::string_view options::field_name(T options::*member) {
  std::string_view name;
  for_each_field([&](const auto& f) {
    if constexpr (std::is_same_v<decltype(f.member), T options::*>) {
      if (f.member == member) name = f.name;
    }
  });
  return name;
}

inline void options::validate(index n) const {
  detail::require(n >= 1, "number of parameters n", n, ">= 1");
  for_each_field([&](const auto& f) {
    if (f.violated == nullptr) return;
    if (const std::optional<std::string> rule = f.violated(*this, n)) {
      detail::throw_invalid(f.name, detail::shown_value(this->*f.member), *rule);
    }
  });
}

namespace detail {

// One field's value as the named doubles the ranks compare: bool 1 or 0, enums their int value,
// an unset optional -1 (no valid clip is), a 64-bit seed as two exact 32-bit halves.
template <class T>
void append_agreement_values(std::vector<named_field>& out, std::string_view name, const T& v) {
  if constexpr (std::is_same_v<T, bool>) {
    out.push_back({std::string(name), v ? 1.0 : 0.0});
  } else if constexpr (std::is_enum_v<T>) {
    out.push_back({std::string(name), static_cast<double>(static_cast<int>(v))});
  } else if constexpr (std::is_same_v<T, std::optional<double>>) {
    out.push_back({std::string(name), v.value_or(-1.0)});
  } else if constexpr (std::is_same_v<T, std::uint64_t>) {
    out.push_back({std::string(name) + " (high 32 bits)", static_cast<double>(v >> 32U)});
    out.push_back({std::string(name) + " (low 32 bits)", static_cast<double>(v & 0xffffffffULL)});
  } else {
    static_assert(std::is_arithmetic_v<T>, "add the encoding of this field type");
    out.push_back({std::string(name), static_cast<double>(v)});
  }
}

// The options as named doubles, for the cross-rank agreement (`check_fields_agree`) and the
// options part of a checkpoint's identity: "model.num_parameters()" = n first, then every field
// of the field list in its order.
inline std::vector<named_field> option_fields(const options& o, index n) {
  std::vector<named_field> fields{{"model.num_parameters()", static_cast<double>(n)}};
  options::for_each_field(
      [&](const auto& f) { append_agreement_values(fields, f.name, o.*(f.member)); });
  return fields;
}

}  // namespace detail

}  // namespace dho2
