// CudaStatus -> absl::Status where the Abseil side (the runner) calls the Abseil-free kernel
// library: bad input stays INVALID_ARGUMENT, memory shortage RESOURCE_EXHAUSTED, and anything
// from the CUDA runtime INTERNAL (the worker then marks itself not serving). Callers propagate
// it with services/common/status_macros.h: PHI_RETURN_IF_ERROR(ToAbslStatus(...)).
#ifndef PHI_SERVICES_WORKER_BACKENDS_CUDA_STATUS_ADAPTER_H_
#define PHI_SERVICES_WORKER_BACKENDS_CUDA_STATUS_ADAPTER_H_

#include "absl/status/status.h"
#include "services/worker/backends/cuda/cuda_status.h"

namespace phi::worker::cuda {

inline absl::Status ToAbslStatus(const CudaStatus& s) {
  switch (s.code()) {
    case CudaStatus::Code::kOk: return absl::OkStatus();
    case CudaStatus::Code::kInvalidArgument: return absl::InvalidArgumentError(s.message());
    case CudaStatus::Code::kResourceExhausted: return absl::ResourceExhaustedError(s.message());
    case CudaStatus::Code::kInternal: break;
  }
  return absl::InternalError(s.message());
}

}  // namespace phi::worker::cuda

#endif  // PHI_SERVICES_WORKER_BACKENDS_CUDA_STATUS_ADAPTER_H_
