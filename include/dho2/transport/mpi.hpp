/// @file
/// `dho2::mpi_transport`: the transport of P ranks that are the processes of an MPI communicator.
/// Opt-in: include `<dho2/mpi.hpp>` and link `dho2::mpi` (Boost.MPI 1.74 or later and an MPI
/// library, e.g. Open MPI 4.1). (Its length is mostly this contract: each routine's MPI call,
/// checks, deadline and watchdog are a few lines; the watchdog's thread is
/// `transport/detail/call_watchdog.hpp`.)
///
/// **Communicator**: the constructor *duplicates* the caller's communicator (`MPI_Comm_dup`) and
/// never uses the caller's one again, so DHO2's messages and collectives cannot match the
/// caller's (same ranks and order — `MPI_Comm_compare` gives `MPI_CONGRUENT` — but a separate
/// communication context). The duplicate gets the error handler `MPI_ERRORS_RETURN`, so a failing
/// MPI routine returns its code instead of aborting; the caller's communicator and its handler
/// are untouched. `split` creates a child with `MPI_Comm_split` on the duplicate; each transport
/// owns its communicator and frees it (`MPI_Comm_free`) when destroyed, unless MPI is already
/// finalized then.
///
/// **MPI must be initialised by the caller** before the first transport is constructed and
/// finalized after the last collective (e.g. a `boost::mpi::environment` at the top of `main`).
/// If the program itself calls MPI from several threads it must ask for the matching threading
/// level; DHO2 uses one transport from one thread at a time (the concept's rule).
///
/// **Routines** (the raw MPI C API on the duplicate, contiguous buffers, built-in datatypes
/// `MPI_FLOAT` / `MPI_DOUBLE` / `MPI_BYTE` and the built-in `MPI_SUM`, never a user-defined
/// operation, so the MPI library uses its own optimised reductions):
///  - `all_reduce_sum` → `MPI_Allreduce(MPI_IN_PLACE, …, MPI_SUM)`;
///  - `reduce_scatter_sum` → `MPI_Reduce_scatter` with the per-rank counts of the offsets;
///  - `all_gather` → `MPI_Allgatherv` with counts and displacements from the offsets (uneven and
///    empty shards are fine; `MPI_IN_PLACE` when `in` is this rank's part of `out`);
///  - `broadcast` → `MPI_Bcast` of bytes; `barrier` → `MPI_Barrier`;
///  - `split` → `MPI_Allgather` of the colours, then `MPI_Comm_split` with each colour replaced
///    by its position among the distinct colours, so any `int` is a colour (MPI itself accepts
///    only colours ≥ 0, and `MPI_UNDEFINED` is an ordinary colour here: every rank gets a group);
///  - `send` / `recv` → `MPI_Send` / `MPI_Recv` of bytes. `send` has MPI's blocking semantics: it
///    returns once the buffer may be reused — at once for a small message (below the MPI
///    library's eager limit, a few KiB in shared memory), otherwise when the receiver has
///    started to take it. Messages between a pair with one tag arrive in the order sent;
///  - `poll` → `MPI_Iprobe` (`dho2::polling_transport`).
///
/// **Sums**: the reduction order is the MPI library's. Open MPI's algorithms (chosen by
/// communicator size and count) give bit-identical results on every rank and in every run for a
/// fixed communicator size, count and process placement, as the MPI standard recommends (it does
/// not require it); the last bits may differ from `inproc_transport`'s rank-order sum.
///
/// **Sizes**: MPI counts and displacements are `int`. A call whose element (or byte) count,
/// shard count or total length exceeds `INT_MAX` is *rejected* (not chunked) with
/// `dho2::transport_error` naming the argument and the limit, before any communication — on
/// every rank, since the ranks pass the same lengths.
///
/// **Failures**: every MPI call's return code is checked; a failure throws
/// `dho2::transport_error` of the form
/// `"mpi recv [rank 1, world size 4]: MPI_Recv failed: MPI_ERR_TRUNCATE: message truncated
/// (error class 15): the message from peer 0 with tag 21 is longer than the receive buffer of 7
/// bytes"`, naming DHO2's routine, this rank and the size of this transport's group, the MPI
/// routine and the MPI error string (`MPI_Error_string`). Argument errors (invalid offsets, a
/// buffer whose length contradicts them, a root, peer or tag out of range, a count above `INT_MAX`)
/// throw the same type before any communication. The transport stays usable after a throw
/// (MPI communicators are not poisoned).
///
/// **Deadline (opt-in, `set_timeout`).** With a timeout set, every collective runs as its
/// non-blocking form (`MPI_Iallreduce`, `MPI_Ireduce_scatter`, `MPI_Iallgatherv`, `MPI_Ibcast`,
/// `MPI_Ibarrier`, and `MPI_Iallgather` in `split`) and `recv` as `MPI_Irecv`, polled with
/// `MPI_Test` until it completes or the timeout passes; then the call throws
/// `dho2::transport_error` ("… did not complete within timeout = 60.0 s: …"), so that ranks
/// that call collectives in different orders, or wait for a peer that stopped taking part, end
/// in bounded time instead of hanging. A collective that timed out cannot be cancelled (MPI has
/// no cancel for collectives) and leaves the communicator unusable: the transport throws at
/// once on every later call, and the job should end (`MPI_Abort`; `dho2_train` does). The
/// non-blocking collectives are the MPI library's own algorithms for them, which may differ from
/// the blocking ones (see `benchmarks/bench_mpi_collectives.cpp`, `--dho2_timeout`). No timeout
/// (the default): the blocking routines below, as before.
///
/// **Watchdog (opt-in, `set_watchdog`).** The blocking routines stay, and a thread of the
/// transport watches them: a call that has not returned within the deadline writes one line
/// (`"dho2: mpi [rank 1, world size 2]: all_reduce_sum did not complete within timeout = 60.0
/// s: …"`) to stderr and ends the process with `std::_Exit(70)`, and `mpirun` then ends the
/// job. It costs two atomic stores per call (the collectives keep their speed), bounds a job
/// whose ranks call collectives in different orders, and suits a program that cannot recover
/// from such a call anyway (`dho2_train` sets it to `--timeout`, 60 s, unless `--timeout` is
/// given, which selects the deadline above).
///
/// **What this level does not do — lost peers.** Without a timeout or a watchdog MPI has no
/// deadline on a blocking call, and neither does this transport: a rank waits in a collective or a
/// `recv` until its peers arrive. A lost peer is handled by the launcher: under `mpirun`, a process
/// that dies or exits without `MPI_Finalize` (including through an uncaught exception) makes
/// `mpirun` kill the whole job, so the surviving ranks are terminated rather than thrown at. A rank
/// that *catches* an exception and stops taking part while its peers wait leaves them waiting;
/// bound the job with the launcher (`mpirun --timeout <seconds>`, a batch system's wall-clock
/// limit, a CTest TIMEOUT). Ranks that call collectives with mismatched lengths or in a different
/// order are erroneous MPI programs (undefined: an error, a hang or wrong data).
///
/// Example (run with `mpirun -np 4 ./program`):
/// ```
/// boost::mpi::environment env(argc, argv);
/// dho2::mpi_transport t;  // a duplicate of MPI_COMM_WORLD
/// std::vector<double> g(1000, t.rank());
/// t.all_reduce_sum(std::span<double>(g));  // every entry is 0 + 1 + 2 + 3 on every rank
/// ```
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/concepts/polling_transport.hpp>
#include <dho2/core/errors.hpp>
#include <dho2/core/types.hpp>
#include <dho2/transport/detail/call_timer.hpp>
#include <dho2/transport/detail/call_watchdog.hpp>
#include <dho2/transport/detail/collective_checks.hpp>
#include <dho2/transport/transport_stats.hpp>

