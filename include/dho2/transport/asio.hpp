/// @file
/// `dho2::asio_transport`: the transport of P ranks that are processes (or threads) talking TCP
/// over Boost.Asio, for machines without MPI; its options, `dho2::asio_options` (how a rank finds
/// the others), are in `<dho2/transport/asio_options.hpp>`. Opt-in: include `<dho2/asio.hpp>` and
/// link `dho2::asio` (Boost headers, Threads and OpenSSL's libcrypto).
///
/// The wire protocol (frames, handshake, hello, table, split records, aborts, limits) is
/// documented in docs/asio_wire_protocol.md.
///
/// **Authentication**: every connection — rank r to rank 0 at the rendezvous, rank i to rank j in
/// the mesh, and the meshes of `split` groups — starts with a mutual challenge–response over
/// HMAC-SHA256 keyed with `asio_options::secret` (shared by all ranks; the empty key when there is
/// none, see `asio_authentication`). A proof answers a fresh nonce of the verifier and names both
/// ranks, the world size, the protocol version and the session, so a proof recorded on another
/// connection (or reflected back, or sent for another rank) does not verify. The handshake
/// authenticates the peers; it does not encrypt or sign the traffic that follows (use a private
/// network, a VPN or an SSH tunnel against an attacker on the wire).
///
/// **Refusals**: the accepting side (rank 0 at the rendezvous, every rank's mesh listener)
/// runs the handshakes of all its connections *concurrently* (up to 128 at once; beyond, the
/// oldest not yet authenticated is dropped), each within `handshake_timeout` of its accept, so
/// idle, slow or hostile connections never delay the real peers. It *refuses* a connection that
/// does not complete the handshake (garbage, another protocol version, silence for `timeout`, no
/// complete handshake within `handshake_timeout`, a wrong world size, rank claim or proof, a rank
/// that already joined), and closes those still in their handshake once every rank has joined:
/// it sends it an abort frame with the reason, closes it, reports it to
/// `asio_options::on_refusal` (by default a `std::clog` line `"dho2: asio rendezvous [rank 0,
/// world size 3]: refused the connection from 127.0.0.1:40123: authentication failed: ..."`;
/// at most 10 reports per 10 s, the others summed up in one report) and *keeps waiting* for the
/// right peer until `connect_timeout`. Then it throws
/// `dho2::transport_error` naming the missing ranks and the first refusals, e.g. `"... only 1 of 2
/// ranks joined within connect_timeout = 5.0 s (missing: 2); refused 1 connection:
/// 127.0.0.1:40123: authentication failed: ..."`, which the ranks already joined learn from its
/// abort frame. The connecting side cannot wait for a better peer: a refusal, a wrong proof or an
/// unexpected offer fails its constructor at once (`"peer 0 (...) failed: ... refused the
/// connection ...: authentication failed ..."`). An authenticated
/// rank whose hello then disagrees (options, byte order) is a misconfigured job, not a stranger:
/// that fails the rendezvous on every rank at once.
///
/// **Rendezvous** (in the constructor; every wait bounded by `connect_timeout`, ranks > 0 wait
/// up to `connect_timeout + timeout` for rank 0's answer): rank 0 listens on `port` (bound to
/// `bind_address`; the others reach it at `host:port`); every other rank listens on an ephemeral
/// port of its own (bound to `bind_address`, loopback unless told otherwise) and connects to rank
/// 0, retrying while rank 0 is not up yet. Rank 0 checks that every rank's options that must agree
/// (`size`, `max_frame_bytes`, `direct_all_reduce_bytes`) and byte order equal its own. Then every
/// pair of ranks gets one authenticated connection: a full mesh of P(P − 1)/2 connections
/// (TCP_NODELAY), reused by every collective and message, meant for P up to a few dozen (the
/// bandwidth-bound collectives only use the ring neighbours). Frames a rank does not yet want
/// (messages for a later `recv`) are buffered up to `max_frame_bytes` in total.
///
/// **Algorithms** (P ranks, n elements of e bytes; right = rank + 1, left = rank − 1, mod P):
///  - `all_reduce_sum`, n·e ≤ `direct_all_reduce_bytes`: every rank sends its vector to every
///    other rank and sums all P in rank order (((x₀ + x₁) + x₂) + …) + x_{P−1}; one round trip.
///    Above: a ring. The vector is cut into P even chunks; reduce-scatter in P − 1 steps (at step
///    k rank r sends its partial sum of chunk r − 1 − k to the right and adds the left's partial
///    sum of chunk r − 2 − k to its own), so chunk c is summed in the fixed order
///    (((x_{c+1} + x_{c+2}) + …) + x_c), by one rank only; then an all-gather in P − 1 steps
///    gives every rank the same bytes. Each rank sends and receives ≈ 2n·e(P − 1)/P bytes,
///    independent of P. Both algorithms are bit-identical on every rank and in every run;
///  - `reduce_scatter_sum` and `all_gather`: the two halves of the ring with the caller's
///    (possibly uneven or empty) shards;
///  - `broadcast`: a binomial tree rooted at `root` (⌈log₂ P⌉ rounds);
///  - `barrier`: dissemination (⌈log₂ P⌉ rounds of empty frames);
///  - `split`: a collective over the parent: every rank opens a new ephemeral listener, the
///    (color, key, port) records are all-gathered over the parent, and each sub-group builds its
///    own authenticated mesh of new connections (token derived from the parent's). Parent and child
///    are independent objects with their own sockets and io_context, so they can be used from
///    different threads;
///  - `send` writes one frame and returns once the kernel has taken it (it blocks only while
///    the peer's socket buffers are full); `recv` takes the first frame with its tag from
///    the peer, buffering frames with other tags. A rank may send to itself (a local queue).
///    `poll` (`dho2::polling_transport`) buffers the frames that have started to arrive and
///    says whether one with its tag is among them.
///
/// **Failures**: each read or write has a deadline of `timeout` *without progress* (a large
/// transfer that keeps moving never times out). A closed connection, a missed deadline, a
/// malformed or unexpected frame (different routine, sequence number, length or element type:
/// the ranks called collectives differently) or an argument error throws
/// `dho2::transport_error` of the form
/// `"asio all_reduce_sum [rank 0, world size 4]: peer 2 (127.0.0.1:40123): connection closed"`
/// or `"...: peer 2 (127.0.0.1:40123): no data for 2.0 s"`. The transport is then *poisoned*:
/// it sends a best-effort abort frame carrying the message to every peer, closes all its
/// sockets (so peers blocked on it fail at once, with "peer 0 (...) failed: <the message>"), and
/// every later call throws immediately. Destroying a transport closes its sockets: peers waiting
/// on it see "connection closed" (or "connection reset") at once. No failure leaves a rank
/// waiting longer than `timeout` per step (`connect_timeout` in the rendezvous). A rank that
/// already holds everything a collective needs from its peers may complete it while a peer
/// fails; its next call then throws with the peer's cause.
///
/// **Threads**: none. Every wait runs the transport's own `io_context` on the calling thread.
/// One object is used by one thread at a time (the concept's rule).
///
/// Example (each process, with DHO2_RANK, DHO2_WORLD_SIZE, DHO2_RENDEZVOUS=host:port set):
/// ```
/// dho2::asio_transport t(dho2::asio_options::from_environment());
/// std::vector<double> g(1000, t.rank());
/// t.all_reduce_sum(std::span<double>(g));  // every entry is 0 + 1 + … + (P − 1) on every rank
/// ```
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/concepts/polling_transport.hpp>
#include <dho2/core/errors.hpp>
#include <dho2/core/types.hpp>
#include <dho2/transport/asio_options.hpp>
#include <dho2/transport/detail/asio_frame.hpp>
#include <dho2/transport/detail/asio_io.hpp>
#include <dho2/transport/detail/asio_mesh.hpp>
#include <dho2/transport/detail/asio_rendezvous.hpp>
#include <dho2/transport/detail/call_timer.hpp>
#include <dho2/transport/detail/collective_checks.hpp>
#include <dho2/transport/transport_stats.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace dho2 {

