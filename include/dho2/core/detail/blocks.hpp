// The block size of DHO2's element-wise passes over long vectors, and the loop over blocks. A
// pass that reads several vectors (a base optimizer's step, the fused FOSI update) runs block by
// block, so that all of its statements touch a block while it is in L1/L2 and each vector
// crosses the memory bus once.
#pragma once

#include <dho2/detail/internal_header_check.hpp>

#include <dho2/core/types.hpp>

#include <algorithm>

namespace dho2::detail {

// Entries per block: 2048 doubles are 16 KiB; with V's K ≤ 20 columns a block of V is ≤ 320 KiB,
// within a 1 MiB L2 (measured with bench_fosi_step: 512 and 8192 were no faster).
// A multiple of every SIMD width, so blocks start as aligned as the vector does.
inline constexpr index block_entries = 2048;

// Calls f(begin, length) for consecutive blocks of at most block_entries covering [0, n).
template <class F>
void for_each_block(index n, F&& f) {
  for (index begin = 0; begin < n; begin += block_entries) {
    f(begin, std::min(block_entries, n - begin));
  }
}

}  // namespace dho2::detail
