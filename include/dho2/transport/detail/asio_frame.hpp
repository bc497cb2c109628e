// Wire format of dho2::asio_transport: a 32-byte little-endian frame header, the rendezvous
// payloads, their encoders / decoders, and the rules a received frame is checked by. The
// protocol: docs/asio_wire_protocol.md.
#pragma once

#include <dho2/detail/internal_header_check.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <vector>

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

// The payload of the first abort frame in `bytes` (frames as they arrived, from a frame boundary),
// scanning whole frames with the right magic; nothing if the scan ends first.
inline std::optional<std::span<const unsigned char>> find_abort(
    std::span<const unsigned char> bytes) noexcept {
  std::size_t pos = 0;
  while (pos + header_size <= bytes.size()) {
    header_bytes hb;
    std::memcpy(hb.data(), bytes.data() + pos, hb.size());
    const header h = decode(hb);
    const std::size_t rest = bytes.size() - pos - header_size;
    if (h.magic != magic || h.length > rest) break;
    const auto payload = bytes.subspan(pos + header_size, static_cast<std::size_t>(h.length));
    if (h.type == kind::abort) return payload;
    pos += header_size + payload.size();
  }
  return std::nullopt;
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

// "" if the hello `h` of a connection authenticated as rank `rank` of a world of `size` ranks fits
// rank 0 (`options`: its fingerprint), else what is wrong.
inline std::string hello_defect(const hello& h, std::uint32_t rank, std::uint32_t size,
                                std::uint32_t options) {
  if (h.size != size || h.rank != rank) {
    return "hello of rank " + std::to_string(h.rank) + " of " + std::to_string(h.size) +
           " after authenticating as rank " + std::to_string(rank) + " of " + std::to_string(size);
  }
  if (h.little_endian != (std::endian::native == std::endian::little ? 1 : 0)) {
    return "byte order differs from rank 0's";
  }
  if (h.options != options) {
    return "options differ from rank 0's (direct_all_reduce_bytes or max_frame_bytes)";
  }
  if (h.port == 0 || (h.family != 0 && h.family != 4 && h.family != 6)) {
    return "malformed hello (port " + std::to_string(h.port) + ", address family " +
           std::to_string(h.family) + ")";
  }
  return {};
}

// Table (rank 0 -> everyone), 8 + 20 P bytes: session token u64, then per rank: port u16 |
// family u8 | 0 u8 | address 16 (rank 0's entry is zero: everyone already has a connection to it).
struct table_entry {
  std::uint16_t port = 0;
  std::uint8_t family = 0;
  std::array<unsigned char, 16> address{};
};

struct table {
  std::uint64_t token = 0;
  std::vector<table_entry> entries;  // by rank
};

inline std::size_t table_size(std::size_t ranks) noexcept { return 8 + table_entry_size * ranks; }

inline std::vector<unsigned char> encode_table(const table& t) {
  std::vector<unsigned char> b(table_size(t.entries.size()));
  put_u64(b.data(), t.token);
  for (std::size_t r = 0; r < t.entries.size(); ++r) {
    unsigned char* e = b.data() + 8 + table_entry_size * r;
    put_u16(e, t.entries[r].port);
    e[2] = t.entries[r].family;
    std::memcpy(e + 4, t.entries[r].address.data(), 16);
  }
  return b;
}

// The table in `b`, or nothing if `b` does not have 8 + 20 P bytes for some P.
inline std::optional<table> decode_table(std::span<const unsigned char> b) {
  if (b.size() < 8 || (b.size() - 8) % table_entry_size != 0) return std::nullopt;
  table t;
  t.token = get_u64(b.data());
  t.entries.resize((b.size() - 8) / table_entry_size);
  for (std::size_t r = 0; r < t.entries.size(); ++r) {
    const unsigned char* e = b.data() + 8 + table_entry_size * r;
    t.entries[r].port = get_u16(e);
    t.entries[r].family = e[2];
    std::memcpy(t.entries[r].address.data(), e + 4, 16);
  }
  return t;
}

// Whether a table entry of a rank > 0 can be connected to: a port and address family 4 or 6.
inline bool usable(const table_entry& e) noexcept {
  return e.port != 0 && (e.family == 4 || e.family == 6);
}

// Split record (all-gathered over the parent), 12 bytes: color i32 | key i32 | port u16 | 0 u16.
struct split_record {
  std::int32_t color = 0;
  std::int32_t key = 0;
  std::uint16_t port = 0;
};

inline std::array<unsigned char, split_record_size> encode_split_record(
    const split_record& s) noexcept {
  std::array<unsigned char, split_record_size> b{};
  put_u32(b.data(), static_cast<std::uint32_t>(s.color));
  put_u32(b.data() + 4, static_cast<std::uint32_t>(s.key));
  put_u16(b.data() + 8, s.port);
  return b;
}

inline split_record decode_split_record(const unsigned char* p) noexcept {
  return {static_cast<std::int32_t>(get_u32(p)), static_cast<std::int32_t>(get_u32(p + 4)),
          get_u16(p + 8)};
}

// One member of a split group: its key, its rank in the parent and its listening port.
struct split_member {
  int key;
  int rank;
  unsigned short port;
};

// The members of the sub-group `color` of the parent whose records (one per parent rank, by rank)
// are `records` (a whole number of records), ordered by (key, parent rank).
inline std::vector<split_member> split_group(std::span<const unsigned char> records,
                                             std::int32_t color) {
  std::vector<split_member> members;
  for (std::size_t q = 0; q < records.size() / split_record_size; ++q) {
    const split_record s = decode_split_record(records.data() + q * split_record_size);
    if (s.color != color) continue;
    members.push_back({s.key, static_cast<int>(q), s.port});
  }
  std::sort(members.begin(), members.end(), [](const split_member& a, const split_member& b) {
    return a.key != b.key ? a.key < b.key : a.rank < b.rank;
  });
  return members;
}

// Whether a received frame `h` is the one a read wants (`want`): same kind and, for a message,
// the same tag; for any other kind also the same routine, seq and step.
inline bool matches(const header& want, const header& h) noexcept {
  if (h.type != want.type) return false;
  if (want.type == kind::message) return h.tag == want.tag;
  return h.routine == want.routine && h.seq == want.seq && h.tag == want.tag;
}

inline const char* dtype_name(dtype d) noexcept {
  switch (d) {
    case dtype::bytes: return "bytes";
    case dtype::f32: return "float";
    case dtype::f64: return "double";
  }
  return "unknown elements";
}

// "" if a frame `h` that matches `want` is acceptable (length, element type, message number).
inline std::string check_match(const header& want, const header& h) {
  const bool data = want.type == kind::collective || want.type == kind::message;
  if (h.length != want.length) {
    return describe(h) + " has " + std::to_string(h.length) + " bytes, expected " +
           std::to_string(want.length) + (data ? " (the ranks passed different lengths)" : "");
  }
  if (h.element != want.element) {
    return describe(h) + " carries " + dtype_name(h.element) + ", expected " +
           dtype_name(want.element);
  }
  if (want.type == kind::message && h.seq != want.seq) {
    return describe(h) + " is message #" + std::to_string(h.seq) + ", expected #" +
           std::to_string(want.seq);
  }
  return {};
}

// Why a frame `h` that does not match `want` fails the read.
inline std::string mismatch(const header& want, const header& h) {
  std::string s = "expected " + describe(want) + ", got " + describe(h);
  if (want.type == kind::collective && h.type == kind::collective) {
    s += " (the ranks called collectives in different orders)";
  }
  return s;
}

}  // namespace dho2::detail::asio_wire
