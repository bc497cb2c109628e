// dho2_train: from the flags to an optimizer. The options, the base optimizer, the policy bundle
// (schedule, consensus, partitioner) and the optimizer (dho2::optimizer, or dho2::kfac for the MLP)
// that --optimizer, --schedule, --consensus, --admm-* and --partitioner ask for, and `train`,
// which validates them and hands one of each model type to the runner. Shared by dho2_train.cpp
// and, when built with LibTorch, the CNN's translation unit (cnn.cpp).
#pragma once

#include "config.hpp"
#include "runner.hpp"
#include <dho2/admm/diloco.hpp>
#include <dho2/admm/local_sgd.hpp>
#include <dho2/dho2.hpp>
#include <dho2/kfac/kfac.hpp>
#include <dho2/models/mlp.hpp>
#include <dho2/partition/any.hpp>
#include <dho2/partition/block_aligned.hpp>
#include <dho2/partition/weighted.hpp>
#include <dho2/schedule/background.hpp>
#include <dho2/schedule/split.hpp>
#include <dho2/transport/any.hpp>

#include <string>
#include <string_view>
#include <type_traits>

namespace dho2_train {
/// The fields of dho2::options that flags set: each with its flag and its train_config member.
/// make_options and the flag of an invalid option's field both come from here.
template <class Visit>
void for_each_option_flag(Visit&& visit) {
  using o = dho2::options;
  visit(&o::k, "--k", &train_config::k);
  visit(&o::l, "--l", &train_config::l);
  visit(&o::lanczos_steps, "--m", &train_config::lanczos_steps);
  visit(&o::warmup, "--W", &train_config::warmup);
  visit(&o::refresh_every, "--T", &train_config::refresh_every);
  visit(&o::alpha, "--alpha", &train_config::alpha);
  visit(&o::momentum, "--beta", &train_config::beta);
  visit(&o::clip, "--clip", &train_config::clip);
  visit(&o::seed, "--seed", &train_config::seed);
  visit(&o::max_consecutive_skips, "--max-skipped-steps", &train_config::max_skipped_steps);
}

/// FOSI's options from the flags (curvature on for fosi-* and dho2, off for a base alone).
inline dho2::options make_options(const train_config& c) {
  dho2::options o;
  o.use_curvature = uses_curvature(c.optimizer);
  for_each_option_flag([&](auto field, std::string_view /*flag*/, auto flag_value) {
    o.*field = static_cast<std::remove_reference_t<decltype(o.*field)>>(c.*flag_value);
  });
  return o;
}

/// The K-FAC options from the flags (unset flags keep dho2::kfac_options' defaults; --kl-clip 0
/// turns clipping off).
inline dho2::kfac_options make_kfac_options(const train_config& c) {
  dho2::kfac_options o;
  if (c.lr) o.learning_rate = *c.lr;
  if (c.momentum) o.momentum = *c.momentum;
  if (c.damping) o.damping = *c.damping;
  if (c.kfac_factor_decay) o.factor_decay = *c.kfac_factor_decay;
  if (c.kfac_factor_every) o.factor_every = static_cast<dho2::index>(*c.kfac_factor_every);
  if (c.kfac_inverse_every) o.inverse_every = static_cast<dho2::index>(*c.kfac_inverse_every);
  if (c.kl_clip) o.kl_clip = *c.kl_clip == 0.0 ? std::nullopt : std::optional<double>(*c.kl_clip);
  o.max_consecutive_skips = static_cast<dho2::index>(c.max_skipped_steps);
  return o;
}

/// The partitioner --partitioner names.
template <class Model>
dho2::any_partitioner make_partitioner(const train_config& c, const Model& model) {
  if (c.partitioner == "block") {
    if constexpr (requires { model.parameter_blocks(); }) {
      return dho2::any_partitioner(dho2::block_aligned_partitioner::for_model(model));
    } else {
      throw usage_error("--partitioner block: the model has no parameter blocks");
    }
  }
  if (c.partitioner == "weighted") {
    return dho2::any_partitioner(dho2::weighted_partitioner(c.partition_weights));
  }
  return dho2::any_partitioner(dho2::even_partitioner{});
}

template <class Schedule>
Schedule make_schedule(const train_config& c) {
  const dho2::late_estimate_policy on_late = c.on_late == "wait"
                                                 ? dho2::late_estimate_policy::wait
                                                 : dho2::late_estimate_policy::keep_previous;
  if constexpr (std::is_same_v<Schedule, dho2::split_schedule>) {
    return {.curvature_group = static_cast<int>(c.curvature_ranks),
            .max_staleness = static_cast<dho2::index>(c.max_staleness),
            .on_late = on_late};
  } else if constexpr (std::is_same_v<Schedule, dho2::background_schedule>) {
    return {.max_staleness = static_cast<dho2::index>(c.max_staleness), .on_late = on_late};
  } else {
    return {};
  }
}

template <class Admm>
Admm make_admm(const train_config& c) {
  if constexpr (!Admm::shards_state) {
    return {.rho = c.admm_rho.value_or(1.0),
            .tau = static_cast<dho2::index>(c.admm_every.value_or(8)),
            .residual_balancing = c.admm_balance};
  } else {
    return {};
  }
}

/// Calls `f(base, mu)` with the base optimizer --optimizer names (as a dho2::any_base, so every
/// base shares one instantiation of each policy bundle), and its momentum.
template <class F>
int with_base(const train_config& c, F&& f) {
  const std::string_view name = base_name(c.optimizer);
  const double lr = c.lr.value_or(default_learning_rate(c.optimizer));
  const double mu = c.momentum.value_or(0.9);
  if (name == "sgd") {
    if (c.momentum) throw usage_error("--momentum: " + c.optimizer + " has no momentum");
    return f(dho2::any_base(dho2::sgd{.learning_rate = lr}), 0.0);
  }
  if (name == "momentum") {
    return f(dho2::any_base(dho2::heavy_ball{.learning_rate = lr, .momentum = mu}), mu);
  }
  if (name == "nesterov") {
    return f(dho2::any_base(dho2::nesterov{.learning_rate = lr, .momentum = mu}), mu);
  }
  if (name == "adamw") {
    return f(dho2::any_base(dho2::adamw{
                 .learning_rate = lr, .beta1 = mu, .weight_decay = c.weight_decay.value_or(0.01)}),
             mu);
  }
  return f(dho2::any_base(dho2::adam{.learning_rate = lr, .beta1 = mu}), mu);
}

/// The policy bundle of a run: base, schedule and ADMM solver fixed at compile time, transport
/// and partitioner chosen at run time.
template <class Base, class Schedule, class Admm>
using run_policies =
    dho2::policies<Base, dho2::lanczos, dho2::any_partitioner, Schedule, dho2::any_transport, Admm>;

/// Calls `f(policies)` with the bundle --schedule, --admm-* and --consensus ask for, on any base.
template <class F>
int with_policies(const train_config& c, const dho2::any_base& base, F&& f) {
  using Base = dho2::any_base;
  {
    if (uses_admm(c)) {
      using P = run_policies<Base, dho2::synchronous_schedule, dho2::consensus_admm>;
      return f(P{.base = base, .admm = make_admm<dho2::consensus_admm>(c)});
    }
    const auto tau = static_cast<dho2::index>(c.tau.value_or(8));
    if (c.consensus == "local-sgd") {
      using P = run_policies<Base, dho2::synchronous_schedule, dho2::local_sgd>;
      return f(P{.base = base, .admm = {.tau = tau}});
    }
    if (c.consensus == "diloco") {
      using P = run_policies<Base, dho2::synchronous_schedule, dho2::diloco>;
      return f(P{.base = base, .admm = {.tau = tau}});
    }
    if (c.schedule == "split") {
      using P = run_policies<Base, dho2::split_schedule, dho2::synchronous_admm>;
      return f(P{.base = base, .schedule = make_schedule<dho2::split_schedule>(c)});
    }
    if (c.schedule == "background") {
      using P = run_policies<Base, dho2::background_schedule, dho2::synchronous_admm>;
      return f(P{.base = base, .schedule = make_schedule<dho2::background_schedule>(c)});
    }
  }
  return f(run_policies<Base, dho2::synchronous_schedule, dho2::synchronous_admm>{.base = base});
}

/// Validates everything that does not need the data, then trains with the optimizer
/// --optimizer names (dho2::kfac, or dho2::optimizer with the base, schedule and ADMM solver the
/// flags ask for) through the one runner, train_run.
template <class Model>
int train(const train_config& c, const Model& model, const model_choice& choice,
          const std::string& transport) {
  if constexpr (std::is_same_v<Model, dho2::mlp<scalar>>) {
    if (is_kfac(c.optimizer)) {
      const dho2::kfac_options options = make_kfac_options(c);
      options.validate();
      preflight(c, choice);
      return train_run(c, model, choice, transport, kfac_run{options});
    }
  }
  return with_base(c, [&](const auto& base, double mu) {
    // Options and hyper-parameters are checked before the data is read.
    base.validate();
    const dho2::options options = make_options(c);
    options.validate(model.num_parameters());
    preflight(c, choice);
    return with_policies(c, base, [&](auto policies) {
      if constexpr (requires { policies.schedule.validate(); }) policies.schedule.validate();
      if constexpr (requires { policies.admm.validate(); }) policies.admm.validate();
      policies.partitioner = make_partitioner(c, model);
      return train_run(c, model, choice, transport,
                       fosi_run<decltype(policies)>{options, policies, base.learning_rate, mu});
    });
  });
}

}  // namespace dho2_train
