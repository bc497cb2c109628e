// Framed I/O of dho2::asio_transport: one io_context driven by the calling thread, framed reads
// and writes with per-operation progress deadlines, the stash of frames that arrive ahead of
// their call, the queue of messages a rank sends itself, abort frames, and the failure state
// (poison). Every async operation is started and completed inside one call (run(), poll() or
// run_until()), except those started alone (start_alone: the handshakes of accepted connections,
// whose owner runs the io_context and keeps them alive until their `then` has been called); on
// failure the owner closes the sockets and calls drain() before the objects owning the
// operations are destroyed. Wire format: docs/asio_wire_protocol.md.
#pragma once

#include <dho2/detail/internal_header_check.hpp>

#include <dho2/transport/detail/asio_frame.hpp>
#include <dho2/transport/detail/asio_link.hpp>
#include <dho2/transport/detail/call_timer.hpp>

#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/socket_base.hpp>
#include <boost/system/error_code.hpp>
#include <openssl/crypto.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace dho2::detail {

// One framed read: the frame it accepts (want.length = dest.size()) and where the payload goes.
struct asio_read {
  asio_link* link = nullptr;
  asio_wire::header want;
  std::span<std::byte> dest;
  bool stash_others = false;  // park message frames (and collectives while in recv)
  bool stash_one = false;     // done after parking one frame (poll)
  bool counted = true;        // payload counts in stats
  std::chrono::milliseconds timeout{};
  // Set for a read started alone (asio_io::start_alone): called once when it ends, with "" or
  // why it failed ("<link name>: ..."; "...: cancelled" when its socket was cancelled or
  // closed), instead of failing a run(). Not called once the transport is poisoned.
  std::function<void(const std::string&)> then;

  bool done() const noexcept { return done_; }
  // When the read fails for want of progress (its timeout after its last byte).
  asio_clock::time_point due() const noexcept { return last_ + timeout; }

 private:
  friend class asio_io;
  enum class phase { header, payload, stash, abort };
  phase state_ = phase::header;
  asio_wire::header_bytes hbuf_{};
  asio_wire::header h_;
  std::vector<std::byte> tmp_;
  std::span<std::byte> target_;
  std::size_t got_ = 0;
  bool done_ = false;
  asio_clock::time_point last_;
};

// One framed write: an encoded header and its payload.
struct asio_write {
  asio_link* link = nullptr;
  asio_wire::header_bytes hbuf{};
  std::span<const std::byte> payload;
  bool counted = true;
  std::chrono::milliseconds timeout{};
  // As asio_read::then, for a write started alone.
  std::function<void(const std::string&)> then;

  bool done() const noexcept { return done_; }
  asio_clock::time_point due() const noexcept { return last_ + timeout; }

 private:
  friend class asio_io;
  std::size_t sent_ = 0;
  bool done_ = false;
  std::string broken_;  // the I/O error that ended the write (the peer's abort may follow)
  asio_clock::time_point last_;
};

class asio_io {
 public:
  explicit asio_io(asio_settings s) : settings_(std::move(s)) {}
  asio_io(const asio_io&) = delete;
  asio_io& operator=(const asio_io&) = delete;
  ~asio_io() {
    if (!settings_.secret.empty()) {
      OPENSSL_cleanse(settings_.secret.data(), settings_.secret.size());
    }
  }

  asio_net::io_context& context() noexcept { return ctx_; }
  const asio_settings& settings() const noexcept { return settings_; }
  // The message of the failure that poisoned the transport, "" while healthy.
  const std::string& failure() const noexcept { return failure_; }
  void poison(const std::string& message) {
    if (failure_.empty()) failure_ = message;
  }
  // Payload bytes of the counted reads and writes of the current call (see call_timer).
  call_bytes& traffic() noexcept { return traffic_; }
  // Bytes of the frames held ahead of their calls (stashes and messages to itself).
  std::uint64_t stashed_bytes() const noexcept { return stashed_bytes_; }

