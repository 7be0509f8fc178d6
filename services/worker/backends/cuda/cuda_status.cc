#include "services/worker/backends/cuda/cuda_status.h"

#include <cublas_api.h>
#include <cuda_runtime_api.h>

namespace phi::worker::cuda {

CudaStatus CudaStatus::At(const char* file, int line, const std::string& what,
                          const std::string& detail) {
  return CudaStatus(Code::kInternal, std::string(file) + ":" + std::to_string(line) + ": " + what + ": " + detail);
}

std::string CudaErrorString(int cuda_error) {
  const auto err = static_cast<cudaError_t>(cuda_error);
  return std::string(cudaGetErrorName(err)) + " (" + cudaGetErrorString(err) + ")";
}

std::string CublasErrorString(int cublas_status) {
  switch (static_cast<cublasStatus_t>(cublas_status)) {
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "cublas status " + std::to_string(cublas_status);
  }
}

}  // namespace phi::worker::cuda
