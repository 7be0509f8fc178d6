// Segmented low-rank products of LoRA adapters, as Punica (SGMV) and S-LoRA run them: the
// step's tokens come in segments of consecutive tokens that share an adapter slot, and one
// launch serves every segment of a linear layer, each with its own slot's matrices:
//   shrink: U[t, 0:r]            = X[t, 0:in] A_s^T             (A_s [r, in])
//   expand: Y[t, 0:out]         += scaling_s * U[t, 0:r] B_s^T   (B_s [out, r])
// so Y gets delta(x) = scaling * B (A x) (services/worker/lora/lora_adapter.h). Slot 0 (the
// base model) and slots that leave the layer alone (rank 0) are skipped. Both accumulate in
// F32 in a fixed order per token (never across tokens), so a token's result does not depend
// on the rest of the batch. CPU twins: tests/unit/worker/cuda/lora_kernels_cpu.h.
//
// Adapter weights are BF16 on the device, as the base weights are: half the bytes of F32 for
// kernels that stream them once per step, no range limit where F16 could overflow (PEFT
// saves F32 adapters too), and their rounding is below what the BF16 activations (X, and Y
// for q/k/v/fc1) already carry. B is stored transposed, [r, out], so the expand's threads
// read consecutive output columns.
#ifndef PHI_SERVICES_WORKER_BACKENDS_CUDA_LORA_KERNELS_H_
#define PHI_SERVICES_WORKER_BACKENDS_CUDA_LORA_KERNELS_H_

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "services/worker/backends/cuda/cuda_status.h"

namespace phi::worker::cuda {

// The largest adapter rank the kernels take (the worker's --max-lora-rank is at most this).
inline constexpr int kLoraMaxRank = 256;

// Tokens [start, start + count) of the step use adapter slot `slot` (0: none).
struct LoraSegment {
  int32_t start = 0;
  int32_t count = 0;
  int32_t slot = 0;
};

// One slot's matrices for one adapted linear layer (device pointers); rank 0: the slot's
// adapter leaves this layer alone.
struct LoraSlotWeights {
  const __nv_bfloat16* a = nullptr;    // [rank, in], row-major (lora_A.weight)
  const __nv_bfloat16* b_t = nullptr;  // [rank, out], row-major (lora_B.weight transposed)
  int32_t rank = 0;
  float scaling = 0.0f;  // lora_alpha / rank (or / sqrt(rank) with rsLoRA)
};

// What both kernels share: the slot table of one linear layer and the step's segments.
struct LoraSegments {
  const LoraSlotWeights* slots = nullptr;  // device [num_slots + 1], entry 0 unused
  const LoraSegment* segments = nullptr;   // device [num_segments]
  int num_segments = 0;
  int max_segment_tokens = 0;  // the longest segment's count (sizes the grid)
};

struct LoraShrinkArgs {
  LoraSegments seg;
  const __nv_bfloat16* x = nullptr;  // [*, x_stride]; row t's input is x[t, 0:in]
  int x_stride = 0;
  int in = 0;
  float* u = nullptr;  // [*, u_stride]: row t's columns [0, rank of t's slot) are written
  int u_stride = 0;    // >= every slot's rank
};
CudaStatus lora_shrink_forward(const LoraShrinkArgs& args, cudaStream_t stream);

struct LoraExpandArgs {
  LoraSegments seg;
  const float* u = nullptr;  // lora_shrink_forward's output
  int u_stride = 0;
  // [*, y_stride], row t's columns [0, out) get += scaling * U B^T: F32 (y_f32) or BF16 (one
  // rounding of y + delta).
  void* y = nullptr;
  bool y_f32 = false;
  int y_stride = 0;
  int out = 0;
};
CudaStatus lora_expand_forward(const LoraExpandArgs& args, cudaStream_t stream);

}  // namespace phi::worker::cuda

#endif  // PHI_SERVICES_WORKER_BACKENDS_CUDA_LORA_KERNELS_H_
