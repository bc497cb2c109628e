/// @file
/// The opt-in umbrella header of the TCP transport: the core library (`<dho2/dho2.hpp>`) plus
/// `dho2::asio_transport` and `dho2::asio_options` (`<dho2/transport/asio.hpp>`). Needs the Boost
/// headers (Boost.Asio, 1.74 or later), OpenSSL's libcrypto (1.1.1 or later, for the HMAC-SHA256
/// peer authentication) and threads: link `dho2::asio`.
#pragma once

#include <dho2/dho2.hpp>
#include <dho2/transport/asio.hpp>
