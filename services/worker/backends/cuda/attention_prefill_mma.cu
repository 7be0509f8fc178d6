// Prefill attention on tensor cores: the contract of attention_prefill (causal, chunked, paged
// KV, BF16 or FP8 cache), with S = Q K^T and O += P V as mma.sync.m16n8k16 (BF16 in, F32
// accumulate) in the FlashAttention-2 arrangement: the FP32-FMA kernel (attention_prefill.cu)
// is bound by FMA throughput, most of a long prompt's TTFT (bench/results/cuda_backend.md).
//
// Block (tile of kPrefillTileQ = 64 queries, head): 4 warps, 16 query rows each. Per key tile
// of 64 positions the block stages K as [key][dim] and V transposed as [dim][key] in shared
// memory (BF16; FP8 codes convert exactly), then each warp computes its 16 x 64 scores in
// registers, applies the causal mask and an online softmax by rows, and reuses the scores'
// accumulator registers as P's A-operand fragments for P V (the m16n8 accumulator layout of
// two adjacent key octets is the m16k16 A layout), so P never touches shared memory.
// Fragment layouts: mma.cuh.
// P is rounded to BF16 for the product and the row sums add the rounded values, so the
// normalisation matches what was multiplied.
#include <cmath>

#include "services/worker/backends/cuda/kernels.h"
#include "services/worker/backends/cuda/kv_elem.cuh"
#include "services/worker/backends/cuda/mma.cuh"
#include "services/worker/backends/cuda/pdl.cuh"

namespace phi::worker::cuda {
namespace {

constexpr int kD = 64;
constexpr int kKeys = 64;                   // positions per key tile
constexpr int kWarps = kPrefillTileQ / 16;  // 16 query rows per warp
constexpr int kThreads = kWarps * 32;
constexpr int kStride = kD + 8;  // BF16 per shared row: +16 bytes, conflict-free fragment loads

// Two consecutive BF16 values as one register (the lower index in the low half).
__device__ __forceinline__ uint32_t load_pair(const bf16* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}

// Rounds (lo, hi) to a BF16 pair; *sum gains the rounded values.
__device__ __forceinline__ uint32_t pack_pair(float lo, float hi, float* sum) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  const float2 r = __bfloat1622float2(v);
  *sum += r.x + r.y;
  return *reinterpret_cast<const uint32_t*>(&v);
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    attention_prefill_mma_kernel(PagedAttentionArgs a, PrefillTiles tiles) {
  using E = KvElem<T>;
  constexpr int kE = E::kPerVec;  // cache elements per 16-byte load
  __shared__ __align__(16) bf16 k_s[kKeys][kStride];
  __shared__ __align__(16) bf16 vt_s[kD][kStride];
  const int tile = blockIdx.x, h = blockIdx.y;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int s = tiles.tile_seq[tile];
  const int first = tiles.tile_first[tile];
  const int num_new = tiles.num_new[s];
  const int start = tiles.start_pos[s];
  const int last_pos = start + min(first + kPrefillTileQ, num_new) - 1;
  const int warp_last = start + min(first + warp * 16 + 15, num_new - 1);
  const int32_t* table = a.block_tables + static_cast<int64_t>(s) * a.max_blocks_per_seq;

  // This thread's two query rows, g and g + 8 of the warp's 16 (rows past the sequence's
  // new tokens repeat its last query and are not written).
  int qi[2], pos[2];
  int64_t row[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    qi[r] = first + warp * 16 + g + 8 * r;
    const int qc = min(qi[r], num_new - 1);
    pos[r] = start + qc;
    row[r] = tiles.q_offset[s] + qc;
  }
  uint32_t qf[kD / 16][4];  // Q as A fragments, one per 16 dims
#pragma unroll
  for (int ks = 0; ks < kD / 16; ++ks) {
    const bf16* q0 = a.q + row[0] * a.q_stride + h * kD + ks * 16 + 2 * t;
    const bf16* q1 = a.q + row[1] * a.q_stride + h * kD + ks * 16 + 2 * t;
    qf[ks][0] = load_pair(q0);
    qf[ks][1] = load_pair(q1);
    qf[ks][2] = load_pair(q0 + 8);
    qf[ks][3] = load_pair(q1 + 8);
  }
  // FP8: K = code * k_scale is folded into the score scale, V = code * v_scale into 1 / l.
  const float score_scale = a.scale * (E::kFp8 ? a.k_scale : 1.0f);

  float o[kD / 8][4];  // O: 8 dim octets x (row g: 2 dims, row g + 8: 2 dims)
#pragma unroll
  for (int dt = 0; dt < kD / 8; ++dt) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};  // l: this thread's share

