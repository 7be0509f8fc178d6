// LayerNorm with bias over the F32 residual stream, BF16 out. One block per row. Rows up to
// 8192 wide (multiple of 4, aligned) stay in registers: one read, two-pass mean/variance;
// other shapes take a generic kernel that reads the row three times.
#include "services/worker/backends/cuda/activations.cuh"
#include "services/worker/backends/cuda/kernels.h"
#include "services/worker/backends/cuda/pdl.cuh"
#include "services/worker/backends/cuda/reduce.cuh"

namespace phi::worker::cuda {
namespace {

constexpr int kThreads = kLayerNormThreads;

__global__ void layernorm_forward_kernel(const float* __restrict__ x,
                                         const int32_t* __restrict__ row_index,
                                         const bf16* __restrict__ gamma,
                                         const bf16* __restrict__ beta, bf16* __restrict__ out,
                                         int dim, float eps) {
  __shared__ float scratch[32];
  pdl_wait();  // x comes from the kernel before (programmatic launch: pdl.cuh)
  pdl_launch_dependents();
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

// Row held in registers (VPT float4 per thread): one read of x, two block reductions
// (activations.cuh, shared with the fused decode GEMV).
template <int VPT>
__global__ void __launch_bounds__(kThreads)
    layernorm_forward_reg_kernel(const float* __restrict__ x, const int32_t* __restrict__ row_index,
                                 const bf16* __restrict__ gamma, const bf16* __restrict__ beta,
                                 bf16* __restrict__ out, int dim, float eps) {
  __shared__ float scratch[32];
  pdl_wait();
  pdl_launch_dependents();
  const int r = blockIdx.x;
  layernorm_row_reg<VPT>(x + static_cast<int64_t>(row_index ? row_index[r] : r) * dim, gamma,
                         beta, out + static_cast<int64_t>(r) * dim, dim, eps, scratch);
}

}  // namespace

CudaStatus layernorm_forward(const float* x, const int32_t* row_index, const bf16* gamma,
                             const bf16* beta, bf16* out, int rows, int dim, float eps,
                             cudaStream_t stream, bool pdl) {
  PHI_CUDA_REQUIRE(rows >= 0 && dim > 0, "layernorm_forward: rows >= 0 and dim > 0");
  if (rows == 0) return {};
  const int vpt = layernorm_reg_vpt(dim);
  const bool aligned =
      vpt > 0 && ((reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(out) |
                        reinterpret_cast<uintptr_t>(gamma) | reinterpret_cast<uintptr_t>(beta)) %
                       16) == 0;
  if (aligned) {
    auto* kernel = vpt == 1   ? layernorm_forward_reg_kernel<1>
                   : vpt == 2 ? layernorm_forward_reg_kernel<2>
                   : vpt == 4 ? layernorm_forward_reg_kernel<4>
                              : layernorm_forward_reg_kernel<8>;
    PHI_CUDA_CHECK(launch_kernel(pdl, kernel, dim3(rows), dim3(kThreads), 0, stream, x, row_index,
                                 gamma, beta, out, dim, eps));
    return {};
  }
  PHI_CUDA_CHECK(launch_kernel(pdl, layernorm_forward_kernel, dim3(rows), dim3(kThreads), 0, stream,
                               x, row_index, gamma, beta, out, dim, eps));
  return {};
}

}  // namespace phi::worker::cuda
