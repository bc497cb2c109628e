# Settings shared by every DHO2 test (tests/, examples/, benchmarks/, cmake/dho2Mpi.cmake,
# cmake/dho2Failtest.cmake), so that the sanitizer presets can adapt all of them at once.
#
#   DHO2_TEST_TIMEOUT_SCALE (cache, default 1)
#       every test's TIMEOUT is multiplied by it: the asan and tsan presets set it, since their
#       Debug -O1 instrumented builds run several times slower than the ci build.
#   DHO2_MPI_TEST_ENVIRONMENT_MODIFICATION (cache, default empty)
#       the ENVIRONMENT_MODIFICATION of every test that runs mpiexec. The asan preset appends
#       fast_unwind_on_malloc=0 to ASAN_OPTIONS there: Open MPI's own allocations that it never
#       frees (in MPI_Init, and in plugins it has unloaded by exit) are only recognised by the
#       LeakSanitizer suppressions (tests/sanitizers/lsan.supp) on whole stacks, which the fast
#       frame-pointer unwinder cannot take through Open MPI's libraries. Only these tests pay for
#       the slow unwinder.
#   dho2_test_timeout(<out-var> <seconds>)
#       sets <out-var> to <seconds> × DHO2_TEST_TIMEOUT_SCALE.
#   dho2_mpi_test_environment(<test>...)
#       sets the environment of tests that run mpiexec: OMPI_ALLOW_RUN_AS_ROOT=1 and
#       OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 (Open MPI refuses root without them; harmless
#       otherwise), and DHO2_MPI_TEST_ENVIRONMENT_MODIFICATION.
include_guard(GLOBAL)

set(DHO2_TEST_TIMEOUT_SCALE 1 CACHE STRING
    "Multiplier of every DHO2 test's TIMEOUT (the sanitizer presets raise it)")
if(NOT DHO2_TEST_TIMEOUT_SCALE MATCHES "^[1-9][0-9]*$")
  message(FATAL_ERROR "DHO2_TEST_TIMEOUT_SCALE=${DHO2_TEST_TIMEOUT_SCALE}: expected a positive "
                      "integer")
endif()
set(DHO2_MPI_TEST_ENVIRONMENT_MODIFICATION "" CACHE STRING
    "ENVIRONMENT_MODIFICATION of every DHO2 test that runs mpiexec (see cmake/dho2Testing.cmake)")
mark_as_advanced(DHO2_TEST_TIMEOUT_SCALE DHO2_MPI_TEST_ENVIRONMENT_MODIFICATION)

function(dho2_test_timeout out seconds)
  math(EXPR _scaled "${seconds} * ${DHO2_TEST_TIMEOUT_SCALE}")
  set(${out} ${_scaled} PARENT_SCOPE)
endfunction()

function(dho2_mpi_test_environment)
  foreach(_test IN LISTS ARGN)
    set_tests_properties(${_test} PROPERTIES
                         ENVIRONMENT "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1")
    if(DHO2_MPI_TEST_ENVIRONMENT_MODIFICATION)
      set_tests_properties(${_test} PROPERTIES
                           ENVIRONMENT_MODIFICATION "${DHO2_MPI_TEST_ENVIRONMENT_MODIFICATION}")
    endif()
  endforeach()
endfunction()
