// The tensor-core instruction the kernels use (prefill attention, the few-token decode GEMV):
// D += A B with A 16 x 16 and B 16 x 8 in BF16, D 16 x 8 in F32, one warp.
// Fragment layouts (PTX ISA, mma.m16n8k16 .bf16): with g = lane / 4, t = lane % 4,
//   A (16 x 16, row): reg0 = (row g, k 2t..2t+1), reg1 = (g + 8, 2t..), reg2 = (g, 2t + 8..),
//                     reg3 = (g + 8, 2t + 8..);
//   B (16 x 8, col):  reg0 = (k 2t..2t+1, n g), reg1 = (k 2t + 8.., n g);
//   C (16 x 8, f32):  c0, c1 = (row g, n 2t, 2t + 1), c2, c3 = (row g + 8, n 2t, 2t + 1).
// A register holds two BF16 values, the lower k index in the low half.
#ifndef PHI_SERVICES_WORKER_BACKENDS_CUDA_MMA_CUH_
#define PHI_SERVICES_WORKER_BACKENDS_CUDA_MMA_CUH_

#include <cuda_runtime.h>

#include <cstdint>

#ifdef PHI_CUDA_EMULATION
#include "tests/cuda_emu/cuda_emu.h"
#endif

namespace phi::worker::cuda {

__device__ __forceinline__ void mma_bf16_16816(float* d, const uint32_t* a, uint32_t b0,
                                               uint32_t b1) {
#ifdef PHI_CUDA_EMULATION
  cuda_emu::WarpMmaBf16M16N8K16(d, a, b0, b1);  // the CPU emulator's twin (tests/cuda_emu)
#else
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

}  // namespace phi::worker::cuda

#endif  // PHI_SERVICES_WORKER_BACKENDS_CUDA_MMA_CUH_
