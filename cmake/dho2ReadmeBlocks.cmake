# Every C++ code block of the README is compiled, and run, by the suite, so that the README cannot
# drift from the library.
#
#   dho2_add_readme_blocks(<readme.md> <context-dir>)
#
# A ```cpp block that defines `int main(` is a whole program. Any other ```cpp block is a fragment
# and must be preceded, on the line right above its fence, by
#   <!-- readme-context: <name> -->
# naming <context-dir>/<name>.cpp: a program holding the line `// README-BLOCK`, which the
# fragment replaces (the context declares what the fragment uses and runs it). A fragment without
# a context is a configure error naming its README line. `<!-- readme-context: <name> needs
# <target> -->` marks a block that needs an optional target (e.g. dho2::torch): it is linked with
# it, and skipped with a message when the build does not have it.
#
# Each block becomes the executable readme_line_<L> (L: the README line of its fence; `#line`
# directives make compiler errors name README.md and the line) built with the examples' warnings
# (-Werror), and the CTest test readme.line_<L> (label `readme`) that runs it. The README is a
# configure dependency: editing it re-generates the blocks.
include_guard(GLOBAL)
include(${CMAKE_CURRENT_LIST_DIR}/dho2Testing.cmake)

# Number of newlines in `text`.
function(_dho2_count_lines text out_var)
  string(REGEX MATCHALL "\n" _nl "${text}")
  list(LENGTH _nl _n)
  set(${out_var} ${_n} PARENT_SCOPE)
endfunction()

function(dho2_add_readme_blocks readme context_dir)
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${readme}")
  file(READ "${readme}" _text)
  set(_fence "\n```cpp\n")
  string(LENGTH "${_fence}" _fence_len)
  set(_consumed 0)  # characters of the README before _rest
  set(_rest "${_text}")
  set(_out_dir "${CMAKE_CURRENT_BINARY_DIR}/readme")
  while(TRUE)
    string(FIND "${_rest}" "${_fence}" _at)
    if(_at EQUAL -1)
      break()
    endif()
    string(SUBSTRING "${_rest}" 0 ${_at} _before)
    math(EXPR _body_at "${_at} + ${_fence_len}")
    string(SUBSTRING "${_rest}" ${_body_at} -1 _after)
    string(FIND "${_after}" "\n```" _end)
    if(_end EQUAL -1)
      message(FATAL_ERROR "${readme}: a ```cpp block is not closed")
    endif()
    math(EXPR _end_nl "${_end} + 1")
    string(SUBSTRING "${_after}" 0 ${_end_nl} _body)

    # README line of the fence (1-based) and of the block's first line.
    string(SUBSTRING "${_text}" 0 ${_consumed} _head)
    _dho2_count_lines("${_head}${_before}" _lines_before)
    math(EXPR _fence_line "${_lines_before} + 2")
    math(EXPR _first_line "${_fence_line} + 1")

    # The line above the fence may name a context.
    string(FIND "${_before}" "\n" _prev_nl REVERSE)
    math(EXPR _prev_at "${_prev_nl} + 1")
    string(SUBSTRING "${_before}" ${_prev_at} -1 _prev_line)
    set(_source "#line ${_first_line} \"${readme}\"\n${_body}")
    set(_needs "")
    if(_prev_line MATCHES "^<!-- readme-context: ([a-z0-9_]+)( needs ([A-Za-z0-9_:]+))? -->$")
      set(_context "${context_dir}/${CMAKE_MATCH_1}.cpp")
      set(_needs "${CMAKE_MATCH_3}")
      if(NOT EXISTS "${_context}")
        message(FATAL_ERROR "${readme}:${_fence_line}: the context ${_context} does not exist")
      endif()
      file(READ "${_context}" _ctx)
      string(FIND "${_ctx}" "// README-BLOCK\n" _mark)
      if(_mark EQUAL -1)
        message(FATAL_ERROR "${_context}: no line `// README-BLOCK` for the README block")
      endif()
      string(SUBSTRING "${_ctx}" 0 ${_mark} _ctx_head)
      math(EXPR _ctx_tail_at "${_mark} + 16")
      string(SUBSTRING "${_ctx}" ${_ctx_tail_at} -1 _ctx_tail)
      _dho2_count_lines("${_ctx_head}" _ctx_lines)
      math(EXPR _ctx_back "${_ctx_lines} + 2")
      set(_source "#line 1 \"${_context}\"\n${_ctx_head}${_source}#line ${_ctx_back} \"${_context}\"\n${_ctx_tail}")
    elseif(NOT _body MATCHES "int main\\(")
      message(FATAL_ERROR
              "${readme}:${_fence_line}: this ```cpp block is neither a program (no `int main(`) "
              "nor preceded by `<!-- readme-context: <name> -->` naming a file of ${context_dir}")
    endif()

    set(_name readme_line_${_fence_line})
    if(_needs AND NOT TARGET ${_needs})
      message(STATUS "README.md:${_fence_line}: the block needs ${_needs}, which this build does "
                     "not have: not compiled")
      math(EXPR _consumed "${_consumed} + ${_body_at} + ${_end_nl}")
      string(SUBSTRING "${_after}" ${_end_nl} -1 _rest)
      continue()
    endif()
    file(WRITE "${_out_dir}/${_name}.cpp.tmp" "${_source}")
    configure_file("${_out_dir}/${_name}.cpp.tmp" "${_out_dir}/${_name}.cpp" COPYONLY)
    add_executable(${_name} "${_out_dir}/${_name}.cpp")
    target_link_libraries(${_name} PRIVATE dho2::dho2 dho2::data dho2_warnings ${_needs})
    add_test(NAME readme.line_${_fence_line} COMMAND ${_name} WORKING_DIRECTORY "${_out_dir}")
    dho2_test_timeout(_timeout 120)
    set_tests_properties(readme.line_${_fence_line} PROPERTIES LABELS readme TIMEOUT ${_timeout})

    math(EXPR _consumed "${_consumed} + ${_body_at} + ${_end_nl}")
    string(SUBSTRING "${_after}" ${_end_nl} -1 _rest)
  endwhile()
endfunction()
