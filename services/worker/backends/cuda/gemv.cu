// Small-M GEMM (decode): one warp per output column n; each lane streams 16-byte chunks of
// W[n, :] with four loads in flight (evict-first: the weights are read once per step), and
// reads the M activation rows, which stay in L1/L2, alongside.
#include "services/worker/backends/cuda/kernels.h"
#include "services/worker/backends/cuda/pdl.cuh"
#include "services/worker/backends/cuda/reduce.cuh"

namespace phi::worker::cuda {
namespace {

constexpr int kWarpsPerBlock = 8;
// 16-byte weight loads in flight per lane. Measured on the H200 (bench --breakdown, M=1):
// 4 gave 16.2 us (2048->14336) and 14.4 us (10240->2048); 8 gave 16.8 and 17.1 us.
constexpr int kInFlight = 4;

__device__ __forceinline__ void unpack8(const uint4& raw, float* f) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const float2 v = __bfloat1622float2(h[e]);
    f[2 * e] = v.x;
    f[2 * e + 1] = v.y;
  }
}

template <int M>
__device__ __forceinline__ void fma_chunk(const uint4& wv, const bf16* __restrict__ a, int k,
                                          int chunk, float* acc) {
  float wf[8];
  unpack8(wv, wf);
#pragma unroll
  for (int m = 0; m < M; ++m) {
    const uint4 av = __ldg(reinterpret_cast<const uint4*>(a + static_cast<int64_t>(m) * k) + chunk);
    float af[8];
    unpack8(av, af);
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[m] += wf[e] * af[e];
  }
}

template <int M, bool kF32>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    gemv_forward_kernel(const bf16* __restrict__ a, const bf16* __restrict__ w,
                        const void* __restrict__ bias, void* __restrict__ d, float beta, int n,
                        int k) {
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * kWarpsPerBlock + (threadIdx.x >> 5);
  if (row >= n) return;
  const uint4* wr = reinterpret_cast<const uint4*>(w + static_cast<int64_t>(row) * k);
  const int chunks = k >> 3;
  float acc[M];
#pragma unroll
  for (int m = 0; m < M; ++m) acc[m] = 0.0f;
  int c = lane;
  for (; c + 32 * (kInFlight - 1) < chunks; c += 32 * kInFlight) {
    uint4 wv[kInFlight];
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) wv[u] = __ldcs(wr + c + 32 * u);
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) fma_chunk<M>(wv[u], a, k, c + 32 * u, acc);
  }
  for (; c < chunks; c += 32) fma_chunk<M>(__ldcs(wr + c), a, k, c, acc);
#pragma unroll
  for (int m = 0; m < M; ++m) acc[m] = warp_sum(acc[m]);
  if (lane == 0) {
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const int64_t o = static_cast<int64_t>(m) * n + row;
      if constexpr (kF32) {
        float v = acc[m] + (bias ? static_cast<const float*>(bias)[row] : 0.0f);
        if (beta != 0.0f) v += beta * static_cast<float*>(d)[o];
        static_cast<float*>(d)[o] = v;
      } else {
        float v = acc[m] + (bias ? __bfloat162float(static_cast<const bf16*>(bias)[row]) : 0.0f);
        if (beta != 0.0f) v += beta * __bfloat162float(static_cast<bf16*>(d)[o]);
        static_cast<bf16*>(d)[o] = __float2bfloat16(v);
      }
    }
  }
}

template <int M>
cudaError_t launch(const bf16* a, const bf16* w, const void* bias, void* d, bool d_f32, float beta,
                   int n, int k, cudaStream_t stream) {
  const int blocks = (n + kWarpsPerBlock - 1) / kWarpsPerBlock;
  if (d_f32) {
    return launch_kernel(false, gemv_forward_kernel<M, true>, dim3(blocks),
                         dim3(kWarpsPerBlock * 32), 0, stream, a, w, bias, d, beta, n, k);
  }
  return launch_kernel(false, gemv_forward_kernel<M, false>, dim3(blocks),
                       dim3(kWarpsPerBlock * 32), 0, stream, a, w, bias, d, beta, n, k);
}

}  // namespace

CudaStatus gemv_forward(const bf16* a, const bf16* w, const void* bias, void* d, bool d_f32,
                        float beta, int m, int n, int k, cudaStream_t stream) {
  PHI_CUDA_REQUIRE(m >= 0 && m <= kGemvMaxM, "gemv_forward: m must be in [0, 8], got " +
                                                 std::to_string(m));
  PHI_CUDA_REQUIRE(n > 0 && k > 0 && k % 8 == 0,
                   "gemv_forward: n > 0 and k a positive multiple of 8, got k=" +
                       std::to_string(k));
  PHI_CUDA_REQUIRE((reinterpret_cast<uintptr_t>(a) | reinterpret_cast<uintptr_t>(w)) % 16 == 0,
                   "gemv_forward: a and w must be 16-byte aligned");
  if (m == 1 && k <= kGemv1MaxK) {
    // One token: the decode GEMV (gemv_decode.cu), which the fused decode path also runs, so
    // both paths add the same products in the same order.
    Gemv1Args g;
    g.a = a;
    g.w = w;
    g.bias = bias;
    g.d = d;
    g.d_f32 = d_f32;
    g.beta = beta;
    g.n = n;
    g.k = k;
    return gemv1_forward(g, stream);
  }
  if (m == 0) return {};
  using Launcher = cudaError_t (*)(const bf16*, const bf16*, const void*, void*, bool, float, int,
                                   int, cudaStream_t);
  static constexpr Launcher kLaunchers[kGemvMaxM] = {launch<1>, launch<2>, launch<3>, launch<4>,
                                                     launch<5>, launch<6>, launch<7>, launch<8>};
  PHI_CUDA_CHECK(kLaunchers[m - 1](a, w, bias, d, d_f32, beta, n, k, stream));
  return {};
}

}  // namespace phi::worker::cuda