  for (int k0 = 0; k0 <= last_pos; k0 += kKeys) {
    __syncthreads();  // the previous tile's readers are done
    for (int i = threadIdx.x; i < kKeys * (kD / kE); i += kThreads) {
      const int j = i / (kD / kE), c = i % (kD / kE);
      const int p = k0 + j;
      float kf[kE], vf[kE];
      if (p <= last_pos) {
        const int64_t block = table[p / a.block_size];
        const int64_t off = ((block * a.num_heads + h) * a.block_size + p % a.block_size) * kD;
        E::ToFloat(reinterpret_cast<const uint4*>(static_cast<const T*>(a.k_cache) + off)[c], kf);
        E::ToFloat(reinterpret_cast<const uint4*>(static_cast<const T*>(a.v_cache) + off)[c], vf);
      } else {
#pragma unroll
        for (int e = 0; e < kE; ++e) kf[e] = vf[e] = 0.0f;
      }
#pragma unroll
      for (int e = 0; e < kE; e += 2) {
        *reinterpret_cast<__nv_bfloat162*>(&k_s[j][c * kE + e]) =
            __floats2bfloat162_rn(kf[e], kf[e + 1]);
        vt_s[c * kE + e][j] = __float2bfloat16(vf[e]);
        vt_s[c * kE + e + 1][j] = __float2bfloat16(vf[e + 1]);
      }
    }
    __syncthreads();
    if (k0 > warp_last) continue;  // all of this warp's rows end before this tile

    // S = Q K^T: 8 octets of keys.
    float sc[kKeys / 8][4];
#pragma unroll
    for (int nt = 0; nt < kKeys / 8; ++nt) {
      sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.0f;
#pragma unroll
      for (int ks = 0; ks < kD / 16; ++ks) {
        const bf16* kr = &k_s[nt * 8 + g][ks * 16 + 2 * t];
        mma_bf16_16816(sc[nt], qf[ks], load_pair(kr), load_pair(kr + 8));
      }
    }
    // Scale, causal mask, row max over the quad of threads sharing a row.
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < kKeys / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e >> 1;
        const int key = k0 + nt * 8 + 2 * t + (e & 1);
        const float v = key <= pos[r] ? sc[nt][e] * score_scale : -INFINITY;
        sc[nt][e] = v;
        mx[r] = fmaxf(mx[r], v);
      }
    }
    float corr[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      // Position 0 is visible to every query, so m is finite after the first tile; a row
      // whose keys are all masked in a later tile keeps its m (corr 1, p 0).
      const float m_new = fmaxf(m[r], mx[r]);
      corr[r] = __expf(m[r] - m_new);
      m[r] = m_new;
      l[r] *= corr[r];
    }
    // P = exp(S - m) as A fragments: key octets 2kk and 2kk + 1 form keys 16kk .. 16kk + 15.
    uint32_t pf[kKeys / 16][4];
#pragma unroll
    for (int kk = 0; kk < kKeys / 16; ++kk) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const float* sv = sc[2 * kk + half];
        pf[kk][2 * half] =
            pack_pair(__expf(sv[0] - m[0]), __expf(sv[1] - m[0]), &l[0]);
        pf[kk][2 * half + 1] =
            pack_pair(__expf(sv[2] - m[1]), __expf(sv[3] - m[1]), &l[1]);
      }
    }
    // O = O * corr + P V.
#pragma unroll
    for (int dt = 0; dt < kD / 8; ++dt) {
      o[dt][0] *= corr[0];
      o[dt][1] *= corr[0];
      o[dt][2] *= corr[1];
      o[dt][3] *= corr[1];
#pragma unroll
      for (int kk = 0; kk < kKeys / 16; ++kk) {
        const bf16* vr = &vt_s[dt * 8 + g][kk * 16 + 2 * t];
        mma_bf16_16816(o[dt], pf[kk], load_pair(vr), load_pair(vr + 8));
      }
    }
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
  }
  const float v_scale = E::kFp8 ? a.v_scale : 1.0f;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (qi[r] >= num_new) continue;
    const float inv = v_scale / l[r];
    bf16* out = a.out + row[r] * a.out_stride + h * kD + 2 * t;
#pragma unroll
    for (int dt = 0; dt < kD / 8; ++dt) {
      *reinterpret_cast<__nv_bfloat162*>(out + dt * 8) =
          __floats2bfloat162_rn(o[dt][2 * r] * inv, o[dt][2 * r + 1] * inv);
    }
  }
}

}  // namespace

CudaStatus attention_prefill_mma(const PagedAttentionArgs& args, const PrefillTiles& tiles,
                                 cudaStream_t stream) {
  const dim3 grid(tiles.num_tiles, args.num_heads);
  if (args.kv_dtype == KvCacheDtype::kFp8E4m3) {
    PHI_CUDA_CHECK(launch_kernel(false, attention_prefill_mma_kernel<fp8_e4m3>, grid,
                                 dim3(kThreads), 0, stream, args, tiles));
  } else {
    PHI_CUDA_CHECK(launch_kernel(false, attention_prefill_mma_kernel<bf16>, grid,
                                 dim3(kThreads), 0, stream, args, tiles));
  }
  return {};
}

}  // namespace phi::worker::cuda
