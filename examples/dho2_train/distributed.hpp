// dho2_train: the ranks of a run. Picks the transport (inproc threads, MPI, TCP), runs the
// training body once per rank of this process, and gathers each rank's measured costs to rank 0
// for the summary.
#pragma once

#include "config.hpp"
#include <dho2/core/summary.hpp>
#include <dho2/transport/any.hpp>
#include <dho2/transport/inproc.hpp>
#include <dho2/transport/simulated_link.hpp>
#include <dho2/transport/single_process.hpp>
#if DHO2_TRAIN_WITH_MPI
#include <dho2/mpi.hpp>

#include <boost/mpi/environment.hpp>
#endif
#if DHO2_TRAIN_WITH_ASIO
#include <dho2/asio.hpp>
#endif

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace dho2_train {

/// Whether this binary was built with the MPI / TCP transports.
inline constexpr bool with_mpi = DHO2_TRAIN_WITH_MPI != 0;
inline constexpr bool with_asio = DHO2_TRAIN_WITH_ASIO != 0;

/// This process's rank as the MPI launcher tells it in the environment (Open MPI, PMIx, MPICH),
/// or nullopt when not started by mpirun.
inline std::optional<int> launcher_rank() {
  for (const char* name : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"}) {
    if (const char* v = std::getenv(name); v != nullptr && *v != '\0') return std::atoi(v);
  }
  return std::nullopt;
}

/// The transport --transport names; `auto` is mpi when started by mpirun and built with MPI,
/// inproc otherwise.
inline std::string resolved_transport(const train_config& c) {
  std::string t = c.transport;
  if (t == "auto") t = (with_mpi && launcher_rank()) ? "mpi" : "inproc";
  if (t == "mpi" && !with_mpi) {
    throw usage_error(
        "--transport mpi: this dho2_train was built without MPI (configure with "
        "libboost-mpi-dev and libopenmpi-dev installed)");
  }
  if (t == "asio" && !with_asio) {
    throw usage_error("--transport asio: this dho2_train was built without Boost.Asio");
  }
  return t;
}

#if DHO2_TRAIN_WITH_ASIO
static_assert(max_world_size == dho2::asio_options::max_size);

/// asio options from the flags, each falling back on its environment variable (DHO2_RANK,
/// DHO2_WORLD_SIZE, DHO2_RENDEZVOUS, DHO2_BIND_ADDRESS, DHO2_SECRET_FILE) when the flag is not
/// given; what neither sets is named with both.
inline dho2::asio_options asio_options_of(const train_config& c) {
  const auto env = [](const char* name) -> std::optional<std::string> {
    const char* v = std::getenv(name);
    return v ? std::optional<std::string>(v) : std::nullopt;
  };
  dho2::asio_options o;
  std::string missing;
  const auto lack = [&](const char* what) {
    missing += (missing.empty() ? "" : "; ") + std::string(what);
  };
  long long size = 0;
  if (c.world_size) {
    size = *c.world_size;
  } else if (const auto v = env("DHO2_WORLD_SIZE")) {
    size = detail::parse_integer("DHO2_WORLD_SIZE", *v, 1, max_world_size);
  } else {
    lack("the number of ranks: --world-size P or DHO2_WORLD_SIZE");
  }
  long long rank = 0;
  if (c.rank) {
    rank = *c.rank;
  } else if (const auto v = env("DHO2_RANK")) {
    rank = detail::parse_integer("DHO2_RANK", *v, 0, max_world_size - 1);
  } else {
    lack("this process's rank: --rank R or DHO2_RANK");
  }
  std::string rendezvous = c.rendezvous;
  const char* rendezvous_source = "--rendezvous";
  if (rendezvous.empty()) {
    if (const auto v = env("DHO2_RENDEZVOUS")) {
      rendezvous = *v;
      rendezvous_source = "DHO2_RENDEZVOUS";
    } else if (size != 1) {
      lack("rank 0's address: --rendezvous HOST:PORT or DHO2_RENDEZVOUS");
    }
  }
  if (!missing.empty()) {
    throw usage_error(
        "--transport asio needs --rank, --world-size and --rendezvous (or the environment "
        "variables DHO2_RANK, DHO2_WORLD_SIZE and DHO2_RENDEZVOUS); missing " +
        missing);
  }
  if (rank >= size) {
    throw usage_error("--rank: " + std::to_string(rank) + " is out of range (must be in [0, " +
                      std::to_string(size - 1) + "], the world size being " + std::to_string(size) +
                      ")");
  }
  o.rank = static_cast<int>(rank);
  o.size = static_cast<int>(size);
  if (!rendezvous.empty()) {
    const std::size_t colon = rendezvous.rfind(':');
    if (colon == std::string::npos || colon == 0) {
      throw usage_error(std::string(rendezvous_source) + ": " + detail::quoted(rendezvous) +
                        " is not HOST:PORT");
    }
    std::string host = rendezvous.substr(0, colon);
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
      host = host.substr(1, host.size() - 2);
    }
    o.host = host;
    const long long port = detail::parse_integer(std::string(rendezvous_source) + " port",
                                                 rendezvous.substr(colon + 1), 1, 65535);
    o.port = static_cast<unsigned short>(port);
  }
  if (!c.bind_address.empty()) {
    o.bind_address = c.bind_address;
  } else if (const auto v = env("DHO2_BIND_ADDRESS")) {
    boost::system::error_code ec;
    (void)boost::asio::ip::make_address(*v, ec);
    if (ec) {
      throw usage_error("DHO2_BIND_ADDRESS: " + detail::quoted(*v) +
                        " is not an IPv4 or IPv6 address");
    }
    o.bind_address = *v;
  }
  const auto warn = [](const std::string& line) {
    std::fflush(stdout);
    std::fprintf(stderr, "dho2_train: warning: %s\n", line.c_str());
  };
  if (!c.secret_file.empty()) {
    o.secret = dho2::asio_options::read_secret_file(c.secret_file, "--secret-file", warn);
  } else if (const auto f = env("DHO2_SECRET_FILE")) {
    o.secret = dho2::asio_options::read_secret_file(*f, "DHO2_SECRET_FILE", warn);
  }
  const auto ms = std::chrono::milliseconds(static_cast<long long>(c.timeout * 1000.0));
  o.timeout = ms;
  // The rendezvous waits --connect-timeout if given, else at least the default (60 s) and at
  // least --timeout.
  o.connect_timeout =
      c.connect_timeout
          ? std::chrono::milliseconds(static_cast<long long>(*c.connect_timeout * 1000.0))
          : std::max(ms, o.connect_timeout);
  o.validate();
  return o;
}
#endif