/// One rank of a group of P ranks connected by TCP; models `dho2::transport` (the contract is in
/// `<dho2/concepts/transport.hpp>`; the algorithms and failure semantics in the file comment
/// above, the protocol in docs/asio_wire_protocol.md). Move-only; a moved-from object can only be
/// destroyed or assigned to.
///
/// Traffic accounting (`stats()`, see `dho2::transport_stats`): payload bytes of the frames this
/// rank writes and reads (headers, the rendezvous, `barrier` and `split` are not counted). With
/// n elements of e bytes, s_r this rank's shard and c_r its ring chunk (the even split of n):
///  - `all_reduce_sum`: direct: sent = received = (P − 1)·n·e; ring: sent = (2n − c_r − c_{r+1})·e,
///    received = (2n − c_{r−1} − c_r)·e, ≈ 2n·e(P − 1)/P each (reduce-scatter plus all-gather);
///  - `reduce_scatter_sum`: sent = (n − s_r)·e, received = (n − s_{r−1})·e (every shard but
///    one passes through each rank once);
///  - `all_gather`: sent = (n − s_{r+1})·e, received = (n − s_r)·e;
///  - `broadcast` of b bytes: b per child sent, b received (except at the root);
///  - `send` / `recv` of b bytes to or from another rank: b; to or from itself: nothing.
class asio_transport {
 public:
  /// Joins the group described by `options` (validated first; throws `dho2::invalid_options`):
  /// runs the rendezvous and builds the mesh, every connection authenticated (see the file
  /// comment). Blocks until every rank has joined, refusing (and reporting to
  /// `options.on_refusal`) connections that fail the authentication; throws
  /// `dho2::transport_error` if the group is not complete within `options.connect_timeout` (the
  /// message names the missing ranks and the refusals), if a listener of a peer refuses this
  /// rank, or on an inconsistent hello (options or byte order differ).
  explicit asio_transport(const asio_options& options) : rank_(options.rank), size_(options.size) {
    options.validate();
    detail::asio_settings s;
    s.timeout = options.timeout;
    s.connect_timeout = options.connect_timeout;
    s.handshake_timeout = options.handshake_timeout;
    s.max_frame_bytes = options.max_frame_bytes;
    s.direct_all_reduce_bytes = options.direct_all_reduce_bytes;
    s.bind_address = options.bind_address;
    s.secret = options.secret;
    s.on_refusal = options.on_refusal;
    mesh_ = std::make_unique<detail::asio_mesh>(rank_, size_, std::move(s));
    if (size_ > 1) {
      if (rank_ == 0) {
        detail::asio_rendezvous_root(*mesh_, options.port);
      } else {
        detail::asio_rendezvous_member(*mesh_, options.host, options.port);
      }
    }
  }

