// libFuzzer target: the frame path of dho2::asio_transport (include/dho2/transport/detail/
// asio_io.hpp, asio_mesh.hpp, asio_frame.hpp) on arbitrary bytes from a peer. The first byte
// picks a mode:
//
//  0 (stream): a real asio_mesh (rank 0 of 2) reads from a real socket whose other end writes
//    the input's bytes: 1 to 4 calls, each a make_read + exchange as asio_transport's recv and
//    collectives (and, without stashing, the handshakes) issue them, so the engine's own header
//    reads, classify() (magic, version, abort frames, match against the call, length, element
//    type, message number, the max_frame_bytes limits before anything is allocated), payload
//    reads, the stash of frames read ahead and its reuse by later calls all run. An oracle (the
//    frame rules of docs/asio_wire_protocol.md, written here independently) predicts each call:
//    the payload it must deliver, or that it must fail with dho2::transport_error naming the
//    reason — and then send the peer an abort frame with that message. On success the stash
//    must hold exactly the frames the oracle parked.
//  1 (abort scan): asio_wire::find_abort (what the engine's harvest_abort() runs on the bytes
//    that arrived after a failed write) must find the first abort frame of the prefix of whole
//    frames with the right magic, or none; asio_printable then makes its message printable.
//  2 (table): asio_wire::decode_table / usable / encode_table (the rendezvous table).
//  3 (split): asio_wire::decode_split_record / encode_split_record / split_group.
//
// Why a socket and not a pure call: the stream logic (partial headers, payloads, the stash
// loop, failures and the abort frame sent back) lives in the engine's completion handlers; a
// Unix socket pair assigned to the link's tcp::socket runs exactly that code without TCP
// connection setup or TIME_WAIT, at thousands of inputs per second. Bit 0 of the stream flags
// writes the bytes from a thread in chunks, so the engine also sees headers and payloads split
// across reads.
//
// Stream input: mode | flags (bit 0 chunked writer, bits 1-2 calls - 1, bits 3-7 chunk - 1) |
// max_frame_bytes u16 | per call 10 bytes (kind selector, routine, tag i32, element, seq u8,
// length u16, its low 12 bits used) | the bytes the peer sends. Built and run by
// tests/fuzz/run_fuzzers.sh; seeds in tests/fuzz/corpus/asio_frame/ (tests/fuzz/make_asio_seeds.cpp
// writes them).

// Includes the TCP transport's internal headers directly (see
// include/dho2/detail/internal_header_check.hpp).
#define DHO2_INTERNAL_INCLUDE 1

#include "asio_fuzz_support.hpp"
#include <dho2/core/errors.hpp>
#include <dho2/transport/detail/asio_frame.hpp>
#include <dho2/transport/detail/asio_mesh.hpp>

#include <fcntl.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace wire = dho2::detail::asio_wire;
using dho2_fuzz::finding;
using dho2_fuzz::le;
using dho2_fuzz::wire_header;

constexpr std::size_t want_bytes = 10;

// One call: the header it wants, its buffer length, whether it parks other frames.
struct call {
  wire::header want;
  std::size_t length = 0;
  bool stash_others = false;
};

// As the transport builds them: collectives (routine 1-6, a step, an element type) and messages
// (a tag and number, bytes) stash; hello, table and auth reads (handshake_read) do not.
call parse_call(std::span<const unsigned char> p) {
  call c;
  const auto tag = static_cast<std::int32_t>(static_cast<std::uint32_t>(le(p, 2, 4)));
  switch (p[0] % 5) {
    case 0:
      c.want.type = wire::kind::collective;
      c.want.routine = static_cast<wire::op>(1 + p[1] % 6);
      c.want.tag = tag;
      c.want.element = static_cast<wire::dtype>(p[6] % 3);
      c.want.seq = p[7];
      c.stash_others = true;
      break;
    case 1:
      c.want.type = wire::kind::message;
      c.want.tag = tag;
      c.want.seq = p[7];
      c.stash_others = true;
      break;
    case 2: c.want.type = wire::kind::hello; break;
    case 3: c.want.type = wire::kind::table; break;
    default:
      c.want.type = wire::kind::auth;
      c.want.tag = tag & 1;
      break;
  }
  c.length = static_cast<std::size_t>(le(p, 8, 2) & 0x0FFFU);  // up to 4095 bytes
  return c;
}

