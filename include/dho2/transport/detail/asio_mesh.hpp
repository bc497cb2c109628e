// The mesh of dho2::asio_transport: this rank's identity in its group, its connections by rank
// (and the accepted ones not yet identified), its listener, who connects to whom (rank i connects
// to every rank j < i, accepts the ranks above it), the authentication of every connection (the
// accepted ones concurrently, each within handshake_timeout; refusals: close, log at a bounded
// rate, keep waiting), and failure handling (abort frames, close, poison).
// Handshake and frames: docs/asio_wire_protocol.md. Its size (~750 lines) is the admission
// state machine and its failure paths, which belong together; framed I/O is asio_io.hpp.
#pragma once

#include <dho2/detail/internal_header_check.hpp>

#include <dho2/core/errors.hpp>
#include <dho2/transport/detail/asio_auth.hpp>
#include <dho2/transport/detail/asio_frame.hpp>
#include <dho2/transport/detail/asio_io.hpp>
#include <dho2/transport/detail/collective_checks.hpp>

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <iostream>
#include <list>
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
    for (auto& g : greetings_) asio_io::send_abort(g.link.get(), message);
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

  // Authenticates `link` (an accepted connection, named by the caller) alone, as admit_all
  // does: returns its rank (the link is then link(rank)), or −1 after refusing it.
  int admit(std::unique_ptr<asio_link> link, asio_clock::time_point deadline) {
    greet(std::move(link), deadline, false);
    int rank = -1;
    try {
      greet_until(
          deadline, false, [&] { return rank >= 0 || greetings_.empty(); },
          [&](greeting& g) {
            rank = g.rank;
            seat(g);
          });
    } catch (...) {
      finish_greetings({});
      throw;
    }
    finish_greetings("the deadline expired");
    return rank;
  }

  // Accepts connections on the open acceptor and runs their handshakes concurrently, each
  // within handshake_timeout of its accept (and `deadline`), until `count` of them are
  // authenticated — and, with `hello`, have sent their hello (rank 0's rendezvous) — or the
  // deadline. Each is then made link(rank), and `on_seated(rank, hello bytes)` is called (outside
  // any handler; it may fail the mesh). Connections that fail their handshake are refused
  // (refuse_now); those still in progress at the end are closed and counted as refused. Returns
  // the number seated.
  int admit_all(int count, asio_clock::time_point deadline, bool hello,
                const std::function<void(int, std::span<const unsigned char>)>& on_seated) {
    int seated = 0;
    try {
      greet_until(
          deadline, true, [&] { return seated >= count; },
          [&](greeting& g) {
            const int r = g.rank;
            const auto bytes = g.hello_in;
            seat(g);
            ++seated;
            if (on_seated) on_seated(r, std::span<const unsigned char>(bytes));
          },
          hello);
    } catch (...) {
      finish_greetings({});
      throw;
    }
    finish_greetings(seated >= count ? "every rank has joined"
                                     : "connect_timeout = " +
                                           asio_seconds(settings().connect_timeout) + " expired");
    return seated;
  }

  // Refuses an accepted connection that failed its handshake (or the hello): close_refused, then
  // report_refusal. `peer` is its address.
  void refuse_now(asio_link& l, const std::string& peer, const std::string& reason) {
    close_refused(l, peer, reason);
    report_refusal(peer, reason);
  }

  // Tells `l` why it is refused (abort frame, best effort), closes it and counts it.
  void close_refused(asio_link& l, const std::string& peer, const std::string& reason) {
    asio_io::send_abort(
        &l, prefix("rendezvous") + ": refused the connection from " + peer + ": " + reason);
    asio_error_code ec;
    l.socket().shutdown(asio_tcp::socket::shutdown_send, ec);
    l.socket().close(ec);
    ++refused_;
    if (refusals_.size() < 3) refusals_.push_back(peer + ": " + reason);
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

  // "a, b, c" for the ranks in `ranks`, the first 10 only ("..., N in all").
  static std::string rank_list(const std::vector<int>& ranks) {
    std::string s;
    for (std::size_t i = 0; i < ranks.size() && i < 10; ++i) {
      s += (i ? ", " : "") + std::to_string(ranks[i]);
    }
    if (ranks.size() > 10) s += ", ... (" + std::to_string(ranks.size()) + " in all)";
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
      // Rank j accepts only once it is connected to the ranks below it: wait as long.
      connect_peer(j, settings().connect_timeout + settings().timeout);
    }
    const int higher = size_ - 1 - rank_;
    const int accepted = admit_all(higher, deadline, false, {});
    if (accepted < higher) {
      std::vector<int> missing;
      for (int r = rank_ + 1; r < size_; ++r) {
        if (!has_link(r)) missing.push_back(r);
      }
      throw asio_defect("only " + std::to_string(accepted) + " of " + std::to_string(higher) +
                        " higher ranks connected within connect_timeout = " +
                        asio_seconds(settings().connect_timeout) +
                        " (missing: " + rank_list(missing) + ")" + refusal_summary());
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

 private:
  // The handshakes in progress at once on one listener: beyond this many, the oldest that has
  // not authenticated yet is dropped for the newcomer.
  static constexpr std::size_t max_greetings = 128;
  // Refusal reports: at most refusal_burst per refusal_window, the rest counted (report_refusal).
  static constexpr int refusal_burst = 10;
  static constexpr std::chrono::seconds refusal_window{10};

  enum class stage { offer, proof, mac, hello, ready, failed };

  // One accepted connection while its handshake runs (accepting side, docs/asio_wire_protocol.md
  // §2): its offer, our offer with its proof, our proof, then (rendezvous) its hello.
  struct greeting {
    std::unique_ptr<asio_link> link;
    std::string peer;  // its address, for refusals
    asio_clock::time_point deadline;
    bool hello = false;      // reads a hello after the handshake
    bool cut_short = false;  // deadline is the admission's, before handshake_timeout
    stage at = stage::offer;
    int busy = 0;             // operations started and not yet ended
    bool offer_sent = false;  // our offer is written
    bool proof_ok = false;    // its proof verified (our proof goes once our offer is out)
    bool reported = false;    // refused (failed) or seated
    std::string why;          // failed: the reason
    int rank = -1;            // once its proof verified
    asio_auth::offer theirs, mine;
    std::array<unsigned char, asio_auth::offer_size> offer_in{}, offer_out{};
    asio_auth::mac proof_in{}, mac_out{};
    std::array<unsigned char, asio_wire::hello_size> hello_in{};
    asio_read read;
    asio_write write;
  };

  // Starts the handshake of `link` (named by the caller), due by handshake_timeout and `deadline`.
  greeting& greet(std::unique_ptr<asio_link> link, asio_clock::time_point deadline, bool hello) {
    greeting& g = greetings_.emplace_back();
    g.peer = link->remote();
    g.link = std::move(link);
    const auto own = asio_clock::now() + settings().handshake_timeout;
    g.deadline = std::min(deadline, own);
    g.cut_short = deadline < own;
    g.hello = hello;
    step_read(g, asio_io::auth_header(0), std::as_writable_bytes(std::span(g.offer_in)),
              [this](greeting& x) { on_offer(x); });
    return g;
  }

  // `timeout`, shortened to what is left of g's deadline (at least 1 ms).
  std::chrono::milliseconds step_timeout(const greeting& g) const {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(g.deadline - asio_clock::now());
    return std::clamp(left, std::chrono::milliseconds(1), settings().timeout);
  }

  template <class Next>
  void step_read(greeting& g, const asio_wire::header& want, std::span<std::byte> dest, Next next) {
    g.read = asio_io::handshake_read(*g.link, want, dest, step_timeout(g));
    g.read.then = [this, &g, next](const std::string& why) {
      --g.busy;
      if (g.at == stage::failed) return;
      if (!why.empty()) return fail_greeting(g, why);
      next(g);
    };
    ++g.busy;
    io_.start_alone(g.read);
  }

  template <class Next>
  void step_write(greeting& g, std::int32_t step, std::span<const std::byte> payload, Next next) {
    g.write = io_.handshake_write(*g.link, step, payload);
    g.write.timeout = step_timeout(g);
    g.write.then = [this, &g, next](const std::string& why) {
      --g.busy;
      if (g.at == stage::failed) return;
      if (!why.empty()) return fail_greeting(g, why);
      next(g);
    };
    ++g.busy;
    io_.start_alone(g.write);
  }

  // Ends g's handshake with `why` (without the connection's name); its operations are cancelled
  // and greet_until refuses it.
  void fail_greeting(greeting& g, std::string why) {
    const std::string name = g.link->name() + ": ";
    if (why.compare(0, name.size(), name) == 0) why.erase(0, name.size());
    g.at = stage::failed;
    g.why = std::move(why);
    asio_error_code ec;
    g.link->socket().cancel(ec);
  }

  void on_offer(greeting& g) {
    namespace au = asio_auth;
    g.theirs = au::decode_offer(g.offer_in);
    const auto me = static_cast<std::uint32_t>(rank_);
    const auto p = static_cast<std::uint32_t>(size_);
    if (g.theirs.size != p) {
      return fail_greeting(g, "claims world size " + std::to_string(g.theirs.size) +
                                  ", this job has " + std::to_string(size_));
    }
    if (g.theirs.peer != me) {
      return fail_greeting(g, "wants rank " + std::to_string(g.theirs.peer) + ", this is rank " +
                                  std::to_string(rank_));
    }
    if (g.theirs.rank <= me || g.theirs.rank >= p) {
      return fail_greeting(g, "claims rank " + std::to_string(g.theirs.rank) + ", out of range [" +
                                  std::to_string(rank_ + 1) + ", " + std::to_string(size_) + ")");
    }
    g.mine = au::offer{au::fresh_nonce(), me, g.theirs.rank, p};
    g.offer_out = au::encode_offer(g.mine);
    g.at = stage::proof;
    step_write(g, 0, std::as_bytes(std::span(g.offer_out)), [this](greeting& x) {
      x.offer_sent = true;
      if (x.proof_ok) send_proof(x);
    });
    if (g.at != stage::proof) return;
    step_read(g, asio_io::auth_header(1), std::as_writable_bytes(std::span(g.proof_in)),
              [this](greeting& x) { on_proof(x); });
  }

  void on_proof(greeting& g) {
    namespace au = asio_auth;
    const auto me = static_cast<std::uint32_t>(rank_);
    const auto p = static_cast<std::uint32_t>(size_);
    if (!au::same(g.proof_in, au::proof(settings().secret, au::role::connecting, g.mine.n,
                                        g.theirs.n, p, g.theirs.rank, me, token_))) {
      return fail_greeting(
          g,
          "authentication failed: wrong proof (the peer does not hold this job's secret, or "
          "replays another connection's)");
    }
    const auto r = static_cast<int>(g.theirs.rank);
    if (const std::string holder = holder_of(r); !holder.empty()) {
      return fail_greeting(
          g, "claims rank " + std::to_string(r) + ", which already joined (" + holder + ")");
    }
    g.rank = r;
    g.link->set_name("peer " + std::to_string(r) + " (" + g.peer + ")");
    g.proof_ok = true;
    if (g.offer_sent) send_proof(g);
  }

  void send_proof(greeting& g) {
    namespace au = asio_auth;
    g.mac_out = au::proof(settings().secret, au::role::accepting, g.theirs.n, g.mine.n,
                          static_cast<std::uint32_t>(size_), g.theirs.rank,
                          static_cast<std::uint32_t>(rank_), token_);
    g.at = stage::mac;
    step_write(g, 1, std::as_bytes(std::span(g.mac_out)), [this](greeting& x) {
      if (!x.hello) {
        x.at = stage::ready;
        return;
      }
      x.at = stage::hello;
      asio_wire::header want;
      want.type = asio_wire::kind::hello;
      step_read(x, want, std::as_writable_bytes(std::span(x.hello_in)),
                [](greeting& y) { y.at = stage::ready; });
    });
  }

  // The name of the connection that holds rank `r` (seated, or authenticated as r), or "".
  std::string holder_of(int r) const {
    if (links_[static_cast<std::size_t>(r)]) return links_[static_cast<std::size_t>(r)]->name();
    for (const greeting& g : greetings_) {
      if (g.rank == r && g.at != stage::failed && g.link) return g.link->name();
    }
    return {};
  }

  // Makes g's connection link(g.rank), named after it.
  void seat(greeting& g) {
    g.reported = true;
    links_[static_cast<std::size_t>(g.rank)] = std::move(g.link);
  }

  // Runs the handshakes (and, with `accepting`, accepts new connections, each greeted with
  // `hello`) until `done()` or `deadline`; refuses failed ones, hands ready ones to `ready`.
  template <class Done, class Ready>
  void greet_until(asio_clock::time_point deadline, bool accepting, Done done, Ready ready,
                   bool hello = false) {
    io_.context().restart();
    if (accepting) arm_accept();
    for (;;) {
      const auto now = asio_clock::now();
      if (accepted_) {
        accepted_ = false;
        take_accepted(deadline, hello);
      }
      if (pause_ && !pausing_) {
        pause_.reset();
        arm_accept();
      }
      for (auto it = greetings_.begin(); it != greetings_.end();) {
        greeting& g = *it;
        if (g.at != stage::failed && g.at != stage::ready) {
          if (!g.read.done() && g.busy > 0 && now >= g.read.due() && g.read.link) {
            fail_greeting(g, asio_io::late(g.read));
          } else if (!g.write.done() && g.write.link && g.busy > 0 && now >= g.write.due()) {
            fail_greeting(g, asio_io::late(g.write));
          } else if (now >= g.deadline) {
            fail_greeting(g, g.cut_short
                                 ? "did not complete the handshake before connect_timeout = " +
                                       asio_seconds(settings().connect_timeout) + " expired"
                                 : "did not complete the handshake within handshake_timeout = " +
                                       asio_seconds(settings().handshake_timeout));
          }
        }
        if (g.at == stage::failed && !g.reported) {
          g.reported = true;
          refuse_now(*g.link, g.peer, g.why);
        }
        if (g.at == stage::ready && !g.reported) ready(g);
        if (g.reported && g.busy == 0) {
          it = greetings_.erase(it);
        } else {
          ++it;
        }
      }
      flush_refusals(false);
      if (done() || now >= deadline) return;
      auto wake = deadline;
      for (const greeting& g : greetings_) {
        if (g.at == stage::failed || g.at == stage::ready) continue;
        wake = std::min(wake, g.deadline);
        if (g.read.link && !g.read.done()) wake = std::min(wake, g.read.due());
        if (g.write.link && !g.write.done()) wake = std::min(wake, g.write.due());
      }
      if (suppressed_ > 0) wake = std::min(wake, window_start_ + refusal_window);
      if (io_.context().run_one_until(wake) == 0 && io_.context().stopped()) {
        if (!accepting && greetings_.empty()) return;
        io_.context().restart();
        std::this_thread::sleep_until(
            std::min(wake, asio_clock::now() + std::chrono::milliseconds(10)));
      }
    }
  }

  void arm_accept() {
    incoming_ = std::make_unique<asio_link>(io_.context());
    accepting_ = true;
    acceptor_->async_accept(incoming_->socket(), [this](const asio_error_code& ec) {
      accepting_ = false;
      accepted_ = true;
      accept_result_ = ec;
    });
  }

  // Handles the completed accept: greets the new connection and accepts the next; on a shortage
  // of descriptors drops the oldest handshake and retries in 50 ms.
  void take_accepted(asio_clock::time_point deadline, bool hello) {
    const asio_error_code ec = accept_result_;
    if (ec == asio_net::error::operation_aborted) return;
    if (ec) {
      const bool shortage =
          ec == asio_net::error::no_descriptors || ec == asio_net::error::no_buffer_space ||
          ec == asio_net::error::no_memory || ec == asio_net::error::connection_aborted;
      if (!shortage) throw asio_defect("accept: " + ec.message());
      if (ec != asio_net::error::connection_aborted) drop_oldest("accept: " + ec.message());
      pause_.emplace(io_.context(), std::chrono::milliseconds(50));
      pausing_ = true;
      pause_->async_wait([this](const asio_error_code&) { pausing_ = false; });
      return;
    }
    auto link = std::move(incoming_);
    asio_error_code ignored;
    link->socket().set_option(asio_tcp::no_delay(true), ignored);
    link->set_name("connection from " + link->remote());
    std::size_t live = 0;
    for (const greeting& g : greetings_) live += g.at != stage::failed ? 1 : 0;
    if (live >= max_greetings) {
      drop_oldest(std::to_string(max_greetings) + " handshakes in progress at once");
    }
    greet(std::move(link), deadline, hello);
    arm_accept();
  }

  // Fails the oldest handshake not yet authenticated with "dropped: `cause`".
  void drop_oldest(const std::string& cause) {
    for (greeting& g : greetings_) {
      if (g.at == stage::offer || g.at == stage::proof) {
        return fail_greeting(g, "dropped: " + cause + " (the oldest unauthenticated one goes)");
      }
    }
  }

  // Ends the admission: stops accepting, closes the connections still in their handshake
  // (refused with "closed before its handshake completed: `why`"; closed silently when `why` is
  // empty, on the way out of a failure), runs every handler to its end, then reports.
  void finish_greetings(const std::string& why) {
    asio_error_code ec;
    if (acceptor_ && accepting_) acceptor_->cancel(ec);
    if (pause_) pause_->cancel();
    std::vector<std::pair<std::string, std::string>> refused;  // peer, reason
    for (greeting& g : greetings_) {
      if (g.reported || !g.link) continue;
      g.reported = true;
      if (why.empty()) {
        g.link->socket().close(ec);
        continue;
      }
      refused.emplace_back(
          g.peer, g.at == stage::failed ? g.why : "closed before its handshake completed: " + why);
      close_refused(*g.link, refused.back().first, refused.back().second);
    }
    io_.drain();
    greetings_.clear();
    incoming_.reset();
    pause_.reset();
    accepting_ = accepted_ = pausing_ = false;
    if (why.empty()) return;
    for (const auto& [peer, reason] : refused) report_refusal(peer, reason);
    flush_refusals(true);
  }

  // Reports one refusal (settings().on_refusal, else a std::clog line), at most refusal_burst
  // per refusal_window; the others are counted and summed up by flush_refusals.
  void report_refusal(const std::string& peer, const std::string& reason) {
    const auto now = asio_clock::now();
    if (now >= window_start_ + refusal_window) {
      flush_refusals(true);
      window_start_ = now;
      reported_ = 0;
    }
    if (reported_ >= refusal_burst) {
      ++suppressed_;
      return;
    }
    ++reported_;
    emit_refusal(peer, reason);
  }

  // Reports the refusals report_refusal held back, as one report with an empty peer, once their
  // window is over (or at once with `now`).
  void flush_refusals(bool now) {
    if (suppressed_ == 0) return;
    if (!now && asio_clock::now() < window_start_ + refusal_window) return;
    const std::uint64_t n = suppressed_;
    suppressed_ = 0;
    emit_refusal({}, "refused " + std::to_string(n) + " more connection" + (n == 1 ? "" : "s") +
                         ", not reported one by one (at most " + std::to_string(refusal_burst) +
                         " reports per " + std::to_string(refusal_window.count()) + " s)");
  }

  void emit_refusal(const std::string& peer, const std::string& reason) {
    if (settings().on_refusal) {
      settings().on_refusal(peer, reason);
    } else if (peer.empty()) {
      std::clog << "dho2: " << prefix("rendezvous") << ": " << reason << std::endl;
    } else {
      std::clog << "dho2: " << prefix("rendezvous") << ": refused the connection from " << peer
                << ": " << reason << std::endl;
    }
  }

  void close_all() noexcept {
    const auto close = [](asio_link* l) {
      if (!l) return;
      asio_error_code ec;
      l->socket().shutdown(asio_tcp::socket::shutdown_both, ec);
      l->socket().close(ec);
    };
    for (auto& l : links_) close(l.get());
    for (auto& g : greetings_) close(g.link.get());
    if (acceptor_) {
      asio_error_code ec;
      acceptor_->close(ec);
    }
  }

  asio_io io_;  // first: the sockets below live on its io_context
  int rank_ = 0;
  int size_ = 1;
  std::optional<asio_tcp::acceptor> acceptor_;
  std::vector<std::unique_ptr<asio_link>> links_;  // by rank; null for this rank
  std::list<greeting> greetings_;                  // accepted, handshake in progress
  std::unique_ptr<asio_link> incoming_;            // the socket of the pending accept
  bool accepting_ = false;                         // an accept is pending
  bool accepted_ = false;                          // it completed (accept_result_)
  asio_error_code accept_result_;
  std::optional<asio_net::steady_timer> pause_;  // accepting again after a shortage
  bool pausing_ = false;
  std::vector<asio_net::ip::address> addresses_;  // where each rank's listeners live
  std::uint64_t token_ = 0;
  std::uint64_t splits_ = 0;
  std::uint64_t refused_ = 0;              // connections refused by this rank's listeners
  std::vector<std::string> refusals_;      // the first few, for the timeout message
  asio_clock::time_point window_start_{};  // of the current refusal window
  int reported_ = 0;                       // refusals reported in it
  std::uint64_t suppressed_ = 0;           // refusals not reported yet
};

}  // namespace dho2::detail
