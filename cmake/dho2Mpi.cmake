# dho2::mpi — the opt-in MPI transport (include/dho2/mpi.hpp: Boost.MPI + MPI), its multi-rank
# tests and its benchmark.
#
# ---- How the top-level CMakeLists.txt uses this file ---------------------------------------------
# The one line to add, in the "Opt-in transports" block — after `set(DHO2_EXPORTED_TARGETS ...)`
# (this file appends dho2_mpi to that list) and before `include(.../cmake/dho2Install.cmake)`:
#
#   include(${CMAKE_CURRENT_SOURCE_DIR}/cmake/dho2Mpi.cmake)
#
# Two reserved placeholders must go at the same time, since this file declares the option itself:
# the line `option(DHO2_WITH_MPI "... [not available yet]" OFF)` and DHO2_WITH_MPI in the
# FATAL_ERROR `foreach` of that block. And benchmarks/CMakeLists.txt must leave this benchmark to
# this file (it needs MPI and its own main), right after its file(GLOB ...):
#
#   list(FILTER DHO2_BENCHMARK_SOURCES EXCLUDE REGEX "/bench_mpi_[^/]*\\.cpp$")
#
# ---- What it provides ----------------------------------------------------------------------------
#   DHO2_WITH_MPI (option)  default ON when Boost.MPI (>= 1.74) and MPI (C++) are found, quietly;
#                           ON without them is a configure error.
#   dho2_mpi / dho2::mpi    INTERFACE target (EXPORT_NAME mpi): dho2 + Boost::mpi + MPI::MPI_CXX;
#                           appended to DHO2_EXPORTED_TARGETS, so cmake/dho2Install.cmake installs
#                           and exports it as dho2::mpi (cmake/dho2Config.cmake.in needs an `mpi`
#                           component that finds MPI and Boost.MPI, see DHO2_BOOST_MPI_MIN_VERSION).
#   dho2_add_mpi_test(<name> <target> <np>... [ARGS <arg>...] [LABELS <label>...]
#                     [TIMEOUT <seconds>])
#                           registers one CTest test <name>.np<N> per process count N, running
#                           ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} N [--oversubscribe]
#                           ${MPIEXEC_PREFLAGS} <target> ${MPIEXEC_POSTFLAGS} <args>, label `mpi`
#                           (plus LABELS), TIMEOUT (default DHO2_MPI_TEST_TIMEOUT; both scaled
#                           by DHO2_TEST_TIMEOUT_SCALE), PROCESSORS N, and the environment of
#                           dho2_mpi_test_environment (cmake/dho2Testing.cmake).
#                           Does nothing when DHO2_WITH_MPI is OFF.
#   with DHO2_BUILD_TESTS:  dho2_mpi_tests (tests/mpi/test_mpi_transport.cpp) and the tests
#                           mpi.transport.np<N> for N in DHO2_MPI_TEST_NPROCS (default 1 2 3 4);
#                           dho2_mpi_deadline_tests (mpi.deadline.np2, .np3: set_timeout);
#                           dho2_mpi_watchdog_probe (mpi.watchdog.np2, .np3: set_watchdog);
#                           dho2_mpi_optimizer_tests (mpi.optimizer.np<N>, the same N);
#                           dho2_mpi_load_tests (mpi.load.np8, label load: 2,000 steps on 8 ranks).
#   with DHO2_BUILD_BENCHMARKS: bench_mpi_collectives (benchmarks/bench_mpi_collectives.cpp) and
#                           the smoke test benchmark.bench_mpi_collectives.np2 (tiny sizes,
#                           labels mpi and benchmark-smoke).
include_guard(GLOBAL)
include(${CMAKE_CURRENT_LIST_DIR}/dho2Testing.cmake)

get_filename_component(_dho2_mpi_root "${CMAKE_CURRENT_LIST_DIR}/.." ABSOLUTE)
set(DHO2_BOOST_MPI_MIN_VERSION 1.74)  # also for @DHO2_BOOST_MPI_MIN_VERSION@ in the package Config

# ---- Option and dependencies ---------------------------------------------------------------------
if(NOT DEFINED DHO2_WITH_MPI OR DHO2_WITH_MPI)
  find_package(MPI QUIET COMPONENTS CXX)
  find_package(Boost ${DHO2_BOOST_MPI_MIN_VERSION} QUIET COMPONENTS mpi)
endif()
if(TARGET MPI::MPI_CXX AND TARGET Boost::mpi)
  set(_dho2_mpi_available ON)
else()
  set(_dho2_mpi_available OFF)
endif()
option(DHO2_WITH_MPI
       "Provide dho2::mpi (Boost.MPI transport); default ON when Boost.MPI and MPI are found"
       ${_dho2_mpi_available})

set(DHO2_MPI_TEST_NPROCS 1 2 3 4 CACHE STRING
    "Process counts at which the MPI tests run (mpi.transport.np<N>), e.g. \"1;2;3;4;7\"")
