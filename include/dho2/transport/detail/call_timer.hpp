// Books one transport call into its transport_stats, for every transport: the call's seconds
// and the call itself always, its payload bytes only if the call returns (a call that throws adds
// no bytes; transport_stats.hpp has the counting rules).
#pragma once

#include <dho2/detail/internal_header_check.hpp>

#include <dho2/transport/transport_stats.hpp>

#include <chrono>
#include <cstdint>
#include <exception>

namespace dho2::detail {

// Payload bytes of one call so far.
struct call_bytes {
  std::uint64_t sent = 0;
  std::uint64_t received = 0;
};

// Construct at the start of a call, after the checks that may throw before the call counts.
// The bytes are count()ed on the timer or, for a transport whose I/O layer tallies them, added
// to the `bytes` it was given (zeroed here).
class call_timer {
 public:
  explicit call_timer(transport_stats& stats, call_bytes* bytes = nullptr) noexcept
      : stats_(stats), bytes_(bytes != nullptr ? bytes : &own_) {
    *bytes_ = {};
  }
  call_timer(const call_timer&) = delete;
  call_timer& operator=(const call_timer&) = delete;
  ~call_timer() {
    stats_.seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    ++stats_.calls;
    if (std::uncaught_exceptions() == exceptions_) {
      stats_.bytes_sent += bytes_->sent;
      stats_.bytes_received += bytes_->received;
    }
  }

  // Adds payload bytes to the call (booked when it returns).
  void count(std::uint64_t sent, std::uint64_t received) noexcept {
    bytes_->sent += sent;
    bytes_->received += received;
  }

 private:
  transport_stats& stats_;
  call_bytes own_;
  call_bytes* bytes_;
  int exceptions_ = std::uncaught_exceptions();
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

}  // namespace dho2::detail
