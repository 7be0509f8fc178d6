// LoRA shrink and expand over segments of tokens (lora_kernels.h). A block takes one segment
// and a tile of kLoraTokenTile of its tokens, so each weight load serves every token of the
// tile; a token's sums never mix with another token's.
#include "services/worker/backends/cuda/lora_kernels.h"

#include <string>

#include "services/worker/backends/cuda/pdl.cuh"
#include "services/worker/backends/cuda/reduce.cuh"

namespace phi::worker::cuda {
namespace {

using bf16 = __nv_bfloat16;

constexpr int kLoraTokenTile = 4;  // tokens per block sharing the weight loads
constexpr int kShrinkWarps = 4;    // rank rows in flight per block, one per warp
constexpr int kExpandThreads = 128;  // output columns per block, one per thread

// One warp per rank row j: lanes stride over `in` (coalesced A and X reads), one F32 partial
// per lane and token, summed across the warp in a fixed butterfly order.
__global__ void lora_shrink_forward_kernel(LoraShrinkArgs args) {
  const LoraSegment sg = args.seg.segments[blockIdx.y];
  if (sg.slot <= 0) return;
  const LoraSlotWeights w = args.seg.slots[sg.slot];
  const int t0 = blockIdx.x * kLoraTokenTile;
  if (w.rank <= 0 || t0 >= sg.count) return;
  const int nt = min(kLoraTokenTile, sg.count - t0);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t row0 = static_cast<int64_t>(sg.start) + t0;
  for (int j = warp; j < w.rank; j += kShrinkWarps) {
    const bf16* arow = w.a + static_cast<int64_t>(j) * args.in;
    float acc[kLoraTokenTile] = {};
    for (int k = lane; k < args.in; k += 32) {
      const float av = __bfloat162float(arow[k]);
#pragma unroll
      for (int i = 0; i < kLoraTokenTile; ++i) {
        if (i < nt) acc[i] += av * __bfloat162float(args.x[(row0 + i) * args.x_stride + k]);
      }
    }
#pragma unroll
    for (int i = 0; i < kLoraTokenTile; ++i) {
      const float s = warp_sum(acc[i]);  // every lane takes part: i < nt is warp-uniform
      if (lane == 0 && i < nt) args.u[(row0 + i) * args.u_stride + j] = s;
    }
  }
}

// One thread per output column: the rank sum in order j = 0, 1, ..., then one add into y.
__global__ void lora_expand_forward_kernel(LoraExpandArgs args) {
  const LoraSegment sg = args.seg.segments[blockIdx.z];
  if (sg.slot <= 0) return;
  const LoraSlotWeights w = args.seg.slots[sg.slot];
  const int t0 = blockIdx.y * kLoraTokenTile;
  const int o = blockIdx.x * blockDim.x + threadIdx.x;
  if (w.rank <= 0 || t0 >= sg.count || o >= args.out) return;
  const int nt = min(kLoraTokenTile, sg.count - t0);
  const int64_t row0 = static_cast<int64_t>(sg.start) + t0;
  float acc[kLoraTokenTile] = {};
  for (int j = 0; j < w.rank; ++j) {
    const float bv = __bfloat162float(w.b_t[static_cast<int64_t>(j) * args.out + o]);
#pragma unroll
    for (int i = 0; i < kLoraTokenTile; ++i) {
      if (i < nt) acc[i] += args.u[(row0 + i) * args.u_stride + j] * bv;
    }
  }
  for (int i = 0; i < nt; ++i) {
    const int64_t at = (row0 + i) * args.y_stride + o;
    if (args.y_f32) {
      static_cast<float*>(args.y)[at] += w.scaling * acc[i];
    } else {
      bf16* y = static_cast<bf16*>(args.y);
      y[at] = __float2bfloat16(__bfloat162float(y[at]) + w.scaling * acc[i]);
    }
  }
}

CudaStatus CheckSegments(const LoraSegments& s, const char* who) {
  PHI_CUDA_REQUIRE(s.num_segments >= 0 && s.num_segments <= 65535 && s.max_segment_tokens >= 0,
                   std::string(who) + ": num_segments in [0, 65535], max_segment_tokens >= 0");
  PHI_CUDA_REQUIRE(s.num_segments == 0 || (s.slots != nullptr && s.segments != nullptr),
                   std::string(who) + ": slots and segments are required");
  return {};
}

int TokenTiles(const LoraSegments& s) {
  return (s.max_segment_tokens + kLoraTokenTile - 1) / kLoraTokenTile;
}

}  // namespace

CudaStatus lora_shrink_forward(const LoraShrinkArgs& a, cudaStream_t stream) {
  PHI_CUDA_RETURN_IF_ERROR(CheckSegments(a.seg, "lora_shrink_forward"));
  PHI_CUDA_REQUIRE(a.x != nullptr && a.u != nullptr && a.in > 0 && a.x_stride >= a.in &&
                       a.u_stride > 0,
                   "lora_shrink_forward: x and u required, in > 0, x_stride >= in, u_stride > 0");
  if (a.seg.num_segments == 0 || a.seg.max_segment_tokens == 0) return {};
  const dim3 grid(TokenTiles(a.seg), a.seg.num_segments);
  PHI_CUDA_CHECK(launch_kernel(false, lora_shrink_forward_kernel, grid, dim3(32 * kShrinkWarps),
                               0, stream, a));
  return {};
}

CudaStatus lora_expand_forward(const LoraExpandArgs& a, cudaStream_t stream) {
  PHI_CUDA_RETURN_IF_ERROR(CheckSegments(a.seg, "lora_expand_forward"));
  PHI_CUDA_REQUIRE(a.u != nullptr && a.y != nullptr && a.out > 0 && a.y_stride >= a.out &&
                       a.u_stride > 0,
                   "lora_expand_forward: u and y required, out > 0, y_stride >= out, u_stride > 0");
  if (a.seg.num_segments == 0 || a.seg.max_segment_tokens == 0) return {};
  PHI_CUDA_REQUIRE(TokenTiles(a.seg) <= 65535,
                   "lora_expand_forward: max_segment_tokens over 65535 tiles");
  const dim3 grid((a.out + kExpandThreads - 1) / kExpandThreads, TokenTiles(a.seg),
                  a.seg.num_segments);
  PHI_CUDA_CHECK(launch_kernel(false, lora_expand_forward_kernel, grid, dim3(kExpandThreads), 0,
                               stream, a));
  return {};
}

}  // namespace phi::worker::cuda