set(DHO2_MPI_TEST_TIMEOUT 300 CACHE STRING "CTest TIMEOUT (seconds) of each MPI test")
mark_as_advanced(DHO2_MPI_TEST_NPROCS DHO2_MPI_TEST_TIMEOUT)

# dho2_add_mpi_test(<name> <target> <np>... [ARGS ...] [LABELS ...] [TIMEOUT <s>]): see above.
function(dho2_add_mpi_test name target)
  if(NOT DHO2_WITH_MPI)
    return()
  endif()
  cmake_parse_arguments(PARSE_ARGV 2 _arg "" "TIMEOUT" "ARGS;LABELS")
  if(NOT _arg_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "dho2_add_mpi_test(${name}): no process count given")
  endif()
  if(NOT MPIEXEC_EXECUTABLE)
    message(WARNING "dho2_add_mpi_test(${name}): no mpiexec found (MPIEXEC_EXECUTABLE); "
                    "the test is not registered")
    return()
  endif()
  if(NOT DEFINED _arg_TIMEOUT)
    set(_arg_TIMEOUT ${DHO2_MPI_TEST_TIMEOUT})
  endif()
  dho2_test_timeout(_arg_TIMEOUT ${_arg_TIMEOUT})
  set(_labels mpi ${_arg_LABELS})
  foreach(_np IN LISTS _arg_UNPARSED_ARGUMENTS)
    if(NOT _np MATCHES "^[1-9][0-9]*$")
      message(FATAL_ERROR "dho2_add_mpi_test(${name}): process count `${_np}` is not a "
                          "positive integer")
    endif()
    add_test(NAME ${name}.np${_np}
             COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${_np}
                     ${DHO2_MPIEXEC_OVERSUBSCRIBE} ${MPIEXEC_PREFLAGS}
                     $<TARGET_FILE:${target}> ${MPIEXEC_POSTFLAGS} ${_arg_ARGS})
    set_tests_properties(${name}.np${_np} PROPERTIES
                         LABELS "${_labels}"
                         TIMEOUT ${_arg_TIMEOUT}
                         PROCESSORS ${_np})
    dho2_mpi_test_environment(${name}.np${_np})
  endforeach()
endfunction()

if(NOT DHO2_WITH_MPI)
  return()  # returns from this include() only
endif()
if(NOT _dho2_mpi_available)
  set(_dho2_missing "")
  if(NOT TARGET MPI::MPI_CXX)
    list(APPEND _dho2_missing "MPI (C++): find_package(MPI COMPONENTS CXX)")
  endif()
  if(NOT TARGET Boost::mpi)
    list(APPEND _dho2_missing
         "Boost.MPI >= ${DHO2_BOOST_MPI_MIN_VERSION}: find_package(Boost COMPONENTS mpi)")
  endif()
  list(JOIN _dho2_missing " and " _dho2_missing)
  message(FATAL_ERROR "DHO2_WITH_MPI=ON, but not found: ${_dho2_missing}. On Debian: apt-get "
                      "install libboost-mpi-dev libopenmpi-dev openmpi-bin. Or configure with "
                      "-DDHO2_WITH_MPI=OFF.")
endif()

# ---- The library target ------------------------------------------------------------------------
add_library(dho2_mpi INTERFACE)
add_library(dho2::mpi ALIAS dho2_mpi)
set_target_properties(dho2_mpi PROPERTIES EXPORT_NAME mpi)
target_link_libraries(dho2_mpi INTERFACE dho2 Boost::mpi MPI::MPI_CXX)
list(APPEND DHO2_EXPORTED_TARGETS dho2_mpi)

# ---- Developer targets ---------------------------------------------------------------------------
if(NOT (DHO2_BUILD_TESTS OR DHO2_BUILD_BENCHMARKS))
  return()
endif()
include(${CMAKE_CURRENT_LIST_DIR}/dho2Warnings.cmake)
enable_testing()

# --oversubscribe (more ranks than cores) is an Open MPI flag; other launchers do not need it.
if(NOT DEFINED DHO2_MPIEXEC_OVERSUBSCRIBE)
  set(_dho2_oversubscribe "")
  if(MPIEXEC_EXECUTABLE)
    execute_process(COMMAND ${CMAKE_COMMAND} -E env OMPI_ALLOW_RUN_AS_ROOT=1
                            OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 ${MPIEXEC_EXECUTABLE} --version
                    OUTPUT_VARIABLE _dho2_mpiexec_version ERROR_VARIABLE _dho2_mpiexec_version
                    RESULT_VARIABLE _dho2_mpiexec_rc TIMEOUT 60)
    if(_dho2_mpiexec_version MATCHES "Open MPI|OpenRTE")
      set(_dho2_oversubscribe --oversubscribe)
    endif()
  endif()
  set(DHO2_MPIEXEC_OVERSUBSCRIBE "${_dho2_oversubscribe}" CACHE STRING
      "mpiexec flag that allows more ranks than cores (--oversubscribe for Open MPI)")
  mark_as_advanced(DHO2_MPIEXEC_OVERSUBSCRIBE)
endif()

