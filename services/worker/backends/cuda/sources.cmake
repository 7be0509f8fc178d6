# The CUDA kernel library's sources, shared by this directory's CMakeLists.txt and the
# standalone GPU-machine build (bench/cuda/standalone), which has no Abseil or gRPC.
set(PHI_CUDA_KERNEL_SOURCES
  ${CMAKE_CURRENT_LIST_DIR}/cuda_status.cc
  ${CMAKE_CURRENT_LIST_DIR}/device_limits.cc
  ${CMAKE_CURRENT_LIST_DIR}/layernorm.cu
  ${CMAKE_CURRENT_LIST_DIR}/elementwise.cu
  ${CMAKE_CURRENT_LIST_DIR}/rotary_kv.cu
  ${CMAKE_CURRENT_LIST_DIR}/attention_decode.cu
  ${CMAKE_CURRENT_LIST_DIR}/attention_prefill.cu
  ${CMAKE_CURRENT_LIST_DIR}/attention_prefill_mma.cu
  ${CMAKE_CURRENT_LIST_DIR}/top_candidates.cu
  ${CMAKE_CURRENT_LIST_DIR}/gemv.cu
  ${CMAKE_CURRENT_LIST_DIR}/gemv_decode.cu
  ${CMAKE_CURRENT_LIST_DIR}/gemv_mma.cu
  ${CMAKE_CURRENT_LIST_DIR}/lora_kernels.cu
  ${CMAKE_CURRENT_LIST_DIR}/cublaslt_loader.cc
  ${CMAKE_CURRENT_LIST_DIR}/gemm_lt.cc
  ${CMAKE_CURRENT_LIST_DIR}/phi_cuda_model.cc
  ${CMAKE_CURRENT_LIST_DIR}/phi_cuda_forward.cc
  ${CMAKE_CURRENT_LIST_DIR}/phi_cuda_model_tp.cc
  ${CMAKE_CURRENT_LIST_DIR}/phi_cuda_lora.cc
)
