// A raw TCP peer of an asio_transport listener, for the tests of hostile or broken peers: it
// connects (with retries while the listener comes up), writes arbitrary bytes or frames, reads
// frames, speaks the handshake by hand, and collects what the listener sends until it closes.
#pragma once

#include <dho2/transport/detail/asio_auth.hpp>
#include <dho2/transport/detail/asio_frame.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>

namespace dho2_test {

struct raw_tcp_peer {
  boost::asio::io_context ctx;
  boost::asio::ip::tcp::socket socket{ctx};

  /// Connects to 127.0.0.1:`port`, retrying every 10 ms for about 2 s.
  explicit raw_tcp_peer(unsigned short port) {
    namespace net = boost::asio;
    const net::ip::tcp::endpoint ep(net::ip::make_address("127.0.0.1"), port);
    for (int attempt = 0;; ++attempt) {
      boost::system::error_code ec;
      socket.connect(ep, ec);
      if (!ec) return;
      socket.close();
      if (attempt > 200) throw std::runtime_error("raw_tcp_peer: cannot connect: " + ec.message());
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  /// Writes `bytes` as they are.
  void send(std::span<const unsigned char> bytes) {
    boost::asio::write(socket, boost::asio::buffer(bytes.data(), bytes.size()));
  }
  /// Writes one frame: a header of kind `k`, tag `tag` and the payload's length, then `payload`.
  void frame(dho2::detail::asio_wire::kind k, std::int32_t tag,
             std::span<const unsigned char> payload) {
    dho2::detail::asio_wire::header h;
    h.type = k;
    h.tag = tag;
    h.length = payload.size();
    send(dho2::detail::asio_wire::encode(h));
    send(payload);
  }
  /// The payload of the next frame, which must be of kind `k` with `N` bytes.
  template <std::size_t N>
  std::array<unsigned char, N> expect(dho2::detail::asio_wire::kind k) {
    namespace wire = dho2::detail::asio_wire;
    wire::header_bytes hb{};
    boost::asio::read(socket, boost::asio::buffer(hb));
    const auto h = wire::decode(hb);
    if (h.type != k || h.length != N) {
      throw std::runtime_error("raw_tcp_peer: expected " + std::string(wire::kind_name(k)) +
                               " frame of " + std::to_string(N) + " bytes, got " +
                               wire::describe(h) + " of " + std::to_string(h.length));
    }
    std::array<unsigned char, N> p{};
    boost::asio::read(socket, boost::asio::buffer(p));
    return p;
  }
  /// The connecting side of the handshake as rank `rank` of `size`, without a secret.
  void authenticate(std::uint32_t rank, std::uint32_t size) {
    namespace au = dho2::detail::asio_auth;
    namespace wire = dho2::detail::asio_wire;
    au::offer mine;
    mine.n = au::fresh_nonce();
    mine.rank = rank;
    mine.size = size;
    wire::header h;
    h.type = wire::kind::auth;
    h.length = au::offer_size;
    send(wire::encode(h));
    send(au::encode_offer(mine));
    std::array<unsigned char, wire::header_size + au::offer_size> in{};
    boost::asio::read(socket, boost::asio::buffer(in));
    std::array<unsigned char, au::offer_size> theirs{};
    std::copy(in.begin() + wire::header_size, in.end(), theirs.begin());
    const auto proof =
        au::proof("", au::role::connecting, au::decode_offer(theirs).n, mine.n, size, rank, 0, 0);
    h.tag = 1;
    h.length = au::mac_size;
    send(wire::encode(h));
    send(proof);
    std::array<unsigned char, wire::header_size + au::mac_size> back{};
    boost::asio::read(socket, boost::asio::buffer(back));
  }
  /// Everything the listener sends until it closes the connection.
  std::string rest() {
    std::string all;
    std::array<char, 4096> buf{};
    boost::system::error_code ec;
    for (;;) {
      const std::size_t n = socket.read_some(boost::asio::buffer(buf), ec);
      if (ec) break;
      all.append(buf.data(), n);
    }
    return all;
  }
};

}  // namespace dho2_test