/// --timeout in milliseconds, in [1 ms, 10⁹ s].
inline std::chrono::milliseconds timeout_of(const train_config& c) {
  const double ms = std::clamp(c.timeout * 1000.0, 1.0, 1e12);
  return std::chrono::milliseconds(static_cast<long long>(ms));
}

/// `t` on the simulated link of --link-latency and --link-bandwidth (every call also sleeps for
/// its α–β time, `dho2::simulated_link`), or `t` itself without them.
inline dho2::any_transport on_link(const train_config& c, dho2::any_transport t) {
  if (!uses_link(c)) return t;
  return dho2::any_transport(
      dho2::simulated_link<dho2::any_transport>(std::move(t), link_options_of(c)));
}

/// Runs `body(dho2::any_transport&)` once for every rank this process hosts: P threads for
/// inproc, one rank for mpi and asio (and for inproc with P = 1, without a thread).
template <class Body>
void run_ranks(const train_config& c, const std::string& transport, Body&& body) {
  if (transport == "inproc") {
    const int p = static_cast<int>(c.ranks.value_or(1));
    if (p == 1) {
      dho2::any_transport t = on_link(c, dho2::any_transport());
      body(t);
      return;
    }
    // The first exception a rank throws while its handle is still in the group is the cause;
    // the peers' "left the group" failures follow from it. run_inproc rethrows the first one in
    // time, and a rank's handle leaves (as its any_transport is destroyed) before run_inproc
    // sees its exception, so the cause is recorded here, before that.
    std::mutex mutex;
    std::exception_ptr cause;
    try {
      dho2::run_inproc(p, {.timeout = std::chrono::duration<double>(c.timeout)},
                       [&](dho2::inproc_transport& handle) {
                         dho2::any_transport t = on_link(c, dho2::any_transport(std::move(handle)));
                         try {
                           body(t);
                         } catch (...) {
                           const std::lock_guard lock(mutex);
                           if (!cause) cause = std::current_exception();
                           throw;
                         }
                       });
    } catch (...) {
      if (cause) std::rethrow_exception(cause);
      throw;
    }
    return;
  }
#if DHO2_TRAIN_WITH_MPI
  if (transport == "mpi") {
    dho2::mpi_transport mpi;
    // Every call is bounded (in different orders collectives fail, never hang). --timeout
    // given: a late call throws (non-blocking collectives polled against the deadline: slower,
    // see bench_mpi_collectives --dho2_timeout); else a watchdog of the default --timeout ends a
    // rank stuck in a blocking call, at the blocking collectives' speed.
    if (c.timeout_given) {
      mpi.set_timeout(timeout_of(c));
    } else {
      mpi.set_watchdog(timeout_of(c));
    }
    dho2::any_transport t = on_link(c, dho2::any_transport(std::move(mpi)));
    body(t);
    return;
  }
#endif
#if DHO2_TRAIN_WITH_ASIO
  if (transport == "asio") {
    dho2::any_transport t =
        on_link(c, dho2::any_transport(dho2::asio_transport(asio_options_of(c))));
    body(t);
    return;
  }
#endif
  throw usage_error("--transport: '" + transport + "' is not available in this build");
}

