# cmake -P driver of the consumer tests (registered in tests/CMakeLists.txt, label `consumer`).
#
#   DHO2_MODE=install           `cmake --install` this build tree into DHO2_PREFIX (a fresh prefix
#                                inside the build tree) and check the installed package files;
#                                the fixture of consumer.find_package.
#   DHO2_MODE=install_only      configure the source with `--preset install` (no tests, examples,
#                                benchmarks, docs), check that it looked for none of their
#                                dependencies and builds nothing, and install it.
#   DHO2_MODE=find_package      consumer does find_package(dho2 <version> CONFIG REQUIRED) from
#                                DHO2_PREFIX only (no package registries).
#   DHO2_MODE=add_subdirectory  consumer does add_subdirectory(<DHO2 source dir>).
#   DHO2_MODE=fetchcontent      consumer does FetchContent_Declare(dho2 URL file://<tarball>
#                                URL_HASH SHA256=...) of a source tarball made here from the
#                                library files of the source tree (no network, ever).
# Each consumer mode configures tests/consumer/ from scratch in DHO2_WORK_DIR/<mode> with this
# build's generator, compiler, configuration and flags, builds it and runs its executables.
cmake_minimum_required(VERSION 3.20)

foreach(_v IN ITEMS DHO2_MODE DHO2_SOURCE_DIR DHO2_BUILD_DIR DHO2_VERSION DHO2_CONSUMER_SOURCE_DIR
                    DHO2_WORK_DIR DHO2_PREFIX DHO2_GENERATOR DHO2_CXX_COMPILER)
  if(NOT DEFINED ${_v} OR "${${_v}}" STREQUAL "")
    message(FATAL_ERROR "run_consumer.cmake: -D${_v}=... is required")
  endif()
endforeach()

string(TIMESTAMP _t0 "%s" UTC)

function(dho2_step what)
  string(TIMESTAMP _now "%s" UTC)
  math(EXPR _dt "${_now} - ${_t0}")
  message("[consumer.${DHO2_MODE} +${_dt}s] ${what}")
endfunction()

# Runs a command with its output going to the test log; fails the test if it fails.
function(dho2_run what)
  dho2_step("${what}")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE _rc)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "consumer.${DHO2_MODE}: ${what} failed (exit status ${_rc})")
  endif()
endfunction()

set(_config_args "")
if(DHO2_CONFIG)
  set(_config_args --config "${DHO2_CONFIG}")
endif()

