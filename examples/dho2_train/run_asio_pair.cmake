# cmake -P script (CTest: example.dho2_train.asio): runs dho2_train as ranks 0 and 1 of a 2-rank
# job over the TCP transport on loopback, at the same time, and fails unless both exit 0.
#   -DDHO2_TRAIN=<dho2_train> -DDHO2_ARGS=<;-list of the other arguments>
#   [-DDHO2_TIMEOUT=<seconds the pair may take; default 300>]
# The rendezvous port is drawn at random in [20000, 29999]; if it is taken (the run reports
# "in use"), another is drawn, up to three times.
cmake_minimum_required(VERSION 3.20)
foreach(_var IN ITEMS DHO2_TRAIN DHO2_ARGS)
  if(NOT DEFINED ${_var})
    message(FATAL_ERROR "run_asio_pair.cmake: -D${_var}=... is required")
  endif()
endforeach()

if(NOT DEFINED DHO2_TIMEOUT)
  set(DHO2_TIMEOUT 300)
endif()

foreach(_attempt RANGE 1 3)
  string(RANDOM LENGTH 4 ALPHABET 0123456789 _digits)
  math(EXPR _port "20000 + ${_digits}")
  set(_common ${DHO2_ARGS} --transport asio --world-size 2 --rendezvous 127.0.0.1:${_port}
              --timeout 60 --quiet)
  # Two COMMANDs run concurrently as a pipeline: rank 1's stdout (empty: only rank 0 reports)
  # feeds rank 0's stdin, which it never reads; rank 0's report is captured.
  execute_process(COMMAND ${DHO2_TRAIN} ${_common} --rank 1
                  COMMAND ${DHO2_TRAIN} ${_common} --rank 0
                  RESULTS_VARIABLE _codes OUTPUT_VARIABLE _out ERROR_VARIABLE _err
                  TIMEOUT ${DHO2_TIMEOUT})
  if(_err MATCHES "in use" AND _attempt LESS 3)
    message(STATUS "port ${_port} is taken, drawing another: ${_err}")
    continue()
  endif()
  break()
endforeach()
message(STATUS "exit codes (rank 1;rank 0): ${_codes}\n${_out}${_err}")
if(NOT _codes STREQUAL "0;0")
  message(FATAL_ERROR "expected both ranks to exit 0, got ${_codes}; stderr:\n${_err}")
endif()
