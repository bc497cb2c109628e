// DHO2_EXPECT: DHO2: <dho2/\.\.\./detail/\.\.\.> is an internal header. include <dho2/dho2\.hpp>
// An internal header included on its own, before any public header: it must refuse to compile
// (include/dho2/detail/internal_header_check.hpp). agreement.hpp itself includes a public header
// that uses internal headers (<dho2/core/options.hpp>), so this also checks that the check runs
// before anything else the internal header includes.
#include <dho2/detail/agreement.hpp>
