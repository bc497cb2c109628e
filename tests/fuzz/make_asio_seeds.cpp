// Writes the seed corpora of the asio fuzz targets from genuine messages made by the library's
// own encoders (asio_wire::encode, encode_hello, encode_table, encode_split_record,
// asio_auth::encode_offer, asio_fingerprint), in the input layouts of fuzz_asio_frame.cpp and
// fuzz_asio_handshake.cpp. Not a fuzz target (run_fuzzers.sh builds only fuzz_*.cpp):
//
//   clang++ -std=c++20 -Iinclude tests/fuzz/make_asio_seeds.cpp -lcrypto -o build/make_asio_seeds
//   build/make_asio_seeds tests/fuzz/corpus
//
// writes <dir>/asio_frame/* and <dir>/asio_handshake/* (overwriting seeds of the same name).

// Includes the TCP transport's internal headers directly (see
// include/dho2/detail/internal_header_check.hpp).
#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/transport/detail/asio_auth.hpp>
#include <dho2/transport/detail/asio_frame.hpp>
#include <dho2/transport/detail/asio_rendezvous.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <vector>

namespace {

namespace wire = dho2::detail::asio_wire;
namespace au = dho2::detail::asio_auth;
using bytes = std::vector<unsigned char>;

void append(bytes& b, std::span<const unsigned char> more) {
  b.insert(b.end(), more.begin(), more.end());
}

void put(bytes& b, std::uint64_t v, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i)
    b.push_back(static_cast<unsigned char>((v >> (8 * i)) & 0xFFU));
}

bytes frame(wire::header h, std::span<const unsigned char> payload) {
  h.length = payload.size();
  bytes b;
  append(b, wire::encode(h));
  append(b, payload);
  return b;
}

wire::header of(wire::kind k, std::int32_t tag = 0, std::uint64_t seq = 0,
                wire::op o = wire::op::none, wire::dtype d = wire::dtype::bytes) {
  wire::header h;
  h.type = k;
  h.tag = tag;
  h.seq = seq;
  h.routine = o;
  h.element = d;
  return h;
}

// One call of fuzz_asio_frame's stream mode: kind selector (0 collective, 1 message, 2 hello,
// 3 table, 4 auth), routine selector (routine - 1), tag, element, seq, length.
bytes call(unsigned kind, unsigned routine, std::int32_t tag, unsigned element, unsigned seq,
           std::uint16_t length) {
  bytes b{static_cast<unsigned char>(kind), static_cast<unsigned char>(routine)};
  put(b, static_cast<std::uint32_t>(tag), 4);
  b.push_back(static_cast<unsigned char>(element));
  b.push_back(static_cast<unsigned char>(seq));
  put(b, length, 2);
  return b;
}

// mode 0 | flags | max_frame_bytes | calls | stream.
bytes stream_seed(std::vector<bytes> calls, std::uint16_t max, bool chunked, unsigned chunk,
                  std::span<const unsigned char> stream) {
  const unsigned flags =
      (chunked ? 1U : 0U) | static_cast<unsigned>((calls.size() - 1) << 1) | ((chunk - 1) << 3);
  bytes b{0, static_cast<unsigned char>(flags)};
  put(b, max, 2);
  for (const auto& c : calls) append(b, c);
  append(b, stream);
  return b;
}

bytes text(const std::string& s) { return bytes(s.begin(), s.end()); }

