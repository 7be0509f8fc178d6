# Random model weights on the device (random_weights.h) with their fill kernel
# (fill_random.cu), for the benchmark and the model tests: phi_cuda_random_weights over the
# kernel library and, when the CPU emulator is built (tests/cuda_emu), phi_cuda_random_weights_emu
# over the emulated one. Included by bench/cuda and tests/unit/worker/cuda; defined once.
include_guard(GLOBAL)
set(_phi_rw_dir ${CMAKE_CURRENT_LIST_DIR})
add_library(phi_cuda_random_weights STATIC ${_phi_rw_dir}/random_weights.cc
            ${_phi_rw_dir}/fill_random.cu)
target_link_libraries(phi_cuda_random_weights PUBLIC phi_worker_cuda PRIVATE phi_warnings)
set_target_properties(phi_cuda_random_weights PROPERTIES CUDA_STANDARD 17)
if(TARGET phi_worker_cuda_emu)
  phi_emu_kernel_source(${_phi_rw_dir}/fill_random.cu _phi_rw_fill_copy)
  add_library(phi_cuda_random_weights_emu STATIC ${_phi_rw_dir}/random_weights.cc
              ${_phi_rw_fill_copy})
  target_link_libraries(phi_cuda_random_weights_emu PUBLIC phi_worker_cuda_emu PRIVATE phi_warnings)
endif()