# ---- install: the fixture of consumer.find_package -----------------------------------------------
if(DHO2_MODE STREQUAL "install")
  file(REMOVE_RECURSE "${DHO2_PREFIX}")
  dho2_run("cmake --install into ${DHO2_PREFIX}"
           "${CMAKE_COMMAND}" --install "${DHO2_BUILD_DIR}" --prefix "${DHO2_PREFIX}" ${_config_args})

  file(GLOB_RECURSE _configs "${DHO2_PREFIX}/*/dho2Config.cmake")
  list(LENGTH _configs _n)
  if(NOT _n EQUAL 1)
    message(FATAL_ERROR "expected exactly one installed dho2Config.cmake, found: ${_configs}")
  endif()
  get_filename_component(_pkgdir "${_configs}" DIRECTORY)
  foreach(_f IN ITEMS "${_pkgdir}/dho2ConfigVersion.cmake" "${_pkgdir}/dho2Targets.cmake"
                      "${DHO2_PREFIX}/include/dho2/core/types.hpp"
                      "${DHO2_PREFIX}/include/dho2/concepts/differentiable_model.hpp")
    if(NOT EXISTS "${_f}")
      message(FATAL_ERROR "not installed: ${_f}")
    endif()
  endforeach()
  # Only headers, the package files and docs: no test, example or benchmark artefacts.
  file(GLOB_RECURSE _all RELATIVE "${DHO2_PREFIX}" "${DHO2_PREFIX}/*")
  foreach(_f IN LISTS _all)
    if(NOT _f MATCHES "^include/dho2/" AND NOT _f MATCHES "/cmake/dho2/dho2[A-Za-z-]*\\.cmake$"
       AND NOT _f MATCHES "^share/doc/dho2/")
      message(FATAL_ERROR "unexpected installed file: ${_f}")
    endif()
  endforeach()
  file(READ "${_pkgdir}/dho2Config.cmake" _cfg)
  foreach(_dep IN ITEMS "find_dependency(Eigen3" "find_dependency(ZLIB)")
    string(FIND "${_cfg}" "${_dep}" _pos)
    if(_pos LESS 0)
      message(FATAL_ERROR "dho2Config.cmake does not call ${_dep}...")
    endif()
  endforeach()

  # The version file, evaluated exactly as find_package does: SameMajorVersion.
  string(REGEX MATCH "^[0-9]+" _major "${DHO2_VERSION}")
  math(EXPR _next_major "${_major} + 1")
  foreach(_case IN ITEMS "${_major}.0:TRUE" "${DHO2_VERSION}:TRUE" "${_next_major}.0:FALSE")
    string(REPLACE ":" ";" _case "${_case}")
    list(GET _case 0 PACKAGE_FIND_VERSION)
    list(GET _case 1 _expected)
    string(REPLACE "." ";" _parts "${PACKAGE_FIND_VERSION}")
    list(GET _parts 0 PACKAGE_FIND_VERSION_MAJOR)
    list(GET _parts 1 PACKAGE_FIND_VERSION_MINOR)
    set(PACKAGE_VERSION_COMPATIBLE FALSE)
    include("${_pkgdir}/dho2ConfigVersion.cmake")
    if(NOT PACKAGE_VERSION_COMPATIBLE STREQUAL _expected)
      message(FATAL_ERROR "dho2ConfigVersion.cmake (${PACKAGE_VERSION}) says compatible="
                          "${PACKAGE_VERSION_COMPATIBLE} for a request of ${PACKAGE_FIND_VERSION}; "
                          "expected ${_expected}")
    endif()
  endforeach()
  dho2_step("installed package in ${_pkgdir} is complete; version ${DHO2_VERSION} is SameMajorVersion")
  return()
endif()

# ---- install_only: the `install` preset configures, builds nothing and installs -----------------
# An install-only configure (README, "Using DHO2 from CMake") must not build anything or look for
# what the tests, examples, benchmarks and docs need. (The library's own optional components are
# looked for — MPI, Boost, LibTorch for dho2::torch — since the package exports what was found.)
if(DHO2_MODE STREQUAL "install_only")
  set(_bin "${DHO2_WORK_DIR}/install_only")
  file(REMOVE_RECURSE "${_bin}")
  dho2_run("configure with --preset install"
           "${CMAKE_COMMAND}" -S "${DHO2_SOURCE_DIR}" --preset install -B "${_bin}/build"
           -G "${DHO2_GENERATOR}" "-DCMAKE_CXX_COMPILER=${DHO2_CXX_COMPILER}"
           "-DCMAKE_INSTALL_PREFIX=${_bin}/prefix")
  file(STRINGS "${_bin}/build/CMakeCache.txt" _looked_for
       REGEX "^(doctest_DIR|benchmark_DIR|OpenMP_CXX_FLAGS|DOXYGEN_EXECUTABLE|Python3_EXECUTABLE)[:=]")
  if(_looked_for)
    message(FATAL_ERROR "the install preset looked for developer dependencies: ${_looked_for}")
  endif()
  execute_process(COMMAND "${CMAKE_COMMAND}" --build "${_bin}/build" OUTPUT_VARIABLE _out
                  ERROR_VARIABLE _out RESULT_VARIABLE _rc)
  if(NOT _rc EQUAL 0 OR _out MATCHES "Building CXX|Linking CXX")
    message(FATAL_ERROR "the install preset's build must build nothing (exit ${_rc}):\n${_out}")
  endif()
  dho2_run("cmake --install" "${CMAKE_COMMAND}" --install "${_bin}/build")
  foreach(_f IN ITEMS "include/dho2/dho2.hpp" "share/cmake/dho2/dho2Config.cmake")
    if(NOT EXISTS "${_bin}/prefix/${_f}")
      message(FATAL_ERROR "not installed by the install preset: ${_f}")
    endif()
  endforeach()
  dho2_step("the install preset built nothing, looked for no developer dependency, installed")
  return()
