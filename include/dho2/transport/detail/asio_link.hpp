// The vocabulary shared by the asio detail headers (asio_io.hpp, asio_mesh.hpp,
// asio_rendezvous.hpp): the settings of a transport, the defect an operation throws, the
// helpers of its messages, a received frame, and one connection (asio_link: its socket, its name,
// the frames read ahead of their call, the message numbers per tag).
#pragma once

#include <dho2/detail/internal_header_check.hpp>

#include <dho2/transport/detail/asio_frame.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <iomanip>
#include <map>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace dho2::detail {

namespace asio_net = boost::asio;
using asio_tcp = boost::asio::ip::tcp;
using asio_clock = std::chrono::steady_clock;
using asio_error_code = boost::system::error_code;

// A defect found while an operation is in progress; the mesh turns it into fail().
class asio_defect : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct asio_settings {
  std::chrono::milliseconds timeout{30000};
  std::chrono::milliseconds connect_timeout{60000};
  std::chrono::milliseconds handshake_timeout{5000};  // per accepted connection
  std::uint64_t max_frame_bytes = std::uint64_t{1} << 30;
  std::size_t direct_all_reduce_bytes = 8192;
  std::string bind_address = "127.0.0.1";
  std::string secret;  // HMAC key ("" = the empty key)
  std::function<void(const std::string& peer, const std::string& reason)> on_refusal;
};

inline std::string asio_seconds(std::chrono::milliseconds d) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(1) << static_cast<double>(d.count()) / 1000.0 << " s";
  return os.str();
}

inline std::string asio_endpoint_string(const asio_tcp::endpoint& ep) {
  const auto a = ep.address();
  return (a.is_v6() ? "[" + a.to_string() + "]" : a.to_string()) + ":" + std::to_string(ep.port());
}

inline std::string asio_printable(std::span<const std::byte> bytes) {
  std::string s;
  s.reserve(bytes.size());
  for (const std::byte b : bytes) {
    const auto c = static_cast<unsigned char>(b);
    s += (c >= 0x20 && c < 0x7F) ? static_cast<char>(c) : '?';
  }
  return s;
}

struct asio_frame {
  asio_wire::header h;
  std::vector<std::byte> payload;
};

// One connection: its socket, its name in messages ("peer 2 (127.0.0.1:40123)"), the frames
// received ahead of the call that wants them, and the message numbers per tag.
class asio_link {
 public:
  explicit asio_link(asio_net::io_context& ctx) : socket_(ctx) {}

  asio_tcp::socket& socket() noexcept { return socket_; }
  const asio_tcp::socket& socket() const noexcept { return socket_; }
  const std::string& name() const noexcept { return name_; }
  void set_name(std::string name) { name_ = std::move(name); }
  // The address of the other end, or "?".
  std::string remote() const {
    asio_error_code ec;
    const auto ep = socket_.remote_endpoint(ec);
    return ec ? std::string("?") : asio_endpoint_string(ep);
  }
  const std::deque<asio_frame>& stash() const noexcept { return stash_; }
  // Number of the next message with `tag` to send / to receive on this connection.
  std::uint64_t next_sent(std::int32_t tag) { return sent_[tag]; }
  std::uint64_t next_received(std::int32_t tag) { return received_[tag]; }
  void count_sent(std::int32_t tag) { ++sent_[tag]; }
  void count_received(std::int32_t tag) { ++received_[tag]; }

 private:
  friend class asio_io;
  asio_tcp::socket socket_;
  std::string name_;
  std::deque<asio_frame> stash_;
  bool writing_ = false;  // a frame is partially written
  std::map<std::int32_t, std::uint64_t> sent_, received_;
};

}  // namespace dho2::detail
