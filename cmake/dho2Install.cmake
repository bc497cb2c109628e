# Install rules and the relocatable CMake package `dho2`:
#   <prefix>/include/dho2/...                         the headers
#   <prefix>/share/cmake/dho2/dho2Config.cmake         find_dependency + targets + components
#   <prefix>/share/cmake/dho2/dho2ConfigVersion.cmake  SameMajorVersion, architecture independent
#   <prefix>/share/cmake/dho2/dho2Targets.cmake        dho2::dho2, dho2::data (+ mpi, asio, torch)
# The package is header-only, hence under DATADIR (like nlohmann_json) and ARCH_INDEPENDENT.
include_guard(GLOBAL)
include(CMakePackageConfigHelpers)

set(DHO2_INSTALL_CMAKEDIR "${CMAKE_INSTALL_DATADIR}/cmake/dho2"
    CACHE STRING "Where the dho2 CMake package files are installed (relative to the prefix)")
mark_as_advanced(DHO2_INSTALL_CMAKEDIR)

install(DIRECTORY "${PROJECT_SOURCE_DIR}/include/" DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}"
        FILES_MATCHING PATTERN "*.hpp" PATTERN "*.h" PATTERN "*.ipp")

install(TARGETS ${DHO2_EXPORTED_TARGETS} EXPORT dho2Targets)
install(EXPORT dho2Targets NAMESPACE dho2:: FILE dho2Targets.cmake
        DESTINATION "${DHO2_INSTALL_CMAKEDIR}")

# Components the package Config knows, from the exported targets (see dho2Config.cmake.in).
set(DHO2_PACKAGE_COMPONENTS core data)
if(dho2_mpi IN_LIST DHO2_EXPORTED_TARGETS)
  list(APPEND DHO2_PACKAGE_COMPONENTS mpi)
endif()
if(dho2_asio IN_LIST DHO2_EXPORTED_TARGETS)
  list(APPEND DHO2_PACKAGE_COMPONENTS asio)
endif()
if(dho2_torch IN_LIST DHO2_EXPORTED_TARGETS)
  list(APPEND DHO2_PACKAGE_COMPONENTS torch)
endif()
if(NOT DEFINED DHO2_BOOST_ASIO_MIN_VERSION)
  set(DHO2_BOOST_ASIO_MIN_VERSION 1.70)
endif()
if(NOT DEFINED DHO2_BOOST_MPI_MIN_VERSION)
  set(DHO2_BOOST_MPI_MIN_VERSION 1.74)
endif()
configure_package_config_file("${CMAKE_CURRENT_LIST_DIR}/dho2Config.cmake.in"
                              "${PROJECT_BINARY_DIR}/dho2Config.cmake"
                              INSTALL_DESTINATION "${DHO2_INSTALL_CMAKEDIR}")
write_basic_package_version_file("${PROJECT_BINARY_DIR}/dho2ConfigVersion.cmake"
                                 VERSION "${PROJECT_VERSION}" COMPATIBILITY SameMajorVersion
                                 ARCH_INDEPENDENT)
install(FILES "${PROJECT_BINARY_DIR}/dho2Config.cmake" "${PROJECT_BINARY_DIR}/dho2ConfigVersion.cmake"
        DESTINATION "${DHO2_INSTALL_CMAKEDIR}")

foreach(_dho2_doc IN ITEMS LICENSE LICENSE.md LICENSE.txt README.md)
  if(EXISTS "${PROJECT_SOURCE_DIR}/${_dho2_doc}")
    install(FILES "${PROJECT_SOURCE_DIR}/${_dho2_doc}" DESTINATION "${CMAKE_INSTALL_DOCDIR}")
  endif()
endforeach()
