// Wire format of dho2::asio_transport: a 32-byte little-endian frame header, the rendezvous
// payloads, and their encoders / decoders. See the file comment of <dho2/transport/asio.hpp>.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <span>
#include <string>

namespace dho2::detail::asio_wire {

inline constexpr std::uint32_t magic = 0x324F4844U;   // the bytes "DHO2" in little-endian order
inline constexpr std::uint16_t protocol_version = 2;  // 2: authentication, no join
inline constexpr std::size_t header_size = 32;
inline constexpr std::size_t hello_size = 32;
inline constexpr std::size_t table_entry_size = 20;
inline constexpr std::size_t split_record_size = 12;
inline constexpr std::size_t max_abort_size = 4096;

enum class kind : std::uint8_t {
  hello = 1,       // rank r -> rank 0 (rendezvous, after auth)
  table = 2,       // rank 0 -> rank r (rendezvous)
  collective = 4,  // one step of a collective
  message = 5,     // send / recv
  abort = 6,       // the sender failed or refused the connection; payload: why
  auth = 7,        // handshake on every connection; tag 0: offer, tag 1: proof (asio_auth.hpp)
};

enum class op : std::uint8_t {
  none = 0,
  all_reduce_sum = 1,
  reduce_scatter_sum = 2,
  all_gather = 3,
  broadcast = 4,
  barrier = 5,
  split = 6,
};

enum class dtype : std::uint8_t { bytes = 0, f32 = 1, f64 = 2 };

template <class E>
constexpr dtype dtype_of() noexcept {
  if constexpr (sizeof(E) == 4) {
    return dtype::f32;
  } else {
    return dtype::f64;
  }
}

struct header {
  std::uint32_t magic = asio_wire::magic;
  std::uint16_t version = protocol_version;
  kind type = kind::collective;
  op routine = op::none;
  std::int32_t tag = 0;  // message tag, or the step within a collective
  dtype element = dtype::bytes;
  std::uint64_t seq = 0;     // collective number, or message number for (pair, tag)
  std::uint64_t length = 0;  // payload bytes
};

using header_bytes = std::array<unsigned char, header_size>;

inline void put_u16(unsigned char* p, std::uint16_t v) noexcept {
  const unsigned w = v;
  p[0] = static_cast<unsigned char>(w & 0xFFU);
  p[1] = static_cast<unsigned char>((w >> 8U) & 0xFFU);
}
inline void put_u32(unsigned char* p, std::uint32_t v) noexcept {
  for (unsigned i = 0; i < 4; ++i) p[i] = static_cast<unsigned char>((v >> (8U * i)) & 0xFFU);
}
inline void put_u64(unsigned char* p, std::uint64_t v) noexcept {
  for (unsigned i = 0; i < 8; ++i) p[i] = static_cast<unsigned char>((v >> (8U * i)) & 0xFFU);
}
inline std::uint16_t get_u16(const unsigned char* p) noexcept {
  return static_cast<std::uint16_t>(unsigned{p[0]} | (unsigned{p[1]} << 8U));
}
inline std::uint32_t get_u32(const unsigned char* p) noexcept {
  std::uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
inline std::uint64_t get_u64(const unsigned char* p) noexcept {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// Layout: magic u32 | version u16 | kind u8 | op u8 | tag i32 | dtype u8 | 3 zero bytes |
//         seq u64 | length u64.
inline header_bytes encode(const header& h) noexcept {
  header_bytes b{};
  put_u32(b.data(), h.magic);
  put_u16(b.data() + 4, h.version);
  b[6] = static_cast<unsigned char>(h.type);
  b[7] = static_cast<unsigned char>(h.routine);
  put_u32(b.data() + 8, static_cast<std::uint32_t>(h.tag));
  b[12] = static_cast<unsigned char>(h.element);
  put_u64(b.data() + 16, h.seq);
  put_u64(b.data() + 24, h.length);
  return b;
}

inline header decode(const header_bytes& b) noexcept {
  header h;
  h.magic = get_u32(b.data());
  h.version = get_u16(b.data() + 4);
  h.type = static_cast<kind>(b[6]);
  h.routine = static_cast<op>(b[7]);
  h.tag = static_cast<std::int32_t>(get_u32(b.data() + 8));
  h.element = static_cast<dtype>(b[12]);
  h.seq = get_u64(b.data() + 16);
  h.length = get_u64(b.data() + 24);
  return h;
}

inline const char* op_name(op o) noexcept {
  switch (o) {
    case op::none: return "none";
    case op::all_reduce_sum: return "all_reduce_sum";
    case op::reduce_scatter_sum: return "reduce_scatter_sum";
    case op::all_gather: return "all_gather";
    case op::broadcast: return "broadcast";
    case op::barrier: return "barrier";
    case op::split: return "split";
  }
  return "unknown";
}

inline const char* kind_name(kind k) noexcept {
  switch (k) {
    case kind::hello: return "hello";
    case kind::table: return "table";
    case kind::auth: return "auth";
    case kind::collective: return "collective";
    case kind::message: return "message";
    case kind::abort: return "abort";
  }
  return "unknown";
}

inline std::string hex32(std::uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", static_cast<unsigned>(v));
  return buf;
}

// "kind[ op #seq step tag]" for error messages.
inline std::string describe(const header& h) {
  std::string s = h.type == kind::auth || h.type == kind::abort ? "an " : "a ";
  s += kind_name(h.type);
  if (h.type == kind::collective) {
    s += std::string(" frame of ") + op_name(h.routine) + " #" + std::to_string(h.seq) + " step " +
         std::to_string(h.tag);
  } else if (h.type == kind::message) {
    s += " frame with tag " + std::to_string(h.tag);
  } else if (h.type != kind::hello && h.type != kind::table && h.type != kind::auth &&
             h.type != kind::abort) {
    s = "a frame of unknown kind " + std::to_string(static_cast<unsigned>(h.type));
  } else {
    s += " frame";
  }
  return s;
}

// Hello (rank r -> rank 0), 32 bytes: rank u32 | size u32 | listen port u16 | little-endian u8 |
// address family u8 (0: use the address rank 0 sees, 4, 6) | address 16 | options u32 (a
// fingerprint of the options that must agree).
struct hello {
  std::uint32_t rank = 0;
  std::uint32_t size = 0;
  std::uint16_t port = 0;
  std::uint8_t little_endian = 0;
  std::uint8_t family = 0;
  std::array<unsigned char, 16> address{};
  std::uint32_t options = 0;
};

inline std::array<unsigned char, hello_size> encode_hello(const hello& h) noexcept {
  std::array<unsigned char, hello_size> b{};
  put_u32(b.data(), h.rank);
  put_u32(b.data() + 4, h.size);
  put_u16(b.data() + 8, h.port);
  b[10] = h.little_endian;
  b[11] = h.family;
  std::memcpy(b.data() + 12, h.address.data(), 16);
  put_u32(b.data() + 28, h.options);
  return b;
}

inline hello decode_hello(const std::array<unsigned char, hello_size>& b) noexcept {
  hello h;
  h.rank = get_u32(b.data());
  h.size = get_u32(b.data() + 4);
  h.port = get_u16(b.data() + 8);
  h.little_endian = b[10];
  h.family = b[11];
  std::memcpy(h.address.data(), b.data() + 12, 16);
  h.options = get_u32(b.data() + 28);
  return h;
}

// Table (rank 0 -> everyone): session token u64, then per rank: port u16 | family u8 | 0 u8 |
// address 16 (rank 0's entry is zero: everyone already has a connection to it).
// Split record (all-gathered over the parent), 12 bytes: color i32 | key i32 | port u16 | 0 u16.

}  // namespace dho2::detail::asio_wire
