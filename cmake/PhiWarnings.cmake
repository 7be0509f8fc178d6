# Project code is warning-clean under -Wall -Wextra -Werror. Third-party and generated
# code (protobuf/gRPC stubs) does not link this target.
add_library(phi_warnings INTERFACE)
target_compile_options(phi_warnings INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Werror -Wno-missing-field-initializers>
  $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra -Werror=all-warnings>)
