# dho2::asio — the opt-in TCP transport (include/dho2/asio.hpp: header-only Boost.Asio + threads,
# peers authenticated with HMAC-SHA256 from OpenSSL's libcrypto).
#
#   DHO2_WITH_ASIO (option)  default ON when the Boost headers (>= 1.70) and OpenSSL's Crypto
#                            (>= 1.1.1) are found;
#   dho2_asio / dho2::asio   INTERFACE target (EXPORT_NAME asio): dho2 + Boost::headers + Threads
#                            + OpenSSL::Crypto.
# The asio tests are part of the unit test executable (tests/CMakeLists.txt links dho2::asio
# when it exists); its benchmark is benchmarks/bench_asio_collectives.cpp.
include_guard(GLOBAL)

set(DHO2_BOOST_ASIO_MIN_VERSION 1.70)
set(DHO2_OPENSSL_MIN_VERSION 1.1.1)
find_package(Threads REQUIRED)
find_package(Boost ${DHO2_BOOST_ASIO_MIN_VERSION} QUIET)
find_package(OpenSSL ${DHO2_OPENSSL_MIN_VERSION} QUIET COMPONENTS Crypto)
if(TARGET Boost::headers AND TARGET OpenSSL::Crypto)
  set(_dho2_asio_default ON)
else()
  set(_dho2_asio_default OFF)
endif()
option(DHO2_WITH_ASIO "Provide dho2::asio (TCP transport); default ON when Boost and OpenSSL are found"
       ${_dho2_asio_default})

if(DHO2_WITH_ASIO)
  if(NOT TARGET Boost::headers)
    message(FATAL_ERROR "DHO2_WITH_ASIO=ON needs the Boost headers >= ${DHO2_BOOST_ASIO_MIN_VERSION} "
                        "(Debian: apt-get install libboost-dev)")
  endif()
  if(NOT TARGET OpenSSL::Crypto)
    message(FATAL_ERROR "DHO2_WITH_ASIO=ON needs OpenSSL's libcrypto >= ${DHO2_OPENSSL_MIN_VERSION} "
                        "for peer authentication (Debian: apt-get install libssl-dev)")
  endif()
  add_library(dho2_asio INTERFACE)
  add_library(dho2::asio ALIAS dho2_asio)
  set_target_properties(dho2_asio PROPERTIES EXPORT_NAME asio)
  target_link_libraries(dho2_asio INTERFACE dho2 Boost::headers Threads::Threads OpenSSL::Crypto)
  list(APPEND DHO2_EXPORTED_TARGETS dho2_asio)
endif()
