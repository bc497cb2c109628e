# Failtests: translation units that must NOT compile, and must fail for the documented reason.
#
#   dho2_add_failtest(<source.cpp> [NAME <name>] [LIBS <targets>...] [CONTROL])
#
# <source.cpp> must start with the line
#   // DHO2_EXPECT: <regex>
# where <regex> is a CMake regular expression that the compiler output must match (typically the
# "DHO2: ..." text of a static_assert). A `;` is not allowed in it (CTest would split the property
# there): write `.` instead.
#
# For each file this creates an object library `dho2_failtest_<name>` (EXCLUDE_FROM_ALL, linked to
# dho2::data and LIBS) and a CTest test `failtest.<name>` (label `failtest`) that runs
# cmake/dho2RunFailtest.cmake, which builds that one target with `cmake --build` and
#   * passes only if the build FAILS and its output matches <regex>;
#   * prints DHO2-FAILTEST-UNEXPECTED (a FAIL_REGULAR_EXPRESSION of the test) otherwise, so a file
#     that compiles can never pass, even if its output happened to match PASS_REGULAR_EXPRESSION.
# The tests share RESOURCE_LOCK dho2_build_tree: they never drive the build tree concurrently.
#
# CONTROL marks a positive control: a file that DOES compile. Two tests are registered for it:
# `failtest.<name>` with WILL_FAIL (the harness must report it as a failure) and
# `failtest.<name>.compiles` (a plain build of the target must succeed, so the first one cannot pass
# because the harness itself is broken).
include_guard(GLOBAL)
include(${CMAKE_CURRENT_LIST_DIR}/dho2Testing.cmake)

set(DHO2_FAILTEST_RUNNER "${CMAKE_CURRENT_LIST_DIR}/dho2RunFailtest.cmake")

# Reads the `// DHO2_EXPECT: <regex>` first line of `source` into `out_var` ("" when absent).
function(dho2_failtest_expectation source out_var)
  file(READ "${source}" _head LIMIT 4096)
  set(_regex "")
  if(_head MATCHES "^// DHO2_EXPECT:[ \t]*([^\r\n]*[^ \t\r\n])")
    set(_regex "${CMAKE_MATCH_1}")
  endif()
  set(${out_var} "${_regex}" PARENT_SCOPE)
endfunction()

function(dho2_add_failtest source)
  cmake_parse_arguments(PARSE_ARGV 1 arg "CONTROL" "NAME" "LIBS")
  get_filename_component(source "${source}" ABSOLUTE)
  if(NOT arg_NAME)
    get_filename_component(arg_NAME "${source}" NAME_WE)
  endif()
  string(MAKE_C_IDENTIFIER "${arg_NAME}" _id)

  dho2_failtest_expectation("${source}" _regex)
  if(_regex STREQUAL "")
    message(FATAL_ERROR "failtest ${source}: the first line must be `// DHO2_EXPECT: <regex>`")
  endif()
  if(_regex MATCHES ";")
    message(FATAL_ERROR "failtest ${source}: the DHO2_EXPECT regex must not contain `;` "
                        "(CTest would split it into a list); use `.` instead")
  endif()

  set(_target dho2_failtest_${_id})
  add_library(${_target} OBJECT EXCLUDE_FROM_ALL "${source}")
  set_target_properties(${_target} PROPERTIES EXCLUDE_FROM_DEFAULT_BUILD TRUE)
  target_link_libraries(${_target} PRIVATE dho2::data ${arg_LIBS})
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    # Plain diagnostics: colour escapes would defeat the regex.
    target_compile_options(${_target} PRIVATE -fdiagnostics-color=never)
  endif()

  set(_test failtest.${arg_NAME})
  dho2_test_timeout(_timeout 300)
  add_test(NAME ${_test}
           COMMAND "${CMAKE_COMMAND}" "-DDHO2_BUILD_DIR=${CMAKE_BINARY_DIR}"
                   "-DDHO2_TARGET=${_target}" "-DDHO2_CONFIG=$<CONFIG>" "-DDHO2_SOURCE=${source}"
                   -P "${DHO2_FAILTEST_RUNNER}")
  set_tests_properties(${_test} PROPERTIES
                       PASS_REGULAR_EXPRESSION "${_regex}"
                       FAIL_REGULAR_EXPRESSION "DHO2-FAILTEST-UNEXPECTED"
                       LABELS failtest
                       RESOURCE_LOCK dho2_build_tree
                       TIMEOUT ${_timeout})
  if(arg_CONTROL)
    set_tests_properties(${_test} PROPERTIES WILL_FAIL TRUE)
    add_test(NAME ${_test}.compiles
             COMMAND "${CMAKE_COMMAND}" --build "${CMAKE_BINARY_DIR}" --target ${_target}
                     --config $<CONFIG>)
    set_tests_properties(${_test}.compiles PROPERTIES LABELS failtest
                         RESOURCE_LOCK dho2_build_tree TIMEOUT ${_timeout})
  endif()
endfunction()
