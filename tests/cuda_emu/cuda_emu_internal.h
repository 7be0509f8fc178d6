// Shared between the emulator's scheduler and its CUDA runtime API.
#ifndef PHI_TESTS_CUDA_EMU_CUDA_EMU_INTERNAL_H_
#define PHI_TESTS_CUDA_EMU_CUDA_EMU_INTERNAL_H_

#include <cuda_runtime_api.h>

namespace cuda_emu {

// What fresh device memory and each block's shared memory hold: never zero, so a read before
// any write shows (and a bool of 0x55 is an invalid load for UBSan).
inline constexpr unsigned char kPoisonByte = 0x55;

// Remembers `error` for cudaGetLastError / cudaPeekAtLastError and returns it.
cudaError_t RecordError(cudaError_t error);

}  // namespace cuda_emu

#endif  // PHI_TESTS_CUDA_EMU_CUDA_EMU_INTERNAL_H_
