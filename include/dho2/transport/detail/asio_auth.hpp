// Peer authentication of dho2::asio_transport: HMAC-SHA256 (OpenSSL libcrypto), fresh nonces,
// the 44-byte offer and the message a proof covers. The handshake: docs/asio_wire_protocol.md.
#pragma once

#include <dho2/detail/internal_header_check.hpp>

#include <dho2/transport/detail/asio_frame.hpp>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <stdexcept>
#include <string_view>

namespace dho2::detail::asio_auth {

inline constexpr std::size_t nonce_size = 32;
inline constexpr std::size_t mac_size = 32;
inline constexpr std::size_t offer_size = nonce_size + 12;
inline constexpr std::string_view label = "DHO2-auth";  // 9 bytes, first of every proof message
inline constexpr std::size_t message_size = 9 + 1 + 2 * nonce_size + 2 + 3 * 4 + 8;

using nonce = std::array<unsigned char, nonce_size>;
using mac = std::array<unsigned char, mac_size>;

// Which end of the connection proves: the side that connected or the side that accepted.
enum class role : unsigned char { connecting = 'C', accepting = 'A' };

inline mac hmac_sha256(std::span<const unsigned char> key, std::span<const unsigned char> data) {
  mac out{};
  unsigned int len = 0;
  static const unsigned char empty = 0;
  const unsigned char* k = key.empty() ? &empty : key.data();
  if (HMAC(EVP_sha256(), k, static_cast<int>(key.size()), data.data(), data.size(), out.data(),
           &len) == nullptr ||
      len != mac_size) {
    throw std::runtime_error("HMAC-SHA256 failed (OpenSSL)");
  }
  return out;
}

inline nonce fresh_nonce() {
  nonce n{};
  if (RAND_bytes(n.data(), static_cast<int>(n.size())) != 1) {
    throw std::runtime_error("RAND_bytes failed: no secure random bytes for a nonce (OpenSSL)");
  }
  return n;
}

// Constant-time equality.
inline bool same(const mac& a, const mac& b) noexcept {
  return CRYPTO_memcmp(a.data(), b.data(), mac_size) == 0;
}

inline std::span<const unsigned char> key_of(std::string_view secret) noexcept {
  return {reinterpret_cast<const unsigned char*>(secret.data()), secret.size()};
}

// Offer (both directions), 44 bytes: nonce 32 | sender's rank u32 | rank it expects at the other
// end u32 | world size u32.
struct offer {
  nonce n{};
  std::uint32_t rank = 0;
  std::uint32_t peer = 0;
  std::uint32_t size = 0;
};

inline std::array<unsigned char, offer_size> encode_offer(const offer& o) noexcept {
  std::array<unsigned char, offer_size> b{};
  std::memcpy(b.data(), o.n.data(), nonce_size);
  asio_wire::put_u32(b.data() + nonce_size, o.rank);
  asio_wire::put_u32(b.data() + nonce_size + 4, o.peer);
  asio_wire::put_u32(b.data() + nonce_size + 8, o.size);
  return b;
}

inline offer decode_offer(const std::array<unsigned char, offer_size>& b) noexcept {
  offer o;
  std::memcpy(o.n.data(), b.data(), nonce_size);
  o.rank = asio_wire::get_u32(b.data() + nonce_size);
  o.peer = asio_wire::get_u32(b.data() + nonce_size + 4);
  o.size = asio_wire::get_u32(b.data() + nonce_size + 8);
  return o;
}

// The proof of `who`: HMAC-SHA256(secret, "DHO2-auth" | role u8 | verifier's nonce | prover's
// nonce | protocol version u16 | world size u32 | connecting rank u32 | accepting rank u32 |
// session token u64), integers little-endian.
inline mac proof(std::string_view secret, role who, const nonce& verifier, const nonce& prover,
                 std::uint32_t size, std::uint32_t connecting_rank, std::uint32_t accepting_rank,
                 std::uint64_t token) {
  std::array<unsigned char, message_size> m{};
  unsigned char* p = m.data();
  std::memcpy(p, label.data(), label.size());
  p += label.size();
  *p++ = static_cast<unsigned char>(who);
  std::memcpy(p, verifier.data(), nonce_size);
  p += nonce_size;
  std::memcpy(p, prover.data(), nonce_size);
  p += nonce_size;
  asio_wire::put_u16(p, asio_wire::protocol_version);
  asio_wire::put_u32(p + 2, size);
  asio_wire::put_u32(p + 6, connecting_rank);
  asio_wire::put_u32(p + 10, accepting_rank);
  asio_wire::put_u64(p + 14, token);
  return hmac_sha256(key_of(secret), m);
}

}  // namespace dho2::detail::asio_auth