endif()

# ---- consumer modes -------------------------------------------------------------------------------
set(_src "${DHO2_CONSUMER_SOURCE_DIR}")
set(_bin "${DHO2_WORK_DIR}/${DHO2_MODE}")
file(REMOVE_RECURSE "${_bin}")
file(MAKE_DIRECTORY "${_bin}")

set(_mode_args "")
if(DHO2_MODE STREQUAL "find_package")
  if(NOT EXISTS "${DHO2_PREFIX}")
    message(FATAL_ERROR "${DHO2_PREFIX} does not exist: run the consumer.install test first")
  endif()
  list(APPEND _mode_args "-DCMAKE_PREFIX_PATH=${DHO2_PREFIX}" "-DDHO2_EXPECTED_PREFIX=${DHO2_PREFIX}"
       "-DDHO2_REQUIRED_VERSION=${DHO2_VERSION}")
elseif(DHO2_MODE STREQUAL "add_subdirectory")
  list(APPEND _mode_args "-DDHO2_SOURCE_DIR=${DHO2_SOURCE_DIR}")
elseif(DHO2_MODE STREQUAL "fetchcontent")
  # A source tarball of the library files only (what a release archive needs): this also proves
  # the top-level CMakeLists.txt works without tests/, examples/ and benchmarks/.
  set(_members CMakeLists.txt cmake include)
  foreach(_opt IN ITEMS LICENSE LICENSE.md LICENSE.txt README.md)
    if(EXISTS "${DHO2_SOURCE_DIR}/${_opt}")
      list(APPEND _members ${_opt})
    endif()
  endforeach()
  set(_archive "${_bin}/dho2-${DHO2_VERSION}-src.tar.gz")
  dho2_step("packing ${_members} into ${_archive}")
  execute_process(COMMAND "${CMAKE_COMMAND}" -E tar czf "${_archive}" ${_members}
                  WORKING_DIRECTORY "${DHO2_SOURCE_DIR}" RESULT_VARIABLE _rc)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "could not create ${_archive}")
  endif()
  file(SHA256 "${_archive}" _sha)
  list(APPEND _mode_args "-DDHO2_ARCHIVE_URL=file://${_archive}" "-DDHO2_ARCHIVE_SHA256=${_sha}")
else()
  message(FATAL_ERROR "run_consumer.cmake: unknown DHO2_MODE `${DHO2_MODE}`")
endif()

set(_configure "${CMAKE_COMMAND}" -S "${_src}" -B "${_bin}/build" -G "${DHO2_GENERATOR}"
    "-DCMAKE_CXX_COMPILER=${DHO2_CXX_COMPILER}"
    "-DCMAKE_CXX_FLAGS=${DHO2_CXX_FLAGS}"
    "-DCMAKE_EXE_LINKER_FLAGS=${DHO2_EXE_LINKER_FLAGS}"
    -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
    -DCMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF
    "-DDHO2_CONSUMER_MODE=${DHO2_MODE}"
    ${_mode_args})
if(DHO2_CONFIG)
  list(APPEND _configure "-DCMAKE_BUILD_TYPE=${DHO2_CONFIG}")
endif()
if(DHO2_MAKE_PROGRAM)
  list(APPEND _configure "-DCMAKE_MAKE_PROGRAM=${DHO2_MAKE_PROGRAM}")
endif()

dho2_run("configure (${DHO2_MODE})" ${_configure})
dho2_run("build" "${CMAKE_COMMAND}" --build "${_bin}/build" ${_config_args} --parallel 2)
foreach(_exe IN ITEMS consumer consumer_data)
  dho2_run("run ${_exe}" "${_bin}/build/bin/${_exe}")
endforeach()
dho2_step("consumer.${DHO2_MODE} passed")
