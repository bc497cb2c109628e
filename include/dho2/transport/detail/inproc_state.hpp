// The shared state of an inproc_world: the posted buffers of the collective in progress, the
// phase barrier (one mutex and condition variable, waited on with a deadline), the consistency
// checks of each phase, the mailboxes of point-to-point messages, and the failure (poison).
#pragma once

#include <dho2/detail/internal_header_check.hpp>

#include <dho2/core/errors.hpp>
#include <dho2/core/types.hpp>
#include <dho2/transport/detail/collective_checks.hpp>
#include <dho2/transport/inproc_options.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <iomanip>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace dho2::detail {

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
    return call_prefix("inproc", routine, rank, size_) + ": ";
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

}  // namespace dho2::detail
