# dho2::torch — the optional LibTorch adapter (include/dho2/torch.hpp: `dho2::torch_module_model`
# turns a torch::nn::Module and a loss into a dho2::hvp_model; `dho2::torch_lenet` is a LeNet-style
# CNN for 28 × 28 images). Included from the top-level CMakeLists.txt, after
# `set(DHO2_EXPORTED_TARGETS ...)` and before the tests, examples and install rules.
#
#   DHO2_WITH_TORCH (cache, AUTO | ON | OFF; default AUTO)
#                           AUTO: find_package(Torch QUIET); use it when found, otherwise say that
#                           dho2::torch (and everything built on it) is skipped. ON: LibTorch is
#                           required (a configure error without it). OFF: never searched.
#                           (Debian: apt-get install libtorch-dev; its TorchConfig.cmake is in
#                           /usr/lib/<multiarch>/cmake/Torch.)
#   dho2_torch / dho2::torch  INTERFACE target (EXPORT_NAME torch): dho2 + LibTorch's `torch`
#                           target (its include directories and -D_GLIBCXX_USE_CXX11_ABI flag);
#                           appended to DHO2_EXPORTED_TARGETS, so cmake/dho2Install.cmake exports
#                           it and find_package(dho2 COMPONENTS torch) finds LibTorch again.
#   DHO2_HAVE_TORCH         ON when dho2::torch exists: tests/CMakeLists.txt then builds
#                           dho2_torch_tests, examples/CMakeLists.txt torch_cnn, and
#                           benchmarks/CMakeLists.txt the LibTorch peer (cmake/dho2Torch.cmake).
# Nothing else depends on LibTorch: without it the suite is complete.
include_guard(GLOBAL)

set(DHO2_WITH_TORCH AUTO CACHE STRING
    "Provide dho2::torch (LibTorch adapter) and its tests, example and peer benchmarks: AUTO (when LibTorch is found), ON or OFF")
set_property(CACHE DHO2_WITH_TORCH PROPERTY STRINGS AUTO ON OFF)

set(DHO2_HAVE_TORCH OFF)
string(TOUPPER "${DHO2_WITH_TORCH}" _dho2_torch_mode)
if(_dho2_torch_mode STREQUAL "AUTO" OR DHO2_WITH_TORCH)
  find_package(Torch QUIET)
  if(Torch_FOUND AND TARGET torch)
    set(DHO2_HAVE_TORCH ON)
  elseif(_dho2_torch_mode STREQUAL "AUTO")
    message(STATUS "LibTorch not found: dho2::torch, its tests, the torch_cnn example and the "
                   "LibTorch peer benchmarks are skipped (Debian: apt-get install libtorch-dev)")
  else()
    message(FATAL_ERROR "DHO2_WITH_TORCH = ${DHO2_WITH_TORCH}. Violated constraint: LibTorch is "
                        "found (find_package(Torch); on Debian: apt-get install libtorch-dev)")
  endif()
else()
  message(STATUS "DHO2_WITH_TORCH is OFF: dho2::torch, its tests, the torch_cnn example and the "
                 "LibTorch peer benchmarks are skipped")
endif()
unset(_dho2_torch_mode)

if(DHO2_HAVE_TORCH)
  message(STATUS "LibTorch ${Torch_VERSION}: providing dho2::torch")
  add_library(dho2_torch INTERFACE)
  add_library(dho2::torch ALIAS dho2_torch)
  set_target_properties(dho2_torch PROPERTIES EXPORT_NAME torch)
  target_link_libraries(dho2_torch INTERFACE dho2 torch)
  list(APPEND DHO2_EXPORTED_TARGETS dho2_torch)
endif()
