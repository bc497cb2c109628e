# cmake -P driver of one failtest (see dho2Failtest.cmake). Inputs (-D):
#   DHO2_BUILD_DIR  the build tree    DHO2_TARGET  the failtest object library
#   DHO2_CONFIG     build config      DHO2_SOURCE  the .cpp (its first line holds the expectation)
# Exit status 0 and "failtest ok" only when the build fails with output matching the expectation;
# otherwise prints DHO2-FAILTEST-UNEXPECTED (the test's FAIL_REGULAR_EXPRESSION) and exits non-zero.
cmake_minimum_required(VERSION 3.20)

foreach(_v IN ITEMS DHO2_BUILD_DIR DHO2_TARGET DHO2_SOURCE)
  if(NOT DEFINED ${_v})
    message(FATAL_ERROR "dho2RunFailtest.cmake: -D${_v}=... is required")
  endif()
endforeach()

include("${CMAKE_CURRENT_LIST_DIR}/dho2Failtest.cmake")
dho2_failtest_expectation("${DHO2_SOURCE}" _regex)
if(_regex STREQUAL "")
  message(FATAL_ERROR "DHO2-FAILTEST-UNEXPECTED: ${DHO2_SOURCE} has no `// DHO2_EXPECT: <regex>` line")
endif()

set(_config_args "")
if(DHO2_CONFIG)
  set(_config_args --config "${DHO2_CONFIG}")
endif()
execute_process(COMMAND "${CMAKE_COMMAND}" --build "${DHO2_BUILD_DIR}" --target "${DHO2_TARGET}"
                        ${_config_args}
                RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _out)
# The file's own name appears in every diagnostic and in the target name: mask it so that a regex
# naming the missing feature (e.g. `loss_and_gradient`) cannot match the file name instead.
get_filename_component(_file "${DHO2_SOURCE}" NAME)
string(REPLACE "${_file}" "<this-failtest>" _out "${_out}")
string(REPLACE "${DHO2_TARGET}" "<this-failtest-target>" _out "${_out}")

# The compiler output goes to the test log (PASS_REGULAR_EXPRESSION is matched against it).
message("---- output of `cmake --build --target ${DHO2_TARGET}` (exit status ${_rc}) ----\n${_out}"
        "---- end of output ----")

if(_rc EQUAL 0)
  message(FATAL_ERROR "DHO2-FAILTEST-UNEXPECTED: the failtest compiled, but it must not compile")
endif()
if(NOT _out MATCHES "${_regex}")
  message(FATAL_ERROR "DHO2-FAILTEST-UNEXPECTED: the failtest failed to compile, but not with "
                      "the expected diagnostic (see the DHO2_EXPECT line of the source)")
endif()
message("failtest ok: the source does not compile, with the expected diagnostic")
