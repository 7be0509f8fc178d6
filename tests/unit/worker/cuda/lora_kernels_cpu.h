// CPU twins of the LoRA kernels (services/worker/backends/cuda/lora_kernels.h): the same
// contracts on F32 host arrays, each token's sums in plain index order.
#ifndef PHI_TESTS_UNIT_WORKER_CUDA_LORA_KERNELS_CPU_H_
#define PHI_TESTS_UNIT_WORKER_CUDA_LORA_KERNELS_CPU_H_

#include "services/worker/backends/cuda/lora_kernels.h"

namespace phi::worker::cuda {

// LoraSlotWeights on the host: the F32 values of the device's BF16 matrices.
struct LoraSlotWeightsCpu {
  const float* a = nullptr;    // [rank, in]
  const float* b_t = nullptr;  // [rank, out]
  int rank = 0;
  float scaling = 0.0f;
};

// u[t, 0:r] = x[t, 0:in] A_s^T for every token t of a segment with slot s > 0 and rank r > 0.
void lora_shrink_forward_cpu(const LoraSlotWeightsCpu* slots, const LoraSegment* segments,
                             int num_segments, const float* x, int x_stride, int in, float* u,
                             int u_stride);

// y[t, 0:out] += scaling_s * u[t, 0:r] B_s^T for the same tokens; round_bf16: y is a BF16
// matrix held in F32, rounded once after the add as the kernel's BF16 output is.
void lora_expand_forward_cpu(const LoraSlotWeightsCpu* slots, const LoraSegment* segments,
                             int num_segments, const float* u, int u_stride, float* y,
                             int y_stride, int out, bool round_bf16);

}  // namespace phi::worker::cuda

#endif  // PHI_TESTS_UNIT_WORKER_CUDA_LORA_KERNELS_CPU_H_
