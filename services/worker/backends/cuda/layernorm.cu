// LayerNorm with bias over the F32 residual stream, BF16 out. One block per row. Rows up to
// 8192 wide (multiple of 4, aligned) stay in registers: one read, two-pass mean/variance;
// other shapes take a generic kernel that reads the row three times.
#include "services/worker/backends/cuda/kernels.h"
#include "services/worker/backends/cuda/reduce.cuh"

namespace phi::worker::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void layernorm_forward_kernel(const float* __restrict__ x,
                                         const int32_t* __restrict__ row_index,
                                         const bf16* __restrict__ gamma,
                                         const bf16* __restrict__ beta, bf16* __restrict__ out,
                                         int dim, float eps) {
  __shared__ float scratch[32];
  const int r = blockIdx.x;
  const float* xr = x + static_cast<int64_t>(row_index ? row_index[r] : r) * dim;
  float s = 0.0f;
  for (int c = threadIdx.x; c < dim; c += blockDim.x) s += xr[c];
  const float mean = block_sum(s, scratch) / dim;
  float v = 0.0f;
  for (int c = threadIdx.x; c < dim; c += blockDim.x) {
    const float d = xr[c] - mean;
    v += d * d;
  }
  const float rstd = rsqrtf(block_sum(v, scratch) / dim + eps);
  bf16* o = out + static_cast<int64_t>(r) * dim;
  for (int c = threadIdx.x; c < dim; c += blockDim.x) {
    o[c] = __float2bfloat16((xr[c] - mean) * rstd * __bfloat162float(gamma[c]) +
                            __bfloat162float(beta[c]));
  }
}

// Row held in registers (VPT float4 per thread): one read of x, two block reductions.
template <int VPT>
__global__ void __launch_bounds__(kThreads)
    layernorm_forward_reg_kernel(const float* __restrict__ x, const int32_t* __restrict__ row_index,
                                 const bf16* __restrict__ gamma, const bf16* __restrict__ beta,
                                 bf16* __restrict__ out, int dim, float eps) {
  __shared__ float scratch[32];
  const int r = blockIdx.x;
  const int nvec = dim >> 2;
  const float4* xr =
      reinterpret_cast<const float4*>(x + static_cast<int64_t>(row_index ? row_index[r] : r) * dim);
  float4 v[VPT];
  float s = 0.0f;
#pragma unroll
  for (int i = 0; i < VPT; ++i) {
    const int c = threadIdx.x + i * kThreads;
    v[i] = c < nvec ? xr[c] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    s += (v[i].x + v[i].y) + (v[i].z + v[i].w);
  }
  const float mean = block_sum(s, scratch) / dim;
  float q = 0.0f;
#pragma unroll
  for (int i = 0; i < VPT; ++i) {
    if (threadIdx.x + i * kThreads < nvec) {
      const float a = v[i].x - mean, b = v[i].y - mean, c = v[i].z - mean, d = v[i].w - mean;
      q += (a * a + b * b) + (c * c + d * d);
    }
  }
  const float rstd = rsqrtf(block_sum(q, scratch) / dim + eps);
  __nv_bfloat162* o2 = reinterpret_cast<__nv_bfloat162*>(out + static_cast<int64_t>(r) * dim);
  const __nv_bfloat162* g2 = reinterpret_cast<const __nv_bfloat162*>(gamma);
  const __nv_bfloat162* b2 = reinterpret_cast<const __nv_bfloat162*>(beta);
#pragma unroll
  for (int i = 0; i < VPT; ++i) {
    const int c = threadIdx.x + i * kThreads;
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

}  // namespace

CudaStatus layernorm_forward(const float* x, const int32_t* row_index, const bf16* gamma,
                             const bf16* beta, bf16* out, int rows, int dim, float eps,
                             cudaStream_t stream) {
  PHI_CUDA_REQUIRE(rows >= 0 && dim > 0, "layernorm_forward: rows >= 0 and dim > 0");
  if (rows == 0) return {};
  const int vpt = (dim / 4 + kThreads - 1) / kThreads;
  const bool aligned =
      dim % 4 == 0 && ((reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(out) |
                        reinterpret_cast<uintptr_t>(gamma) | reinterpret_cast<uintptr_t>(beta)) %
                       16) == 0;
  if (aligned && vpt <= 8) {
    switch (vpt <= 1 ? 1 : vpt <= 2 ? 2 : vpt <= 4 ? 4 : 8) {
      case 1: layernorm_forward_reg_kernel<1><<<rows, kThreads, 0, stream>>>(x, row_index, gamma, beta, out, dim, eps); break;
      case 2: layernorm_forward_reg_kernel<2><<<rows, kThreads, 0, stream>>>(x, row_index, gamma, beta, out, dim, eps); break;
      case 4: layernorm_forward_reg_kernel<4><<<rows, kThreads, 0, stream>>>(x, row_index, gamma, beta, out, dim, eps); break;
      default: layernorm_forward_reg_kernel<8><<<rows, kThreads, 0, stream>>>(x, row_index, gamma, beta, out, dim, eps); break;
    }
    PHI_CUDA_CHECK_LAUNCH(layernorm_forward_reg_kernel);
    return {};
  }
  layernorm_forward_kernel<<<rows, kThreads, 0, stream>>>(x, row_index, gamma, beta, out, dim,
                                                          eps);
  PHI_CUDA_CHECK_LAUNCH(layernorm_forward_kernel);
  return {};
}

}  // namespace phi::worker::cuda