  asio_transport(const asio_transport&) = delete;
  asio_transport& operator=(const asio_transport&) = delete;
  /// Takes over `other`'s connections; `other` is left empty (every call on it throws).
  asio_transport(asio_transport&& other) noexcept = default;
  /// Closes this transport's connections (if any), then takes over `other`'s.
  asio_transport& operator=(asio_transport&& other) noexcept = default;
  /// Closes every connection: peers waiting on this rank fail at once ("connection closed").
  ~asio_transport() = default;

  /// This rank's index in [0, size()).
  [[nodiscard]] int rank() const noexcept { return rank_; }
  /// Number of ranks in the group.
  [[nodiscard]] int size() const noexcept { return size_; }
  /// True once a failure has poisoned this transport (every call then throws).
  [[nodiscard]] bool failed() const noexcept { return !mesh_ || !mesh_->io().failure().empty(); }

  /// In place, every rank gets the element-wise sum over ranks (direct or ring, see the file
  /// comment; bit-identical on every rank). All ranks pass the same length.
  template <model_scalar E>
  void all_reduce_sum(std::span<E> values) {
    auto& e = mesh("all_reduce_sum");
    const detail::call_timer timer(stats_, &e.io().traffic());
    if (size_ == 1) return;
    const std::uint64_t seq = ++seq_;
    const std::size_t n = values.size();
    const auto p = static_cast<std::size_t>(size_);
    const auto me = static_cast<std::size_t>(rank_);
    auto* bytes = reinterpret_cast<std::byte*>(values.data());
    if (n * sizeof(E) <= e.settings().direct_all_reduce_bytes) {
      std::vector<E>& slots = scratch<E>(0);
      slots.resize(n * p);
      std::vector<detail::asio_read> reads;
      std::vector<detail::asio_write> writes;
      reads.reserve(p - 1);
      writes.reserve(p - 1);
      const auto h =
          header(detail::asio_wire::op::all_reduce_sum, seq, 0, detail::asio_wire::dtype_of<E>());
      for (std::size_t q = 0; q < p; ++q) {
        if (q == me) continue;
        writes.push_back(e.make_write(static_cast<int>(q), h, std::as_bytes(values)));
        reads.push_back(e.make_read(static_cast<int>(q), h,
                                    std::as_writable_bytes(std::span<E>(slots.data() + q * n, n))));
      }
      e.exchange("all_reduce_sum", reads, writes);
      for (std::size_t i = 0; i < n; ++i) {
        E s = me == 0 ? values[i] : slots[i];
        for (std::size_t q = 1; q < p; ++q) s += q == me ? values[i] : slots[q * n + i];
        values[i] = s;
      }
      return;
    }
    std::vector<std::size_t> chunk(p + 1);
    for (std::size_t c = 0; c <= p; ++c) chunk[c] = n / p * c + std::min(c, n % p);
    std::vector<E>& tmp = scratch<E>(0);
    tmp.resize(n / p + 1);
    for (std::size_t k = 0; k + 1 < p; ++k) {
      const std::size_t cs = ring_index(me, 1 + k);
      const std::size_t cr = ring_index(me, 2 + k);
      const std::size_t len = chunk[cr + 1] - chunk[cr];
      ring_step(e, "all_reduce_sum",
                header(detail::asio_wire::op::all_reduce_sum, seq, static_cast<int>(k),
                       detail::asio_wire::dtype_of<E>()),
                std::as_bytes(values.subspan(chunk[cs], chunk[cs + 1] - chunk[cs])),
                std::as_writable_bytes(std::span<E>(tmp.data(), len)));
      E* own = values.data() + chunk[cr];
      for (std::size_t i = 0; i < len; ++i) own[i] = tmp[i] + own[i];
    }
    std::vector<std::size_t> byte_chunk(p + 1);
    for (std::size_t c = 0; c <= p; ++c) byte_chunk[c] = chunk[c] * sizeof(E);
    ring_gather(e, "all_reduce_sum", detail::asio_wire::op::all_reduce_sum, seq,
                static_cast<int>(p) - 1, detail::asio_wire::dtype_of<E>(), bytes, byte_chunk);
  }

