/// @file
/// `dho2::inproc_transport`: the transport of P ranks that are threads of one process, sharing an
/// `dho2::inproc_world`; and `dho2::run_inproc`, which runs a function on P such threads.
///
/// Design (shared memory, no copies into intermediate messages):
///  - every collective is a sequence of *phases*; at the first phase each rank posts, in its slot
///    of the world, pointers to its buffers, its lengths and offsets; a phase ends when all P
///    ranks have arrived (a generation-counted barrier on one `std::mutex` and
///    `std::condition_variable`, waited on with a deadline). The last rank to arrive checks that
///    all ranks called the same routine with the same element type and consistent lengths,
///    offsets and roots;
///  - between phases each rank reads what it needs directly from its peers' buffers; a final
///    phase keeps every buffer alive until all readers are done;
///  - sums are formed element by element in rank order, (((x₀ + x₁) + x₂) + …) + x_{P−1}, so the
///    result is bit-identical on every rank and in every run, whichever rank computes it;
///  - point-to-point messages are copied into per-(source, destination, tag) FIFO mailboxes:
///    `send` never blocks, `recv` waits for the next message of its mailbox.
///
/// Failures: a peer that leaves the group (its handle is destroyed or `leave()`s, e.g. its thread
/// returned or threw) while others wait in, or later enter, a collective; a peer that does not
/// arrive within `inproc_options::timeout`; ranks that disagree on the routine, the element type,
/// a length, the offsets or the root; a `recv` whose message never comes or has the wrong length.
/// Each throws `dho2::transport_error` on every waiting rank, with a message of the form
/// `"inproc all_reduce_sum [rank 0, world size 4]: peer 2 left the group"`, and *poisons* the
/// world: every later call on any handle of it throws at once. No failure can leave a rank
/// waiting longer than the timeout.
///
/// Example:
/// ```
/// dho2::run_inproc(4, {.timeout = std::chrono::seconds(10)}, [](dho2::inproc_transport& t) {
///   std::vector<double> v(100, t.rank());
///   t.all_reduce_sum(std::span<double>(v));  // every entry is 0 + 1 + 2 + 3 on every rank
/// });
/// ```
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/concepts/polling_transport.hpp>
#include <dho2/core/errors.hpp>
#include <dho2/core/types.hpp>
#include <dho2/detail/validate.hpp>
#include <dho2/transport/transport_stats.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <iomanip>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace dho2 {

/// Options of an `inproc_world` (checked by `validate()` when the world is constructed; every
/// group created by `split` inherits them).
struct inproc_options {
  /// How long a rank waits for its peers at one phase of a collective, or for a message in
  /// `recv`, before it declares the world failed and throws `dho2::transport_error`. Finite and
  /// > 0; values above 10⁷ s are treated as 10⁷ s.
  std::chrono::duration<double> timeout{30.0};
  /// Algorithm switch of `all_reduce_sum`, in bytes of the vector. Below it every rank sums the
  /// whole vector itself (2 phases; each rank reads (P − 1)·n elements from peers). At or above
  /// it each rank sums one chunk of ≈ n/P elements and then copies the other ranks' chunks
  /// (3 phases; each rank reads ≈ 2n(P − 1)/P elements). Both give bit-identical results.
  std::size_t chunked_all_reduce_bytes = std::size_t{1} << 16;

  /// Throws `dho2::invalid_options` ("inproc_options::timeout = <s>. Violated constraint: ...")
  /// if the timeout is not finite and positive.
  void validate() const {
    detail::require(std::isfinite(timeout.count()) && timeout.count() > 0.0,
                    "inproc_options::timeout (seconds)", timeout.count(), "finite and > 0");
  }
};

class inproc_transport;

namespace detail {

enum class inproc_op : int {
  all_reduce_sum,
  reduce_scatter_sum,
  all_gather,
  broadcast,
  barrier,
  split
};

inline const char* inproc_op_name(inproc_op op) noexcept {
  switch (op) {
    case inproc_op::all_reduce_sum: return "all_reduce_sum";
    case inproc_op::reduce_scatter_sum: return "reduce_scatter_sum";
    case inproc_op::all_gather: return "all_gather";
    case inproc_op::broadcast: return "broadcast";
    case inproc_op::barrier: return "barrier";
    case inproc_op::split: return "split";
  }
  return "?";
}

inline std::string inproc_seconds(double s) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(std::round(s * 10.0) == s * 10.0 ? 1 : 3) << s;
  return os.str();
}

inline std::string inproc_rank_list(const std::vector<int>& ranks) {
  std::string out = ranks.size() == 1 ? "peer " : "peers ";
  for (std::size_t i = 0; i < ranks.size(); ++i) {
    if (i > 0) out += ", ";
    out += std::to_string(ranks[i]);
  }
  return out;
}