  // Queues a message to this rank itself; false (nothing queued) if the frames held ahead of
  // their calls would exceed max_frame_bytes.
  bool queue_self(std::int32_t tag, std::span<const std::byte> bytes) {
    if (stashed_bytes_ + bytes.size() > settings_.max_frame_bytes) return false;
    asio_frame f;
    f.h.type = asio_wire::kind::message;
    f.h.tag = tag;
    f.payload.assign(bytes.begin(), bytes.end());
    stashed_bytes_ += bytes.size();
    self_.push_back(std::move(f));
    return true;
  }
  // The first queued message to itself with `tag`, or null; pop_self removes it.
  const asio_frame* self_message(std::int32_t tag) const {
    const auto it = find_self(tag);
    return it == self_.end() ? nullptr : &*it;
  }
  void pop_self(std::int32_t tag) {
    const auto it = find_self(tag);
    stashed_bytes_ -= it->payload.size();
    self_.erase(it);
  }

  // A read of a data frame `want` into `dest` from `l`, parking other message frames.
  asio_read make_read(asio_link& l, const asio_wire::header& want,
                      std::span<std::byte> dest) const {
    asio_read r;
    r.link = &l;
    r.want = want;
    r.want.length = dest.size();
    r.dest = dest;
    r.stash_others = true;
    r.timeout = settings_.timeout;
    return r;
  }

  asio_write make_write(asio_link& l, asio_wire::header h,
                        std::span<const std::byte> payload) const {
    asio_write w;
    w.link = &l;
    h.length = payload.size();
    w.hbuf = asio_wire::encode(h);
    w.payload = payload;
    w.timeout = settings_.timeout;
    return w;
  }