  /// `out` (this rank's shard, offsets[rank + 1] − offsets[rank] entries) gets this rank's shard
  /// of the element-wise sum over ranks of `in` (offsets.back() entries on every rank); the ring
  /// reduce-scatter of the file comment. Empty shards are allowed.
  template <model_scalar E>
  void reduce_scatter_sum(std::span<const E> in, std::span<E> out, std::span<const index> offsets) {
    auto& e = mesh("reduce_scatter_sum");
    const detail::call_timer timer(stats_, &e.io().traffic());
    check_shards(e, "reduce_scatter_sum", offsets, in.size(), out.size(), "in", "out");
    const auto p = static_cast<std::size_t>(size_);
    const auto me = static_cast<std::size_t>(rank_);
    const auto off = [&](std::size_t c) { return static_cast<std::size_t>(offsets[c]); };
    const auto len = [&](std::size_t c) { return off(c + 1) - off(c); };
    if (size_ == 1) {
      std::copy(in.begin(), in.end(), out.begin());
      return;
    }
    const std::uint64_t seq = ++seq_;
    std::size_t widest = 0;
    for (std::size_t c = 0; c < p; ++c) widest = std::max(widest, len(c));
    scratch<E>(0).resize(widest);
    scratch<E>(1).resize(widest);
    for (std::size_t k = 0; k + 1 < p; ++k) {
      const std::size_t cs = ring_index(me, 1 + k);
      const std::size_t cr = ring_index(me, 2 + k);
      const E* send =
          k == 0 ? in.data() + off(cs) : scratch<E>(static_cast<int>((k - 1) % 2)).data();
      E* recv = k + 2 == p ? out.data() : scratch<E>(static_cast<int>(k % 2)).data();
      ring_step(e, "reduce_scatter_sum",
                header(detail::asio_wire::op::reduce_scatter_sum, seq, static_cast<int>(k),
                       detail::asio_wire::dtype_of<E>()),
                std::as_bytes(std::span<const E>(send, len(cs))),
                std::as_writable_bytes(std::span<E>(recv, len(cr))));
      const E* own = in.data() + off(cr);
      for (std::size_t i = 0; i < len(cr); ++i) recv[i] = recv[i] + own[i];
    }
  }