inline const char* inproc_scalar_name(int bytes) noexcept {
  return bytes == 4 ? "float" : bytes == 8 ? "double" : "bytes";
}

// "" if `offsets` are valid shard boundaries of `ranks` shards, else what is wrong.
inline std::string inproc_check_offsets(std::span<const index> offsets, int ranks) {
  if (offsets.size() != static_cast<std::size_t>(ranks) + 1) {
    return "offsets.size() = " + std::to_string(offsets.size()) +
           ", expected size() + 1 = " + std::to_string(ranks + 1);
  }
  if (offsets.front() != 0) return "offsets[0] = " + std::to_string(offsets.front()) + " != 0";
  for (std::size_t r = 0; r + 1 < offsets.size(); ++r) {
    if (offsets[r + 1] < offsets[r]) {
      return "offsets decrease at " + std::to_string(r + 1) + " (" + std::to_string(offsets[r]) +
             " > " + std::to_string(offsets[r + 1]) + ")";
    }
  }
  return {};
}

inline bool inproc_overlap(const void* a, std::size_t a_bytes, const void* b,
                           std::size_t b_bytes) noexcept {
  if (a_bytes == 0 || b_bytes == 0) return false;
  const auto* pa = static_cast<const std::byte*>(a);
  const auto* pb = static_cast<const std::byte*>(b);
  const std::less<const std::byte*> less;
  return less(pa, pb + b_bytes) && less(pb, pa + a_bytes);
}

class inproc_state;

// What a rank posts at the first phase of a collective (read by peers until its last phase).
struct inproc_post {
  inproc_op op = inproc_op::barrier;
  int scalar = 0;                       // sizeof(E) of a typed collective, 0 for bytes
  const void* in = nullptr;             // the buffer peers read
  const void* scratch = nullptr;        // this rank's chunk of a chunked all_reduce_sum
  std::size_t length = 0;               // elements that must agree across ranks
  std::span<const index> offsets;       // shard boundaries (must agree across ranks)
  int root = 0;                         // broadcast
  int color = 0;                        // split
  int key = 0;                          // split
  std::string error;                    // this rank's argument error, "" if none
  std::shared_ptr<inproc_state> child;  // split result, filled by the last arriving rank
  int child_rank = -1;
};

class inproc_state {
 public:
  inproc_state(int size, const inproc_options& options, bool all_attached)
      : size_(size),
        options_(options),
        wait_(std::chrono::duration_cast<std::chrono::steady_clock::duration>(
            std::min(options.timeout, std::chrono::duration<double>(1e7)))),
        slots_(static_cast<std::size_t>(size)),
        arrived_code_(static_cast<std::size_t>(size), -1),
        attached_(static_cast<std::size_t>(size), all_attached),
        left_(static_cast<std::size_t>(size), false) {}

  [[nodiscard]] int size() const noexcept { return size_; }
  [[nodiscard]] const inproc_options& options() const noexcept { return options_; }

  [[nodiscard]] std::string failure() const {
    const std::lock_guard lock(mutex_);
    return failure_;
  }

  void attach(int rank) {
    const std::lock_guard lock(mutex_);
    if (rank < 0 || rank >= size_) {
      throw transport_error("inproc rank_handle: rank " + std::to_string(rank) +
                            " is out of range for world size " + std::to_string(size_));
    }
    if (attached_[idx(rank)]) {
      throw transport_error("inproc rank_handle [world size " + std::to_string(size_) + "]: rank " +
                            std::to_string(rank) +
                            " already has a handle (each rank is attached once)");
    }
    attached_[idx(rank)] = true;
  }

  void leave(int rank) noexcept {
    const std::lock_guard lock(mutex_);
    if (left_[idx(rank)]) return;
    left_[idx(rank)] = true;
    if (arrived_ > 0 && !poisoned_) poison(left_cause());
    mail_cv_.notify_all();
  }

  // Arrives at phase `phase` of `op` (posting `post` at phase 0) and returns once all ranks have
  // arrived; throws transport_error on any failure.
  void arrive(int rank, inproc_op op, int phase, inproc_post* post) {
    const char* routine = inproc_op_name(op);
    std::unique_lock lock(mutex_);
    check_entry(routine, rank, /*collective=*/true);
    if (post != nullptr) slots_[idx(rank)] = std::move(*post);
    arrived_code_[idx(rank)] = static_cast<int>(op) * 4 + phase;
    if (++arrived_ == size_) {
      arrived_ = 0;
      std::string bad = check_phase(phase);
      std::fill(arrived_code_.begin(), arrived_code_.end(), -1);
      if (bad.empty() && op == inproc_op::split && phase == 0) {
        try {
          make_children();
        } catch (const std::exception& e) {
          bad = std::string("could not create the sub-groups: ") + e.what();
        }
      }
      if (!bad.empty()) {
        poison(bad);
        throw transport_error(where(routine, rank) + bad);
      }
      ++generation_;
      phase_cv_.notify_all();
      return;
    }
    const std::uint64_t generation = generation_;
    const auto deadline = std::chrono::steady_clock::now() + wait_;
    while (generation_ == generation && !poisoned_) {
      if (phase_cv_.wait_until(lock, deadline) == std::cv_status::timeout &&
          generation_ == generation && !poisoned_) {
        std::vector<int> missing;
        for (int q = 0; q < size_; ++q) {
          if (arrived_code_[idx(q)] < 0) missing.push_back(q);
        }
        poison("timed out after " + inproc_seconds(options_.timeout.count()) + " s waiting for " +
               inproc_rank_list(missing));
      }
    }
    if (generation_ != generation) return;
    throw transport_error(where(routine, rank) + failure_);
  }

