// The mesh of dho2::asio_transport: this rank's identity in its group, its connections by rank
// (and the accepted ones not yet identified), its listener, who connects to whom (rank i connects
// to every rank j < i, accepts the ranks above it), the authentication of every connection
// (refusals: close, log, keep waiting), and failure handling (abort frames, close, poison).
// Handshake and frames: docs/asio_wire_protocol.md.
#pragma once

#include <dho2/detail/internal_header_check.hpp>

#include <dho2/core/errors.hpp>
#include <dho2/transport/detail/asio_auth.hpp>
#include <dho2/transport/detail/asio_frame.hpp>
#include <dho2/transport/detail/asio_io.hpp>
#include <dho2/transport/detail/collective_checks.hpp>

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <iostream>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace dho2::detail {

inline std::uint64_t asio_mix(std::uint64_t x) noexcept {  // splitmix64 finaliser
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

class asio_mesh {
 public:
  asio_mesh(int rank, int size, asio_settings s) : io_(std::move(s)) { regroup(rank, size); }
  asio_mesh(const asio_mesh&) = delete;
  asio_mesh& operator=(const asio_mesh&) = delete;
  ~asio_mesh() {
    // Graceful close: FIN after what was written, so peers blocked on this rank see EOF at once.
    for (auto& l : links_) {
      if (!l) continue;
      asio_error_code ec;
      l->socket().shutdown(asio_tcp::socket::shutdown_send, ec);
      l->socket().close(ec);
    }
    close_all();
  }

  int rank() const noexcept { return rank_; }
  int size() const noexcept { return size_; }
  asio_io& io() noexcept { return io_; }
  const asio_io& io() const noexcept { return io_; }
  const asio_settings& settings() const noexcept { return io_.settings(); }

  // Makes this mesh rank `rank` of `size` ranks, without connections (a split's new group).
  void regroup(int rank, int size) {
    rank_ = rank;
    size_ = size;
    links_.clear();
    links_.resize(static_cast<std::size_t>(size));
    addresses_.assign(static_cast<std::size_t>(size), asio_net::ip::address());
  }

  std::string prefix(std::string_view routine) const {
    return call_prefix("asio", routine, rank_, size_);
  }

  void check_usable(std::string_view routine) const {
    if (!io_.failure().empty()) {
      throw transport_error(prefix(routine) +
                            ": transport unusable after an earlier failure: " + io_.failure());
    }
  }

  // Poisons the transport, tells the peers why (best effort), closes every socket, drains the
  // io_context, and throws.
  [[noreturn]] void fail(const std::string& message) {
    io_.poison(message);
    for (auto& l : links_) asio_io::send_abort(l.get(), message);
    for (auto& l : pending_) asio_io::send_abort(l.get(), message);
    close_all();
    io_.drain();
    throw transport_error(message);
  }

  // Runs `reads` and `writes` concurrently until all complete and counts their traffic; any
  // defect, I/O error or missed deadline fails the transport with a message prefixed by `routine`.
  void exchange(std::string_view routine, std::span<asio_read> reads,
                std::span<asio_write> writes) {
    try {
      io_.run(reads, writes);
    } catch (const std::exception& e) {
      fail(prefix(routine) + ": " + e.what());
    }
    io_.count(reads, writes);
  }

  asio_link& link(int peer) { return *links_[static_cast<std::size_t>(peer)]; }
  bool has_link(int peer) const { return links_[static_cast<std::size_t>(peer)] != nullptr; }

  asio_read make_read(int peer, const asio_wire::header& want, std::span<std::byte> dest) {
    return io_.make_read(link(peer), want, dest);
  }
  asio_write make_write(int peer, const asio_wire::header& h, std::span<const std::byte> payload) {
    return io_.make_write(link(peer), h, payload);
  }

  // asio_io::poll on the connection to `peer`; a problem fails the transport.
  bool poll(std::string_view routine, int peer, std::int32_t tag) {
    check_usable(routine);
    try {
      return io_.poll(link(peer), tag);
    } catch (const std::exception& e) {
      fail(prefix(routine) + ": " + e.what());
    }
  }

  // The session token every proof of this group is bound to.
  std::uint64_t token() const noexcept { return token_; }
  void set_token(std::uint64_t t) noexcept { token_ = t; }
  // The token of the next group split from this one with `color`.
  std::uint64_t split_token(int color) noexcept {
    return asio_mix(token_ ^ asio_mix(++splits_) ^ asio_mix(static_cast<std::uint32_t>(color)));
  }

  // Where rank `r`'s listeners live.
  const asio_net::ip::address& address(int r) const {
    return addresses_[static_cast<std::size_t>(r)];
  }
  void set_address(int r, const asio_net::ip::address& a) {
    addresses_[static_cast<std::size_t>(r)] = a;
  }

  void open_acceptor(unsigned short port) {
    const asio_tcp::endpoint ep(asio_net::ip::make_address(settings().bind_address), port);
    acceptor_.emplace(io_.context());
    try {
      acceptor_->open(ep.protocol());
      acceptor_->set_option(asio_tcp::acceptor::reuse_address(true));
      acceptor_->bind(ep);
      acceptor_->listen();
    } catch (const std::exception& e) {
      acceptor_.reset();
      throw asio_defect("cannot listen on " + asio_endpoint_string(ep) + ": " + e.what());
    }
  }
  asio_tcp::endpoint listen_endpoint() const { return acceptor_->local_endpoint(); }
  void close_acceptor() { acceptor_.reset(); }

  // The next connection on the acceptor, or null at the deadline.
  std::unique_ptr<asio_link> accept_until(asio_clock::time_point deadline) {
    auto link = std::make_unique<asio_link>(io_.context());
    bool done = false;
    asio_error_code result;
    acceptor_->async_accept(link->socket(), [&](const asio_error_code& ec) {
      result = ec;
      done = true;
    });
    if (!io_.run_until(done, deadline)) {
      asio_error_code ec;
      acceptor_->cancel(ec);
      io_.drain();
      return nullptr;
    }
    if (result) throw asio_defect("accept: " + result.message());
    link->socket().set_option(asio_tcp::no_delay(true));
    return link;
  }

  // A connection to one of `eps` (tried in turn); with `retry_refused`, refused attempts are
  // retried every 50 ms (the listener may not exist yet) until the deadline.
  std::unique_ptr<asio_link> connect_until(const std::vector<asio_tcp::endpoint>& eps,
                                           asio_clock::time_point deadline, bool retry_refused) {
    const auto within = " within connect_timeout = " + asio_seconds(settings().connect_timeout);
    for (std::size_t attempt = 0;; ++attempt) {
      const asio_tcp::endpoint& ep = eps[attempt % eps.size()];
      auto link = std::make_unique<asio_link>(io_.context());
      bool done = false;
      asio_error_code result;
      link->socket().async_connect(ep, [&](const asio_error_code& ec) {
        result = ec;
        done = true;
      });
      if (!io_.run_until(done, deadline)) {
        asio_error_code ec;
        link->socket().close(ec);
        io_.drain();
        throw asio_defect("cannot connect to " + asio_endpoint_string(ep) + within);
      }
      if (!result) {
        link->socket().set_option(asio_tcp::no_delay(true));
        return link;
      }
      asio_error_code ec;
      link->socket().close(ec);
      const bool retry = retry_refused && result == asio_net::error::connection_refused;
      if (!retry || asio_clock::now() + std::chrono::milliseconds(50) >= deadline) {
        throw asio_defect(
            "cannot connect to " + asio_endpoint_string(ep) + ": " + result.message() +
            (retry ? " (retried for connect_timeout = " + asio_seconds(settings().connect_timeout) +
                         ")"
                   : std::string()));
      }
      if ((attempt + 1) % eps.size() == 0)
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }

  // Makes `link` (named by the caller) the connection to rank `r`.
  void adopt(int r, std::unique_ptr<asio_link> link) {
    links_[static_cast<std::size_t>(r)] = std::move(link);
  }

  // Authenticates the accepted connection `link` (named by the caller), kept as newcomer():
  // returns its rank, or −1 after refusing it (see refuse()). Every read is bounded by
  // `timeout` and `deadline`.
  int admit(std::unique_ptr<asio_link> link, asio_clock::time_point deadline) {
    pending_.push_back(std::move(link));
    return accept_peer(*pending_.back(), deadline);
  }
  // The connection admit() accepted last, until seat() or refuse().
  asio_link& newcomer() { return *pending_.back(); }
  // Makes newcomer() the connection to rank `r`, named after it.
  void seat(int r) {
    pending_.back()->set_name("peer " + std::to_string(r) + " (" + pending_.back()->remote() + ")");
    links_[static_cast<std::size_t>(r)] = std::move(pending_.back());
    pending_.pop_back();
  }

  // Refuses newcomer(): tells it why (abort frame, best effort), closes it, counts and logs it
  // (settings().on_refusal, else a std::clog line). Returns −1.
  int refuse(const std::string& reason) {
    std::unique_ptr<asio_link> l = std::move(pending_.back());
    pending_.pop_back();
    const std::string peer = l->remote();
    asio_io::send_abort(
        l.get(), prefix("rendezvous") + ": refused the connection from " + peer + ": " + reason);
    asio_error_code ec;
    l->socket().shutdown(asio_tcp::socket::shutdown_send, ec);
    l->socket().close(ec);
    io_.drain();
    ++refused_;
    if (refusals_.size() < 3) refusals_.push_back(peer + ": " + reason);
    if (settings().on_refusal) {
      settings().on_refusal(peer, reason);
    } else {
      std::clog << "dho2: " << prefix("rendezvous") << ": refused the connection from " << peer
                << ": " << reason << std::endl;
    }
    return -1;
  }

  // "" or "; refused N connection(s): <the first few>" for a timeout message.
  std::string refusal_summary() const {
    if (refused_ == 0) return {};
    std::string s =
        "; refused " + std::to_string(refused_) + " connection" + (refused_ == 1 ? "" : "s") + ": ";
    for (std::size_t i = 0; i < refusals_.size(); ++i) s += (i ? "; " : "") + refusals_[i];
    if (refused_ > refusals_.size()) s += "; ...";
    return s;
  }

  // Connects to every rank in [first, rank) and accepts every rank in (rank, size), each
  // connection authenticated; the acceptor must be open. Used by ranks > 0 of the world (first =
  // 1: rank 0 is connected by the rendezvous) and by every rank of a split group (first = 0).
  void build_mesh(const std::vector<unsigned short>& ports, int first) {
    const auto deadline = asio_clock::now() + settings().connect_timeout;
    for (int j = first; j < rank_; ++j) {
      const auto uj = static_cast<std::size_t>(j);
      auto l = connect_until({asio_tcp::endpoint(addresses_[uj], ports[uj])}, deadline, false);
      l->set_name("peer " + std::to_string(j) + " (" + l->remote() + ")");
      adopt(j, std::move(l));
      connect_peer(j, settings().connect_timeout + settings().timeout);
    }
    for (int accepted = 0; accepted < size_ - 1 - rank_;) {
      auto l = accept_until(deadline);
      if (!l) {
        throw asio_defect("only " + std::to_string(accepted) + " of " +
                          std::to_string(size_ - 1 - rank_) +
                          " higher ranks connected within connect_timeout = " +
                          asio_seconds(settings().connect_timeout) + refusal_summary());
      }
      l->set_name("connection from " + l->remote());
      const int j = admit(std::move(l), deadline);
      if (j < 0) continue;
      seat(j);
      ++accepted;
    }
    close_acceptor();
  }

  // Connecting side of the handshake on link(peer): offer, the peer's offer (waited for up to
  // `first_wait`), proof, the peer's proof. Any failure throws: this side cannot wait for a
  // better peer.
  void connect_peer(int peer, std::chrono::milliseconds first_wait) {
    namespace au = asio_auth;
    asio_link& l = link(peer);
    const std::string& secret = settings().secret;
    const au::offer mine{au::fresh_nonce(), static_cast<std::uint32_t>(rank_),
                         static_cast<std::uint32_t>(peer), static_cast<std::uint32_t>(size_)};
    const auto out = au::encode_offer(mine);
    std::array<unsigned char, au::offer_size> in{};
    asio_write w = io_.handshake_write(l, 0, std::as_bytes(std::span(out)));
    asio_read r = asio_io::handshake_read(l, asio_io::auth_header(0),
                                          std::as_writable_bytes(std::span(in)), first_wait);
    exchange("rendezvous", std::span(&r, 1), std::span(&w, 1));
    const au::offer theirs = au::decode_offer(in);
    if (theirs.rank != mine.peer || theirs.peer != mine.rank || theirs.size != mine.size) {
      throw asio_defect(l.name() + ": answers as rank " + std::to_string(theirs.rank) + " of " +
                        std::to_string(theirs.size) + " (expecting rank " +
                        std::to_string(theirs.peer) + "), expected rank " + std::to_string(peer) +
                        " of " + std::to_string(size_));
    }
    const auto p = au::proof(secret, au::role::connecting, theirs.n, mine.n, mine.size, mine.rank,
                             mine.peer, token_);
    au::mac back{};
    asio_write wp = io_.handshake_write(l, 1, std::as_bytes(std::span(p)));
    asio_read rp = asio_io::handshake_read(
        l, asio_io::auth_header(1), std::as_writable_bytes(std::span(back)), settings().timeout);
    exchange("rendezvous", std::span(&rp, 1), std::span(&wp, 1));
    if (!au::same(back, au::proof(secret, au::role::accepting, mine.n, theirs.n, mine.size,
                                  mine.rank, mine.peer, token_))) {
      throw asio_defect(l.name() +
                        ": authentication failed: its proof is wrong (it does not hold this "
                        "job's secret)");
    }
  }

  // `timeout`, shortened to what is left until `deadline` (at least 1 ms).
  std::chrono::milliseconds step_timeout(asio_clock::time_point deadline) const {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - asio_clock::now());
    return std::clamp(left, std::chrono::milliseconds(1), settings().timeout);
  }

 private:
  // Accepting side of the handshake on `l` (newcomer()): the connecting side's offer, ours, its
  // proof, ours. Returns the authenticated rank, or −1 after refusing the connection.
  int accept_peer(asio_link& l, asio_clock::time_point deadline) {
    namespace au = asio_auth;
    const std::string& secret = settings().secret;
    std::array<unsigned char, au::offer_size> in{};
    asio_read r = asio_io::handshake_read(
        l, asio_io::auth_header(0), std::as_writable_bytes(std::span(in)), step_timeout(deadline));
    if (std::string why = io_.attempt(std::span(&r, 1), {}); !why.empty()) return refuse(why);
    const au::offer theirs = au::decode_offer(in);
    const auto me = static_cast<std::uint32_t>(rank_);
    const auto p = static_cast<std::uint32_t>(size_);
    if (theirs.size != p) {
      return refuse("claims world size " + std::to_string(theirs.size) + ", this job has " +
                    std::to_string(size_));
    }
    if (theirs.peer != me) {
      return refuse("wants rank " + std::to_string(theirs.peer) + ", this is rank " +
                    std::to_string(rank_));
    }
    if (theirs.rank <= me || theirs.rank >= p) {
      return refuse("claims rank " + std::to_string(theirs.rank) + ", out of range [" +
                    std::to_string(rank_ + 1) + ", " + std::to_string(size_) + ")");
    }
    const au::offer mine{au::fresh_nonce(), me, theirs.rank, p};
    const auto out = au::encode_offer(mine);
    au::mac proof{};
    asio_write w = io_.handshake_write(l, 0, std::as_bytes(std::span(out)));
    asio_read rp =
        asio_io::handshake_read(l, asio_io::auth_header(1),
                                std::as_writable_bytes(std::span(proof)), step_timeout(deadline));
    if (std::string why = io_.attempt(std::span(&rp, 1), std::span(&w, 1)); !why.empty()) {
      return refuse(why);
    }
    if (!au::same(proof, au::proof(secret, au::role::connecting, mine.n, theirs.n, p, theirs.rank,
                                   me, token_))) {
      return refuse(
          "authentication failed: wrong proof (the peer does not hold this job's secret, or "
          "replays another connection's)");
    }
    const auto& first = links_[theirs.rank];
    if (first) {
      return refuse("claims rank " + std::to_string(theirs.rank) + ", which already joined (" +
                    first->name() + ")");
    }
    const auto mac =
        au::proof(secret, au::role::accepting, theirs.n, mine.n, p, theirs.rank, me, token_);
    asio_write wm = io_.handshake_write(l, 1, std::as_bytes(std::span(mac)));
    if (std::string why = io_.attempt({}, std::span(&wm, 1)); !why.empty()) return refuse(why);
    return static_cast<int>(theirs.rank);
  }

  void close_all() noexcept {
    const auto close = [](asio_link* l) {
      if (!l) return;
      asio_error_code ec;
      l->socket().shutdown(asio_tcp::socket::shutdown_both, ec);
      l->socket().close(ec);
    };
    for (auto& l : links_) close(l.get());
    for (auto& l : pending_) close(l.get());
    if (acceptor_) {
      asio_error_code ec;
      acceptor_->close(ec);
    }
  }

  asio_io io_;  // first: the sockets below live on its io_context
  int rank_ = 0;
  int size_ = 1;
  std::optional<asio_tcp::acceptor> acceptor_;
  std::vector<std::unique_ptr<asio_link>> links_;    // by rank; null for this rank
  std::vector<std::unique_ptr<asio_link>> pending_;  // accepted, not yet identified
  std::vector<asio_net::ip::address> addresses_;     // where each rank's listeners live
  std::uint64_t token_ = 0;
  std::uint64_t splits_ = 0;
  std::uint64_t refused_ = 0;          // connections refused by this rank's listeners
  std::vector<std::string> refusals_;  // the first few, for the timeout message
};

}  // namespace dho2::detail