  /// `out` (offsets.back() entries) gets every rank's shard `in` (offsets[rank + 1] −
  /// offsets[rank] entries) in rank order; the ring all-gather of the file comment. `in` may be
  /// this rank's part of `out` (in place).
  template <model_scalar E>
  void all_gather(std::span<const E> in, std::span<E> out, std::span<const index> offsets) {
    auto& e = mesh("all_gather");
    const detail::call_timer timer(stats_, &e.io().traffic());
    check_shards(e, "all_gather", offsets, out.size(), in.size(), "out", "in");
    const auto p = static_cast<std::size_t>(size_);
    const auto me = static_cast<std::size_t>(rank_);
    E* mine = out.data() + offsets[me];
    if (!in.empty() && in.data() != mine) std::memmove(mine, in.data(), in.size_bytes());
    if (size_ == 1) return;
    const std::uint64_t seq = ++seq_;
    std::vector<std::size_t> byte_off(p + 1);
    for (std::size_t c = 0; c <= p; ++c) {
      byte_off[c] = static_cast<std::size_t>(offsets[c]) * sizeof(E);
    }
    ring_gather(e, "all_gather", detail::asio_wire::op::all_gather, seq, 0,
                detail::asio_wire::dtype_of<E>(), reinterpret_cast<std::byte*>(out.data()),
                byte_off);
  }

  /// Every rank gets `root`'s bytes (all ranks pass the same length); a binomial tree.
  void broadcast(std::span<std::byte> bytes, int root) {
    auto& e = mesh("broadcast");
    const detail::call_timer timer(stats_, &e.io().traffic());
    if (root < 0 || root >= size_) {
      e.fail(e.prefix("broadcast") + ": root " + std::to_string(root) + " out of range [0, " +
             std::to_string(size_) + ")");
    }
    if (size_ == 1) return;
    const std::uint64_t seq = ++seq_;
    const auto h =
        header(detail::asio_wire::op::broadcast, seq, 0, detail::asio_wire::dtype::bytes);
    const int v = (rank_ - root + size_) % size_;
    int mask = 1;
    while (mask < size_) {
      if ((v & mask) != 0) {
        auto r = e.make_read((v - mask + root) % size_, h, bytes);
        e.exchange("broadcast", std::span(&r, 1), {});
        break;
      }
      mask <<= 1;
    }
    std::vector<detail::asio_write> writes;
    for (mask >>= 1; mask > 0; mask >>= 1) {
      if (v + mask < size_) writes.push_back(e.make_write((v + mask + root) % size_, h, bytes));
    }
    if (!writes.empty()) e.exchange("broadcast", {}, writes);
  }

  /// Returns once every rank has entered the barrier (dissemination, ⌈log₂ P⌉ rounds).
  void barrier() {
    auto& e = mesh("barrier");
    const detail::call_timer timer(stats_, &e.io().traffic());
    if (size_ == 1) return;
    const std::uint64_t seq = ++seq_;
    int round = 0;
    for (int d = 1; d < size_; d <<= 1, ++round) {
      const auto h =
          header(detail::asio_wire::op::barrier, seq, round, detail::asio_wire::dtype::bytes);
      auto w = e.make_write((rank_ + d) % size_, h, {});
      auto r = e.make_read((rank_ - d + size_) % size_, h, {});
      e.exchange("barrier", std::span(&r, 1), std::span(&w, 1));
    }
  }