void write(const std::filesystem::path& dir, const std::string& name, const bytes& b) {
  std::filesystem::create_directories(dir);
  std::ofstream out(dir / name, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  if (!out) {
    std::fprintf(stderr, "cannot write %s\n", (dir / name).c_str());
    std::exit(1);
  }
}

au::nonce fixed_nonce(unsigned char first) {
  au::nonce n{};
  for (std::size_t i = 0; i < n.size(); ++i) n[i] = static_cast<unsigned char>(first + 7 * i);
  return n;
}

void frame_seeds(const std::filesystem::path& dir) {
  const bytes eight{1, 2, 3, 4, 5, 6, 7, 8};
  // recv of message tag 5 #0, 8 bytes.
  write(dir, "stream_message",
        stream_seed({call(1, 0, 5, 0, 0, 8)}, 4096, false, 1,
                    frame(of(wire::kind::message, 5), eight)));
  // recv tag 1 while a message with tag 2 arrives first (stashed), then recv tag 2 (from the
  // stash); chunked writes of 5 bytes.
  {
    bytes s = frame(of(wire::kind::message, 2), bytes{9, 9, 9});
    append(s, frame(of(wire::kind::message, 1), bytes{1, 2, 3, 4}));
    write(dir, "stream_stash_then_match",
          stream_seed({call(1, 0, 1, 0, 0, 4), call(1, 0, 2, 0, 0, 3)}, 4096, true, 5, s));
  }
  // all_reduce_sum #1 step 0 of two doubles; a message parked ahead of it.
  {
    const bytes sixteen(16, 0x3F);
    bytes s = frame(of(wire::kind::message, 7), eight);
    append(s, frame(of(wire::kind::collective, 0, 1, wire::op::all_reduce_sum, wire::dtype::f64),
                    sixteen));
    write(dir, "stream_collective", stream_seed({call(0, 0, 0, 2, 1, 16)}, 4096, true, 3, s));
  }
  // A peer's abort frame instead of the message.
  write(dir, "stream_abort",
        stream_seed({call(1, 0, 5, 0, 0, 8)}, 4096, false, 1,
                    frame(of(wire::kind::abort),
                          text("asio all_reduce_sum [rank 1, world size 2]: boom"))));
  // A message ahead of the call that is larger than max_frame_bytes = 16.
  write(dir, "stream_over_limit",
        stream_seed({call(1, 0, 5, 0, 0, 8)}, 16, false, 1,
                    frame(of(wire::kind::message, 6), bytes(32, 1))));
  // Two messages read ahead of the call: 10 + 7 bytes stashed exceed max_frame_bytes = 16 in
  // total (refused), 10 + 6 = 16 do not (the call then gets its frame).
  for (const unsigned second : {7U, 6U}) {
    bytes s = frame(of(wire::kind::message, 2), bytes(10, 2));
    append(s, frame(of(wire::kind::message, 3), bytes(second, 3)));
    append(s, frame(of(wire::kind::message, 1), bytes{1, 2, 3, 4}));
    write(dir, second == 7 ? "stream_stash_total_over_limit" : "stream_stash_total_at_limit",
          stream_seed({call(1, 0, 1, 0, 0, 4)}, 16, false, 1, s));
  }
  // The handshake and rendezvous reads: an offer, a hello, a table.
  {
    au::offer o{fixed_nonce(3), 2, 1, 4};
    write(dir, "stream_auth_offer",
          stream_seed({call(4, 0, 0, 0, 0, au::offer_size)}, 4096, false, 1,
                      frame(of(wire::kind::auth), au::encode_offer(o))));
    wire::hello h;
    h.rank = 1;
    h.size = 2;
    h.port = 40000;
    h.little_endian = 1;
    h.family = 4;
    h.address = {127, 0, 0, 1};
    write(dir, "stream_hello",
          stream_seed({call(2, 0, 0, 0, 0, wire::hello_size)}, 4096, false, 1,
                      frame(of(wire::kind::hello), wire::encode_hello(h))));
    wire::table t;
    t.token = 0x1122334455667788ULL;
    t.entries.resize(2);
    t.entries[1] = {40001, 4, {127, 0, 0, 1}};
    const bytes tb = wire::encode_table(t);
    write(dir, "stream_table",
          stream_seed({call(3, 0, 0, 0, 0, static_cast<std::uint16_t>(tb.size()))}, 4096, false, 1,
                      frame(of(wire::kind::table), tb)));
    bytes table_seed{2};
    append(table_seed, tb);
    write(dir, "table_p2", table_seed);
  }
  // The abort scan after a failed write: a message, then the abort frame.
  {
    bytes s{1};
    append(s, frame(of(wire::kind::message, 3), eight));
    append(s, frame(of(wire::kind::abort), text("peer failed: out of memory")));
    write(dir, "abort_scan", s);
  }
  // Split records of three ranks, colors 7, 8, 7 (color 7 asked).
  {
    bytes s{3};
    put(s, 7, 4);
    append(s, wire::encode_split_record({7, 1, 40010}));
    append(s, wire::encode_split_record({8, 0, 40011}));
    append(s, wire::encode_split_record({7, 0, 40012}));
    write(dir, "split_3", s);
  }
}

// mode | flags | offer header | offer | proof header | delta (zero: the genuine proof).
bytes handshake_seed(unsigned mode, unsigned flags, const au::offer& o) {
  bytes b{static_cast<unsigned char>(mode), static_cast<unsigned char>(flags)};
  wire::header h = of(wire::kind::auth, 0);
  h.length = au::offer_size;
  append(b, wire::encode(h));
  append(b, au::encode_offer(o));
  h = of(wire::kind::auth, 1);
  h.length = au::mac_size;
  append(b, wire::encode(h));
  append(b, bytes(au::mac_size, 0));
  return b;
}

void handshake_seeds(const std::filesystem::path& dir) {
  // The engine accepts rank 2 (or 3) of 4 as rank 1.
  write(dir, "accept_genuine", handshake_seed(0, 0, {fixed_nonce(11), 2, 1, 4}));
  write(dir, "accept_rank3_joined", handshake_seed(0, 4, {fixed_nonce(12), 3, 1, 4}));
  write(dir, "accept_other_role", handshake_seed(0, 1, {fixed_nonce(13), 2, 1, 4}));
  write(dir, "accept_other_token", handshake_seed(0, 2, {fixed_nonce(14), 3, 1, 4}));
  write(dir, "accept_swapped_nonces", handshake_seed(0, 3, {fixed_nonce(15), 2, 1, 4}));
  // The engine, rank 2 of 4, connects to rank 1.
  write(dir, "connect_genuine", handshake_seed(1, 0, {fixed_nonce(21), 1, 2, 4}));
  write(dir, "connect_reflected", handshake_seed(1, 1, {fixed_nonce(22), 1, 2, 4}));
  write(dir, "connect_other_token", handshake_seed(1, 2, {fixed_nonce(23), 1, 2, 4}));
  // A valid hello of rank 2 of 3 (mode 2, size selector 1: P = 3, rank selector 1: rank 2).
  wire::hello h;
  h.rank = 2;
  h.size = 3;
  h.port = 40002;
  h.little_endian = 1;
  h.family = 4;
  h.address = {127, 0, 0, 1};
  h.options = dho2::detail::asio_fingerprint(dho2::detail::asio_settings{});
  bytes b{2, 1, 1};
  append(b, wire::encode_hello(h));
  write(dir, "hello_valid", b);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_asio_seeds <corpus dir>\n");
    return 2;
  }
  const std::filesystem::path root = argv[1];
  frame_seeds(root / "asio_frame");
  handshake_seeds(root / "asio_handshake");
  return 0;
}
