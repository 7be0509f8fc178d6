#include "tests/unit/worker/cuda/lora_kernels_cpu.h"

#include <cstdint>

#include "tests/unit/worker/cuda/kernels_cpu.h"

namespace phi::worker::cuda {
namespace {

// The slot's weights when segment `sg` is adapted, else null.
const LoraSlotWeightsCpu* Adapted(const LoraSlotWeightsCpu* slots, const LoraSegment& sg) {
  if (sg.slot <= 0 || slots[sg.slot].rank <= 0) return nullptr;
  return &slots[sg.slot];
}

}  // namespace

void lora_shrink_forward_cpu(const LoraSlotWeightsCpu* slots, const LoraSegment* segments,
                             int num_segments, const float* x, int x_stride, int in, float* u,
                             int u_stride) {
  for (int s = 0; s < num_segments; ++s) {
    const LoraSlotWeightsCpu* w = Adapted(slots, segments[s]);
    if (w == nullptr) continue;
    for (int64_t t = segments[s].start; t < segments[s].start + segments[s].count; ++t) {
      for (int j = 0; j < w->rank; ++j) {
        float acc = 0.0f;
        for (int k = 0; k < in; ++k) acc += x[t * x_stride + k] * w->a[int64_t{j} * in + k];
        u[t * u_stride + j] = acc;
      }
    }
  }
}

void lora_expand_forward_cpu(const LoraSlotWeightsCpu* slots, const LoraSegment* segments,
                             int num_segments, const float* u, int u_stride, float* y,
                             int y_stride, int out, bool round_bf16) {
  for (int s = 0; s < num_segments; ++s) {
    const LoraSlotWeightsCpu* w = Adapted(slots, segments[s]);
    if (w == nullptr) continue;
    for (int64_t t = segments[s].start; t < segments[s].start + segments[s].count; ++t) {
      for (int o = 0; o < out; ++o) {
        float acc = 0.0f;
        for (int j = 0; j < w->rank; ++j) acc += u[t * u_stride + j] * w->b_t[int64_t{j} * out + o];
        float& yo = y[t * y_stride + o];
        yo += w->scaling * acc;
        if (round_bf16) yo = bf16_round_cpu(yo);
      }
    }
  }
}

}  // namespace phi::worker::cuda
