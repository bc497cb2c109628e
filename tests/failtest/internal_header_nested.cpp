// DHO2_EXPECT: DHO2: <dho2/\.\.\./detail/\.\.\.> is an internal header. include <dho2/dho2\.hpp>
// An internal header of a sub-directory (transport/detail/) included on its own: it must refuse
// to compile like those of include/dho2/detail/ (include/dho2/detail/internal_header_check.hpp).
// asio_frame.hpp needs nothing but the standard library, so no Boost or OpenSSL is needed here.
#include <dho2/transport/detail/asio_frame.hpp>
