/// @file
/// The two hashes of the checkpoint format: CRC-32C (Castagnoli) over a file's contents and
/// 64-bit FNV-1a over the description of a job (options, world layout).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace dho2 {

namespace detail {
// The reflected CRC-32C table (polynomial 0x1EDC6F41, reflected 0x82F63B78).
constexpr std::array<std::uint32_t, 256> make_crc32c_table() noexcept {
  std::array<std::uint32_t, 256> table{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int b = 0; b < 8; ++b) c = (c & 1U) != 0 ? (c >> 1U) ^ 0x82F63B78U : c >> 1U;
    table[i] = c;
  }
  return table;
}
inline constexpr std::array<std::uint32_t, 256> crc32c_table = make_crc32c_table();
}  // namespace detail

/// CRC-32C (Castagnoli; reflected, initial value and final xor 0xFFFFFFFF — the iSCSI / ext4
/// CRC) of `bytes`. `crc32c("123456789")` is 0xE3069283. Byte-at-a-time table implementation.
[[nodiscard]] inline std::uint32_t crc32c(std::span<const std::byte> bytes) noexcept {
  std::uint32_t c = 0xFFFFFFFFU;
  for (const std::byte b : bytes) {
    c = detail::crc32c_table[(c ^ static_cast<std::uint32_t>(b)) & 0xFFU] ^ (c >> 8U);
  }
  return c ^ 0xFFFFFFFFU;
}

/// Incremental 64-bit FNV-1a (offset basis 0xcbf29ce484222325, prime 0x100000001b3): feed bytes,
/// strings and integers (as 8 little-endian bytes) and read `value()`. Not cryptographic: it
/// tells jobs apart, it does not resist forgery.
class fnv1a64 {
 public:
  /// Feeds raw bytes.
  fnv1a64& add(std::span<const std::byte> bytes) noexcept {
    for (const std::byte b : bytes) {
      h_ ^= static_cast<std::uint64_t>(b);
      h_ *= 0x100000001b3ULL;
    }
    return *this;
  }
  /// Feeds the length (as a 64-bit integer) and then the characters of `s`.
  fnv1a64& add(std::string_view s) noexcept {
    add_u64(s.size());
    return add(std::as_bytes(std::span<const char>(s.data(), s.size())));
  }
  /// Feeds `v` as 8 little-endian bytes.
  fnv1a64& add_u64(std::uint64_t v) noexcept {
    for (int i = 0; i < 8; ++i) {
      h_ ^= (v >> (8 * i)) & 0xFFU;
      h_ *= 0x100000001b3ULL;
    }
    return *this;
  }
  /// The hash of everything fed so far.
  [[nodiscard]] std::uint64_t value() const noexcept { return h_; }

 private:
  std::uint64_t h_ = 0xcbf29ce484222325ULL;
};

}  // namespace dho2
