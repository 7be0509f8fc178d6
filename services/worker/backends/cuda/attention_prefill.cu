// Prefill attention over the paged KV cache (flash-attention style, causal, chunked prefill).
// Block (tile, head): kPrefillTileQ threads, one query each, holding q and the output
// accumulator in registers; K/V tiles of kKeyTile positions are staged in shared memory as F32
// and read by all threads at once (broadcast), with an online softmax per key tile. Queries at
// positions start_pos.. of a chunk attend to everything already cached, their own chunk
// included, so chunked prefill needs no special case. The cache is BF16 or FP8 E4M3.
#include <cfloat>

#include "services/worker/backends/cuda/kernels.h"
#include "services/worker/backends/cuda/kv_elem.cuh"
#include "services/worker/backends/cuda/pdl.cuh"

namespace phi::worker::cuda {
namespace {

constexpr int kD = 64;
constexpr int kKeyTile = 32;
constexpr int kThreads = kPrefillTileQ;

// T: the cache element (kv_elem.cuh); staging converts one 16-byte load (8 BF16 or 16 FP8
// values) per iteration. FP8 folds k_scale into q and v_scale into the final 1/l.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    attention_prefill_kernel(PagedAttentionArgs a, PrefillTiles tiles) {
  using E = KvElem<T>;
  constexpr int kE = E::kPerVec;
  __shared__ __align__(16) float k_s[kKeyTile][kD];
  __shared__ __align__(16) float v_s[kKeyTile][kD];
  const int tile = blockIdx.x, h = blockIdx.y;
  const int s = tiles.tile_seq[tile];
  const int first = tiles.tile_first[tile];
  const int num_new = tiles.num_new[s];
  const int start = tiles.start_pos[s];
  const int qi = first + threadIdx.x;
  const bool active = qi < num_new;
  const int my_pos = start + (active ? qi : num_new - 1);
  const int last_pos = start + min(first + kThreads, num_new) - 1;
  const int64_t row = tiles.q_offset[s] + (active ? qi : num_new - 1);
  const int32_t* table = a.block_tables + static_cast<int64_t>(s) * a.max_blocks_per_seq;

  float q[kD], acc[kD];
  {
    const uint4* q4 = reinterpret_cast<const uint4*>(a.q + row * a.q_stride + h * kD);
#pragma unroll
    for (int c = 0; c < kD / 8; ++c) {
      const uint4 raw = q4[c];
      const __nv_bfloat162* q2 = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float2 f = __bfloat1622float2(q2[e]);
        q[c * 8 + 2 * e] = f.x * a.scale;
        q[c * 8 + 2 * e + 1] = f.y * a.scale;
      }
    }
    if constexpr (E::kFp8) {
#pragma unroll
      for (int d = 0; d < kD; ++d) q[d] *= a.k_scale;
    }
  }
#pragma unroll
  for (int d = 0; d < kD; ++d) acc[d] = 0.0f;
  float m = -FLT_MAX, l = 0.0f;