/// What one rank measured, gathered to rank 0 for the summary.
struct rank_record {
  int rank = 0;
  bool curvature_rank = false;  // a dedicated curvature rank of the split schedule
  long long shard = 0;          // parameters whose optimizer state this rank keeps
  long long steps = 0;
  long long curvature_estimates = 0;
  long long hvps = 0;
  double curvature_bytes = 0;        // peak: Krylov basis during estimates, or eigenvectors
  double optimizer_state_bytes = 0;  // base state and Newton velocity
  double bytes_sent = 0;
  double bytes_received = 0;
  double communication_s = 0;  // in the optimizer's transport calls (summary)
  double transport_s = 0;      // in every call of this rank's transport handles
  long long transport_calls = 0;
  long long max_staleness = 0;
  double wall_s = 0;

  static constexpr std::size_t fields = 15;

  [[nodiscard]] std::array<double, fields> pack() const {
    return {static_cast<double>(rank),
            curvature_rank ? 1.0 : 0.0,
            static_cast<double>(shard),
            static_cast<double>(steps),
            static_cast<double>(curvature_estimates),
            static_cast<double>(hvps),
            curvature_bytes,
            optimizer_state_bytes,
            bytes_sent,
            bytes_received,
            communication_s,
            transport_s,
            static_cast<double>(transport_calls),
            static_cast<double>(max_staleness),
            wall_s};
  }
  [[nodiscard]] static rank_record unpack(std::span<const double> v) {
    const auto ll = [](double x) { return static_cast<long long>(x); };
    return {static_cast<int>(v[0]),
            v[1] != 0.0,
            ll(v[2]),
            ll(v[3]),
            ll(v[4]),
            ll(v[5]),
            v[6],
            v[7],
            v[8],
            v[9],
            v[10],
            v[11],
            ll(v[12]),
            ll(v[13]),
            v[14]};
  }
};

/// This rank's record: the optimizer's summary plus the traffic of its transport handle.
inline rank_record make_rank_record(const dho2::summary& s, const dho2::any_transport& t,
                                    bool curvature_rank, long long shard) {
  const dho2::transport_stats stats = t.stats();
  rank_record r;
  r.rank = t.rank();
  r.curvature_rank = curvature_rank;
  r.shard = shard;
  r.steps = static_cast<long long>(s.steps);
  r.curvature_estimates = static_cast<long long>(s.curvature_estimates);
  r.hvps = static_cast<long long>(s.hvps);
  r.curvature_bytes = static_cast<double>(s.curvature_bytes);
  r.optimizer_state_bytes = static_cast<double>(s.optimizer_state_bytes);
  r.bytes_sent = static_cast<double>(stats.bytes_sent);
  r.bytes_received = static_cast<double>(stats.bytes_received);
  r.communication_s = s.communication_seconds;
  r.transport_s = stats.seconds;
  r.transport_calls = static_cast<long long>(stats.calls);
  r.max_staleness = static_cast<long long>(s.max_staleness);
  r.wall_s = s.total_seconds;
  return r;
}

/// Every rank's record, in rank order (a collective over `t`: every rank calls it).
inline std::vector<rank_record> gather_records(dho2::any_transport& t, const rank_record& mine) {
  const auto p = static_cast<std::size_t>(t.size());
  constexpr auto f = static_cast<dho2::index>(rank_record::fields);
  std::vector<dho2::index> offsets(p + 1);
  for (std::size_t r = 0; r <= p; ++r) offsets[r] = static_cast<dho2::index>(r) * f;
  const std::array<double, rank_record::fields> packed = mine.pack();
  std::vector<double> all(p * rank_record::fields);
  t.all_gather(std::span<const double>(packed), std::span<double>(all), offsets);
  std::vector<rank_record> records;
  for (std::size_t r = 0; r < p; ++r) {
    records.push_back(rank_record::unpack(
        std::span<const double>(all).subspan(r * rank_record::fields, rank_record::fields)));
  }
  return records;
}

}  // namespace dho2_train
