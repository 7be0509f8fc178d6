// fill_random_forward (fill_random.h): splitmix64 of (seed, index) per element.
#include "bench/cuda/fill_random.h"

#include "services/worker/backends/cuda/pdl.cuh"

namespace phi::bench {
namespace {

using worker::cuda::bf16;
using worker::cuda::CudaStatus;

constexpr int kThreads = 256;

int grid_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<int>(blocks < 65535 * 16 ? blocks : 65535 * 16);
}

__device__ __forceinline__ uint64_t splitmix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

template <typename T>
__global__ void fill_random_forward_kernel(T* __restrict__ out, int64_t n, uint64_t seed,
                                           float scale) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint64_t r = splitmix64(seed * 0x100000001B3ull + static_cast<uint64_t>(i));
    const float u = static_cast<float>(r >> 40) * (1.0f / 16777216.0f);  // [0, 1)
    const float v = (2.0f * u - 1.0f) * scale;
    if constexpr (sizeof(T) == 2) {
      out[i] = __float2bfloat16(v);
    } else {
      out[i] = v;
    }
  }
}

template <typename T>
CudaStatus Fill(T* out, int64_t n, uint64_t seed, float scale, cudaStream_t stream) {
  if (n == 0) return {};
  PHI_CUDA_CHECK(worker::cuda::launch_kernel(false, fill_random_forward_kernel<T>,
                                             dim3(grid_for(n)), dim3(kThreads), 0, stream, out,
                                             n, seed, scale));
  return {};
}

}  // namespace

CudaStatus fill_random_forward(bf16* out, int64_t n, uint64_t seed, float scale,
                               cudaStream_t stream) {
  return Fill(out, n, seed, scale, stream);
}

CudaStatus fill_random_forward(float* out, int64_t n, uint64_t seed, float scale,
                               cudaStream_t stream) {
  return Fill(out, n, seed, scale, stream);
}

}  // namespace phi::bench
