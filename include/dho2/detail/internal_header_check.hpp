// Refuses the direct inclusion of DHO2's internal headers (every header under a detail/ directory
// of include/dho2), as Eigen's InternalHeaderCheck.h does for its src/ headers. Internal headers
// have no stable interface: include <dho2/dho2.hpp>, <dho2/mpi.hpp>, <dho2/asio.hpp> or the public
// header that uses them.
//
// The rule, which holds however headers nest:
//  - every internal header includes this file first, before anything else it includes
//    (.clang-format keeps it first);
//  - every public header that includes an internal header, directly, has this line before its
//    own #includes:
//        #define DHO2_INTERNAL_INCLUDE 1
//    always with exactly this replacement list: the language allows an identical redefinition,
//    so no #ifndef is needed, and the macro stays defined for the rest of the translation unit;
//  - code of the project that tests internal headers directly (unit tests, fuzz targets) gets the
//    macro from its build (target_compile_definitions(... DHO2_INTERNAL_INCLUDE=1): the same
//    replacement list) or defines it with the line above before its #includes.
// So an internal header included before any public header that uses one fails with the message
// below; after one, it compiles (the check cannot tell those apart), as with Eigen. The failtests
// tests/failtest/internal_header_*.cpp check this.
//
// No include guard: the check runs at every inclusion.
#ifndef DHO2_INTERNAL_INCLUDE
#error \
    "DHO2: <dho2/.../detail/...> is an internal header; include <dho2/dho2.hpp> or the \
public header that uses it"
#endif