if(DHO2_BUILD_TESTS)
  find_package(doctest REQUIRED)
  add_executable(dho2_mpi_tests ${_dho2_mpi_root}/tests/mpi/test_mpi_transport.cpp)
  target_link_libraries(dho2_mpi_tests PRIVATE dho2::mpi doctest::doctest dho2_warnings)
  if(NOT CMAKE_RUNTIME_OUTPUT_DIRECTORY)
    set_target_properties(dho2_mpi_tests PROPERTIES
                          RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/tests)
  endif()
  dho2_add_mpi_test(mpi.transport dho2_mpi_tests ${DHO2_MPI_TEST_NPROCS})

  # The transport's deadline (set_timeout): collectives in different orders end within a bound.
  add_executable(dho2_mpi_deadline_tests ${_dho2_mpi_root}/tests/mpi/test_mpi_deadline.cpp)
  target_link_libraries(dho2_mpi_deadline_tests PRIVATE dho2::mpi doctest::doctest dho2_warnings)
  if(NOT CMAKE_RUNTIME_OUTPUT_DIRECTORY)
    set_target_properties(dho2_mpi_deadline_tests PROPERTIES
                          RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/tests)
  endif()
  dho2_add_mpi_test(mpi.deadline dho2_mpi_deadline_tests 2 3 TIMEOUT 120)

  # The watchdog (set_watchdog): ranks stuck in calls that cannot complete end the job within
  # seconds, with the watchdog's line (tests/mpi/mpi_watchdog_probe.cpp).
  add_executable(dho2_mpi_watchdog_probe ${_dho2_mpi_root}/tests/mpi/mpi_watchdog_probe.cpp)
  target_link_libraries(dho2_mpi_watchdog_probe PRIVATE dho2::mpi dho2_warnings)
  if(NOT CMAKE_RUNTIME_OUTPUT_DIRECTORY)
    set_target_properties(dho2_mpi_watchdog_probe PROPERTIES
                          RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/tests)
  endif()
  dho2_add_mpi_test(mpi.watchdog dho2_mpi_watchdog_probe 2 3 TIMEOUT 60)
  foreach(_np IN ITEMS 2 3)
    if(TEST mpi.watchdog.np${_np})
      set_tests_properties(mpi.watchdog.np${_np} PROPERTIES PASS_REGULAR_EXPRESSION
                           "did not complete within timeout = 1\\.0 s")
    endif()
  endforeach()

  # The optimizer over MPI (mode S and mode A) against the single-process run.
  add_executable(dho2_mpi_optimizer_tests ${_dho2_mpi_root}/tests/mpi/test_mpi_optimizer.cpp)
  target_link_libraries(dho2_mpi_optimizer_tests PRIVATE dho2::mpi dho2::data doctest::doctest
                                                         dho2_warnings dho2_native)
  if(NOT CMAKE_RUNTIME_OUTPUT_DIRECTORY)
    set_target_properties(dho2_mpi_optimizer_tests PROPERTIES
                          RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/tests)
  endif()
  dho2_add_mpi_test(mpi.optimizer dho2_mpi_optimizer_tests ${DHO2_MPI_TEST_NPROCS})

  # Under load: 8 processes (oversubscribed on small machines), 2,000 steps of mode S and ADMM.
  add_executable(dho2_mpi_load_tests ${_dho2_mpi_root}/tests/mpi/test_mpi_load.cpp)
  target_link_libraries(dho2_mpi_load_tests PRIVATE dho2::mpi dho2::data doctest::doctest
                                                    dho2_warnings)
  if(NOT CMAKE_RUNTIME_OUTPUT_DIRECTORY)
    set_target_properties(dho2_mpi_load_tests PROPERTIES
                          RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/tests)
  endif()
  dho2_add_mpi_test(mpi.load dho2_mpi_load_tests 8 LABELS load TIMEOUT 600)
endif()

if(DHO2_BUILD_BENCHMARKS)
  find_package(benchmark REQUIRED)
  if(TARGET bench_mpi_collectives)
    message(FATAL_ERROR "bench_mpi_collectives already exists: benchmarks/CMakeLists.txt must "
                        "exclude bench_mpi_*.cpp from its glob (see cmake/dho2Mpi.cmake) and "
                        "this file must be included before add_subdirectory(benchmarks)")
  endif()
  add_executable(bench_mpi_collectives ${_dho2_mpi_root}/benchmarks/bench_mpi_collectives.cpp)
  target_compile_definitions(bench_mpi_collectives PRIVATE DHO2_WITH_MPI_BENCHMARK=1)
  target_link_libraries(bench_mpi_collectives PRIVATE dho2::mpi benchmark::benchmark
                                                      dho2_warnings dho2_native)
  if(NOT CMAKE_RUNTIME_OUTPUT_DIRECTORY)
    set_target_properties(bench_mpi_collectives PROPERTIES
                          RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/benchmarks)
  endif()
  dho2_add_mpi_test(benchmark.bench_mpi_collectives bench_mpi_collectives 2
                    ARGS --dho2_sizes=16,1000 --dho2_iterations=3 --dho2_repetitions=2
                    LABELS benchmark-smoke)
endif()