std::string printable(std::span<const unsigned char> b) {
  std::string s;
  for (const unsigned char c : b) s += (c >= 0x20 && c < 0x7F) ? static_cast<char>(c) : '?';
  return s;
}

struct parked {
  wire_header h;
  std::vector<unsigned char> payload;
};

// The outcome the frame rules predict for one call: its payload, or a part of its error.
struct prediction {
  bool ok = false;
  std::vector<unsigned char> payload;
  std::string reason;
};

// The receiving side of the frame rules, over the bytes the peer sent.
class oracle {
 public:
  oracle(std::span<const unsigned char> stream, std::uint64_t max) : stream_(stream), max_(max) {}

  prediction read(const call& c) {
    const bool collective = c.want.type == wire::kind::collective;
    for (auto it = stash_.begin(); it != stash_.end(); ++it) {
      if (matches(c, it->h)) {
        if (std::string bad = defect(c, it->h); !bad.empty()) return fail(bad);
        prediction p{true, std::move(it->payload), {}};
        stashed_ -= p.payload.size();
        stash_.erase(it);
        return p;
      }
      if (collective && it->h.kind == static_cast<std::uint8_t>(wire::kind::collective)) {
        return fail(", got a collective frame");
      }
    }
    for (;;) {
      if (left() < 32) return fail("connection closed");
      const wire_header h = dho2_fuzz::read_header(stream_.subspan(pos_, 32));
      pos_ += 32;
      if (h.magic != dho2_fuzz::dho2_magic) return fail("bad magic ");
      if (h.version != 2) return fail("protocol version " + std::to_string(h.version) + ",");
      if (h.kind == static_cast<std::uint8_t>(wire::kind::abort)) {
        if (h.length > 4096) return fail("abort frame of " + std::to_string(h.length) + " bytes");
        if (left() < h.length) return fail("connection closed");
        return fail("peer 1 (fuzz) failed: " + printable(stream_.subspan(pos_, h.length)));
      }
      if (matches(c, h)) {
        if (std::string bad = defect(c, h); !bad.empty()) return fail(bad);
        if (left() < h.length) return fail("connection closed");
        prediction p{true,
                     {stream_.begin() + static_cast<std::ptrdiff_t>(pos_),
                      stream_.begin() + static_cast<std::ptrdiff_t>(pos_ + h.length)},
                     {}};
        pos_ += h.length;
        return p;
      }
      const bool parkable = h.kind == static_cast<std::uint8_t>(wire::kind::message) ||
                            (h.kind == static_cast<std::uint8_t>(wire::kind::collective) &&
                             c.want.type == wire::kind::message);
      if (!c.stash_others || !parkable) return fail(", got ");
      if (h.length > max_) {
        return fail(" bytes, more than max_frame_bytes = " + std::to_string(max_));
      }
      if (stashed_ + h.length > max_) {
        return fail("more than max_frame_bytes = " + std::to_string(max_) +
                    " bytes of frames received ahead");
      }
      if (left() < h.length) return fail("connection closed");
      stash_.push_back({h,
                        {stream_.begin() + static_cast<std::ptrdiff_t>(pos_),
                         stream_.begin() + static_cast<std::ptrdiff_t>(pos_ + h.length)}});
      stashed_ += h.length;
      pos_ += h.length;
    }
  }

  const std::deque<parked>& stash() const noexcept { return stash_; }
  std::uint64_t stashed() const noexcept { return stashed_; }

