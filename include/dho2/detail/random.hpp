// Counter-based and stream RNGs owned by DHO2 (never global state). splitmix64 for hashing a
// (seed, stream, counter) triple; xoshiro256** for streams; Box–Muller normals. The same seed
// gives the same numbers on every platform and for every shard layout.
#pragma once

#include <dho2/detail/internal_header_check.hpp>

#include <cmath>
#include <cstdint>
#include <numbers>

namespace dho2::detail {

constexpr std::uint64_t splitmix64(std::uint64_t z) noexcept {
  z += 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30U)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27U)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31U);
}

// Uniform double in (0, 1), never 0 (safe for log).
constexpr double to_unit_open(std::uint64_t bits) noexcept {
  return (static_cast<double>(bits >> 11U) + 0.5) * 0x1.0p-53;
}

// Standard normal that depends only on (seed, stream, i): element i of a random vector is the
// same whichever rank generates it.
inline double counter_normal(std::uint64_t seed, std::uint64_t stream, std::uint64_t i) noexcept {
  const std::uint64_t key = splitmix64(seed ^ splitmix64(stream));
  const double u1 = to_unit_open(splitmix64(key ^ (2 * i)));
  const double u2 = to_unit_open(splitmix64(key ^ (2 * i + 1)));
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

// xoshiro256** stream generator; satisfies std::uniform_random_bit_generator.
class xoshiro256 {
 public:
  using result_type = std::uint64_t;
  explicit xoshiro256(std::uint64_t seed) noexcept {
    std::uint64_t z = seed;
    for (auto& w : s_) {
      z = splitmix64(z);
      w = z;
    }
  }
  static constexpr result_type min() noexcept { return 0; }
  static constexpr result_type max() noexcept { return ~result_type{0}; }
  result_type operator()() noexcept {
    const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const std::uint64_t t = s_[1] << 17U;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }
  // Uniform in (0, 1).
  double uniform() noexcept { return to_unit_open((*this)()); }
  // Uniform integer in [0, bound) without modulo bias (Lemire's method).
  std::uint64_t below(std::uint64_t bound) noexcept {
    __uint128_t m = static_cast<__uint128_t>((*this)()) * bound;
    auto low = static_cast<std::uint64_t>(m);
    if (low < bound) {
      const std::uint64_t threshold = (0 - bound) % bound;
      while (low < threshold) {
        m = static_cast<__uint128_t>((*this)()) * bound;
        low = static_cast<std::uint64_t>(m);
      }
    }
    return static_cast<std::uint64_t>(m >> 64U);
  }
  // Standard normal (Box–Muller, one value per call).
  double normal() noexcept {
    const double u1 = uniform();
    const double u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
  }

 private:
  static constexpr std::uint64_t rotl(std::uint64_t x, int k) noexcept {
    return (x << static_cast<unsigned>(k)) | (x >> static_cast<unsigned>(64 - k));
  }
  std::uint64_t s_[4]{};
};

}  // namespace dho2::detail