  /// The transport of the sub-group of ranks that passed the same `color`, ranked by
  /// (key, rank in this group); a collective over this group. The sub-group gets its own
  /// connections (a new mesh, see the file comment) and inherits the options.
  [[nodiscard]] asio_transport split(int color, int key) {
    auto& e = mesh("split");
    const detail::call_timer timer(stats_, &e.io().traffic());
    auto child = std::make_unique<detail::asio_mesh>(0, 1, e.settings());
    if (size_ == 1) return asio_transport(std::move(child));
    const std::uint64_t seq = ++seq_;
    try {
      child->open_acceptor(0);
    } catch (const std::exception& ex) {
      e.fail(e.prefix("split") + ": " + ex.what());
    }
    const auto p = static_cast<std::size_t>(size_);
    namespace w = detail::asio_wire;
    std::vector<std::byte> records(p * w::split_record_size);
    const auto mine =
        w::encode_split_record({static_cast<std::int32_t>(color), static_cast<std::int32_t>(key),
                                child->listen_endpoint().port()});
    std::memcpy(records.data() + static_cast<std::size_t>(rank_) * w::split_record_size,
                mine.data(), mine.size());
    std::vector<std::size_t> off(p + 1);
    for (std::size_t c = 0; c <= p; ++c) off[c] = c * w::split_record_size;
    ring_gather(e, "split", w::op::split, seq, 0, w::dtype::bytes, records.data(), off, false);
    detail::asio_split_mesh(
        e, *child,
        std::span(reinterpret_cast<const unsigned char*>(records.data()), records.size()), color);
    return asio_transport(std::move(child));
  }

  /// Sends `bytes` to `peer` with `tag`; returns once the bytes are handed to the kernel (blocks
  /// only while the peer's buffers are full). Messages to one peer with one tag arrive in order.
  /// `peer` may be this rank (the message is queued locally).
  void send(std::span<const std::byte> bytes, int peer, int tag) {
    auto& e = mesh("send");
    const detail::call_timer timer(stats_, &e.io().traffic());
    check_peer(e, "send", peer);
    if (peer == rank_) {
      if (!e.io().queue_self(tag, bytes)) {
        e.fail(e.prefix("send") + ": more than max_frame_bytes = " +
               std::to_string(e.settings().max_frame_bytes) + " bytes queued to this rank itself");
      }
      return;
    }
    auto& link = e.link(peer);
    detail::asio_wire::header h;
    h.type = detail::asio_wire::kind::message;
    h.tag = tag;
    h.seq = link.next_sent(tag);
    auto w = e.make_write(peer, h, bytes);
    e.exchange("send", {}, std::span(&w, 1));
    link.count_sent(tag);
  }

  /// Receives into `bytes` the next message from `peer` with `tag` (its length must equal
  /// `bytes.size()`), waiting at most `timeout` without progress.
  void recv(std::span<std::byte> bytes, int peer, int tag) {
    auto& e = mesh("recv");
    const detail::call_timer timer(stats_, &e.io().traffic());
    check_peer(e, "recv", peer);
    if (peer == rank_) {
      const detail::asio_frame* it = e.io().self_message(tag);
      if (it == nullptr) {
        e.fail(e.prefix("recv") + ": no message from this rank to itself with tag " +
               std::to_string(tag) + " (it would never arrive)");
      }
      if (it->payload.size() != bytes.size()) {
        e.fail(e.prefix("recv") + ": the message from this rank to itself with tag " +
               std::to_string(tag) + " has " + std::to_string(it->payload.size()) +
               " bytes, expected " + std::to_string(bytes.size()));
      }
      std::copy(it->payload.begin(), it->payload.end(), bytes.begin());
      e.io().pop_self(tag);
      return;
    }
    auto& link = e.link(peer);
    detail::asio_wire::header h;
    h.type = detail::asio_wire::kind::message;
    h.tag = tag;
    h.seq = link.next_received(tag);
    auto r = e.make_read(peer, h, bytes);
    e.exchange("recv", std::span(&r, 1), {});
    link.count_received(tag);
  }

  /// Whether the next message from `peer` with `tag` has arrived (`dho2::polling_transport`):
  /// frames that have started to arrive are read to their end (within `timeout`) and buffered,
  /// nothing that has not started is waited for, and nothing is consumed. A closed connection,
  /// a peer's abort frame or a malformed frame throws `dho2::transport_error` as `recv` would.
  [[nodiscard]] bool poll(int peer, int tag) {
    auto& e = mesh("poll");
    check_peer(e, "poll", peer);
    if (peer == rank_) return e.io().self_message(tag) != nullptr;
    return e.poll("poll", peer, tag);
  }