 private:
  static bool matches(const call& c, const wire_header& h) {
    if (h.kind != static_cast<std::uint8_t>(c.want.type)) return false;
    if (c.want.type == wire::kind::message) return h.tag == c.want.tag;
    return h.op == static_cast<std::uint8_t>(c.want.routine) && h.seq == c.want.seq &&
           h.tag == c.want.tag;
  }
  static std::string defect(const call& c, const wire_header& h) {
    if (h.length != c.length) return " bytes, expected " + std::to_string(c.length);
    if (h.element != static_cast<std::uint8_t>(c.want.element)) return " carries ";
    if (c.want.type == wire::kind::message && h.seq != c.want.seq) {
      return " is message #" + std::to_string(h.seq) + ", expected #";
    }
    return {};
  }
  static prediction fail(std::string reason) { return {false, {}, std::move(reason)}; }
  std::uint64_t left() const noexcept { return stream_.size() - pos_; }

  std::span<const unsigned char> stream_;
  std::uint64_t max_;
  std::size_t pos_ = 0;
  std::deque<parked> stash_;
  std::uint64_t stashed_ = 0;
};

// Writes as much of `b` as the socket buffer takes at once (non-blocking); the bytes written.
std::size_t send_what_fits(int fd, std::span<const unsigned char> b) {
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  std::size_t done = 0;
  while (done < b.size()) {
    const ssize_t n = ::send(fd, b.data() + done, b.size() - done, MSG_NOSIGNAL);
    if (n <= 0) break;
    done += static_cast<std::size_t>(n);
  }
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  return done;
}

