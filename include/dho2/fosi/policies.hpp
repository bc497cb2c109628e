/// @file
/// `dho2::policies`: the compile-time bundle of policies an optimizer is made of, holding the
/// policy objects (their hyper-parameters) as named members.
#pragma once

#include <dho2/admm/synchronous.hpp>
#include <dho2/base/adam.hpp>
#include <dho2/concepts/admm_solver.hpp>
#include <dho2/concepts/curvature_estimator.hpp>
#include <dho2/concepts/partitioner.hpp>
#include <dho2/concepts/schedule.hpp>
#include <dho2/concepts/transport.hpp>
#include <dho2/curvature/lanczos.hpp>
#include <dho2/partition/even.hpp>
#include <dho2/schedule/synchronous.hpp>
#include <dho2/transport/single_process.hpp>

namespace dho2 {

/// The policies of an optimizer, by role, with defaults for a single process:
///
/// | member        | role (concept)                             | default                  |
/// |---------------|--------------------------------------------|--------------------------|
/// | `base`        | first-order step (`base_optimizer`)        | `adam`                   |
/// | `estimator`   | eigenpairs from HVPs (`curvature_estimator`)| `lanczos`               |
/// | `partitioner` | parameter shards (`partitioner`)           | `even_partitioner`       |
/// | `schedule`    | when curvature is estimated (`schedule`)   | `synchronous_schedule`   |
/// | `transport`   | collectives (`transport`)                  | `single_process`         |
/// | `admm`        | what happens between steps across ranks    | `synchronous_admm`       |
///
/// Change one role by name, never by position:
/// `dho2::default_policies::with_base<dho2::sgd>`. Construct the bundle with designated
/// initialisers to set hyper-parameters: `{.base = {.learning_rate = 0.1}}`.
template <class Base = adam, class Estimator = lanczos, class Partitioner = even_partitioner,
          class Schedule = synchronous_schedule, class Transport = single_process,
          class Admm = synchronous_admm>
struct policies {
  static_assert(curvature_estimator<Estimator>,
                "DHO2: policies: the estimator does not satisfy dho2::curvature_estimator");
  static_assert(partitioner<Partitioner>,
                "DHO2: policies: the partitioner does not satisfy dho2::partitioner");
  DHO2_REQUIRE_SCHEDULE(Schedule);
  static_assert(transport<Transport>,
                "DHO2: policies: the transport does not satisfy dho2::transport");
  DHO2_REQUIRE_ADMM_SOLVER(Admm);

  /// Base optimizer type.
  using base_type = Base;
  /// Curvature estimator type.
  using estimator_type = Estimator;
  /// Partitioner type.
  using partitioner_type = Partitioner;
  /// Schedule type.
  using schedule_type = Schedule;
  /// Transport type.
  using transport_type = Transport;
  /// ADMM solver type.
  using admm_type = Admm;

  /// The same bundle with another base optimizer.
  template <class B>
  using with_base = policies<B, Estimator, Partitioner, Schedule, Transport, Admm>;
  /// The same bundle with another curvature estimator.
  template <class E>
  using with_estimator = policies<Base, E, Partitioner, Schedule, Transport, Admm>;
  /// The same bundle with another partitioner.
  template <class P>
  using with_partitioner = policies<Base, Estimator, P, Schedule, Transport, Admm>;
  /// The same bundle with another schedule.
  template <class C>
  using with_schedule = policies<Base, Estimator, Partitioner, C, Transport, Admm>;
  /// The same bundle with another transport.
  template <class T>
  using with_transport = policies<Base, Estimator, Partitioner, Schedule, T, Admm>;
  /// The same bundle with another ADMM solver.
  template <class A>
  using with_admm = policies<Base, Estimator, Partitioner, Schedule, Transport, A>;

  /// Base optimizer and its hyper-parameters.
  Base base{};
  /// Curvature estimator and its hyper-parameters.
  Estimator estimator{};
  /// Partitioner.
  Partitioner partitioner{};
  /// Schedule.
  Schedule schedule{};
  /// Transport (the rank's handle on the job's collectives).
  Transport transport{};
  /// ADMM solver.
  Admm admm{};
};

/// Adam base, Lanczos curvature, one process.
using default_policies = policies<>;

}  // namespace dho2