  // A read of a handshake frame (nothing parked, nothing counted).
  static asio_read handshake_read(asio_link& l, const asio_wire::header& want,
                                  std::span<std::byte> dest, std::chrono::milliseconds timeout) {
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

  // A write of the auth frame of `step` (0 offer, 1 proof).
  asio_write handshake_write(asio_link& l, std::int32_t step,
                             std::span<const std::byte> payload) const {
    asio_wire::header h = auth_header(step);
    h.length = payload.size();
    asio_write w;
    w.link = &l;
    w.hbuf = asio_wire::encode(h);
    w.payload = payload;
    w.counted = false;
    w.timeout = settings_.timeout;
    return w;
  }

  static asio_wire::header auth_header(std::int32_t step) noexcept {
    asio_wire::header h;
    h.type = asio_wire::kind::auth;
    h.tag = step;
    return h;
  }

  // Starts `reads` and `writes` and waits for all of them; throws on the first problem.
  void run(std::span<asio_read> reads, std::span<asio_write> writes) {
    error_.clear();
    ctx_.restart();
    for (auto& r : reads) start_read(r);
    for (auto& w : writes) start_write(w);
    wait(reads, writes);
  }

  // Starts `op` (whose `then` is set) without waiting: the caller runs the io_context and
  // checks op.due() itself. Several connections' operations may be in progress at once.
  void start_alone(asio_read& op) {
    start_read(op);
    if (op.done_) end(op, {});
  }
  void start_alone(asio_write& op) { start_write(op); }

  // Why `r` / `w`, not done, is late at its due() time.
  static std::string late(const asio_read& r) {
    std::string s = r.link->name_ + ": no data for " + asio_seconds(r.timeout);
    if (r.state_ != asio_read::phase::header || r.got_ > 0) s += " (inside a frame)";
    return s;
  }
  static std::string late(const asio_write& w) {
    return w.link->name_ + ": could not send for " + asio_seconds(w.timeout) +
           " (the peer is not receiving)";
  }

  // Adds the counted payloads of completed `reads` and `writes` to traffic().
  void count(std::span<const asio_read> reads, std::span<const asio_write> writes) noexcept {
    for (const auto& r : reads) {
      if (r.counted) traffic_.received += r.dest.size();
    }
    for (const auto& w : writes) {
      if (w.counted) traffic_.sent += w.payload.size();
    }
  }

  // Whether a message frame with `tag` from `l` is buffered, after buffering the frames that
  // have started to arrive (each read to its end within the timeout) until one is or nothing
  // more is waiting. Never waits for a frame that has not started; throws on a closed
  // connection, an abort frame or a malformed frame.
  bool poll(asio_link& l, std::int32_t tag) {
    const auto stashed = [&] {
      return std::any_of(l.stash_.begin(), l.stash_.end(), [&](const asio_frame& f) {
        return f.h.type == asio_wire::kind::message && f.h.tag == tag;
      });
    };
    while (!stashed()) {
      if (!readable(l)) return false;
      asio_read r;
      r.link = &l;
      r.want.type = asio_wire::kind::message;
      r.want.tag = -1;  // no message has a negative tag: every message frame is buffered
      r.stash_others = true;
      r.stash_one = true;
      r.counted = false;  // counted by the recv that takes it
      r.timeout = settings_.timeout;
      run(std::span(&r, 1), {});
    }
    return true;
  }

  // Runs handlers until `done` or the deadline (false then).
  bool run_until(const bool& done, asio_clock::time_point deadline) {
    ctx_.restart();
    while (!done) {
      if (asio_clock::now() >= deadline) return false;
      if (ctx_.run_one_until(deadline) == 0 && ctx_.stopped() && !done) {
        throw asio_defect("internal error: no I/O pending");
      }
    }
    return true;
  }

  // Runs the handlers of cancelled or closed operations to their end.
  void drain() {
    ctx_.restart();
    ctx_.run();
  }

  // One abort frame with `message` on `l` if it is at a frame boundary; best effort, never blocks.
  static void send_abort(asio_link* l, const std::string& message) noexcept {
    if (!l || l->writing_ || !l->socket_.is_open()) return;
    try {
      const std::string text = message.substr(0, asio_wire::max_abort_size);
      asio_wire::header h;
      h.type = asio_wire::kind::abort;
      h.length = text.size();
      const auto hb = asio_wire::encode(h);
      const std::array<asio_net::const_buffer, 2> bufs{asio_net::buffer(hb),
                                                       asio_net::buffer(text)};
      asio_error_code ec;
      l->socket_.non_blocking(true, ec);
      if (!ec) l->socket_.write_some(bufs, ec);
    } catch (...) {  // best effort only
    }
  }

  static std::string describe_error(const asio_error_code& ec) {
    if (ec == asio_net::error::eof) return "connection closed";
    if (ec == asio_net::error::connection_reset) return "connection reset";
    if (ec == asio_net::error::broken_pipe) return "connection closed (broken pipe)";
    return ec.message();
  }

 private:
  std::deque<asio_frame>::const_iterator find_self(std::int32_t tag) const {
    return std::find_if(self_.begin(), self_.end(),
                        [&](const asio_frame& f) { return f.h.tag == tag; });
  }

  void set_error(std::string message) {
    if (error_.empty()) error_ = std::move(message);
  }

  // Whether bytes from `l` are waiting. available() is 0 both when nothing has arrived and at
  // the end of the stream, so a non-blocking one-byte peek tells the two apart; throws on a
  // closed or broken connection.
  static bool readable(asio_link& l) {
    asio_error_code ec;
    if (l.socket_.available(ec) > 0) return true;
    if (!ec) {
      std::array<std::byte, 1> byte{};
      l.socket_.non_blocking(true, ec);
      if (!ec) {
        const std::size_t n =
            l.socket_.receive(asio_net::buffer(byte), asio_tcp::socket::message_peek, ec);
        asio_error_code ignored;
        l.socket_.non_blocking(false, ignored);
        if (ec == asio_net::error::would_block || ec == asio_net::error::try_again) return false;
        if (!ec) return n > 0;
      }
    }
    throw asio_defect(l.name_ + ": " + describe_error(ec));
  }

  void io_error(const asio_link& l, const asio_error_code& ec) {
    if (!failure_.empty() || ec == asio_net::error::operation_aborted) return;
    set_error(l.name_ + ": " + describe_error(ec));
  }

  // Calls op.then once, moved out first: it may start the next operation in the same object.
  template <class Op>
  static void end(Op& op, std::string why) {
    const auto then = std::move(op.then);
    op.then = nullptr;
    then(why);
  }

  // `message` ends `r`: through its `then` when it runs alone, else as the run's error.
  void fail_read(asio_read& r, std::string message) {
    if (r.then) return end(r, std::move(message));
    set_error(std::move(message));
  }
  void read_failed(asio_read& r, const asio_error_code& ec) {
    if (!r.then) return io_error(*r.link, ec);
    end(r, r.link->name_ + ": " +
               (ec == asio_net::error::operation_aborted ? "cancelled" : describe_error(ec)));
  }

  // After a failed write on `l` with no read in progress on it: the frames that already arrived
  // (non-blocking, at most 64 KiB), scanned for the peer's abort frame; its message or "".
  static std::string harvest_abort(asio_link& l) noexcept {
    try {
      std::vector<unsigned char> buf(65536);
      std::size_t have = 0;
      asio_error_code ec;
      l.socket_.non_blocking(true, ec);
      while (!ec && have < buf.size()) {
        const std::size_t n =
            l.socket_.read_some(asio_net::buffer(buf.data() + have, buf.size() - have), ec);
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

  void start_read(asio_read& r) {
    r.last_ = asio_clock::now();
    r.done_ = false;
    auto& st = r.link->stash_;
    for (auto it = st.begin(); it != st.end(); ++it) {
      if (asio_wire::matches(r.want, it->h)) {
        const std::string bad = asio_wire::check_match(r.want, it->h);
        if (!bad.empty()) throw asio_defect(r.link->name_ + ": " + bad);
        std::copy(it->payload.begin(), it->payload.end(), r.dest.begin());
        stashed_bytes_ -= it->payload.size();
        st.erase(it);
        r.done_ = true;
        return;
      }
      if (r.want.type == asio_wire::kind::collective && it->h.type == asio_wire::kind::collective) {
        throw asio_defect(r.link->name_ + ": " + asio_wire::mismatch(r.want, it->h));
      }
    }
    r.state_ = asio_read::phase::header;
    r.got_ = 0;
    read_header(r);
  }

  void read_header(asio_read& r) {
    r.link->socket_.async_read_some(
        asio_net::buffer(r.hbuf_.data() + r.got_, asio_wire::header_size - r.got_),
        [this, &r](const asio_error_code& ec, std::size_t n) {
          if (!failure_.empty()) return;
          if (ec) return read_failed(r, ec);
          r.last_ = asio_clock::now();
          r.got_ += n;
          if (r.got_ < asio_wire::header_size) return read_header(r);
          r.got_ = 0;
          r.h_ = asio_wire::decode(r.hbuf_);
          const std::string bad = classify(r);
          if (!bad.empty()) return fail_read(r, r.link->name_ + ": " + bad);
          if (r.target_.empty()) return complete(r);
          read_payload(r);
        });
  }

  void read_payload(asio_read& r) {
    r.link->socket_.async_read_some(
        asio_net::buffer(r.target_.data() + r.got_, r.target_.size() - r.got_),
        [this, &r](const asio_error_code& ec, std::size_t n) {
          if (!failure_.empty()) return;
          if (ec) return read_failed(r, ec);
          r.last_ = asio_clock::now();
          r.got_ += n;
          if (r.got_ < r.target_.size()) return read_payload(r);
          complete(r);
        });
  }

  // Validates a received header against what `r` wants and decides where its payload goes.
  // Nothing is allocated before the length is known to be acceptable.
  std::string classify(asio_read& r) {
    const asio_wire::header& h = r.h_;
    const std::uint64_t max = settings_.max_frame_bytes;
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
      r.tmp_.assign(static_cast<std::size_t>(h.length), std::byte{0});
      r.target_ = r.tmp_;
      r.state_ = asio_read::phase::abort;
      return {};
    }
    if (asio_wire::matches(r.want, h)) {
      std::string bad = asio_wire::check_match(r.want, h);
      if (!bad.empty()) return bad;
      r.target_ = r.dest;
      r.state_ = asio_read::phase::payload;
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
      if (stashed_bytes_ + h.length > max) {
        return "more than max_frame_bytes = " + std::to_string(max) +
               " bytes of frames received ahead of the calls that want them";
      }
      r.tmp_.assign(static_cast<std::size_t>(h.length), std::byte{0});
      r.target_ = r.tmp_;
      r.state_ = asio_read::phase::stash;
      return {};
    }
    return asio_wire::mismatch(r.want, h);
  }

  void complete(asio_read& r) {
    switch (r.state_) {
      case asio_read::phase::header:
      case asio_read::phase::payload:
        r.done_ = true;
        if (r.then) end(r, {});
        return;
      case asio_read::phase::stash:
        stashed_bytes_ += r.tmp_.size();
        r.link->stash_.push_back(asio_frame{r.h_, std::move(r.tmp_)});
        r.tmp_ = {};
        if (r.stash_one) {
          r.done_ = true;
          if (r.then) end(r, {});
          return;
        }
        r.state_ = asio_read::phase::header;
        r.got_ = 0;
        read_header(r);
        return;
      case asio_read::phase::abort:
        fail_read(r, r.link->name_ + " failed: " + asio_printable(r.tmp_));
        return;
    }
  }

  void start_write(asio_write& w) {
    if (w.payload.size() > settings_.max_frame_bytes) {
      throw asio_defect("a frame of " + std::to_string(w.payload.size()) + " bytes for " +
                        w.link->name_ +
                        " exceeds max_frame_bytes = " + std::to_string(settings_.max_frame_bytes));
    }
    w.last_ = asio_clock::now();
    w.done_ = false;
    w.sent_ = 0;
    w.link->writing_ = true;
    write_some(w);
  }

  void write_some(asio_write& w) {
    std::array<asio_net::const_buffer, 2> bufs;
    if (w.sent_ < asio_wire::header_size) {
      bufs[0] = asio_net::buffer(w.hbuf.data() + w.sent_, asio_wire::header_size - w.sent_);
      bufs[1] = asio_net::buffer(w.payload.data(), w.payload.size());
    } else {
      const std::size_t off = w.sent_ - asio_wire::header_size;
      bufs[0] = asio_net::buffer(w.payload.data() + off, w.payload.size() - off);
      bufs[1] = asio_net::const_buffer();
    }
    w.link->socket_.async_write_some(bufs, [this, &w](const asio_error_code& ec, std::size_t n) {
      if (!failure_.empty()) return;
      if (ec && w.then) {
        return end(
            w, w.link->name_ + ": " +
                   (ec == asio_net::error::operation_aborted ? "cancelled" : describe_error(ec)));
      }
      if (ec == asio_net::error::operation_aborted) return;
      if (ec) {
        w.broken_ = describe_error(ec);  // wait() decides: the peer's abort frame may follow
        return;
      }
      w.last_ = asio_clock::now();
      w.sent_ += n;
      if (w.sent_ < asio_wire::header_size + w.payload.size()) return write_some(w);
      w.done_ = true;
      w.link->writing_ = false;
      if (w.then) end(w, {});
    });
  }

  void wait(std::span<asio_read> reads, std::span<asio_write> writes) {
    for (;;) {
      if (!error_.empty()) throw asio_defect(error_);
      for (const auto& w : writes) {
        if (w.broken_.empty()) continue;
        // A peer that failed sent an abort frame before closing: a read in progress on the
        // same connection will find it; otherwise look for it in what has arrived.
        const bool reading = std::any_of(reads.begin(), reads.end(), [&](const asio_read& r) {
          return !r.done_ && r.link == w.link;
        });
        if (reading) continue;
        const std::string cause = harvest_abort(*w.link);
        throw asio_defect(cause.empty() ? w.link->name_ + ": " + w.broken_
                                        : w.link->name_ + " failed: " + cause);
      }
      auto deadline = asio_clock::time_point::max();
      const asio_read* late_read = nullptr;
      const asio_write* late_write = nullptr;
      for (const auto& r : reads) {
        if (!r.done_ && r.last_ + r.timeout < deadline) {
          deadline = r.last_ + r.timeout;
          late_read = &r;
          late_write = nullptr;
        }
      }
      for (const auto& w : writes) {
        if (!w.done_ && w.broken_.empty() && w.last_ + w.timeout < deadline) {
          deadline = w.last_ + w.timeout;
          late_write = &w;
          late_read = nullptr;
        }
      }
      if (!late_read && !late_write) return;
      if (asio_clock::now() >= deadline) {
        throw asio_defect(late_read ? late(*late_read) : late(*late_write));
      }
      if (ctx_.run_one_until(deadline) == 0 && ctx_.stopped()) {
        if (!error_.empty()) throw asio_defect(error_);
        throw asio_defect("internal error: no I/O pending");
      }
    }
  }

  asio_settings settings_;
  asio_net::io_context ctx_{1};
  std::string failure_;
  std::string error_;  // the first problem a handler found in the current run()
  std::uint64_t stashed_bytes_ = 0;
  std::deque<asio_frame> self_;  // messages this rank sent itself
  call_bytes traffic_;
};

}  // namespace dho2::detail
