// Paged decode attention: one query per sequence, head_dim 64, flash-decoding split over the
// context. Block (head, sequence, partition) of 128 threads: each thread scores whole keys
// (one 128-byte K row per key), warps then accumulate V with one head dim pair per lane.
#include <cfloat>

#include "services/worker/backends/cuda/kernels.h"
#include "services/worker/backends/cuda/reduce.cuh"

namespace phi::worker::cuda {
namespace {

constexpr int kD = 64;
constexpr int kThreads = 128;
constexpr int kTokenGroups = kThreads / 8;  // V: 8 threads per position

__global__ void __launch_bounds__(kThreads)
    attention_decode_kernel(PagedAttentionArgs a, const int32_t* __restrict__ context_lens,
                            int max_parts, float* __restrict__ ws) {
  __shared__ float q_s[kD];
  __shared__ float p_s[kDecodePartition];
  __shared__ float red[32];
  __shared__ float acc_s[kTokenGroups][kD + 1];
  const int h = blockIdx.x, s = blockIdx.y, part = blockIdx.z;
  const int len = context_lens[s];
  const int p0 = part * kDecodePartition;
  if (p0 >= len && part > 0) return;  // this sequence needs fewer partitions
  const int p1 = min(len, p0 + kDecodePartition);
  const int32_t* table = a.block_tables + static_cast<int64_t>(s) * a.max_blocks_per_seq;
  const bf16* q = a.q + static_cast<int64_t>(s) * a.q_stride + h * kD;
  if (threadIdx.x < kD) q_s[threadIdx.x] = __bfloat162float(q[threadIdx.x]) * a.scale;
  __syncthreads();

  float local_max = -FLT_MAX;
  for (int t = p0 + threadIdx.x; t < p1; t += kThreads) {
    const int64_t block = table[t / a.block_size];
    const bf16* k = a.k_cache + ((block * a.num_heads + h) * a.block_size + t % a.block_size) * kD;
    float dot = 0.0f;
#pragma unroll
    for (int c = 0; c < kD / 8; ++c) {
      const uint4 raw = reinterpret_cast<const uint4*>(k)[c];
      const __nv_bfloat162* k2 = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float2 kf = __bfloat1622float2(k2[e]);
        dot += q_s[c * 8 + 2 * e] * kf.x + q_s[c * 8 + 2 * e + 1] * kf.y;
      }
    }
    p_s[t - p0] = dot;
    local_max = fmaxf(local_max, dot);
  }
  const float m = block_max(local_max, red);
  float local_sum = 0.0f;
  for (int t = p0 + threadIdx.x; t < p1; t += kThreads) {
    const float e = __expf(p_s[t - p0] - m);
    p_s[t - p0] = e;
    local_sum += e;
  }
  const float l = block_sum(local_sum, red);  // ends with a barrier: p_s is complete

  // V: thread t covers head dims [8 (t % 8), +8) of positions p0 + t / 8 + 16 i, with four
  // 16-byte loads in flight per thread, so a block is not one load latency per position.
  const int dc = threadIdx.x & 7, tg = threadIdx.x >> 3;
  float acc[8];
#pragma unroll
  for (int e = 0; e < 8; ++e) acc[e] = 0.0f;
  for (int t0 = p0 + tg; t0 < p1; t0 += 4 * kTokenGroups) {
    uint4 raw[4];
    float pr[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const int t = t0 + u * kTokenGroups;
      if (t < p1) {
        const int64_t block = table[t / a.block_size];
        raw[u] = reinterpret_cast<const uint4*>(
            a.v_cache + ((block * a.num_heads + h) * a.block_size + t % a.block_size) * kD)[dc];
        pr[u] = p_s[t - p0];
      } else {
        raw[u] = make_uint4(0, 0, 0, 0);
        pr[u] = 0.0f;
      }
    }
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const __nv_bfloat162* v2 = reinterpret_cast<const __nv_bfloat162*>(&raw[u]);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float2 vf = __bfloat1622float2(v2[e]);
        acc[2 * e] += pr[u] * vf.x;
        acc[2 * e + 1] += pr[u] * vf.y;
      }
    }
  }
