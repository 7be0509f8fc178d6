// Shared between the emulator's scheduler and its CUDA runtime API.
#ifndef PHI_TESTS_CUDA_EMU_CUDA_EMU_INTERNAL_H_
#define PHI_TESTS_CUDA_EMU_CUDA_EMU_INTERNAL_H_

#include <cuda_runtime_api.h>

namespace cuda_emu {

// Remembers `error` for cudaGetLastError / cudaPeekAtLastError and returns it.
cudaError_t RecordError(cudaError_t error);

}  // namespace cuda_emu

#endif  // PHI_TESTS_CUDA_EMU_CUDA_EMU_INTERNAL_H_