  // A rank's posted slot; peers read it only between the phases of one collective.
  [[nodiscard]] const inproc_post& slot(int rank) const noexcept { return slots_[idx(rank)]; }

  std::pair<std::shared_ptr<inproc_state>, int> take_child(int rank) {
    const std::lock_guard lock(mutex_);
    auto& s = slots_[idx(rank)];
    return {std::exchange(s.child, nullptr), s.child_rank};
  }

  void send(int rank, int peer, int tag, std::span<const std::byte> bytes) {
    std::vector<std::byte> message(bytes.begin(), bytes.end());
    const std::lock_guard lock(mutex_);
    check_entry("send", rank, /*collective=*/false);
    check_peer("send", rank, peer);
    if (left_[idx(peer)]) {
      poison("peer " + std::to_string(peer) + " left the group (message with tag " +
             std::to_string(tag) + " cannot be delivered)");
      throw transport_error(where("send", rank) + failure_);
    }
    mailboxes_[{rank, peer, tag}].push_back(std::move(message));
    mail_cv_.notify_all();
  }

  // Whether the mailbox (peer, rank, tag) holds a message; throws once the peer has left
  // without sending one.
  bool poll(int rank, int peer, int tag) {
    const std::lock_guard lock(mutex_);
    check_entry("poll", rank, /*collective=*/false);
    check_peer("poll", rank, peer);
    const auto it = mailboxes_.find({peer, rank, tag});
    if (it != mailboxes_.end() && !it->second.empty()) return true;
    if (left_[idx(peer)]) {
      poison("peer " + std::to_string(peer) +
             " left the group without sending the message with tag " + std::to_string(tag));
      throw transport_error(where("poll", rank) + failure_);
    }
    return false;
  }

  void recv(int rank, int peer, int tag, std::span<std::byte> bytes) {
    std::vector<std::byte> message;
    {
      std::unique_lock lock(mutex_);
      check_entry("recv", rank, /*collective=*/false);
      check_peer("recv", rank, peer);
      const auto deadline = std::chrono::steady_clock::now() + wait_;
      const std::tuple<int, int, int> key{peer, rank, tag};
      for (;;) {
        if (poisoned_) throw transport_error(where("recv", rank) + failure_);
        const auto it = mailboxes_.find(key);
        if (it != mailboxes_.end() && !it->second.empty()) {
          message = std::move(it->second.front());
          it->second.pop_front();
          if (it->second.empty()) mailboxes_.erase(it);
          break;
        }
        if (left_[idx(peer)]) {
          poison("peer " + std::to_string(peer) +
                 " left the group without sending the message with tag " + std::to_string(tag));
        } else if (mail_cv_.wait_until(lock, deadline) == std::cv_status::timeout) {
          const auto again = mailboxes_.find(key);
          if (!poisoned_ && (again == mailboxes_.end() || again->second.empty())) {
            poison("timed out after " + inproc_seconds(options_.timeout.count()) +
                   " s waiting for a message from peer " + std::to_string(peer) + " with tag " +
                   std::to_string(tag));
          }
        }
      }
      if (message.size() != bytes.size()) {
        poison("the message from peer " + std::to_string(peer) + " with tag " +
               std::to_string(tag) + " has " + std::to_string(message.size()) +
               " bytes, the receive buffer " + std::to_string(bytes.size()));
        throw transport_error(where("recv", rank) + failure_);
      }
    }
    if (!message.empty()) std::memcpy(bytes.data(), message.data(), message.size());
  }

  [[nodiscard]] std::string where(const char* routine, int rank) const {
    return std::string("inproc ") + routine + " [rank " + std::to_string(rank) + ", world size " +
           std::to_string(size_) + "]: ";
  }

 private:
  static std::size_t idx(int r) noexcept { return static_cast<std::size_t>(r); }