#pragma unroll
  for (int e = 0; e < 8; ++e) acc_s[tg][dc * 8 + e] = acc[e];
  __syncthreads();
  if (threadIdx.x < kD) {
    float o = 0.0f;
#pragma unroll
    for (int g = 0; g < kTokenGroups; ++g) o += acc_s[g][threadIdx.x];
    const int parts = (len + kDecodePartition - 1) / kDecodePartition;
    if (parts <= 1) {
      a.out[static_cast<int64_t>(s) * a.out_stride + h * kD + threadIdx.x] =
          __float2bfloat16(len > 0 ? o / l : 0.0f);
    } else {
      float* w = ws + ((static_cast<int64_t>(s) * a.num_heads + h) * max_parts + part) * (kD + 2);
      w[threadIdx.x] = o;
      if (threadIdx.x == 0) {
        w[kD] = m;
        w[kD + 1] = l;
      }
    }
  }
}

// Merges the partitions of sequences whose context spans more than one.
__global__ void attention_decode_merge_kernel(PagedAttentionArgs a,
                                              const int32_t* __restrict__ context_lens,
                                              int max_parts, const float* __restrict__ ws) {
  const int h = blockIdx.x, s = blockIdx.y, d = threadIdx.x;
  const int parts = (context_lens[s] + kDecodePartition - 1) / kDecodePartition;
  if (parts <= 1) return;
  const float* w = ws + (static_cast<int64_t>(s) * a.num_heads + h) * max_parts * (kD + 2);
  float m = -FLT_MAX;
  for (int p = 0; p < parts; ++p) m = fmaxf(m, w[p * (kD + 2) + kD]);
  float l = 0.0f, o = 0.0f;
  for (int p = 0; p < parts; ++p) {
    const float f = __expf(w[p * (kD + 2) + kD] - m);
    l += w[p * (kD + 2) + kD + 1] * f;
    o += w[p * (kD + 2) + d] * f;
  }
  a.out[static_cast<int64_t>(s) * a.out_stride + h * kD + d] = __float2bfloat16(o / l);
}

}  // namespace

int64_t attention_decode_workspace_floats(int num_seqs, int num_heads, int max_context_len) {
  const int64_t parts = (max_context_len + kDecodePartition - 1) / kDecodePartition;
  return parts > 1 ? static_cast<int64_t>(num_seqs) * num_heads * parts * (kD + 2) : 0;
}

CudaStatus attention_decode(const PagedAttentionArgs& args, const int32_t* context_lens,
                            int max_context_len, float* workspace, cudaStream_t stream) {
  PHI_CUDA_REQUIRE(args.head_dim == kD, "attention_decode: head_dim must be 64, got " +
                                            std::to_string(args.head_dim));
  PHI_CUDA_REQUIRE(args.block_size > 0 && args.num_heads > 0 && args.num_seqs <= 65535,
                   "attention_decode: block_size > 0, num_heads > 0, num_seqs <= 65535");
  PHI_CUDA_REQUIRE(max_context_len > 0, "attention_decode: max_context_len must be > 0");
  if (args.num_seqs == 0) return {};
  const int parts = (max_context_len + kDecodePartition - 1) / kDecodePartition;
  PHI_CUDA_REQUIRE(parts <= 1 || workspace != nullptr,
                   "attention_decode: workspace required for contexts over " +
                       std::to_string(kDecodePartition));
  dim3 grid(args.num_heads, args.num_seqs, parts);
  attention_decode_kernel<<<grid, kThreads, 0, stream>>>(args, context_lens, parts, workspace);
  PHI_CUDA_CHECK_LAUNCH(attention_decode_kernel);
  if (parts > 1) {
    attention_decode_merge_kernel<<<dim3(args.num_heads, args.num_seqs), kD, 0, stream>>>(
        args, context_lens, parts, workspace);
    PHI_CUDA_CHECK_LAUNCH(attention_decode_merge_kernel);
  }
  return {};
}

}  // namespace phi::worker::cuda
