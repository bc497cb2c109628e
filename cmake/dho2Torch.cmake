# The LibTorch peer of issue 4's benchmarks: torch_train (benchmarks/peer/torch_train.cpp) and
# bench_torch_mlp_step (+ its EIGEN_USE_BLAS twin bench_torch_mlp_step_blas). Included from
# benchmarks/CMakeLists.txt; find_package(Torch) ran at the top level (TORCH_LIBRARIES).
#
#   DHO2_WITH_TORCH           decided in cmake/dho2TorchComponent.cmake (AUTO by default): the
#                             peer is built when LibTorch was found there (DHO2_HAVE_TORCH), and
#                             skipped with that file's message otherwise.
#   torch_train               the LibTorch training program (no CTest test).
#   bench_torch_mlp_step      DHO2's MLP step vs LibTorch's, Eigen's own GEMM on DHO2's side.
#   bench_torch_mlp_step_blas the same source with EIGEN_USE_BLAS, linked with OpenBLAS (only when
#                             OpenBLAS is found): a like-with-like control on one BLAS.
#   bench_torch_cnn_hvp       the CNN's gradient vs its exact HVP through dho2::torch_module_model.
#   benchmark.bench_torch_mlp_step, benchmark.bench_torch_cnn_hvp  smoke tests (label
#                             benchmark-smoke;torch), batch 32 only.
# Nothing else in the suite depends on these targets.
#
# Debian's libtorch links libblas.so.3 and liblapack.so.3, which update-alternatives points at
# the reference BLAS or, once libopenblas0-pthread is installed, at OpenBLAS: the programs record
# the BLAS actually mapped into the process.
include_guard(GLOBAL)

if(NOT DHO2_HAVE_TORCH)
  return()
endif()

# The Debian package version (the headers say only the upstream release).
set(_dho2_torch_package "unknown")
find_program(_dho2_dpkg_query dpkg-query)
if(_dho2_dpkg_query)
  execute_process(COMMAND ${_dho2_dpkg_query} -W -f=\${Version} libtorch-dev
                  OUTPUT_VARIABLE _out RESULT_VARIABLE _rc ERROR_QUIET
                  OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(_rc EQUAL 0 AND _out MATCHES "^[0-9A-Za-z.+~:-]+$")
    set(_dho2_torch_package "libtorch-dev ${_out}")
  endif()
endif()
message(STATUS "LibTorch ${Torch_VERSION} (${_dho2_torch_package}): building torch_train and "
               "bench_torch_mlp_step")

# LibTorch's headers are the imported targets' (system) include directories; its ABI flag
# (-D_GLIBCXX_USE_CXX11_ABI=1 on Linux) goes on our targets only.
function(_dho2_torch_target name)
  separate_arguments(_flags UNIX_COMMAND "${TORCH_CXX_FLAGS}")
  target_compile_options(${name} PRIVATE ${_flags})
  target_compile_definitions(${name} PRIVATE DHO2_TORCH_PACKAGE="${_dho2_torch_package}")
  target_include_directories(${name} PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
  target_link_libraries(${name} PRIVATE dho2::data dho2_warnings dho2_native ${TORCH_LIBRARIES}
                                        ${CMAKE_DL_LIBS})
endfunction()

add_executable(torch_train ${CMAKE_CURRENT_SOURCE_DIR}/peer/torch_train.cpp)
_dho2_torch_target(torch_train)

foreach(_variant IN ITEMS eigen blas)
  set(_name bench_torch_mlp_step)
  if(_variant STREQUAL "blas")
    find_library(DHO2_OPENBLAS_LIBRARY NAMES openblas)
    if(NOT DHO2_OPENBLAS_LIBRARY)
      message(STATUS "OpenBLAS not found: bench_torch_mlp_step_blas is skipped")
      continue()
    endif()
    set(_name bench_torch_mlp_step_blas)
  endif()
  add_executable(${_name} ${CMAKE_CURRENT_SOURCE_DIR}/bench_torch_mlp_step.cpp)
  add_dependencies(${_name} dho2_bench_revision)
  target_include_directories(${_name} PRIVATE ${DHO2_BENCH_GENERATED_DIR})
  _dho2_torch_target(${_name})
  target_link_libraries(${_name} PRIVATE benchmark::benchmark_main)
  if(TARGET OpenMP::OpenMP_CXX)
    target_link_libraries(${_name} PRIVATE OpenMP::OpenMP_CXX)
  endif()
  if(_variant STREQUAL "blas")
    target_compile_definitions(${_name} PRIVATE EIGEN_USE_BLAS)
    target_link_libraries(${_name} PRIVATE ${DHO2_OPENBLAS_LIBRARY})
  endif()
endforeach()

# bench_torch_cnn_hvp: the CNN's gradient against its exact HVP through dho2::torch_module_model.
add_executable(bench_torch_cnn_hvp ${CMAKE_CURRENT_SOURCE_DIR}/bench_torch_cnn_hvp.cpp)
add_dependencies(bench_torch_cnn_hvp dho2_bench_revision)
target_include_directories(bench_torch_cnn_hvp PRIVATE ${DHO2_BENCH_GENERATED_DIR})
_dho2_torch_target(bench_torch_cnn_hvp)
target_link_libraries(bench_torch_cnn_hvp PRIVATE dho2::torch benchmark::benchmark_main)
add_test(NAME benchmark.bench_torch_cnn_hvp
         COMMAND bench_torch_cnn_hvp ${DHO2_BENCHMARK_SMOKE_ARGS} --benchmark_filter=/batch:32$)
set_tests_properties(benchmark.bench_torch_cnn_hvp PROPERTIES LABELS "benchmark-smoke;torch"
                     FAIL_REGULAR_EXPRESSION "ERROR OCCURRED")

add_test(NAME benchmark.bench_torch_mlp_step
         COMMAND bench_torch_mlp_step ${DHO2_BENCHMARK_SMOKE_ARGS} --benchmark_filter=/batch:32$)
set_tests_properties(benchmark.bench_torch_mlp_step PROPERTIES LABELS "benchmark-smoke;torch"
                     FAIL_REGULAR_EXPRESSION "ERROR OCCURRED")