  // Caller holds the lock.
  void poison(const std::string& cause) {
    if (!poisoned_) {
      poisoned_ = true;
      failure_ = cause;
    }
    phase_cv_.notify_all();
    mail_cv_.notify_all();
  }

  std::string left_cause() const {
    std::vector<int> gone;
    for (int q = 0; q < size_; ++q) {
      if (left_[idx(q)]) gone.push_back(q);
    }
    return inproc_rank_list(gone) + " left the group";
  }

  void check_entry(const char* routine, int rank, bool collective) {
    if (poisoned_) {
      throw transport_error(where(routine, rank) +
                            "the world failed earlier and is unusable: " + failure_);
    }
    if (collective && std::find(left_.begin(), left_.end(), true) != left_.end()) {
      poison(left_cause());
      throw transport_error(where(routine, rank) + failure_);
    }
  }

  void check_peer(const char* routine, int rank, int peer) {
    if (peer < 0 || peer >= size_) {
      poison("peer " + std::to_string(peer) + " is out of range [0, " + std::to_string(size_) +
             ") (called by rank " + std::to_string(rank) + ")");
      throw transport_error(where(routine, rank) + failure_);
    }
  }

  // Consistency of a completed phase; "" if fine. Caller holds the lock.
  std::string check_phase(int phase) const {
    const int code = arrived_code_[0];
    for (int q = 1; q < size_; ++q) {
      if (arrived_code_[idx(q)] != code) {
        const auto name = [](int c) {
          return std::string(inproc_op_name(static_cast<inproc_op>(c / 4))) + " (phase " +
                 std::to_string(c % 4 + 1) + ")";
        };
        return "ranks called different collectives: rank 0 " + name(code) + ", rank " +
               std::to_string(q) + " " + name(arrived_code_[idx(q)]);
      }
    }
    if (phase != 0) return {};
    for (int q = 0; q < size_; ++q) {
      if (!slots_[idx(q)].error.empty()) {
        return "invalid arguments on rank " + std::to_string(q) + ": " + slots_[idx(q)].error;
      }
    }
    const inproc_post& first = slots_[0];
    for (int q = 1; q < size_; ++q) {
      const inproc_post& s = slots_[idx(q)];
      const std::string who = "rank 0 passed ";
      const std::string other = ", rank " + std::to_string(q) + " passed ";
      if (s.scalar != first.scalar) {
        return std::string("element type mismatch: ") + who + inproc_scalar_name(first.scalar) +
               other + inproc_scalar_name(s.scalar);
      }
      if (s.length != first.length) {
        return "length mismatch: " + who + std::to_string(first.length) + " elements" + other +
               std::to_string(s.length);
      }
      if (first.op == inproc_op::broadcast && s.root != first.root) {
        return "root mismatch: " + who + "root " + std::to_string(first.root) + other + "root " +
               std::to_string(s.root);
      }
      if (!std::equal(first.offsets.begin(), first.offsets.end(), s.offsets.begin(),
                      s.offsets.end())) {
        return "offsets mismatch between rank 0 and rank " + std::to_string(q);
      }
    }
    return {};
  }

  // Builds one child state per colour; caller holds the lock.
  void make_children() {
    std::map<int, std::vector<std::pair<int, int>>> groups;  // colour -> (key, old rank)
    for (int q = 0; q < size_; ++q) {
      groups[slots_[idx(q)].color].emplace_back(slots_[idx(q)].key, q);
    }
    for (auto& [color, members] : groups) {
      std::sort(members.begin(), members.end());
      auto child = std::make_shared<inproc_state>(static_cast<int>(members.size()), options_, true);
      for (std::size_t j = 0; j < members.size(); ++j) {
        auto& s = slots_[idx(members[j].second)];
        s.child = child;
        s.child_rank = static_cast<int>(j);
      }
    }
  }

  const int size_;
  const inproc_options options_;
  const std::chrono::steady_clock::duration wait_;
  mutable std::mutex mutex_;
  std::condition_variable phase_cv_;
  std::condition_variable mail_cv_;
  std::uint64_t generation_ = 0;
  int arrived_ = 0;
  std::vector<inproc_post> slots_;
  std::vector<int> arrived_code_;
  std::vector<bool> attached_;
  std::vector<bool> left_;
  bool poisoned_ = false;
  std::string failure_;
  std::map<std::tuple<int, int, int>, std::deque<std::vector<std::byte>>> mailboxes_;
};

struct inproc_call_timer {
  transport_stats& stats;
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  explicit inproc_call_timer(transport_stats& s) noexcept : stats(s) {}
  inproc_call_timer(const inproc_call_timer&) = delete;
  inproc_call_timer& operator=(const inproc_call_timer&) = delete;
  ~inproc_call_timer() {
    stats.seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    ++stats.calls;
  }
};

}  // namespace detail

