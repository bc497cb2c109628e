# cmake -P script: writes -DOUT=<file> as `#define DHO2_GIT_REVISION "<revision>"`, the output of
# `git describe --always --dirty` in -DSOURCE_DIR=<dir> (or "unknown" without git or outside a
# checkout). The file is rewritten only when its content changes, so benchmarks rebuild only when
# the revision does.
cmake_minimum_required(VERSION 3.20)
set(_revision unknown)
find_program(_git git)
if(_git)
  execute_process(COMMAND ${_git} -C ${SOURCE_DIR} describe --always --dirty
                  OUTPUT_VARIABLE _out OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET
                  RESULT_VARIABLE _rc)
  if(_rc EQUAL 0 AND _out MATCHES "^[0-9A-Za-z._-]+$")
    set(_revision ${_out})
  endif()
endif()
set(_content "#define DHO2_GIT_REVISION \"${_revision}\"\n")
if(EXISTS ${OUT})
  file(READ ${OUT} _old)
  if(_old STREQUAL _content)
    return()
  endif()
endif()
file(WRITE ${OUT} "${_content}")
