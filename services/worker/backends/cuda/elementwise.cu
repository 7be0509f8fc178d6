// Element-wise kernels: embedding gather, gelu_new, bias add.
#include "services/worker/backends/cuda/activations.cuh"
#include "services/worker/backends/cuda/kernels.h"
#include "services/worker/backends/cuda/pdl.cuh"

namespace phi::worker::cuda {
namespace {

constexpr int kThreads = 256;

int grid_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<int>(blocks < 65535 * 16 ? blocks : 65535 * 16);
}

__global__ void embedding_forward_kernel(const int32_t* __restrict__ tokens,
                                         const bf16* __restrict__ table, float* __restrict__ x,
                                         int vocab, int dim, int vocab_begin) {
  const int t = blockIdx.x;
  const int64_t row = static_cast<int64_t>(tokens[t]) - vocab_begin;
  const bool valid = row >= 0 && row < vocab;
  for (int c = threadIdx.x; c < dim; c += blockDim.x) {
    x[static_cast<int64_t>(t) * dim + c] = valid ? __bfloat162float(table[row * dim + c]) : 0.0f;
  }
}

__global__ void gelu_forward_kernel(const bf16* __restrict__ in, int in_stride,
                                    bf16* __restrict__ out, int out_stride, int cols) {
  pdl_wait();  // in comes from an earlier kernel (programmatic launch: pdl.cuh)
  pdl_launch_dependents();
  const int r = blockIdx.y;
  const bf16* ir = in + static_cast<int64_t>(r) * in_stride;
  bf16* orow = out + static_cast<int64_t>(r) * out_stride;
  // Pairs when both strides and cols are even (the model's case): 4-byte accesses.
  if (((in_stride | out_stride | cols) & 1) == 0 &&
      (reinterpret_cast<uintptr_t>(ir) & 3) == 0 && (reinterpret_cast<uintptr_t>(orow) & 3) == 0) {
    for (int c = (blockIdx.x * blockDim.x + threadIdx.x) * 2; c < cols;
         c += gridDim.x * blockDim.x * 2) {
      const float2 v = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(ir + c));
      *reinterpret_cast<__nv_bfloat162*>(orow + c) =
          __floats2bfloat162_rn(gelu_new(v.x), gelu_new(v.y));
    }
  } else {
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < cols; c += gridDim.x * blockDim.x) {
      orow[c] = __float2bfloat16(gelu_new(__bfloat162float(ir[c])));
    }
  }
}

template <typename T>
__global__ void bias_add_forward_kernel(T* __restrict__ x, const T* __restrict__ bias,
                                        int64_t n, int cols) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if constexpr (sizeof(T) == 2) {
      x[i] = __float2bfloat16(__bfloat162float(x[i]) + __bfloat162float(bias[i % cols]));
    } else {
      x[i] = x[i] + bias[i % cols];
    }
  }
}

}  // namespace

CudaStatus embedding_forward(const int32_t* tokens, const bf16* table, float* x, int num_tokens,
                             int vocab, int dim, cudaStream_t stream, int vocab_begin) {
  PHI_CUDA_REQUIRE(num_tokens >= 0 && dim > 0, "embedding_forward: num_tokens >= 0, dim > 0");
  if (num_tokens == 0) return {};
  PHI_CUDA_CHECK(launch_kernel(false, embedding_forward_kernel, dim3(num_tokens), dim3(kThreads), 0,
                               stream, tokens, table, x, vocab, dim, vocab_begin));
  return {};
}

CudaStatus gelu_forward(const bf16* in, int in_stride, bf16* out, int out_stride, int rows,
                        int cols, cudaStream_t stream, bool pdl) {
  PHI_CUDA_REQUIRE(rows >= 0 && rows <= 65535 && cols > 0,
                   "gelu_forward: rows in [0, 65535], cols > 0");
  if (rows == 0) return {};
  const int per_block = kThreads * 2;
  dim3 grid((cols + per_block - 1) / per_block, rows);
  PHI_CUDA_CHECK(launch_kernel(pdl, gelu_forward_kernel, grid, dim3(kThreads), 0, stream, in,
                               in_stride, out, out_stride, cols));
  return {};
}

CudaStatus bias_add_forward(bf16* x, const bf16* bias, int rows, int cols, cudaStream_t stream) {
  const int64_t n = static_cast<int64_t>(rows) * cols;
  if (n == 0) return {};
  PHI_CUDA_CHECK(launch_kernel(false, bias_add_forward_kernel<bf16>, dim3(grid_for(n)),
                               dim3(kThreads), 0, stream, x, bias, n, cols));
  return {};
}

CudaStatus bias_add_forward(float* x, const float* bias, int rows, int cols,
                            cudaStream_t stream) {
  const int64_t n = static_cast<int64_t>(rows) * cols;
  if (n == 0) return {};
  PHI_CUDA_CHECK(launch_kernel(false, bias_add_forward_kernel<float>, dim3(grid_for(n)),
                               dim3(kThreads), 0, stream, x, bias, n, cols));
  return {};
}

}  // namespace phi::worker::cuda