/// The shared state of a group of P ranks that are threads of one process: posted buffers of the
/// collective in progress, the barrier, the mailboxes, and whether the group has failed.
///
/// `inproc_world` is a cheap, copyable handle (copies refer to the same group); the state lives
/// as long as the world or any of its rank handles. Each rank takes its handle once, with
/// `rank_handle(r)`, and uses it from one thread at a time.
class inproc_world {
 public:
  /// A group of `size` ranks (≥ 1) with `options` (validated: throws `dho2::invalid_options`).
  explicit inproc_world(int size, const inproc_options& options = {}) {
    detail::require(size >= 1, "inproc_world size", size, ">= 1");
    options.validate();
    state_ = std::make_shared<detail::inproc_state>(size, options, false);
  }

  /// Number of ranks P.
  [[nodiscard]] int size() const noexcept { return state_->size(); }
  /// The options the world was created with.
  [[nodiscard]] const inproc_options& options() const noexcept { return state_->options(); }
  /// The cause of the failure that poisoned the world, or "" while it is healthy.
  [[nodiscard]] std::string failure() const { return state_->failure(); }

  /// The handle of rank `rank` in [0, P). Throws `dho2::transport_error` if `rank` is out of
  /// range or already has a handle (each rank is attached exactly once).
  [[nodiscard]] inproc_transport rank_handle(int rank) const;

 private:
  friend class inproc_transport;
  std::shared_ptr<detail::inproc_state> state_;
};

/// One rank's handle on an `inproc_world`; models `dho2::transport` (see
/// `<dho2/concepts/transport.hpp>` for the contract and the file comment above for the design
/// and the failure semantics). Move-only; destroying the handle (or calling `leave()`) takes the
/// rank out of the group, which fails any collective its peers wait in or enter afterwards.
///
/// Traffic accounting (`stats()`, see `dho2::transport_stats`): for a shared-memory world a byte
/// is *received* when this rank reads it from another rank's buffer and *sent* when another rank
/// reads it from this rank's buffer. With P ranks, s_r = this rank's shard length and e the
/// element size, per call:
///  - `all_reduce_sum` of n elements: sent = received = (P − 1)·n·e below
///    `inproc_options::chunked_all_reduce_bytes`, and (P − 1)·c_r·e + (n − c_r)·e at or above it
///    (c_r = this rank's chunk, the even split of n);
///  - `reduce_scatter_sum`: received = (P − 1)·s_r·e, sent = (n − s_r)·e;
///  - `all_gather`: received = (n − s_r)·e, sent = (P − 1)·s_r·e;
///  - `broadcast` of b bytes: the root sends (P − 1)·b, every other rank receives b;
///  - `send` / `recv` of b bytes: b sent / b received; `barrier`, `split`: nothing.
class inproc_transport {
 public:
  /// Attaches to rank `rank` of `world` (same as `world.rank_handle(rank)`).
  inproc_transport(const inproc_world& world, int rank)
      : state_(world.state_), rank_(rank), size_(world.size()) {
    state_->attach(rank);
  }

  inproc_transport(const inproc_transport&) = delete;
  inproc_transport& operator=(const inproc_transport&) = delete;

  /// Takes over `other`'s rank; `other` is left detached (every call on it throws).
  inproc_transport(inproc_transport&& other) noexcept
      : state_(std::exchange(other.state_, nullptr)),
        rank_(other.rank_),
        size_(other.size_),
        stats_(other.stats_),
        scratch_float_(std::move(other.scratch_float_)),
        scratch_double_(std::move(other.scratch_double_)) {}

  /// Leaves the group of this handle (if any), then takes over `other`'s rank.
  inproc_transport& operator=(inproc_transport&& other) noexcept {
    if (this != &other) {
      leave();
      state_ = std::exchange(other.state_, nullptr);
      rank_ = other.rank_;
      size_ = other.size_;
      stats_ = other.stats_;
      scratch_float_ = std::move(other.scratch_float_);
      scratch_double_ = std::move(other.scratch_double_);
    }
    return *this;
  }

  /// Leaves the group (see `leave()`).
  ~inproc_transport() { leave(); }

  /// This rank's index in [0, size()).
  [[nodiscard]] int rank() const noexcept { return rank_; }
  /// Number of ranks in the group.
  [[nodiscard]] int size() const noexcept { return size_; }

  /// Takes this rank out of the group for good: peers waiting in a collective, or entering one
  /// later, throw "peer <rank> left the group"; a peer's `recv` from this rank throws once the
  /// messages already sent are consumed. Every later call on this handle throws. Idempotent.
  void leave() noexcept {
    if (state_) std::exchange(state_, nullptr)->leave(rank_);
  }