  /// Traffic and time of this transport so far (see the class comment for what is counted).
  [[nodiscard]] const transport_stats& stats() const noexcept { return stats_; }
  /// Sets every counter of `stats()` to zero.
  void reset_stats() noexcept { stats_ = {}; }

 private:
  explicit asio_transport(std::unique_ptr<detail::asio_mesh> m)
      : mesh_(std::move(m)), rank_(mesh_->rank()), size_(mesh_->size()) {}

  detail::asio_mesh& mesh(const char* routine) {
    if (!mesh_) {
      throw transport_error(detail::call_prefix("asio", routine, rank_, size_) +
                            ": this transport was moved from");
    }
    mesh_->check_usable(routine);
    return *mesh_;
  }

  // This transport's scratch vector `i` (0 or 1) of E, kept between calls.
  template <class E>
  std::vector<E>& scratch(int i) {
    if constexpr (sizeof(E) == 4) {
      return scratch_f_[i];
    } else {
      return scratch_d_[i];
    }
  }

  static detail::asio_wire::header header(detail::asio_wire::op o, std::uint64_t seq, int step,
                                          detail::asio_wire::dtype d) noexcept {
    detail::asio_wire::header h;
    h.type = detail::asio_wire::kind::collective;
    h.routine = o;
    h.seq = seq;
    h.tag = step;
    h.element = d;
    return h;
  }

  // (me − back) mod P.
  std::size_t ring_index(std::size_t me, std::size_t back) const noexcept {
    const auto p = static_cast<std::size_t>(size_);
    return (me + p - back % p) % p;
  }

  // One ring step: `out` to the right neighbour while `in` comes from the left one.
  void ring_step(detail::asio_mesh& e, const char* routine, const detail::asio_wire::header& h,
                 std::span<const std::byte> out, std::span<std::byte> in, bool counted = true) {
    auto w = e.make_write((rank_ + 1) % size_, h, out);
    auto r = e.make_read((rank_ - 1 + size_) % size_, h, in);
    w.counted = counted;
    r.counted = counted;
    e.exchange(routine, std::span(&r, 1), std::span(&w, 1));
  }

  // Ring all-gather of the byte ranges [off[c], off[c+1]) of `data` (this rank's range already
  // in place); steps are numbered from `first_step`.
  void ring_gather(detail::asio_mesh& e, const char* routine, detail::asio_wire::op o,
                   std::uint64_t seq, int first_step, detail::asio_wire::dtype d, std::byte* data,
                   const std::vector<std::size_t>& off, bool counted = true) {
    const auto p = static_cast<std::size_t>(size_);
    const auto me = static_cast<std::size_t>(rank_);
    for (std::size_t k = 0; k + 1 < p; ++k) {
      const std::size_t cs = ring_index(me, k);
      const std::size_t cr = ring_index(me, 1 + k);
      ring_step(e, routine, header(o, seq, first_step + static_cast<int>(k), d),
                std::span<const std::byte>(data + off[cs], off[cs + 1] - off[cs]),
                std::span<std::byte>(data + off[cr], off[cr + 1] - off[cr]), counted);
    }
  }

  void check_peer(detail::asio_mesh& e, const char* routine, int peer) {
    if (peer < 0 || peer >= size_) {
      e.fail(e.prefix(routine) + ": peer " + std::to_string(peer) + " out of range [0, " +
             std::to_string(size_) + ")");
    }
  }

  // Fails the transport unless the shard arguments are consistent (detail::shard_error).
  void check_shards(detail::asio_mesh& e, const char* routine, std::span<const index> offsets,
                    std::size_t full, std::size_t shard, const char* full_name,
                    const char* shard_name) {
    const std::string bad =
        detail::shard_error(offsets, rank_, size_, full, shard, full_name, shard_name);
    if (!bad.empty()) e.fail(e.prefix(routine) + ": " + bad);
  }

  std::unique_ptr<detail::asio_mesh> mesh_;
  int rank_;
  int size_;
  std::uint64_t seq_ = 0;  // number of the last collective of this group
  transport_stats stats_;
  std::vector<float> scratch_f_[2];
  std::vector<double> scratch_d_[2];
};

static_assert(polling_transport<asio_transport>);

}  // namespace dho2
