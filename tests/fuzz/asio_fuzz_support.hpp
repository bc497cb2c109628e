// Shared by the asio libFuzzer targets (fuzz_asio_frame.cpp, fuzz_asio_handshake.cpp): a
// connected socket pair whose one end becomes the socket of an asio_link (so the transport's real
// framed reads and writes and handshakes run on it), blocking helpers for the other end (the
// fuzzer's peer), and a little-endian frame-header reader written independently of asio_frame.hpp.
#pragma once

// Includes the TCP transport's internal headers directly (see
// include/dho2/detail/internal_header_check.hpp).
#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/transport/detail/asio_io.hpp>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace dho2_fuzz {

// Aborts the fuzzer with `what` (a finding: the oracle disagrees with the library).
[[noreturn]] inline void finding(const std::string& what) {
  std::fprintf(stderr, "FINDING: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

// With DHO2_FUZZ_TRACE set, one line per input on stderr saying what the target saw (to check
// that a seed reaches the path it was made for: DHO2_FUZZ_TRACE=1 <target> <seed files>).
inline void trace(const std::string& line) {
  static const bool on = std::getenv("DHO2_FUZZ_TRACE") != nullptr;
  if (on) std::fprintf(stderr, "trace: %s\n", line.c_str());
}

inline std::uint64_t le(std::span<const unsigned char> b, std::size_t at, std::size_t n) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < n; ++i) v |= std::uint64_t{b[at + i]} << (8 * i);
  return v;
}

// A frame header as docs/asio_wire_protocol.md defines it.
struct wire_header {
  std::uint32_t magic = 0;
  std::uint16_t version = 0;
  std::uint8_t kind = 0;
  std::uint8_t op = 0;
  std::int32_t tag = 0;
  std::uint8_t element = 0;
  std::uint64_t seq = 0;
  std::uint64_t length = 0;
};

inline wire_header read_header(std::span<const unsigned char> b) {
  wire_header h;
  h.magic = static_cast<std::uint32_t>(le(b, 0, 4));
  h.version = static_cast<std::uint16_t>(le(b, 4, 2));
  h.kind = b[6];
  h.op = b[7];
  h.tag = static_cast<std::int32_t>(static_cast<std::uint32_t>(le(b, 8, 4)));
  h.element = b[12];
  h.seq = le(b, 16, 8);
  h.length = le(b, 24, 8);
  return h;
}

inline constexpr std::uint32_t dho2_magic = 0x324F4844U;  // "DHO2"

// A Unix stream socket pair: `engine_end` is handed to an asio_link, `peer` stays with the
// fuzzer (blocking, owned here).
struct socket_pair {
  int engine_end = -1;
  int peer = -1;
  socket_pair() {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) finding("socketpair failed");
    engine_end = sv[0];
    peer = sv[1];
  }
  socket_pair(const socket_pair&) = delete;
  socket_pair& operator=(const socket_pair&) = delete;
  ~socket_pair() {
    if (engine_end >= 0) ::close(engine_end);
    if (peer >= 0) ::close(peer);
  }
};

// A link of `ctx` on the engine end of `sp` (the link's socket owns that descriptor now).
inline std::unique_ptr<dho2::detail::asio_link> make_link(boost::asio::io_context& ctx,
                                                          socket_pair& sp, std::string name) {
  auto link = std::make_unique<dho2::detail::asio_link>(ctx);
  link->socket().assign(boost::asio::ip::tcp::v4(), sp.engine_end);
  sp.engine_end = -1;
  link->set_name(std::move(name));
  return link;
}

// Writes all of `b` on `fd` (blocking); false if the other end is gone.
inline bool send_all(int fd, std::span<const unsigned char> b) {
  std::size_t done = 0;
  while (done < b.size()) {
    const ssize_t n = ::send(fd, b.data() + done, b.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<std::size_t>(n);
  }
  return true;
}

// Reads exactly `b.size()` bytes from `fd` (blocking); false at EOF or error first.
inline bool recv_all(int fd, std::span<unsigned char> b) {
  std::size_t done = 0;
  while (done < b.size()) {
    const ssize_t n = ::recv(fd, b.data() + done, b.size() - done, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<std::size_t>(n);
  }
  return true;
}

struct peer_frame {
  wire_header h;
  std::vector<unsigned char> payload;
};

// The next whole frame the engine sent on `fd`, or false at EOF. A frame the engine could never
// send (bad magic, a payload over 64 KiB) is a finding.
inline bool recv_frame(int fd, peer_frame& f) {
  std::array<unsigned char, 32> hb{};
  if (!recv_all(fd, hb)) return false;
  f.h = read_header(hb);
  if (f.h.magic != dho2_magic || f.h.version != 2 || f.h.length > 65536) {
    finding("the engine sent a malformed frame header (length " + std::to_string(f.h.length) + ")");
  }
  f.payload.assign(static_cast<std::size_t>(f.h.length), 0);
  return recv_all(fd, f.payload);
}

inline bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

}  // namespace dho2_fuzz