  /// In place, every rank gets the element-wise sum over ranks, formed in rank order 0, 1, …,
  /// P − 1 (bit-identical on every rank). All ranks pass the same length.
  template <model_scalar E>
  void all_reduce_sum(std::span<E> values) {
    auto& st = state(detail::inproc_op::all_reduce_sum);
    const detail::inproc_call_timer timer{stats_};
    const std::size_t n = values.size();
    const std::size_t p = static_cast<std::size_t>(size_);
    const std::size_t me = static_cast<std::size_t>(rank_);
    const bool chunked = p > 1 && n * sizeof(E) >= st.options().chunked_all_reduce_bytes;
    const auto chunk = [&](std::size_t q) { return n / p * q + std::min(q, n % p); };
    // The partial sums go to this handle's scratch, kept between calls (every entry is written
    // before it is read, so it is never cleared).
    const std::span<E> buffer = scratch<E>(chunked ? chunk(me + 1) - chunk(me) : (p > 1 ? n : 0));
    detail::inproc_post post;
    post.op = detail::inproc_op::all_reduce_sum;
    post.scalar = static_cast<int>(sizeof(E));
    post.in = values.data();
    post.scratch = buffer.data();
    post.length = n;
    st.arrive(rank_, post.op, 0, &post);
    if (p == 1) return;
    const auto e = sizeof(E);
    if (!chunked) {
      sum_range<E>(st, 0, n, buffer.data());
      st.arrive(rank_, detail::inproc_op::all_reduce_sum, 1, nullptr);
      std::copy(buffer.begin(), buffer.end(), values.begin());
      count((p - 1) * n * e, (p - 1) * n * e);
      return;
    }
    const std::size_t mine = chunk(me + 1) - chunk(me);
    sum_range<E>(st, chunk(me), mine, buffer.data());
    st.arrive(rank_, detail::inproc_op::all_reduce_sum, 1, nullptr);
    for (std::size_t q = 0; q < p; ++q) {
      const auto* src = static_cast<const E*>(st.slot(static_cast<int>(q)).scratch);
      std::copy_n(src, chunk(q + 1) - chunk(q),
                  values.begin() + static_cast<std::ptrdiff_t>(chunk(q)));
    }
    st.arrive(rank_, detail::inproc_op::all_reduce_sum, 2, nullptr);
    count((p - 1) * mine * e + (n - mine) * e, (p - 1) * mine * e + (n - mine) * e);
  }

  /// `in` holds offsets.back() entries on every rank; `out` (this rank's shard length) gets
  /// entries [offsets[rank], offsets[rank + 1]) of the element-wise sum over ranks, formed in
  /// rank order. Each rank reads only its shard from each peer. `out` may overlap `in`.
  template <model_scalar E>
  void reduce_scatter_sum(std::span<const E> in, std::span<E> out, std::span<const index> offsets) {
    auto& st = state(detail::inproc_op::reduce_scatter_sum);
    const detail::inproc_call_timer timer{stats_};
    detail::inproc_post post;
    post.op = detail::inproc_op::reduce_scatter_sum;
    post.scalar = static_cast<int>(sizeof(E));
    post.in = in.data();
    post.length = in.size();
    post.offsets = offsets;
    post.error = shard_error(offsets, in.size(), out.size(), "in", true);
    const bool overlap =
        detail::inproc_overlap(in.data(), in.size_bytes(), out.data(), out.size_bytes());
    std::vector<E> buffer(post.error.empty() && overlap ? out.size() : 0);
    st.arrive(rank_, post.op, 0, &post);
    const std::size_t begin = static_cast<std::size_t>(offsets[static_cast<std::size_t>(rank_)]);
    sum_range<E>(st, begin, out.size(), overlap ? buffer.data() : out.data());
    st.arrive(rank_, detail::inproc_op::reduce_scatter_sum, 1, nullptr);
    if (overlap) std::copy(buffer.begin(), buffer.end(), out.begin());
    const auto p = static_cast<std::size_t>(size_);
    count((in.size() - out.size()) * sizeof(E), (p - 1) * out.size() * sizeof(E));
  }