void fuzz_stream(std::span<const unsigned char> in) {
  if (in.size() < 3) return;
  const unsigned flags = in[0];
  const bool chunked = (flags & 1U) != 0;
  const std::size_t calls = 1 + ((flags >> 1) & 3U);
  const std::size_t chunk = 1 + (flags >> 3);
  const std::uint64_t max = le(in, 1, 2);
  if (in.size() < 3 + calls * want_bytes) return;
  std::vector<call> plan;
  for (std::size_t i = 0; i < calls; ++i) {
    plan.push_back(parse_call(in.subspan(3 + i * want_bytes, want_bytes)));
  }
  std::span<const unsigned char> stream = in.subspan(3 + calls * want_bytes);

  dho2::detail::asio_settings s;
  s.timeout = std::chrono::milliseconds(5000);
  s.max_frame_bytes = max;
  auto engine = std::make_unique<dho2::detail::asio_mesh>(0, 2, s);
  dho2_fuzz::socket_pair sp;
  engine->adopt(1, dho2_fuzz::make_link(engine->io().context(), sp, "peer 1 (fuzz)"));
  std::thread writer;
  if (chunked) {
    writer = std::thread([&sp, stream, chunk] {
      for (std::size_t at = 0; at < stream.size(); at += chunk) {
        if (!dho2_fuzz::send_all(sp.peer, stream.subspan(at, std::min(chunk, stream.size() - at))))
          break;
      }
      ::shutdown(sp.peer, SHUT_WR);
    });
  } else {
    stream = stream.first(send_what_fits(sp.peer, stream));
    ::shutdown(sp.peer, SHUT_WR);
  }

  oracle model(stream, max);
  std::vector<std::vector<std::byte>> dest(calls);
  std::string error;
  std::uint64_t received = 0;
  for (std::size_t i = 0; i < calls && error.empty(); ++i) {
    const prediction p = model.read(plan[i]);
    dest[i].assign(plan[i].length, std::byte{0xA5});
    auto r = engine->make_read(1, plan[i].want, dest[i]);
    r.stash_others = plan[i].stash_others;
    try {
      engine->exchange("recv", std::span(&r, 1), {});
    } catch (const dho2::transport_error& e) {
      error = e.what();
    }
    dho2_fuzz::trace(
        "call " + std::to_string(i) + ": " +
        (error.empty() ? "delivered " + std::to_string(plan[i].length) + " bytes" : error));
    if (p.ok != error.empty()) {
      finding("call " + std::to_string(i) + ": the oracle predicts " +
              (p.ok ? "success" : "an error with '" + p.reason + "'") + ", the engine " +
              (error.empty() ? "succeeded" : "failed: " + error));
    }
    if (p.ok) {
      received += plan[i].length;
      if (!std::equal(
              dest[i].begin(), dest[i].end(), p.payload.begin(), p.payload.end(),
              [](std::byte a, unsigned char b) { return static_cast<unsigned char>(a) == b; }))
        finding("call " + std::to_string(i) + " delivered other bytes than the frame's payload");
    } else if (!dho2_fuzz::contains(error, "asio recv [rank 0, world size 2]: peer 1 (fuzz)") ||
               !dho2_fuzz::contains(error, p.reason)) {
      finding("call " + std::to_string(i) + " failed with '" + error + "', expected a part '" +
              p.reason + "'");
    }
  }
  if (error.empty()) {
    const auto& st = engine->link(1).stash();
    if (engine->io().stashed_bytes() != model.stashed() || st.size() != model.stash().size() ||
        engine->io().traffic().received != received) {
      finding("stash of " + std::to_string(st.size()) + " frames / " +
              std::to_string(engine->io().stashed_bytes()) + " bytes, the oracle parked " +
              std::to_string(model.stash().size()) + " / " + std::to_string(model.stashed()));
    }
    for (std::size_t i = 0; i < st.size(); ++i) {
      const auto& a = st[i];
      const auto& b = model.stash()[i];
      if (static_cast<std::uint8_t>(a.h.type) != b.h.kind || a.h.tag != b.h.tag ||
          a.h.seq != b.h.seq || a.h.length != b.h.length ||
          static_cast<std::uint8_t>(a.h.routine) != b.h.op ||
          static_cast<std::uint8_t>(a.h.element) != b.h.element ||
          !std::equal(
              a.payload.begin(), a.payload.end(), b.payload.begin(), b.payload.end(),
              [](std::byte x, unsigned char y) { return static_cast<unsigned char>(x) == y; }))
        finding("stashed frame " + std::to_string(i) + " differs from the one the oracle parked");
    }
  }
  engine.reset();  // closes the engine's end: a blocked writer sees EPIPE
  if (writer.joinable()) writer.join();
  // A failed engine told the peer why (abort frame, its message cut to 4096 bytes); a healthy
  // one sent nothing.
  dho2_fuzz::peer_frame f;
  const bool got = dho2_fuzz::recv_frame(sp.peer, f);
  if (!error.empty()) {
    const std::string text = error.substr(0, 4096);
    if (!got || f.h.kind != static_cast<std::uint8_t>(wire::kind::abort) ||
        std::string(f.payload.begin(), f.payload.end()) != text) {
      finding("the failed engine did not send the peer an abort frame with its message");
    }
  } else if (got) {
    finding("a healthy engine sent the peer a frame while only reading");
  }
}

void fuzz_abort_scan(std::span<const unsigned char> stream) {
  const auto found = wire::find_abort(stream);
  std::optional<std::span<const unsigned char>> want;
  for (std::size_t pos = 0; pos + 32 <= stream.size();) {
    const wire_header h = dho2_fuzz::read_header(stream.subspan(pos, 32));
    const std::size_t rest = stream.size() - pos - 32;
    if (h.magic != dho2_fuzz::dho2_magic || h.length > rest) break;
    if (h.kind == static_cast<std::uint8_t>(wire::kind::abort)) {
      want = stream.subspan(pos + 32, h.length);
      break;
    }
    pos += 32 + h.length;
  }
  dho2_fuzz::trace("abort scan: " + (found ? "'" + printable(*found) + "'" : std::string("none")));
  if (found.has_value() != want.has_value() ||
      (found && (found->data() != want->data() || found->size() != want->size()))) {
    finding("find_abort found another abort frame than the oracle");
  }
  if (found) {
    const std::string text = dho2::detail::asio_printable(std::as_bytes(*found));
    if (text != printable(*found)) finding("asio_printable('" + text + "') is not printable");
  }
}

