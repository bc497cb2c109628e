# The API reference: Doxygen renders every public name of include/dho2/ (detail/ directories and
# the dho2::detail namespace excluded) with its `///` comment, and the pages of docs/*.md
# (docs/index.md is the main page), into <build>/docs/html.
#
#   DHO2_BUILD_DOCS (option, top CMakeLists.txt)  default ON when DHO2 is the top-level project;
#   docs (target, not part of ALL)                 runs Doxygen on <build>/docs/Doxyfile
#                                                  (configured from docs/Doxyfile.in);
#   docs.reference (CTest, label docs)             builds `docs`: fails when Doxygen warns, e.g.
#                                                  about a public name without a doc comment.
#
# Doxygen is optional: without it (Debian: apt-get install doxygen) the target and the test are
# skipped with a message. Graphviz's dot is used for class graphs when found. Nothing is
# downloaded at build time, and the pages never load anything from the network: formulas are
# typeset by a MathJax 2 installed on this machine when there is one (Debian: libjs-mathjax, found
# at configure time), and otherwise read as the TeX text written in the comments (LaTeX is never
# run). DHO2_DOCS_MATHJAX_RELPATH overrides where the pages look for MathJax.
include_guard(GLOBAL)

find_package(Doxygen QUIET OPTIONAL_COMPONENTS dot)
if(NOT DOXYGEN_FOUND)
  message(STATUS "Doxygen not found: the `docs` target and the docs.reference test are skipped "
                 "(Debian: apt-get install doxygen)")
  return()
endif()

if(TARGET Doxygen::dot)
  set(DHO2_DOXYGEN_HAVE_DOT YES)
  get_target_property(_dho2_dot Doxygen::dot IMPORTED_LOCATION)
  get_filename_component(DHO2_DOXYGEN_DOT_PATH "${_dho2_dot}" DIRECTORY)
else()
  set(DHO2_DOXYGEN_HAVE_DOT NO)
  set(DHO2_DOXYGEN_DOT_PATH "")
endif()

# Formulas: a local MathJax 2 if installed (file:// URL), else the relative `mathjax/` directory
# beside the pages, which does not exist unless someone puts MathJax there: the browser then shows
# the formulas' TeX source. Never a CDN.
find_path(DHO2_MATHJAX_DIR MathJax.js PATHS /usr/share/javascript/mathjax /usr/share/mathjax
          NO_DEFAULT_PATH)
mark_as_advanced(DHO2_MATHJAX_DIR)
if(DHO2_MATHJAX_DIR)
  set(_dho2_mathjax_default "file://${DHO2_MATHJAX_DIR}")
else()
  set(_dho2_mathjax_default "mathjax")
endif()
set(DHO2_DOCS_MATHJAX_RELPATH "${_dho2_mathjax_default}" CACHE STRING
    "Where the API reference loads MathJax 2 from (local path or file:// URL)")
mark_as_advanced(DHO2_DOCS_MATHJAX_RELPATH)
if(DHO2_DOCS_MATHJAX_RELPATH MATCHES "^(https?:)?//")
  message(WARNING "DHO2_DOCS_MATHJAX_RELPATH=${DHO2_DOCS_MATHJAX_RELPATH} is ignored: the API "
                  "reference loads nothing from the network; using ${_dho2_mathjax_default}")
  set(_dho2_docs_mathjax "${_dho2_mathjax_default}")
else()
  set(_dho2_docs_mathjax "${DHO2_DOCS_MATHJAX_RELPATH}")
endif()

set(DHO2_DOCS_OUTPUT_DIR ${PROJECT_BINARY_DIR}/docs)
configure_file(${PROJECT_SOURCE_DIR}/docs/Doxyfile.in ${DHO2_DOCS_OUTPUT_DIR}/Doxyfile @ONLY)

file(GLOB _dho2_docs_pages CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/docs/*.md)
add_custom_target(docs
                  COMMAND Doxygen::doxygen ${DHO2_DOCS_OUTPUT_DIR}/Doxyfile
                  WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
                  SOURCES ${PROJECT_SOURCE_DIR}/docs/Doxyfile.in ${_dho2_docs_pages}
                  COMMENT "Doxygen: API reference in ${DHO2_DOCS_OUTPUT_DIR}/html"
                  VERBATIM)
message(STATUS "Doxygen ${DOXYGEN_VERSION} found: `cmake --build <dir> --target docs` writes "
               "${DHO2_DOCS_OUTPUT_DIR}/html/index.html")

if(DHO2_BUILD_TESTS)
  include(${CMAKE_CURRENT_LIST_DIR}/dho2Testing.cmake)
  enable_testing()
  dho2_test_timeout(_dho2_docs_timeout 600)
  # Builds the target through the build tool (as a user would), so it shares the build tree's
  # lock with the failtests.
  add_test(NAME docs.reference
           COMMAND "${CMAKE_COMMAND}" --build "${PROJECT_BINARY_DIR}" --target docs
                   --config $<CONFIG>)
  set_tests_properties(docs.reference PROPERTIES LABELS docs
                       FAIL_REGULAR_EXPRESSION "warning:|error:"
                       RESOURCE_LOCK dho2_build_tree
                       TIMEOUT ${_dho2_docs_timeout})
endif()