  /// `in` is this rank's shard (offsets[rank + 1] − offsets[rank] entries); `out`
  /// (offsets.back() entries) gets every rank's shard in rank order. `out` may contain `in`
  /// exactly at this rank's position (in place) or overlap it otherwise.
  template <model_scalar E>
  void all_gather(std::span<const E> in, std::span<E> out, std::span<const index> offsets) {
    auto& st = state(detail::inproc_op::all_gather);
    const detail::inproc_call_timer timer{stats_};
    detail::inproc_post post;
    post.op = detail::inproc_op::all_gather;
    post.scalar = static_cast<int>(sizeof(E));
    post.in = in.data();
    post.length = out.size();
    post.offsets = offsets;
    post.error = shard_error(offsets, out.size(), in.size(), "out", false);
    const bool ok = post.error.empty();
    const E* own = ok ? out.data() + offsets[static_cast<std::size_t>(rank_)] : nullptr;
    const bool in_place = in.empty() || in.data() == own;
    const bool overlap = !in_place && detail::inproc_overlap(in.data(), in.size_bytes(), out.data(),
                                                             out.size_bytes());
    std::vector<E> buffer(ok && overlap ? out.size() : 0);
    st.arrive(rank_, post.op, 0, &post);
    E* dst = overlap ? buffer.data() : out.data();
    for (int q = 0; q < size_; ++q) {
      const auto b = static_cast<std::size_t>(offsets[static_cast<std::size_t>(q)]);
      const auto len = static_cast<std::size_t>(offsets[static_cast<std::size_t>(q) + 1]) - b;
      const auto* src = static_cast<const E*>(st.slot(q).in);
      if (len > 0 && src != dst + b) std::copy_n(src, len, dst + b);
    }
    st.arrive(rank_, detail::inproc_op::all_gather, 1, nullptr);
    if (overlap) std::copy(buffer.begin(), buffer.end(), out.begin());
    const auto p = static_cast<std::size_t>(size_);
    count((p - 1) * in.size() * sizeof(E), (out.size() - in.size()) * sizeof(E));
  }

  /// Every rank gets `root`'s bytes; all ranks pass the same length and the same root.
  void broadcast(std::span<std::byte> bytes, int root) {
    auto& st = state(detail::inproc_op::broadcast);
    const detail::inproc_call_timer timer{stats_};
    detail::inproc_post post;
    post.op = detail::inproc_op::broadcast;
    post.in = bytes.data();
    post.length = bytes.size();
    post.root = root;
    if (root < 0 || root >= size_) {
      post.error =
          "root = " + std::to_string(root) + " is out of range [0, " + std::to_string(size_) + ")";
    }
    st.arrive(rank_, post.op, 0, &post);
    if (size_ == 1) return;
    if (rank_ != root && !bytes.empty()) {
      std::memcpy(bytes.data(), st.slot(root).in, bytes.size());
    }
    st.arrive(rank_, detail::inproc_op::broadcast, 1, nullptr);
    const auto p = static_cast<std::size_t>(size_);
    if (rank_ == root) {
      count((p - 1) * bytes.size(), 0);
    } else {
      count(0, bytes.size());
    }
  }

  /// Returns once every rank of the group has called `barrier`.
  void barrier() {
    auto& st = state(detail::inproc_op::barrier);
    const detail::inproc_call_timer timer{stats_};
    detail::inproc_post post;
    post.op = detail::inproc_op::barrier;
    st.arrive(rank_, post.op, 0, &post);
  }

  /// Collective over this group: returns the handle of this rank in the new group of the ranks
  /// that passed the same `color` (any int), ranked by (key, rank in this group). The new group
  /// has its own state (a failure in it does not poison this one) and inherits the options.
  [[nodiscard]] inproc_transport split(int color, int key) {
    auto& st = state(detail::inproc_op::split);
    const detail::inproc_call_timer timer{stats_};
    detail::inproc_post post;
    post.op = detail::inproc_op::split;
    post.color = color;
    post.key = key;
    st.arrive(rank_, post.op, 0, &post);
    auto [child, child_rank] = st.take_child(rank_);
    return inproc_transport(std::move(child), child_rank);
  }

  /// Copies `bytes` into the mailbox (this rank, `peer`, `tag`) and returns (never blocks).
  /// Throws if the world has failed, `peer` is out of range or has left the group.
  void send(std::span<const std::byte> bytes, int peer, int tag) {
    auto& st = state("send");
    const detail::inproc_call_timer timer{stats_};
    st.send(rank_, peer, tag, bytes);
    count(bytes.size(), 0);
  }

  /// Waits (up to the timeout) for the next message of the mailbox (`peer`, this rank, `tag`)
  /// and copies it into `bytes`, whose length must equal the message's.
  void recv(std::span<std::byte> bytes, int peer, int tag) {
    auto& st = state("recv");
    const detail::inproc_call_timer timer{stats_};
    st.recv(rank_, peer, tag, bytes);
    count(0, bytes.size());
  }

  /// Whether the next message from `peer` with `tag` is in this rank's mailbox (never waits;
  /// `dho2::polling_transport`). Throws if the world has failed, `peer` is out of range, or
  /// `peer` has left the group without sending it.
  [[nodiscard]] bool poll(int peer, int tag) { return state("poll").poll(rank_, peer, tag); }

  /// Traffic and time of this handle so far (see the class comment for what is counted).
  [[nodiscard]] const transport_stats& stats() const noexcept { return stats_; }
  /// Sets every counter of `stats()` to zero.
  void reset_stats() noexcept { stats_ = {}; }

 private:
  friend class inproc_world;