  for (int k0 = 0; k0 <= last_pos; k0 += kKeyTile) {
    __syncthreads();  // the previous tile's readers are done
    // Stage K and V of positions k0 .. k0+kKeyTile-1: kE elements (16 bytes) per load.
    for (int i = threadIdx.x; i < kKeyTile * kD / kE; i += kThreads) {
      const int j = i / (kD / kE), c = i % (kD / kE);
      const int t = k0 + j;
      float* kd = &k_s[j][c * kE];
      float* vd = &v_s[j][c * kE];
      if (t <= last_pos) {
        const int64_t block = table[t / a.block_size];
        const int64_t off = ((block * a.num_heads + h) * a.block_size + t % a.block_size) * kD;
        const uint4 kr = reinterpret_cast<const uint4*>(static_cast<const T*>(a.k_cache) + off)[c];
        const uint4 vr = reinterpret_cast<const uint4*>(static_cast<const T*>(a.v_cache) + off)[c];
        E::ToFloat(kr, kd);
        E::ToFloat(vr, vd);
      } else {
#pragma unroll
        for (int e = 0; e < kE; ++e) kd[e] = vd[e] = 0.0f;
      }
    }
    __syncthreads();

    float sc[kKeyTile];
    float tile_max = -FLT_MAX;
#pragma unroll
    for (int j = 0; j < kKeyTile; ++j) {
      const float4* k4 = reinterpret_cast<const float4*>(k_s[j]);
      float dot = 0.0f;
#pragma unroll
      for (int c = 0; c < kD / 4; ++c) {
        const float4 kv = k4[c];
        dot += q[4 * c] * kv.x + q[4 * c + 1] * kv.y + q[4 * c + 2] * kv.z + q[4 * c + 3] * kv.w;
      }
      sc[j] = (k0 + j <= my_pos) ? dot : -FLT_MAX;
      tile_max = fmaxf(tile_max, sc[j]);
    }
    if (k0 > my_pos) continue;  // fully masked for this query (its later tiles too)
    const float m_new = fmaxf(m, tile_max);
    const float corr = __expf(m - m_new);
    l *= corr;
#pragma unroll
    for (int d = 0; d < kD; ++d) acc[d] *= corr;
#pragma unroll
    for (int j = 0; j < kKeyTile; ++j) {
      const float p = (k0 + j <= my_pos) ? __expf(sc[j] - m_new) : 0.0f;
      l += p;
      const float4* v4 = reinterpret_cast<const float4*>(v_s[j]);
#pragma unroll
      for (int c = 0; c < kD / 4; ++c) {
        const float4 vv = v4[c];
        acc[4 * c] += p * vv.x;
        acc[4 * c + 1] += p * vv.y;
        acc[4 * c + 2] += p * vv.z;
        acc[4 * c + 3] += p * vv.w;
      }
    }
    m = m_new;
  }
  if (!active) return;
  float inv = 1.0f / l;
  if constexpr (E::kFp8) inv *= a.v_scale;
  __nv_bfloat162* o2 = reinterpret_cast<__nv_bfloat162*>(a.out + row * a.out_stride + h * kD);
#pragma unroll
  for (int d = 0; d < kD / 2; ++d) {
    o2[d] = __floats2bfloat162_rn(acc[2 * d] * inv, acc[2 * d + 1] * inv);
  }
}

}  // namespace

CudaStatus attention_prefill(const PagedAttentionArgs& args, const PrefillTiles& tiles,
                             cudaStream_t stream) {
  PHI_CUDA_REQUIRE(args.head_dim == kD, "attention_prefill: head_dim must be 64, got " +
                                            std::to_string(args.head_dim));
  PHI_CUDA_REQUIRE(args.block_size > 0 && args.num_heads > 0 && args.num_heads <= 65535,
                   "attention_prefill: block_size > 0, num_heads in [1, 65535]");
  PHI_CUDA_REQUIRE(args.q_stride % 8 == 0 && args.out_stride % 2 == 0,
                   "attention_prefill: q_stride must be a multiple of 8, out_stride even");
  if (tiles.num_tiles == 0) return {};
  if (args.tensor_cores) return attention_prefill_mma(args, tiles, stream);
  const dim3 grid(tiles.num_tiles, args.num_heads);
  if (args.kv_dtype == KvCacheDtype::kFp8E4m3) {
    PHI_CUDA_CHECK(launch_kernel(false, attention_prefill_kernel<fp8_e4m3>, grid,
                                 dim3(kThreads), 0, stream, args, tiles));
  } else {
    PHI_CUDA_CHECK(launch_kernel(false, attention_prefill_kernel<bf16>, grid, dim3(kThreads),
                                 0, stream, args, tiles));
  }
  return {};
}

}  // namespace phi::worker::cuda