void fuzz_table(std::span<const unsigned char> in) {
  const std::optional<wire::table> t = wire::decode_table(in);
  const bool whole = in.size() >= 8 && (in.size() - 8) % 20 == 0;
  if (t.has_value() != whole) finding("decode_table accepted a table of a wrong length");
  if (!t) return;
  if (t->entries.size() != (in.size() - 8) / 20 || t->token != le(in, 0, 8)) {
    finding("decode_table: wrong token or entry count");
  }
  std::vector<unsigned char> expect(in.begin(), in.end());
  for (std::size_t r = 0; r < t->entries.size(); ++r) {
    const auto e = in.subspan(8 + 20 * r, 20);
    const bool usable = le(e, 0, 2) != 0 && (e[2] == 4 || e[2] == 6);
    if (wire::usable(t->entries[r]) != usable) {
      finding("usable() wrong for entry " + std::to_string(r));
    }
    expect[8 + 20 * r + 3] = 0;  // the reserved byte is written as 0
  }
  if (wire::encode_table(*t) != expect) finding("encode_table(decode_table(b)) != b");
  dho2_fuzz::trace("table of " + std::to_string(t->entries.size()) + " entries");
}

void fuzz_split(std::span<const unsigned char> in) {
  if (in.size() < 4) return;
  const auto color = static_cast<std::int32_t>(static_cast<std::uint32_t>(le(in, 0, 4)));
  const auto records = in.subspan(4, (in.size() - 4) / 12 * 12);
  const std::vector<wire::split_member> m = wire::split_group(records, color);
  std::size_t with_color = 0;
  for (std::size_t q = 0; q < records.size() / 12; ++q) {
    const auto rec = records.subspan(12 * q, 12);
    const auto s = wire::decode_split_record(rec.data());
    const auto ec = static_cast<std::int32_t>(static_cast<std::uint32_t>(le(rec, 0, 4)));
    const auto ek = static_cast<std::int32_t>(static_cast<std::uint32_t>(le(rec, 4, 4)));
    if (s.color != ec || s.key != ek || s.port != le(rec, 8, 2)) finding("split record misread");
    auto b = wire::encode_split_record(s);
    if (!std::equal(b.begin(), b.begin() + 10, rec.begin()) || b[10] != 0 || b[11] != 0) {
      finding("encode_split_record(decode_split_record(b)) != b");
    }
    if (ec == color) ++with_color;
  }
  if (m.size() != with_color) finding("split_group lost or invented members");
  dho2_fuzz::trace("split group of " + std::to_string(m.size()) + " members");
  for (std::size_t i = 0; i < m.size(); ++i) {
    if (m[i].rank < 0 || static_cast<std::size_t>(m[i].rank) >= records.size() / 12) {
      finding("split_group member " + std::to_string(i) + " has no record");
    }
    const auto rec = records.subspan(12 * static_cast<std::size_t>(m[i].rank), 12);
    if (static_cast<std::int32_t>(static_cast<std::uint32_t>(le(rec, 0, 4))) != color ||
        m[i].key != static_cast<std::int32_t>(static_cast<std::uint32_t>(le(rec, 4, 4))) ||
        m[i].port != le(rec, 8, 2)) {
      finding("split_group member " + std::to_string(i) + " does not match its record");
    }
    if (i > 0 &&
        !(m[i - 1].key < m[i].key || (m[i - 1].key == m[i].key && m[i - 1].rank < m[i].rank))) {
      finding("split_group is not ordered by (key, rank)");
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::span<const unsigned char> in(data + 1, size - 1);
  switch (data[0] % 4) {
    case 0: fuzz_stream(in); break;
    case 1: fuzz_abort_scan(in); break;
    case 2: fuzz_table(in); break;
    default: fuzz_split(in); break;
  }
  return 0;
}