  inproc_transport(std::shared_ptr<detail::inproc_state> state, int rank)
      : state_(std::move(state)), rank_(rank), size_(state_->size()) {}

  detail::inproc_state& state(const char* routine) const {
    if (!state_) {
      throw transport_error(std::string("inproc ") + routine + " [rank " + std::to_string(rank_) +
                            ", world size " + std::to_string(size_) +
                            "]: this handle has left the group or was moved from");
    }
    return *state_;
  }
  detail::inproc_state& state(detail::inproc_op op) const {
    return state(detail::inproc_op_name(op));
  }

  // This handle's scratch of at least `n` elements of E, grown (never shrunk) as needed.
  template <class E>
  std::span<E> scratch(std::size_t n) {
    std::vector<E>& v = [this]() -> std::vector<E>& {
      if constexpr (std::is_same_v<E, float>) {
        return scratch_float_;
      } else {
        return scratch_double_;
      }
    }();
    if (v.size() < n) v.resize(n);
    return std::span<E>(v.data(), n);
  }

  void count(std::size_t sent, std::size_t received) noexcept {
    stats_.bytes_sent += sent;
    stats_.bytes_received += received;
  }

  // "" if the shard arguments of a reduce-scatter / all-gather are consistent.
  std::string shard_error(std::span<const index> offsets, std::size_t full, std::size_t shard,
                          const char* full_name, bool shard_is_out) const {
    std::string bad = detail::inproc_check_offsets(offsets, size_);
    if (!bad.empty()) return bad;
    if (static_cast<std::size_t>(offsets.back()) != full) {
      return std::string(full_name) + ".size() = " + std::to_string(full) +
             " != offsets.back() = " + std::to_string(offsets.back());
    }
    const auto r = static_cast<std::size_t>(rank_);
    const auto len = static_cast<std::size_t>(offsets[r + 1] - offsets[r]);
    if (shard != len) {
      return std::string(shard_is_out ? "out" : "in") + ".size() = " + std::to_string(shard) +
             " != this rank's shard length " + std::to_string(len);
    }
    return {};
  }

  // out[j] = Σ_q in_q[begin + j] over q = 0, 1, …, P − 1 in this order.
  template <class E>
  void sum_range(const detail::inproc_state& st, std::size_t begin, std::size_t len, E* out) const {
    if (len == 0) return;
    const auto* first = static_cast<const E*>(st.slot(0).in) + begin;
    std::copy_n(first, len, out);
    for (int q = 1; q < size_; ++q) {
      const auto* src = static_cast<const E*>(st.slot(q).in) + begin;
      for (std::size_t j = 0; j < len; ++j) out[j] += src[j];
    }
  }

  std::shared_ptr<detail::inproc_state> state_;
  int rank_ = 0;
  int size_ = 0;
  transport_stats stats_;
  std::vector<float> scratch_float_;
  std::vector<double> scratch_double_;
};

inline inproc_transport inproc_world::rank_handle(int rank) const {
  return inproc_transport(*this, rank);
}

static_assert(polling_transport<inproc_transport>);

/// Runs `body` on `size` new threads, one per rank of a fresh `inproc_world` with `options`,
/// each with its own handle; returns when all threads have ended. A rank's handle leaves the
/// group as soon as its `body` returns or throws (so peers still waiting fail fast instead of
/// timing out). If any rank threw, rethrows the exception that was thrown first (in time) once
/// every thread has ended; `dho2::invalid_options` for a bad size or options, before any thread
/// starts.
inline void run_inproc(int size, const inproc_options& options,
                       const std::function<void(inproc_transport&)>& body) {
  const inproc_world world(size, options);
  std::vector<inproc_transport> handles;
  handles.reserve(static_cast<std::size_t>(size));
  for (int r = 0; r < size; ++r) handles.push_back(world.rank_handle(r));
  std::mutex mutex;
  std::exception_ptr first;
  const auto record = [&](std::exception_ptr e) {
    const std::lock_guard lock(mutex);
    if (!first) first = std::move(e);
  };
  std::vector<std::thread> threads;
  threads.reserve(handles.size());
  try {
    for (auto& handle : handles) {
      threads.emplace_back(
          [&body, &record](inproc_transport t) {
            try {
              body(t);
            } catch (...) {
              record(std::current_exception());
            }
            t.leave();
          },
          std::move(handle));
    }
  } catch (...) {
    record(std::current_exception());
  }
  handles.clear();  // ranks whose thread did not start leave, failing their peers fast
  for (auto& thread : threads) thread.join();
  if (first) std::rethrow_exception(first);
}

/// `run_inproc` with default `inproc_options`.
inline void run_inproc(int size, const std::function<void(inproc_transport&)>& body) {
  run_inproc(size, inproc_options{}, body);
}

}  // namespace dho2
