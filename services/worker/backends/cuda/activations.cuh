// Device functions shared by the kernels that compute Phi's activations and by the fused
// decode GEMV (gemv_decode.cu), which recomputes them in its prologue: sharing them keeps the
// fused and the unfused paths bit-identical.
#ifndef PHI_SERVICES_WORKER_BACKENDS_CUDA_ACTIVATIONS_CUH_
#define PHI_SERVICES_WORKER_BACKENDS_CUDA_ACTIVATIONS_CUH_

#include <cuda_bf16.h>

#include "services/worker/backends/cuda/reduce.cuh"

namespace phi::worker::cuda {

__device__ __forceinline__ float gelu_new(float x) {
  // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), transformers' NewGELUActivation.
  const float k = 0.7978845608028654f;
  return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
}

// Threads of a block running layernorm_row_reg: the row's float4 at index threadIdx.x +
// i * kLayerNormThreads belongs to that thread, so the sums run in one fixed order.
inline constexpr int kLayerNormThreads = 256;

// out[c] = BF16((xr[c] - mean) * rstd * gamma[c] + beta[c]) over one row of `dim` floats
// (dim a multiple of 4, dim / 4 <= VPT * kLayerNormThreads, xr/gamma/beta/out 16-byte
// aligned), computed by a whole block of kLayerNormThreads threads: one read of the row into
// registers, a two-pass mean and variance. `out` may be global or shared memory. Ends with a
// barrier-free store; callers that read `out` from other threads synchronise first.
template <int VPT>
__device__ __forceinline__ void layernorm_row_reg(const float* __restrict__ xr,
                                                  const __nv_bfloat16* __restrict__ gamma,
                                                  const __nv_bfloat16* __restrict__ beta,
                                                  __nv_bfloat16* out, int dim, float eps,
                                                  float* scratch) {
  const int nvec = dim >> 2;
  const float4* x4 = reinterpret_cast<const float4*>(xr);
  float4 v[VPT];
  float s = 0.0f;
#pragma unroll
  for (int i = 0; i < VPT; ++i) {
    const int c = threadIdx.x + i * kLayerNormThreads;
    v[i] = c < nvec ? x4[c] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    s += (v[i].x + v[i].y) + (v[i].z + v[i].w);
  }
  const float mean = block_sum(s, scratch) / dim;
  float q = 0.0f;
#pragma unroll
  for (int i = 0; i < VPT; ++i) {
    if (threadIdx.x + i * kLayerNormThreads < nvec) {
      const float a = v[i].x - mean, b = v[i].y - mean, c = v[i].z - mean, d = v[i].w - mean;
      q += (a * a + b * b) + (c * c + d * d);
    }
  }
  const float rstd = rsqrtf(block_sum(q, scratch) / dim + eps);
  __nv_bfloat162* o2 = reinterpret_cast<__nv_bfloat162*>(out);
  const __nv_bfloat162* g2 = reinterpret_cast<const __nv_bfloat162*>(gamma);
  const __nv_bfloat162* b2 = reinterpret_cast<const __nv_bfloat162*>(beta);
#pragma unroll
  for (int i = 0; i < VPT; ++i) {
    const int c = threadIdx.x + i * kLayerNormThreads;
    if (c < nvec) {
      const float2 g01 = __bfloat1622float2(g2[2 * c]), g23 = __bfloat1622float2(g2[2 * c + 1]);
      const float2 b01 = __bfloat1622float2(b2[2 * c]), b23 = __bfloat1622float2(b2[2 * c + 1]);
      o2[2 * c] = __floats2bfloat162_rn((v[i].x - mean) * rstd * g01.x + b01.x,
                                        (v[i].y - mean) * rstd * g01.y + b01.y);
      o2[2 * c + 1] = __floats2bfloat162_rn((v[i].z - mean) * rstd * g23.x + b23.x,
                                            (v[i].w - mean) * rstd * g23.y + b23.y);
    }
  }
}

// The register LayerNorm's VPT for a row of `dim` floats (0: dim is not a multiple of 4 or
// wider than 8 * 4 * kLayerNormThreads; the generic kernel runs then).
inline int layernorm_reg_vpt(int dim) {
  if (dim <= 0 || dim % 4 != 0) return 0;
  const int need = (dim / 4 + kLayerNormThreads - 1) / kLayerNormThreads;
  return need <= 1 ? 1 : need <= 2 ? 2 : need <= 4 ? 4 : need <= 8 ? 8 : 0;
}

}  // namespace phi::worker::cuda

#endif  // PHI_SERVICES_WORKER_BACKENDS_CUDA_ACTIVATIONS_CUH_
