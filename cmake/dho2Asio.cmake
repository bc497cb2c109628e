# dho2::asio — the opt-in TCP transport (include/dho2/asio.hpp: header-only Boost.Asio + threads).
#
#   DHO2_WITH_ASIO (option)  default ON when the Boost headers (>= 1.70) are found;
#   dho2_asio / dho2::asio   INTERFACE target (EXPORT_NAME asio): dho2 + Boost::headers + Threads.
# The asio tests are part of the unit test executable (tests/CMakeLists.txt links dho2::asio
# when it exists); its benchmark is benchmarks/bench_asio_collectives.cpp.
include_guard(GLOBAL)

set(DHO2_BOOST_ASIO_MIN_VERSION 1.70)
find_package(Threads REQUIRED)
find_package(Boost ${DHO2_BOOST_ASIO_MIN_VERSION} QUIET)
if(TARGET Boost::headers)
  set(_dho2_asio_default ON)
else()
  set(_dho2_asio_default OFF)
endif()
option(DHO2_WITH_ASIO "Provide dho2::asio (TCP transport); default ON when Boost is found"
       ${_dho2_asio_default})

if(DHO2_WITH_ASIO)
  if(NOT TARGET Boost::headers)
    message(FATAL_ERROR "DHO2_WITH_ASIO=ON needs the Boost headers >= ${DHO2_BOOST_ASIO_MIN_VERSION} "
                        "(Debian: apt-get install libboost-dev)")
  endif()
  add_library(dho2_asio INTERFACE)
  add_library(dho2::asio ALIAS dho2_asio)
  set_target_properties(dho2_asio PROPERTIES EXPORT_NAME asio)
  target_link_libraries(dho2_asio INTERFACE dho2 Boost::headers Threads::Threads)
  list(APPEND DHO2_EXPORTED_TARGETS dho2_asio)
endif()