#include <boost/mpi/communicator.hpp>
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace dho2 {

namespace detail {

// The built-in MPI datatype of a model scalar.
template <model_scalar E>
MPI_Datatype mpi_datatype() noexcept {
  if constexpr (sizeof(E) == sizeof(float)) {
    return MPI_FLOAT;
  } else {
    return MPI_DOUBLE;
  }
}

// "<error string> (error class <c>)" for an MPI return code.
inline std::string mpi_error_text(int code) {
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  std::string out = MPI_Error_string(code, text, &length) == MPI_SUCCESS && length > 0
                        ? std::string(text, static_cast<std::size_t>(length))
                        : "unknown MPI error";
  int error_class = 0;
  if (MPI_Error_class(code, &error_class) == MPI_SUCCESS) {
    out += " (error class " + std::to_string(error_class) + ")";
  } else {
    out += " (error code " + std::to_string(code) + ")";
  }
  return out;
}

// Whether MPI_Init has been called and MPI_Finalize has not (both queries are always allowed).
inline bool mpi_is_usable() noexcept {
  int initialized = 0;
  int finalized = 0;
  if (MPI_Initialized(&initialized) != MPI_SUCCESS || MPI_Finalized(&finalized) != MPI_SUCCESS) {
    return false;
  }
  return initialized != 0 && finalized == 0;
}

// "" if `count` fits an MPI count (int), else the message of the rejection.
inline std::string mpi_count_error(std::size_t count, const std::string& what) {
  if (count <= static_cast<std::size_t>(INT_MAX)) return {};
  return what + " = " + std::to_string(count) + " exceeds INT_MAX = " + std::to_string(INT_MAX) +
         " (MPI counts are int; this transport does not chunk)";
}

// Owns one communicator and frees it (unless MPI is finalized); move-only.
class mpi_comm_owner {
 public:
  mpi_comm_owner() noexcept = default;
  explicit mpi_comm_owner(MPI_Comm comm) noexcept : comm_(comm) {}
  mpi_comm_owner(const mpi_comm_owner&) = delete;
  mpi_comm_owner& operator=(const mpi_comm_owner&) = delete;
  mpi_comm_owner(mpi_comm_owner&& other) noexcept
      : comm_(std::exchange(other.comm_, MPI_COMM_NULL)) {}
  mpi_comm_owner& operator=(mpi_comm_owner&& other) noexcept {
    if (this != &other) {
      reset();
      comm_ = std::exchange(other.comm_, MPI_COMM_NULL);
    }
    return *this;
  }
  ~mpi_comm_owner() { reset(); }

  [[nodiscard]] MPI_Comm get() const noexcept { return comm_; }

  void reset() noexcept {
    if (comm_ == MPI_COMM_NULL) return;
    int finalized = 1;
    if (MPI_Finalized(&finalized) == MPI_SUCCESS && finalized == 0) {
      MPI_Comm_free(&comm_);  // a failure here cannot be reported from a destructor
    }
    comm_ = MPI_COMM_NULL;
  }

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
};

}  // namespace detail

/// One rank's transport over a duplicate of an MPI communicator; models `dho2::transport` (see
/// `<dho2/concepts/transport.hpp>` for the contract and the file comment above for the MPI
/// routines, the failure semantics and what this level does not do). Move-only; destroying it
/// frees its communicator.
///
/// Traffic accounting (`stats()`, see `dho2::transport_stats`): the MPI library chooses its own
/// algorithms (and may move bytes through shared memory without copies), so the counts are the
/// *logical* payload of each call, algorithm-independent and the same as `inproc_transport`'s
/// (for its chunked all-reduce). With P ranks, s_r = this rank's shard length, c_r = this rank's
/// chunk of the even split of n (n/P, plus one for the first n mod P ranks) and e the element
/// size, per call:
///  - `all_reduce_sum` of n elements: sent = received = (n − c_r)·e + (P − 1)·c_r·e, the payload
///    of a reduce-scatter followed by an all-gather (the bandwidth-optimal schedule);
///  - `reduce_scatter_sum`: sent = (n − s_r)·e, received = (P − 1)·s_r·e;
///  - `all_gather`: sent = (P − 1)·s_r·e, received = (n − s_r)·e;
///  - `broadcast` of b bytes: the root sends (P − 1)·b, every other rank receives b;
///  - `send` / `recv` of b bytes: b sent / b received; `barrier`, `split`: nothing.
/// Summed over the ranks of a group, sent and received are equal. A call that throws adds its
/// time and its call but no bytes.
class mpi_transport {
 public:
  /// A transport over a duplicate of `comm` (default: `MPI_COMM_WORLD`); collective over `comm`
  /// (every rank of it must construct one). Throws `dho2::transport_error` if MPI is not
  /// initialised or already finalized, if `comm` is null, or if an MPI routine fails (a failure
  /// of `MPI_Comm_dup` itself goes to `comm`'s error handler first; `boost::mpi::environment`
  /// sets `MPI_ERRORS_RETURN` on `MPI_COMM_WORLD`).
  explicit mpi_transport(const boost::mpi::communicator& comm = boost::mpi::communicator()) {
    if (!detail::mpi_is_usable()) {
      throw transport_error(
          "mpi mpi_transport: MPI is not initialised or already finalized (initialise it first, "
          "e.g. with a boost::mpi::environment in main)");
    }
    const MPI_Comm user = comm;
    if (user == MPI_COMM_NULL) {
      throw transport_error("mpi mpi_transport: the communicator is null (MPI_COMM_NULL)");
    }
    int user_rank = -1;
    int user_size = 0;
    check_at("mpi_transport", "MPI_Comm_rank", MPI_Comm_rank(user, &user_rank), user_rank,
             user_size);
    check_at("mpi_transport", "MPI_Comm_size", MPI_Comm_size(user, &user_size), user_rank,
             user_size);
    MPI_Comm duplicate = MPI_COMM_NULL;
    check_at("mpi_transport", "MPI_Comm_dup", MPI_Comm_dup(user, &duplicate), user_rank, user_size);
    comm_ = detail::mpi_comm_owner(duplicate);
    adopt("mpi_transport", user_rank, user_size);
  }

  mpi_transport(const mpi_transport&) = delete;
  mpi_transport& operator=(const mpi_transport&) = delete;

  /// Takes over `other`'s communicator; every later call on `other` throws.
  mpi_transport(mpi_transport&& other) noexcept
      : comm_(std::move(other.comm_)),
        rank_(other.rank_),
        size_(other.size_),
        tag_ub_(other.tag_ub_),
        timeout_(other.timeout_),
        watchdog_(std::move(other.watchdog_)),
        broken_(std::move(other.broken_)),
        stats_(other.stats_) {}

  /// Frees this transport's communicator (if any), then takes over `other`'s.
  mpi_transport& operator=(mpi_transport&& other) noexcept {
    if (this != &other) {
      comm_ = std::move(other.comm_);
      rank_ = other.rank_;
      size_ = other.size_;
      tag_ub_ = other.tag_ub_;
      timeout_ = other.timeout_;
      watchdog_ = std::move(other.watchdog_);
      broken_ = std::move(other.broken_);
      stats_ = other.stats_;
    }
    return *this;
  }

  /// Frees the communicator (`MPI_Comm_free`) unless MPI is already finalized.
  ~mpi_transport() = default;

  /// This rank's index in [0, size()).
  [[nodiscard]] int rank() const noexcept { return rank_; }
  /// Number of ranks in the group.
  [[nodiscard]] int size() const noexcept { return size_; }

  /// Bounds every later collective and `recv` by `timeout` (see the file comment, "Deadline");
  /// zero or negative: no bound (the blocking MPI routines). Transports made by `split` inherit
  /// it. Every rank of the group should set the same timeout.
  void set_timeout(std::chrono::milliseconds timeout) noexcept { timeout_ = timeout; }
  /// The timeout in force (zero: none).
  [[nodiscard]] std::chrono::milliseconds timeout() const noexcept { return timeout_; }

  /// Ends the process when a blocking call of this transport (collective, `send`, `recv`,
  /// `split`) has not returned within `deadline` (see the file comment, "Watchdog"); zero or
  /// negative: no watchdog (the default). Starts one thread per transport that has a watchdog;
  /// transports made by `split` get their own with the same deadline.
  void set_watchdog(std::chrono::milliseconds deadline) {
    if (deadline.count() <= 0) {
      watchdog_.reset();
      return;
    }
    watchdog_ = std::make_unique<detail::call_watchdog>(
        deadline,
        "mpi [rank " + std::to_string(rank_) + ", world size " + std::to_string(size_) + "]");
  }
  /// The watchdog's deadline (zero: none).
  [[nodiscard]] std::chrono::milliseconds watchdog() const noexcept {
    return watchdog_ ? watchdog_->deadline() : std::chrono::milliseconds(0);
  }

  /// The duplicated communicator this transport owns (`MPI_COMM_NULL` once moved from), for
  /// inspection or for the caller's own MPI calls on DHO2's context; do not free it.
  [[nodiscard]] MPI_Comm native_handle() const noexcept { return comm_.get(); }

  /// In place, every rank gets the element-wise sum over ranks (`MPI_Allreduce` with
  /// `MPI_IN_PLACE` and `MPI_SUM`). All ranks pass the same length (at most `INT_MAX`).
  template <model_scalar E>
  void all_reduce_sum(std::span<E> values) {
    const char* routine = "all_reduce_sum";
    const MPI_Comm comm = handle(routine);
    detail::call_timer timer{stats_};
    const int n = checked_count(routine, values.size(), "values.size()");
    const MPI_Datatype type = detail::mpi_datatype<E>();
    run(
        routine, "MPI_Allreduce",
        [&] { return MPI_Allreduce(MPI_IN_PLACE, values.data(), n, type, MPI_SUM, comm); },
        "MPI_Iallreduce",
        [&](MPI_Request* r) {
          return MPI_Iallreduce(MPI_IN_PLACE, values.data(), n, type, MPI_SUM, comm, r);
        });
    const auto total = values.size();
    const auto p = static_cast<std::size_t>(size_);
    const auto r = static_cast<std::size_t>(rank_);
    const std::size_t chunk = total / p + (r < total % p ? 1 : 0);
    const std::size_t bytes = ((total - chunk) + (p - 1) * chunk) * sizeof(E);
    timer.count(bytes, bytes);
  }

  /// `in` holds offsets.back() entries on every rank; `out` (this rank's shard length) gets
  /// entries [offsets[rank], offsets[rank + 1]) of the element-wise sum over ranks
  /// (`MPI_Reduce_scatter`). `out` may overlap `in` (then a temporary receives the shard).
  template <model_scalar E>
  void reduce_scatter_sum(std::span<const E> in, std::span<E> out, std::span<const index> offsets) {
    const char* routine = "reduce_scatter_sum";
    const MPI_Comm comm = handle(routine);
    detail::call_timer timer{stats_};
    shard_counts(routine, offsets, in.size(), out.size(), "in", "out");
    const bool overlap =
        detail::buffers_overlap(in.data(), in.size_bytes(), out.data(), out.size_bytes());
    std::vector<E> buffer(overlap ? out.size() : 0);
    E* dst = overlap ? buffer.data() : out.data();
    const MPI_Datatype type = detail::mpi_datatype<E>();
    run(
        routine, "MPI_Reduce_scatter",
        [&] { return MPI_Reduce_scatter(in.data(), dst, counts_.data(), type, MPI_SUM, comm); },
        "MPI_Ireduce_scatter",
        [&](MPI_Request* r) {
          return MPI_Ireduce_scatter(in.data(), dst, counts_.data(), type, MPI_SUM, comm, r);
        });
    if (overlap) std::copy(buffer.begin(), buffer.end(), out.begin());
    const auto p = static_cast<std::size_t>(size_);
    timer.count((in.size() - out.size()) * sizeof(E), (p - 1) * out.size() * sizeof(E));
  }

  /// `in` is this rank's shard (offsets[rank + 1] − offsets[rank] entries); `out`
  /// (offsets.back() entries) gets every rank's shard in rank order (`MPI_Allgatherv`). `out`
  /// may contain `in` exactly at this rank's position (in place, `MPI_IN_PLACE`) or overlap it
  /// otherwise (then `in` is copied first).
  template <model_scalar E>
  void all_gather(std::span<const E> in, std::span<E> out, std::span<const index> offsets) {
    const char* routine = "all_gather";
    const MPI_Comm comm = handle(routine);
    detail::call_timer timer{stats_};
    shard_counts(routine, offsets, out.size(), in.size(), "out", "in");
    const E* own = out.data() + offsets[static_cast<std::size_t>(rank_)];
    const bool in_place = in.empty() || in.data() == own;
    const bool overlap = !in_place && detail::buffers_overlap(in.data(), in.size_bytes(),
                                                              out.data(), out.size_bytes());
    std::vector<E> copy(overlap ? in.begin() : in.end(), in.end());
    const E* src = overlap ? copy.data() : in.data();
    const MPI_Datatype type = detail::mpi_datatype<E>();
    const void* send = in_place ? MPI_IN_PLACE : static_cast<const void*>(src);
    const int count = in_place ? 0 : static_cast<int>(in.size());
    run(
        routine, "MPI_Allgatherv",
        [&] {
          return MPI_Allgatherv(send, count, type, out.data(), counts_.data(),
                                displacements_.data(), type, comm);
        },
        "MPI_Iallgatherv",
        [&](MPI_Request* r) {
          return MPI_Iallgatherv(send, count, type, out.data(), counts_.data(),
                                 displacements_.data(), type, comm, r);
        });
    const auto p = static_cast<std::size_t>(size_);
    timer.count((p - 1) * in.size() * sizeof(E), (out.size() - in.size()) * sizeof(E));
  }

  /// Every rank gets `root`'s bytes (`MPI_Bcast`); all ranks pass the same length and root.
  void broadcast(std::span<std::byte> bytes, int root) {
    const char* routine = "broadcast";
    const MPI_Comm comm = handle(routine);
    detail::call_timer timer{stats_};
    if (root < 0 || root >= size_) {
      fail(routine, detail::out_of_range_error("root", root, size_));
    }
    const int n = checked_count(routine, bytes.size(), "bytes.size()");
    run(
        routine, "MPI_Bcast", [&] { return MPI_Bcast(bytes.data(), n, MPI_BYTE, root, comm); },
        "MPI_Ibcast",
        [&](MPI_Request* r) { return MPI_Ibcast(bytes.data(), n, MPI_BYTE, root, comm, r); });
    if (rank_ == root) {
      timer.count(static_cast<std::size_t>(size_ - 1) * bytes.size(), 0);
    } else {
      timer.count(0, bytes.size());
    }
  }

  /// Returns once every rank of the group has called `barrier` (`MPI_Barrier`).
  void barrier() {
    const char* routine = "barrier";
    const MPI_Comm comm = handle(routine);
    detail::call_timer timer{stats_};
    run(
        routine, "MPI_Barrier", [&] { return MPI_Barrier(comm); }, "MPI_Ibarrier",
        [&](MPI_Request* r) { return MPI_Ibarrier(comm, r); });
  }

  /// Collective over this group: returns the transport of this rank in the new group of the
  /// ranks that passed the same `color` (any int), ranked by (key, rank in this group). The new
  /// transport owns its own communicator (`MPI_Comm_split` of this one), is independent of this
  /// one and starts with zero stats.
  [[nodiscard]] mpi_transport split(int color, int key) {
    const char* routine = "split";
    const MPI_Comm comm = handle(routine);
    detail::call_timer timer{stats_};
    std::vector<int> colors(static_cast<std::size_t>(size_));
    run(
        routine, "MPI_Allgather",
        [&] { return MPI_Allgather(&color, 1, MPI_INT, colors.data(), 1, MPI_INT, comm); },
        "MPI_Iallgather",
        [&](MPI_Request* r) {
          return MPI_Iallgather(&color, 1, MPI_INT, colors.data(), 1, MPI_INT, comm, r);
        });
    std::sort(colors.begin(), colors.end());
    colors.erase(std::unique(colors.begin(), colors.end()), colors.end());
    const auto dense =
        static_cast<int>(std::lower_bound(colors.begin(), colors.end(), color) - colors.begin());
    MPI_Comm child = MPI_COMM_NULL;
    {
      const detail::watched_call watch(watchdog_.get(), routine);
      check(routine, "MPI_Comm_split", MPI_Comm_split(comm, dense, key, &child));
    }
    mpi_transport out(detail::mpi_comm_owner(child), routine, rank_, size_);
    out.timeout_ = timeout_;
    out.set_watchdog(watchdog());
    return out;
  }

  /// Sends `bytes` to `peer` with `tag` (`MPI_Send`; see the file comment for when it returns).
  /// `peer` in [0, size()), `tag` in [0, MPI_TAG_UB] (at least 32767).
  void send(std::span<const std::byte> bytes, int peer, int tag) {
    const char* routine = "send";
    const MPI_Comm comm = handle(routine);
    detail::call_timer timer{stats_};
    check_peer_tag(routine, peer, tag);
    const int n = checked_count(routine, bytes.size(), "bytes.size()");
    const detail::watched_call watch(watchdog_.get(), routine);
    check(routine, "MPI_Send", MPI_Send(bytes.data(), n, MPI_BYTE, peer, tag, comm));
    timer.count(bytes.size(), 0);
  }

  /// Whether a message from `peer` with `tag` has arrived (`MPI_Iprobe`; never waits, consumes
  /// nothing; `dho2::polling_transport`). `peer` and `tag` as for `send`.
  [[nodiscard]] bool poll(int peer, int tag) {
    const char* routine = "poll";
    const MPI_Comm comm = handle(routine);
    check_peer_tag(routine, peer, tag);
    int flag = 0;
    check(routine, "MPI_Iprobe", MPI_Iprobe(peer, tag, comm, &flag, MPI_STATUS_IGNORE));
    return flag != 0;
  }

  /// Receives the next message from `peer` with `tag` into `bytes` (`MPI_Recv`); its length must
  /// equal `bytes.size()`: a longer message fails in `MPI_Recv` (`MPI_ERR_TRUNCATE`), a shorter
  /// one fails the length check. Either throws `dho2::transport_error` (the message is consumed).
  void recv(std::span<std::byte> bytes, int peer, int tag) {
    const char* routine = "recv";
    const MPI_Comm comm = handle(routine);
    detail::call_timer timer{stats_};
    check_peer_tag(routine, peer, tag);
    const int n = checked_count(routine, bytes.size(), "bytes.size()");
    MPI_Status status;
    int rc = MPI_SUCCESS;
    if (timeout_.count() > 0) {
      MPI_Request request = MPI_REQUEST_NULL;
      check(routine, "MPI_Irecv", MPI_Irecv(bytes.data(), n, MPI_BYTE, peer, tag, comm, &request));
      rc = wait(routine, "MPI_Irecv", request, &status, true);
    } else {
      const detail::watched_call watch(watchdog_.get(), routine);
      rc = MPI_Recv(bytes.data(), n, MPI_BYTE, peer, tag, comm, &status);
    }
    const std::string message =
        "the message from peer " + std::to_string(peer) + " with tag " + std::to_string(tag);
    if (rc != MPI_SUCCESS) {
      int error_class = 0;
      if (MPI_Error_class(rc, &error_class) == MPI_SUCCESS && error_class == MPI_ERR_TRUNCATE) {
        fail(routine, "MPI_Recv failed: " + detail::mpi_error_text(rc) + ": " + message +
                          " is longer than the receive buffer of " + std::to_string(n) + " bytes");
      }
      check(routine, "MPI_Recv", rc);
    }
    int received = -1;
    check(routine, "MPI_Get_count", MPI_Get_count(&status, MPI_BYTE, &received));
    if (received != n) {
      fail(routine, "MPI_Recv length check: " + message + " has " + std::to_string(received) +
                        " bytes, the receive buffer " + std::to_string(n));
    }
    timer.count(0, bytes.size());
  }

  /// Traffic and time of this transport so far (see the class comment for what is counted).
  [[nodiscard]] const transport_stats& stats() const noexcept { return stats_; }
  /// Sets every counter of `stats()` to zero.
  void reset_stats() noexcept { stats_ = {}; }

 private:
  // Adopts `comm` (already created by `routine` of a parent at rank `rank` of `size`).
  mpi_transport(detail::mpi_comm_owner comm, const char* routine, int rank, int size)
      : comm_(std::move(comm)) {
    adopt(routine, rank, size);
  }

  // Sets MPI_ERRORS_RETURN on comm_ and reads its rank, size and tag bound. On a throw comm_ is
  // freed by its owner (a member, destroyed with the half-built transport).
  void adopt(const char* routine, int rank, int size) {
    const MPI_Comm comm = comm_.get();
    check_at(routine, "MPI_Comm_set_errhandler", MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN),
             rank, size);
    check_at(routine, "MPI_Comm_rank", MPI_Comm_rank(comm, &rank_), rank, size);
    check_at(routine, "MPI_Comm_size", MPI_Comm_size(comm, &size_), rank, size);
    void* value = nullptr;
    int found = 0;
    check_at(routine, "MPI_Comm_get_attr", MPI_Comm_get_attr(comm, MPI_TAG_UB, &value, &found),
             rank, size);
    tag_ub_ = found != 0 && value != nullptr ? *static_cast<int*>(value) : 32767;
  }

  static std::string where(const char* routine, int rank, int size) {
    return detail::call_prefix("mpi", routine, rank, size) + ": ";
  }

  static void check_at(const char* routine, const char* mpi_routine, int rc, int rank, int size) {
    if (rc != MPI_SUCCESS) {
      throw transport_error(where(routine, rank, size) + mpi_routine +
                            " failed: " + detail::mpi_error_text(rc));
    }
  }

  void check(const char* routine, const char* mpi_routine, int rc) const {
    check_at(routine, mpi_routine, rc, rank_, size_);
  }

  [[noreturn]] void fail(const char* routine, const std::string& cause) const {
    throw transport_error(where(routine, rank_, size_) + cause);
  }

  MPI_Comm handle(const char* routine) const {
    if (comm_.get() == MPI_COMM_NULL) fail(routine, "this transport was moved from");
    if (!broken_.empty()) fail(routine, "unusable since an earlier call timed out: " + broken_);
    return comm_.get();
  }

  // A collective: `blocking()` without a timeout; with one, `start(&request)` and `wait`.
  template <class Blocking, class Start>
  void run(const char* routine, const char* blocking_name, Blocking&& blocking,
           const char* start_name, Start&& start) {
    if (timeout_.count() <= 0) {
      const detail::watched_call watch(watchdog_.get(), routine);
      check(routine, blocking_name, blocking());
      return;
    }
    MPI_Request request = MPI_REQUEST_NULL;
    check(routine, start_name, start(&request));
    check(routine, start_name, wait(routine, start_name, request, MPI_STATUS_IGNORE, false));
  }

  // Polls `request` (MPI_Test) until it completes (returns its code) or the timeout passes
  // (cancels a point-to-point request, marks the transport unusable and throws).
  int wait(const char* routine, const char* mpi_routine, MPI_Request& request, MPI_Status* status,
           bool cancellable) {
    using clock = std::chrono::steady_clock;
    const auto deadline = clock::now() + timeout_;
    for (unsigned spin = 1;; ++spin) {
      int done = 0;
      const int rc = MPI_Test(&request, &done, status);
      if (rc != MPI_SUCCESS || done != 0) return rc;
      if (spin % 64 == 0 && clock::now() > deadline) break;
    }
    char seconds[32];
    std::snprintf(seconds, sizeof seconds, "%.1f", static_cast<double>(timeout_.count()) / 1000.0);
    const std::string cause =
        std::string(mpi_routine) + " did not complete within timeout = " + seconds +
        " s: the peers did not take part (ranks called collectives in different orders or with "
        "different arguments, or a peer stopped or is stuck)";
    if (cancellable) {
      MPI_Cancel(&request);
      MPI_Request_free(&request);
    }
    broken_ = cause;
    fail(routine, cause);
  }

  int checked_count(const char* routine, std::size_t n, const char* what) const {
    const std::string bad = detail::mpi_count_error(n, what);
    if (!bad.empty()) fail(routine, bad);
    return static_cast<int>(n);
  }

  void check_peer_tag(const char* routine, int peer, int tag) const {
    if (peer < 0 || peer >= size_) {
      fail(routine, detail::out_of_range_error("peer", peer, size_));
    }
    if (tag < 0 || tag > tag_ub_) {
      fail(routine, "tag = " + std::to_string(tag) +
                        " is out of range [0, MPI_TAG_UB = " + std::to_string(tag_ub_) + "]");
    }
  }

  // Checks the shard arguments of a reduce-scatter / all-gather and fills counts_ (and
  // displacements_) from the offsets; throws transport_error before any communication.
  void shard_counts(const char* routine, std::span<const index> offsets, std::size_t full,
                    std::size_t shard, const char* full_name, const char* shard_name) {
    const std::string bad = detail::offsets_error(offsets, size_);
    if (!bad.empty()) fail(routine, bad);
    const auto total = static_cast<std::size_t>(offsets.back());
    const std::string too_big = detail::mpi_count_error(total, "offsets.back()");
    if (!too_big.empty()) fail(routine, too_big);
    const std::string wrong =
        detail::shard_lengths_error(offsets, rank_, full, shard, full_name, shard_name);
    if (!wrong.empty()) fail(routine, wrong);
    const auto p = static_cast<std::size_t>(size_);
    counts_.resize(p);
    displacements_.resize(p);
    for (std::size_t q = 0; q < p; ++q) {
      counts_[q] = static_cast<int>(offsets[q + 1] - offsets[q]);
      displacements_[q] = static_cast<int>(offsets[q]);
    }
  }

  detail::mpi_comm_owner comm_;
  int rank_ = 0;
  int size_ = 0;
  int tag_ub_ = 32767;
  std::chrono::milliseconds timeout_{0};             // 0: blocking routines, no deadline
  std::unique_ptr<detail::call_watchdog> watchdog_;  // ends the process on a stuck call
  std::string broken_;  // why a timed-out call left the transport unusable
  transport_stats stats_;
  std::vector<int> counts_;         // per-rank element counts of the last shard call
  std::vector<int> displacements_;  // and their displacements
};

static_assert(polling_transport<mpi_transport>);

}  // namespace dho2
