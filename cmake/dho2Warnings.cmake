# dho2_warnings: an INTERFACE target carrying the strict warning set for DHO2's own tests,
# examples and benchmarks. dho2_native: -march=native (with DHO2_NATIVE) for the examples and
# benchmarks only, whose speed is measured; the tests build for the compiler's default target, as
# consumers do (a heavy test file then compiles in 32 s instead of 40 s here; the whole suite's
# build was not measurably shorter in a fresh clone). Neither is exported nor installed:
# consumers of dho2::dho2 choose their own flags (and the consumer tests prove our headers are
# clean under these ones).
include_guard(GLOBAL)

add_library(dho2_warnings INTERFACE)
if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
  target_compile_options(dho2_warnings INTERFACE -Wall -Wextra -Wpedantic -Wconversion
                                                 -Wsign-conversion -Wshadow)
  if(DHO2_WARNINGS_AS_ERRORS)
    target_compile_options(dho2_warnings INTERFACE -Werror)
  endif()
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
    # GCC 12 at -O2/-O3 reports a bogus -Wrestrict inside libstdc++ for `"..." + std::string&&`
    # (GCC PR 105651; Debian 12 ships 12.2). Still shown, never fatal.
    target_compile_options(dho2_warnings INTERFACE -Wno-error=restrict)
  endif()
elseif(MSVC)
  target_compile_options(dho2_warnings INTERFACE /W4 /permissive-)
  if(DHO2_WARNINGS_AS_ERRORS)
    target_compile_options(dho2_warnings INTERFACE /WX)
  endif()
endif()

add_library(dho2_native INTERFACE)
if(DHO2_NATIVE AND CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
  # Our own programs only (benchmarks, the demo): Eigen then uses AVX2 / AVX-512 where present.
  target_compile_options(dho2_native INTERFACE -march=native)
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
    # GCC 12's own avx512fintrin.h (`__m512d __Y = __Y;` in _mm512_undefined_pd) trips
    # -Wmaybe-uninitialized wherever Eigen's AVX-512 reductions are inlined: not our code.
    target_compile_options(dho2_native INTERFACE -Wno-maybe-uninitialized)
  endif()
endif()
