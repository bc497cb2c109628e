// I/O engine of dho2::asio_transport: one io_context driven by the calling thread, the TCP mesh,
// framed reads and writes with per-operation progress deadlines, the stash of frames that arrive
// ahead of their recv, failure handling (abort frames, close, poison), the authentication of every
// connection (refusals: close, log, keep waiting), and the rendezvous, mesh and split handshakes.
// Every async operation is started and completed inside one call (exchange() or run_until()); on
// failure the sockets are closed and the io_context drained before the stack frames owning the
// operations unwind.
#pragma once

#include <dho2/detail/internal_header_check.hpp>

#include <dho2/core/errors.hpp>
#include <dho2/transport/detail/asio_auth.hpp>
#include <dho2/transport/detail/asio_frame.hpp>

#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/socket_base.hpp>
#include <boost/system/error_code.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace dho2::detail {

namespace asio_net = boost::asio;
using asio_tcp = boost::asio::ip::tcp;
using asio_clock = std::chrono::steady_clock;
using asio_error_code = boost::system::error_code;

// A defect found while an operation is in progress; exchange() turns it into fail().
class asio_defect : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct asio_settings {
  std::chrono::milliseconds timeout{30000};
  std::chrono::milliseconds connect_timeout{60000};
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

inline std::uint64_t asio_mix(std::uint64_t x) noexcept {  // splitmix64 finaliser
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// The options every rank must share, hashed (the hello carries it; rank 0 compares).
inline std::uint32_t asio_fingerprint(const asio_settings& s) noexcept {
  return static_cast<std::uint32_t>(
      asio_mix(asio_mix(s.max_frame_bytes) ^ s.direct_all_reduce_bytes) & 0xFFFFFFFFU);
}

struct asio_frame {
  asio_wire::header h;
  std::vector<std::byte> payload;
};

struct asio_link {
  explicit asio_link(asio_net::io_context& ctx) : socket(ctx) {}
  asio_tcp::socket socket;
  std::string name;              // "peer 2 (127.0.0.1:40123)"
  std::deque<asio_frame> stash;  // frames received ahead of the call that wants them
  bool writing = false;          // a frame is partially written
  std::map<std::int32_t, std::uint64_t> sent, received;  // message numbers per tag
};

struct asio_read {
  enum class phase { header, payload, stash, abort };
  asio_link* link = nullptr;
  asio_wire::header want;  // the frame this read accepts (want.length = dest.size())
  std::span<std::byte> dest;
  bool stash_others = false;  // park message frames (and collectives while in recv)
  bool stash_one = false;     // done after parking one frame (poll)
  bool counted = true;        // payload counts in stats
  std::chrono::milliseconds timeout{};
  phase state = phase::header;
  asio_wire::header_bytes hbuf{};
  asio_wire::header h;
  std::vector<std::byte> tmp;
  std::span<std::byte> target;
  std::size_t got = 0;
  bool done = false;
  asio_clock::time_point last;
};

struct asio_write {
  asio_link* link = nullptr;
  asio_wire::header_bytes hbuf{};
  std::span<const std::byte> payload;
  bool counted = true;
  std::chrono::milliseconds timeout{};
  std::size_t sent = 0;
  bool done = false;
  std::string broken;  // the I/O error that ended the write (the peer's abort may follow)
  asio_clock::time_point last;
};

class asio_engine {
 public:
  asio_engine(int rank_in, int size_in, asio_settings s)
      : rank(rank_in), size(size_in), settings(std::move(s)) {
    links.resize(static_cast<std::size_t>(size));
    addresses.resize(static_cast<std::size_t>(size));
  }
  asio_engine(const asio_engine&) = delete;
  asio_engine& operator=(const asio_engine&) = delete;
  ~asio_engine() {
    // Graceful close: FIN after what was written, so peers blocked on this rank see EOF at once.
    for (auto& l : links) {
      if (!l) continue;
      asio_error_code ec;
      l->socket.shutdown(asio_tcp::socket::shutdown_send, ec);
      l->socket.close(ec);
    }
    close_all();
    if (!settings.secret.empty()) OPENSSL_cleanse(settings.secret.data(), settings.secret.size());
  }

  int rank;
  int size;
  asio_settings settings;
  asio_net::io_context ctx{1};
  std::optional<asio_tcp::acceptor> acceptor;
  std::vector<std::unique_ptr<asio_link>> links;    // by rank; null for this rank
  std::vector<std::unique_ptr<asio_link>> pending;  // accepted, not yet identified
  std::vector<asio_net::ip::address> addresses;     // where each rank's listeners live
  std::uint64_t token = 0;
  std::uint64_t seq = 0;
  std::uint64_t splits = 0;
  std::uint64_t refused = 0;          // connections refused by this engine's listeners
  std::vector<std::string> refusals;  // the first few, for the timeout message
  std::string failure;
  std::string error;
  std::uint64_t stashed_bytes = 0;
  std::deque<asio_frame> self_messages;
  std::uint64_t call_sent = 0;
  std::uint64_t call_received = 0;
  std::vector<float> scratch_f[2];
  std::vector<double> scratch_d[2];

  template <class E>
  std::vector<E>& scratch(int i) {
    if constexpr (sizeof(E) == 4) {
      return scratch_f[i];
    } else {
      return scratch_d[i];
    }
  }

  std::string prefix(std::string_view routine) const {
    return "asio " + std::string(routine) + " [rank " + std::to_string(rank) + ", world size " +
           std::to_string(size) + "]";
  }

  void check_usable(std::string_view routine) const {
    if (!failure.empty()) {
      throw transport_error(prefix(routine) +
                            ": transport unusable after an earlier failure: " + failure);
    }
  }

  // Poisons the engine, tells the peers why (best effort), closes every socket, drains the
  // io_context, and throws.
  [[noreturn]] void fail(const std::string& message) {
    if (failure.empty()) failure = message;
    send_aborts(message);
    close_all();
    drain();
    throw transport_error(message);
  }

  // Runs `reads` and `writes` concurrently until all complete; any defect, I/O error or missed
  // deadline fails the engine with a message prefixed by `routine`.
  void exchange(std::string_view routine, std::span<asio_read> reads,
                std::span<asio_write> writes) {
    try {
      run(reads, writes);
    } catch (const std::exception& e) {
      fail(prefix(routine) + ": " + e.what());
    }
    for (auto& r : reads) {
      if (r.counted) call_received += r.dest.size();
    }
    for (auto& w : writes) {
      if (w.counted) call_sent += w.payload.size();
    }
  }

  // Starts `reads` and `writes` and waits for all of them; throws on the first problem.
  void run(std::span<asio_read> reads, std::span<asio_write> writes) {
    error.clear();
    ctx.restart();
    for (auto& r : reads) start_read(r);
    for (auto& w : writes) start_write(w);
    wait(reads, writes);
  }

  asio_read make_read(int peer, const asio_wire::header& want, std::span<std::byte> dest) {
    asio_read r;
    r.link = links[static_cast<std::size_t>(peer)].get();
    r.want = want;
    r.want.length = dest.size();
    r.dest = dest;
    r.stash_others = true;
    r.timeout = settings.timeout;
    return r;
  }

  // Whether a message frame with `tag` from `l` is buffered, after buffering the frames that
  // have started to arrive (each read to its end within the timeout) until one is or nothing
  // more is waiting. Never waits for a frame that has not started; fails the engine on a
  // closed connection, an abort frame or a malformed frame.
  bool poll_message(std::string_view routine, asio_link& l, std::int32_t tag) {
    check_usable(routine);
    const auto stashed = [&] {
      return std::any_of(l.stash.begin(), l.stash.end(), [&](const asio_frame& f) {
        return f.h.type == asio_wire::kind::message && f.h.tag == tag;
      });
    };
    try {
      while (!stashed()) {
        if (!readable(l)) return false;
        asio_read r;
        r.link = &l;
        r.want.type = asio_wire::kind::message;
        r.want.tag = -1;  // no message has a negative tag: every message frame is buffered
        r.stash_others = true;
        r.stash_one = true;
        r.counted = false;  // counted by the recv that takes it
        r.timeout = settings.timeout;
        run(std::span(&r, 1), {});
      }
      return true;
    } catch (const std::exception& e) {
      fail(prefix(routine) + ": " + e.what());
    }
  }

  asio_write make_write(int peer, asio_wire::header h, std::span<const std::byte> payload) {
    asio_write w;
    w.link = links[static_cast<std::size_t>(peer)].get();
    h.length = payload.size();
    w.hbuf = asio_wire::encode(h);
    w.payload = payload;
    w.timeout = settings.timeout;
    return w;
  }

  // ---- rendezvous ------------------------------------------------------------------------------

  void rendezvous_root(unsigned short port) {
    try {
      open_acceptor(port);
      const auto deadline = asio_clock::now() + settings.connect_timeout;
      std::vector<std::array<unsigned char, 16>> raw(static_cast<std::size_t>(size));
      std::vector<std::uint8_t> family(static_cast<std::size_t>(size), 0);
      std::vector<unsigned short> ports(static_cast<std::size_t>(size), 0);
      for (int joined = 0; joined < size - 1;) {
        auto link = accept_until(deadline);
        if (!link) {
          std::string missing;
          for (int r = 1; r < size; ++r) {
            if (!links[static_cast<std::size_t>(r)]) {
              missing += (missing.empty() ? "" : ", ") + std::to_string(r);
            }
          }
          throw asio_defect(
              "only " + std::to_string(joined) + " of " + std::to_string(size - 1) +
              " ranks joined within connect_timeout = " + asio_seconds(settings.connect_timeout) +
              " (missing: " + missing + ")" + refusal_summary());
        }
        link->name = "connection from " + remote_string(*link);
        pending.push_back(std::move(link));
        asio_link& l = *pending.back();
        const int authenticated = accept_peer(l, deadline);
        if (authenticated < 0) continue;
        std::array<unsigned char, asio_wire::hello_size> buf{};
        asio_wire::header want;
        want.type = asio_wire::kind::hello;
        asio_read rd =
            handshake_read(l, want, std::as_writable_bytes(std::span(buf)), step_timeout(deadline));
        if (const std::string why = attempt(std::span(&rd, 1), {}); !why.empty()) {
          refuse(why);
          continue;
        }
        const asio_wire::hello h = asio_wire::decode_hello(buf);
        const auto bad = [&](const std::string& what) {
          fail(prefix("rendezvous") + ": " + l.name + ": " + what);
        };
        if (const std::string why =
                asio_wire::hello_defect(h, static_cast<std::uint32_t>(authenticated),
                                        static_cast<std::uint32_t>(size), options_fingerprint());
            !why.empty()) {
          bad(why);
        }
        const auto r = static_cast<std::size_t>(authenticated);
        raw[r] = h.address;
        family[r] = h.family;
        ports[r] = h.port;
        if (h.family == 0) {
          const auto a = l.socket.remote_endpoint().address();
          family[r] = a.is_v4() ? 4 : 6;
          if (a.is_v4()) {
            const auto b = a.to_v4().to_bytes();
            std::copy(b.begin(), b.end(), raw[r].begin());
          } else {
            const auto b = a.to_v6().to_bytes();
            std::copy(b.begin(), b.end(), raw[r].begin());
          }
        }
        addresses[r] = to_address(family[r], raw[r]);
        l.name = "peer " + std::to_string(r) + " (" + remote_string(l) + ")";
        links[r] = std::move(pending.back());
        pending.pop_back();
        ++joined;
      }
      acceptor.reset();
      std::random_device rd;
      token = asio_mix((std::uint64_t{rd()} << 32) ^ rd() ^
                       static_cast<std::uint64_t>(asio_clock::now().time_since_epoch().count()));
      asio_wire::table t;
      t.token = token;
      t.entries.resize(static_cast<std::size_t>(size));
      for (std::size_t r = 1; r < static_cast<std::size_t>(size); ++r) {
        t.entries[r] = {ports[r], family[r], raw[r]};
      }
      const std::vector<unsigned char> table = asio_wire::encode_table(t);
      std::vector<asio_write> writes;
      asio_wire::header h;
      h.type = asio_wire::kind::table;
      for (int r = 1; r < size; ++r) {
        writes.push_back(make_write(r, h, std::as_bytes(std::span(table))));
        writes.back().counted = false;
      }
      exchange("rendezvous", {}, writes);
    } catch (const transport_error&) {
      throw;
    } catch (const std::exception& e) {
      fail(prefix("rendezvous") + ": " + e.what());
    }
  }

  void rendezvous_member(const std::string& host, unsigned short port) {
    try {
      open_acceptor(0);
      asio_wire::hello h;
      h.rank = static_cast<std::uint32_t>(rank);
      h.size = static_cast<std::uint32_t>(size);
      h.port = acceptor->local_endpoint().port();
      h.little_endian = std::endian::native == std::endian::little ? 1 : 0;
      h.options = options_fingerprint();
      const auto bound = acceptor->local_endpoint().address();
      if (!bound.is_unspecified()) {
        h.family = bound.is_v4() ? 4 : 6;
        if (bound.is_v4()) {
          const auto b = bound.to_v4().to_bytes();
          std::copy(b.begin(), b.end(), h.address.begin());
        } else {
          const auto b = bound.to_v6().to_bytes();
          std::copy(b.begin(), b.end(), h.address.begin());
        }
      }
      asio_tcp::resolver resolver(ctx);
      std::vector<asio_tcp::endpoint> eps;
      for (const auto& e :
           resolver.resolve(host, std::to_string(port), asio_tcp::resolver::numeric_service)) {
        eps.push_back(e.endpoint());
      }
      if (eps.empty()) throw asio_defect("cannot resolve rendezvous host " + host);
      const auto deadline = asio_clock::now() + settings.connect_timeout;
      links[0] = connect_until(eps, deadline, true);
      links[0]->name = "peer 0 (" + remote_string(*links[0]) + ")";
      addresses[0] = links[0]->socket.remote_endpoint().address();
      // Rank 0 serves one connection at a time: its challenge may take up to connect_timeout.
      connect_peer(0, settings.connect_timeout + settings.timeout);
      const auto hello_bytes = asio_wire::encode_hello(h);
      asio_wire::header hh;
      hh.type = asio_wire::kind::hello;
      asio_write w = make_write(0, hh, std::as_bytes(std::span(hello_bytes)));
      w.counted = false;
      std::vector<unsigned char> table(asio_wire::table_size(static_cast<std::size_t>(size)));
      asio_wire::header want;
      want.type = asio_wire::kind::table;
      // Rank 0 answers once every rank has joined, or tells why not: wait up to
      // connect_timeout + timeout (rank 0's own deadline may have started later than ours).
      asio_read rd = handshake_read(*links[0], want, std::as_writable_bytes(std::span(table)),
                                    settings.connect_timeout + settings.timeout);
      exchange("rendezvous", std::span(&rd, 1), std::span(&w, 1));
      const asio_wire::table t = asio_wire::decode_table(table).value();  // the length was checked
      token = t.token;
      std::vector<unsigned short> ports(static_cast<std::size_t>(size), 0);
      for (std::size_t r = 1; r < static_cast<std::size_t>(size); ++r) {
        const asio_wire::table_entry& e = t.entries[r];
        if (!asio_wire::usable(e)) {
          throw asio_defect(links[0]->name + ": malformed table entry for rank " +
                            std::to_string(r));
        }
        ports[r] = e.port;
        addresses[r] = to_address(e.family, e.address);
      }
      build_mesh(ports, 1);
    } catch (const transport_error&) {
      throw;
    } catch (const std::exception& e) {
      fail(prefix("rendezvous") + ": " + e.what());
    }
  }

  // Connects to every rank in [first, rank) and accepts every rank in (rank, size), each
  // connection authenticated; the acceptor must be open. Used by ranks > 0 of the world (first = 1:
  // rank 0 is connected by the rendezvous) and by every rank of a split group (first = 0).
  void build_mesh(const std::vector<unsigned short>& ports, int first) {
    const auto deadline = asio_clock::now() + settings.connect_timeout;
    for (int j = first; j < rank; ++j) {
      const auto uj = static_cast<std::size_t>(j);
      links[uj] = connect_until({asio_tcp::endpoint(addresses[uj], ports[uj])}, deadline, false);
      links[uj]->name = "peer " + std::to_string(j) + " (" + remote_string(*links[uj]) + ")";
      connect_peer(j, settings.connect_timeout + settings.timeout);
    }
    for (int accepted = 0; accepted < size - 1 - rank;) {
      auto link = accept_until(deadline);
      if (!link) {
        throw asio_defect("only " + std::to_string(accepted) + " of " +
                          std::to_string(size - 1 - rank) +
                          " higher ranks connected within connect_timeout = " +
                          asio_seconds(settings.connect_timeout) + refusal_summary());
      }
      link->name = "connection from " + remote_string(*link);
      pending.push_back(std::move(link));
      const int j = accept_peer(*pending.back(), deadline);
      if (j < 0) continue;
      const auto uj = static_cast<std::size_t>(j);
      pending.back()->name =
          "peer " + std::to_string(j) + " (" + remote_string(*pending.back()) + ")";
      links[uj] = std::move(pending.back());
      pending.pop_back();
      ++accepted;
    }
    acceptor.reset();
  }

  // Connecting side of the handshake on links[peer] (see asio_auth.hpp): offer, the peer's offer
  // (waited for up to `first_wait`), proof, the peer's proof. Any failure throws: this side
  // cannot wait for a better peer.
  void connect_peer(int peer, std::chrono::milliseconds first_wait) {
    namespace au = asio_auth;
    asio_link& l = *links[static_cast<std::size_t>(peer)];
    const au::offer mine{au::fresh_nonce(), static_cast<std::uint32_t>(rank),
                         static_cast<std::uint32_t>(peer), static_cast<std::uint32_t>(size)};
    const auto out = au::encode_offer(mine);
    std::array<unsigned char, au::offer_size> in{};
    asio_write w = handshake_write(l, 0, std::as_bytes(std::span(out)));
    asio_read r =
        handshake_read(l, auth_header(0), std::as_writable_bytes(std::span(in)), first_wait);
    exchange("rendezvous", std::span(&r, 1), std::span(&w, 1));
    const au::offer theirs = au::decode_offer(in);
    if (theirs.rank != mine.peer || theirs.peer != mine.rank || theirs.size != mine.size) {
      throw asio_defect(l.name + ": answers as rank " + std::to_string(theirs.rank) + " of " +
                        std::to_string(theirs.size) + " (expecting rank " +
                        std::to_string(theirs.peer) + "), expected rank " + std::to_string(peer) +
                        " of " + std::to_string(size));
    }
    const auto p = au::proof(settings.secret, au::role::connecting, theirs.n, mine.n, mine.size,
                             mine.rank, mine.peer, token);
    au::mac back{};
    asio_write wp = handshake_write(l, 1, std::as_bytes(std::span(p)));
    asio_read rp = handshake_read(l, auth_header(1), std::as_writable_bytes(std::span(back)),
                                  settings.timeout);
    exchange("rendezvous", std::span(&rp, 1), std::span(&wp, 1));
    if (!au::same(back, au::proof(settings.secret, au::role::accepting, mine.n, theirs.n, mine.size,
                                  mine.rank, mine.peer, token))) {
      throw asio_defect(l.name +
                        ": authentication failed: its proof is wrong (it does not hold this "
                        "job's secret)");
    }
  }

  // Accepting side of the handshake on `l` (pending.back()): the connecting side's offer, ours,
  // its proof, ours. Returns the authenticated rank, or −1 after refusing the connection (see
  // refuse()). Every read is bounded by `timeout` and `deadline`.
  int accept_peer(asio_link& l, asio_clock::time_point deadline) {
    namespace au = asio_auth;
    std::array<unsigned char, au::offer_size> in{};
    asio_read r = handshake_read(l, auth_header(0), std::as_writable_bytes(std::span(in)),
                                 step_timeout(deadline));
    if (std::string why = attempt(std::span(&r, 1), {}); !why.empty()) return refuse(why);
    const au::offer theirs = au::decode_offer(in);
    const auto me = static_cast<std::uint32_t>(rank);
    const auto p = static_cast<std::uint32_t>(size);
    if (theirs.size != p) {
      return refuse("claims world size " + std::to_string(theirs.size) + ", this job has " +
                    std::to_string(size));
    }
    if (theirs.peer != me) {
      return refuse("wants rank " + std::to_string(theirs.peer) + ", this is rank " +
                    std::to_string(rank));
    }
    if (theirs.rank <= me || theirs.rank >= p) {
      return refuse("claims rank " + std::to_string(theirs.rank) + ", out of range [" +
                    std::to_string(rank + 1) + ", " + std::to_string(size) + ")");
    }
    const au::offer mine{au::fresh_nonce(), me, theirs.rank, p};
    const auto out = au::encode_offer(mine);
    au::mac proof{};
    asio_write w = handshake_write(l, 0, std::as_bytes(std::span(out)));
    asio_read rp = handshake_read(l, auth_header(1), std::as_writable_bytes(std::span(proof)),
                                  step_timeout(deadline));
    if (std::string why = attempt(std::span(&rp, 1), std::span(&w, 1)); !why.empty()) {
      return refuse(why);
    }
    if (!au::same(proof, au::proof(settings.secret, au::role::connecting, mine.n, theirs.n, p,
                                   theirs.rank, me, token))) {
      return refuse(
          "authentication failed: wrong proof (the peer does not hold this job's secret, or "
          "replays another connection's)");
    }
    const auto& first = links[theirs.rank];
    if (first) {
      return refuse("claims rank " + std::to_string(theirs.rank) + ", which already joined (" +
                    first->name + ")");
    }
    const auto mac = au::proof(settings.secret, au::role::accepting, theirs.n, mine.n, p,
                               theirs.rank, me, token);
    asio_write wm = handshake_write(l, 1, std::as_bytes(std::span(mac)));
    if (std::string why = attempt({}, std::span(&wm, 1)); !why.empty()) return refuse(why);
    return static_cast<int>(theirs.rank);
  }

  // Refuses pending.back(): tells it why (abort frame, best effort), closes it, counts and logs
  // it (settings.on_refusal, else a std::clog line). Returns −1.
  int refuse(const std::string& reason) {
    std::unique_ptr<asio_link> l = std::move(pending.back());
    pending.pop_back();
    const std::string peer = remote_string(*l);
    send_abort(l.get(),
               prefix("rendezvous") + ": refused the connection from " + peer + ": " + reason);
    asio_error_code ec;
    l->socket.shutdown(asio_tcp::socket::shutdown_send, ec);
    l->socket.close(ec);
    drain();
    ++refused;
    if (refusals.size() < 3) refusals.push_back(peer + ": " + reason);
    if (settings.on_refusal) {
      settings.on_refusal(peer, reason);
    } else {
      std::clog << "dho2: " << prefix("rendezvous") << ": refused the connection from " << peer
                << ": " << reason << std::endl;
    }
    return -1;
  }

  // "" or "; refused N connection(s): <the first few>" for a timeout message.
  std::string refusal_summary() const {
    if (refused == 0) return {};
    std::string s =
        "; refused " + std::to_string(refused) + " connection" + (refused == 1 ? "" : "s") + ": ";
    for (std::size_t i = 0; i < refusals.size(); ++i) s += (i ? "; " : "") + refusals[i];
    if (refused > refusals.size()) s += "; ...";
    return s;
  }

  void open_acceptor(unsigned short port) {
    const asio_tcp::endpoint ep(asio_net::ip::make_address(settings.bind_address), port);
    acceptor.emplace(ctx);
    try {
      acceptor->open(ep.protocol());
      acceptor->set_option(asio_tcp::acceptor::reuse_address(true));
      acceptor->bind(ep);
      acceptor->listen();
    } catch (const std::exception& e) {
      acceptor.reset();
      throw asio_defect("cannot listen on " + asio_endpoint_string(ep) + ": " + e.what());
    }
  }

 private:
  std::uint32_t options_fingerprint() const noexcept { return asio_fingerprint(settings); }

  static asio_net::ip::address to_address(std::uint8_t family,
                                          const std::array<unsigned char, 16>& raw) {
    if (family == 4) {
      return asio_net::ip::address_v4(
          asio_net::ip::address_v4::bytes_type{raw[0], raw[1], raw[2], raw[3]});
    }
    asio_net::ip::address_v6::bytes_type b{};
    std::copy(raw.begin(), raw.end(), b.begin());
    return asio_net::ip::address_v6(b);
  }

  static std::string remote_string(const asio_link& l) {
    asio_error_code ec;
    const auto ep = l.socket.remote_endpoint(ec);
    return ec ? std::string("?") : asio_endpoint_string(ep);
  }

  asio_read handshake_read(asio_link& l, const asio_wire::header& want, std::span<std::byte> dest,
                           std::chrono::milliseconds timeout) {
    asio_read r;
    r.link = &l;
    r.want = want;
    r.want.length = dest.size();
    r.dest = dest;
    r.stash_others = false;
    r.counted = false;
    r.timeout = timeout;
    return r;
  }

  asio_write handshake_write(asio_link& l, std::int32_t step, std::span<const std::byte> payload) {
    asio_wire::header h = auth_header(step);
    h.length = payload.size();
    asio_write w;
    w.link = &l;
    w.hbuf = asio_wire::encode(h);
    w.payload = payload;
    w.counted = false;
    w.timeout = settings.timeout;
    return w;
  }

  static asio_wire::header auth_header(std::int32_t step) noexcept {
    asio_wire::header h;
    h.type = asio_wire::kind::auth;
    h.tag = step;
    return h;
  }

  // `timeout`, shortened to what is left until `deadline` (at least 1 ms).
  std::chrono::milliseconds step_timeout(asio_clock::time_point deadline) const {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - asio_clock::now());
    return std::clamp(left, std::chrono::milliseconds(1), settings.timeout);
  }

  // exchange() on one not yet trusted connection, without failing the engine: "" on success,
  // else why (the connection's name removed); its pending operations are cancelled.
  std::string attempt(std::span<asio_read> reads, std::span<asio_write> writes) {
    asio_link* l = !reads.empty() ? reads.front().link : writes.front().link;
    try {
      run(reads, writes);
      return {};
    } catch (const std::exception& e) {
      asio_error_code ec;
      l->socket.cancel(ec);
      drain();
      error.clear();
      std::string why = e.what();
      const std::string name = l->name + ": ";
      if (why.compare(0, name.size(), name) == 0) why.erase(0, name.size());
      return why;
    }
  }

  bool run_until(const bool& done, asio_clock::time_point deadline) {
    ctx.restart();
    while (!done) {
      if (asio_clock::now() >= deadline) return false;
      if (ctx.run_one_until(deadline) == 0 && ctx.stopped() && !done) {
        throw asio_defect("internal error: no I/O pending");
      }
    }
    return true;
  }

  void drain() {
    ctx.restart();
    ctx.run();
  }

  // The next connection on the acceptor, or null at the deadline.
  std::unique_ptr<asio_link> accept_until(asio_clock::time_point deadline) {
    auto link = std::make_unique<asio_link>(ctx);
    bool done = false;
    asio_error_code result;
    acceptor->async_accept(link->socket, [&](const asio_error_code& ec) {
      result = ec;
      done = true;
    });
    if (!run_until(done, deadline)) {
      asio_error_code ec;
      acceptor->cancel(ec);
      drain();
      return nullptr;
    }
    if (result) throw asio_defect("accept: " + result.message());
    link->socket.set_option(asio_tcp::no_delay(true));
    return link;
  }

  // A connection to one of `eps` (tried in turn); with `retry_refused`, refused attempts are
  // retried every 50 ms (the listener may not exist yet) until the deadline.
  std::unique_ptr<asio_link> connect_until(const std::vector<asio_tcp::endpoint>& eps,
                                           asio_clock::time_point deadline, bool retry_refused) {
    for (std::size_t attempt = 0;; ++attempt) {
      const asio_tcp::endpoint& ep = eps[attempt % eps.size()];
      auto link = std::make_unique<asio_link>(ctx);
      bool done = false;
      asio_error_code result;
      link->socket.async_connect(ep, [&](const asio_error_code& ec) {
        result = ec;
        done = true;
      });
      if (!run_until(done, deadline)) {
        asio_error_code ec;
        link->socket.close(ec);
        drain();
        throw asio_defect("cannot connect to " + asio_endpoint_string(ep) +
                          " within connect_timeout = " + asio_seconds(settings.connect_timeout));
      }
      if (!result) {
        link->socket.set_option(asio_tcp::no_delay(true));
        return link;
      }
      asio_error_code ec;
      link->socket.close(ec);
      const bool retry = retry_refused && result == asio_net::error::connection_refused;
      if (!retry || asio_clock::now() + std::chrono::milliseconds(50) >= deadline) {
        throw asio_defect(
            "cannot connect to " + asio_endpoint_string(ep) + ": " + result.message() +
            (retry
                 ? " (retried for connect_timeout = " + asio_seconds(settings.connect_timeout) + ")"
                 : std::string()));
      }
      if ((attempt + 1) % eps.size() == 0)
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }

  void close_all() noexcept {
    const auto close = [](asio_link* l) {
      if (!l) return;
      asio_error_code ec;
      l->socket.shutdown(asio_tcp::socket::shutdown_both, ec);
      l->socket.close(ec);
    };
    for (auto& l : links) close(l.get());
    for (auto& l : pending) close(l.get());
    if (acceptor) {
      asio_error_code ec;
      acceptor->close(ec);
    }
  }

  // Best effort, never blocks: an abort frame with `message` on every connection that is at a
  // frame boundary, so peers report the cause rather than a bare EOF.
  void send_aborts(const std::string& message) noexcept {
    for (auto& l : links) send_abort(l.get(), message);
    for (auto& l : pending) send_abort(l.get(), message);
  }

  // One abort frame with `message` on `l` if it is at a frame boundary; best effort, never blocks.
  static void send_abort(asio_link* l, const std::string& message) noexcept {
    if (!l || l->writing || !l->socket.is_open()) return;
    try {
      const std::string text = message.substr(0, asio_wire::max_abort_size);
      asio_wire::header h;
      h.type = asio_wire::kind::abort;
      h.length = text.size();
      const auto hb = asio_wire::encode(h);
      const std::array<asio_net::const_buffer, 2> bufs{asio_net::buffer(hb),
                                                       asio_net::buffer(text)};
      asio_error_code ec;
      l->socket.non_blocking(true, ec);
      if (!ec) l->socket.write_some(bufs, ec);
    } catch (...) {  // best effort only
    }
  }

  void set_error(std::string message) {
    if (error.empty()) error = std::move(message);
  }

  static std::string describe_error(const asio_error_code& ec) {
    if (ec == asio_net::error::eof) return "connection closed";
    if (ec == asio_net::error::connection_reset) return "connection reset";
    if (ec == asio_net::error::broken_pipe) return "connection closed (broken pipe)";
    return ec.message();
  }

  // Whether bytes from `l` are waiting. available() is 0 both when nothing has arrived and at
  // the end of the stream, so a non-blocking one-byte peek tells the two apart; throws on a
  // closed or broken connection.
  static bool readable(asio_link& l) {
    asio_error_code ec;
    if (l.socket.available(ec) > 0) return true;
    if (!ec) {
      std::array<std::byte, 1> byte{};
      l.socket.non_blocking(true, ec);
      if (!ec) {
        const std::size_t n =
            l.socket.receive(asio_net::buffer(byte), asio_tcp::socket::message_peek, ec);
        asio_error_code ignored;
        l.socket.non_blocking(false, ignored);
        if (ec == asio_net::error::would_block || ec == asio_net::error::try_again) return false;
        if (!ec) return n > 0;
      }
    }
    throw asio_defect(l.name + ": " + describe_error(ec));
  }

  void io_error(const asio_link& l, const asio_error_code& ec) {
    if (!failure.empty() || ec == asio_net::error::operation_aborted) return;
    set_error(l.name + ": " + describe_error(ec));
  }

  // After a failed write on `l` with no read in progress on it: the frames that already arrived
  // (non-blocking, at most 64 KiB), scanned for the peer's abort frame; its message or "".
  static std::string harvest_abort(asio_link& l) noexcept {
    try {
      std::vector<unsigned char> buf(65536);
      std::size_t have = 0;
      asio_error_code ec;
      l.socket.non_blocking(true, ec);
      while (!ec && have < buf.size()) {
        const std::size_t n =
            l.socket.read_some(asio_net::buffer(buf.data() + have, buf.size() - have), ec);
        if (n == 0) break;
        have += n;
      }
      if (const auto payload = asio_wire::find_abort(std::span(buf.data(), have))) {
        return asio_printable(std::as_bytes(*payload));
      }
    } catch (...) {  // best effort only
    }
    return {};
  }

  static bool matches(const asio_wire::header& want, const asio_wire::header& h) noexcept {
    if (h.type != want.type) return false;
    if (want.type == asio_wire::kind::message) return h.tag == want.tag;
    return h.routine == want.routine && h.seq == want.seq && h.tag == want.tag;
  }

  static const char* dtype_name(asio_wire::dtype d) noexcept {
    switch (d) {
      case asio_wire::dtype::bytes: return "bytes";
      case asio_wire::dtype::f32: return "float";
      case asio_wire::dtype::f64: return "double";
    }
    return "unknown elements";
  }

  // "" if a frame `h` that matches `want` is acceptable.
  static std::string check_match(const asio_wire::header& want, const asio_wire::header& h) {
    const bool data =
        want.type == asio_wire::kind::collective || want.type == asio_wire::kind::message;
    if (h.length != want.length) {
      return asio_wire::describe(h) + " has " + std::to_string(h.length) + " bytes, expected " +
             std::to_string(want.length) + (data ? " (the ranks passed different lengths)" : "");
    }
    if (h.element != want.element) {
      return asio_wire::describe(h) + " carries " + dtype_name(h.element) + ", expected " +
             dtype_name(want.element);
    }
    if (want.type == asio_wire::kind::message && h.seq != want.seq) {
      return asio_wire::describe(h) + " is message #" + std::to_string(h.seq) + ", expected #" +
             std::to_string(want.seq);
    }
    return {};
  }

  static std::string mismatch(const asio_wire::header& want, const asio_wire::header& h) {
    std::string s = "expected " + asio_wire::describe(want) + ", got " + asio_wire::describe(h);
    if (want.type == asio_wire::kind::collective && h.type == asio_wire::kind::collective) {
      s += " (the ranks called collectives in different orders)";
    }
    return s;
  }

  void start_read(asio_read& r) {
    r.last = asio_clock::now();
    r.done = false;
    auto& st = r.link->stash;
    for (auto it = st.begin(); it != st.end(); ++it) {
      if (matches(r.want, it->h)) {
        const std::string bad = check_match(r.want, it->h);
        if (!bad.empty()) throw asio_defect(r.link->name + ": " + bad);
        std::copy(it->payload.begin(), it->payload.end(), r.dest.begin());
        stashed_bytes -= it->payload.size();
        st.erase(it);
        r.done = true;
        return;
      }
      if (r.want.type == asio_wire::kind::collective && it->h.type == asio_wire::kind::collective) {
        throw asio_defect(r.link->name + ": " + mismatch(r.want, it->h));
      }
    }
    r.state = asio_read::phase::header;
    r.got = 0;
    read_header(r);
  }

  void read_header(asio_read& r) {
    r.link->socket.async_read_some(
        asio_net::buffer(r.hbuf.data() + r.got, asio_wire::header_size - r.got),
        [this, &r](const asio_error_code& ec, std::size_t n) {
          if (!failure.empty()) return;
          if (ec) return io_error(*r.link, ec);
          r.last = asio_clock::now();
          r.got += n;
          if (r.got < asio_wire::header_size) return read_header(r);
          r.got = 0;
          r.h = asio_wire::decode(r.hbuf);
          const std::string bad = classify(r);
          if (!bad.empty()) return set_error(r.link->name + ": " + bad);
          if (r.target.empty()) return complete(r);
          read_payload(r);
        });
  }

  void read_payload(asio_read& r) {
    r.link->socket.async_read_some(
        asio_net::buffer(r.target.data() + r.got, r.target.size() - r.got),
        [this, &r](const asio_error_code& ec, std::size_t n) {
          if (!failure.empty()) return;
          if (ec) return io_error(*r.link, ec);
          r.last = asio_clock::now();
          r.got += n;
          if (r.got < r.target.size()) return read_payload(r);
          complete(r);
        });
  }

  // Validates a received header against what `r` wants and decides where its payload goes.
  // Nothing is allocated before the length is known to be acceptable.
  std::string classify(asio_read& r) {
    const asio_wire::header& h = r.h;
    const std::uint64_t max = settings.max_frame_bytes;
    if (h.magic != asio_wire::magic) {
      return "bad magic " + asio_wire::hex32(h.magic) + " (not a DHO2 frame)";
    }
    if (h.version != asio_wire::protocol_version) {
      return "protocol version " + std::to_string(h.version) + ", this rank speaks " +
             std::to_string(asio_wire::protocol_version);
    }
    if (h.type == asio_wire::kind::abort) {
      if (h.length > asio_wire::max_abort_size) {
        return "abort frame of " + std::to_string(h.length) + " bytes (at most " +
               std::to_string(asio_wire::max_abort_size) + ")";
      }
      r.tmp.assign(static_cast<std::size_t>(h.length), std::byte{0});
      r.target = r.tmp;
      r.state = asio_read::phase::abort;
      return {};
    }
    if (matches(r.want, h)) {
      std::string bad = check_match(r.want, h);
      if (!bad.empty()) return bad;
      r.target = r.dest;
      r.state = asio_read::phase::payload;
      return {};
    }
    const bool parkable =
        h.type == asio_wire::kind::message ||
        (h.type == asio_wire::kind::collective && r.want.type == asio_wire::kind::message);
    if (r.stash_others && parkable) {
      if (h.length > max) {
        return asio_wire::describe(h) + " has " + std::to_string(h.length) +
               " bytes, more than max_frame_bytes = " + std::to_string(max);
      }
      if (stashed_bytes + h.length > max) {
        return "more than max_frame_bytes = " + std::to_string(max) +
               " bytes of frames received ahead of the calls that want them";
      }
      r.tmp.assign(static_cast<std::size_t>(h.length), std::byte{0});
      r.target = r.tmp;
      r.state = asio_read::phase::stash;
      return {};
    }
    return mismatch(r.want, h);
  }

  void complete(asio_read& r) {
    switch (r.state) {
      case asio_read::phase::header:
      case asio_read::phase::payload: r.done = true; return;
      case asio_read::phase::stash:
        stashed_bytes += r.tmp.size();
        r.link->stash.push_back(asio_frame{r.h, std::move(r.tmp)});
        r.tmp = {};
        if (r.stash_one) {
          r.done = true;
          return;
        }
        r.state = asio_read::phase::header;
        r.got = 0;
        read_header(r);
        return;
      case asio_read::phase::abort:
        set_error(r.link->name + " failed: " + asio_printable(r.tmp));
        return;
    }
  }

  void start_write(asio_write& w) {
    if (w.payload.size() > settings.max_frame_bytes) {
      throw asio_defect("a frame of " + std::to_string(w.payload.size()) + " bytes for " +
                        w.link->name +
                        " exceeds max_frame_bytes = " + std::to_string(settings.max_frame_bytes));
    }
    w.last = asio_clock::now();
    w.done = false;
    w.sent = 0;
    w.link->writing = true;
    write_some(w);
  }

  void write_some(asio_write& w) {
    std::array<asio_net::const_buffer, 2> bufs;
    if (w.sent < asio_wire::header_size) {
      bufs[0] = asio_net::buffer(w.hbuf.data() + w.sent, asio_wire::header_size - w.sent);
      bufs[1] = asio_net::buffer(w.payload.data(), w.payload.size());
    } else {
      const std::size_t off = w.sent - asio_wire::header_size;
      bufs[0] = asio_net::buffer(w.payload.data() + off, w.payload.size() - off);
      bufs[1] = asio_net::const_buffer();
    }
    w.link->socket.async_write_some(bufs, [this, &w](const asio_error_code& ec, std::size_t n) {
      if (!failure.empty() || ec == asio_net::error::operation_aborted) return;
      if (ec) {
        w.broken = describe_error(ec);  // wait() decides: the peer's abort frame may follow
        return;
      }
      w.last = asio_clock::now();
      w.sent += n;
      if (w.sent < asio_wire::header_size + w.payload.size()) return write_some(w);
      w.done = true;
      w.link->writing = false;
    });
  }

  void wait(std::span<asio_read> reads, std::span<asio_write> writes) {
    for (;;) {
      if (!error.empty()) throw asio_defect(error);
      for (const auto& w : writes) {
        if (w.broken.empty()) continue;
        // A peer that failed sent an abort frame before closing: a read in progress on the
        // same connection will find it; otherwise look for it in what has arrived.
        const bool reading = std::any_of(reads.begin(), reads.end(), [&](const asio_read& r) {
          return !r.done && r.link == w.link;
        });
        if (reading) continue;
        const std::string cause = harvest_abort(*w.link);
        throw asio_defect(cause.empty() ? w.link->name + ": " + w.broken
                                        : w.link->name + " failed: " + cause);
      }
      auto deadline = asio_clock::time_point::max();
      const asio_read* late_read = nullptr;
      const asio_write* late_write = nullptr;
      for (const auto& r : reads) {
        if (!r.done && r.last + r.timeout < deadline) {
          deadline = r.last + r.timeout;
          late_read = &r;
          late_write = nullptr;
        }
      }
      for (const auto& w : writes) {
        if (!w.done && w.broken.empty() && w.last + w.timeout < deadline) {
          deadline = w.last + w.timeout;
          late_write = &w;
          late_read = nullptr;
        }
      }
      if (!late_read && !late_write) return;
      if (asio_clock::now() >= deadline) {
        if (late_read) {
          std::string s =
              late_read->link->name + ": no data for " + asio_seconds(late_read->timeout);
          if (late_read->state != asio_read::phase::header || late_read->got > 0) {
            s += " (inside a frame)";
          }
          throw asio_defect(s);
        }
        throw asio_defect(late_write->link->name + ": could not send for " +
                          asio_seconds(late_write->timeout) + " (the peer is not receiving)");
      }
      if (ctx.run_one_until(deadline) == 0 && ctx.stopped()) {
        if (!error.empty()) throw asio_defect(error);
        throw asio_defect("internal error: no I/O pending");
      }
    }
  }
};

}  // namespace dho2::detail
