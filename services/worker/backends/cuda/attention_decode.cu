// Paged decode attention: one query per sequence, head_dim 64, flash-decoding split of the
// context into partitions of kDecodePartition positions, one 128-thread block per
// (head, sequence, partition). Every K and V load of a block is issued before the first use
// (one memory latency per block, not one per position), and the last block of a
// (sequence, head) to finish merges the partitions, so a step needs no second kernel.
// Templated on the cache element (BF16 or FP8 E4M3): FP8 moves half the bytes per position.
#include <algorithm>
#include <cfloat>

#include "services/worker/backends/cuda/device_limits.h"
#include "services/worker/backends/cuda/kernels.h"
#include "services/worker/backends/cuda/kv_elem.cuh"
#include "services/worker/backends/cuda/pdl.cuh"
#include "services/worker/backends/cuda/reduce.cuh"
#include "services/worker/backends/cuda/rotary_pair.cuh"

namespace phi::worker::cuda {
namespace {

constexpr int kD = 64;
constexpr int kThreads = 128;
static_assert(kThreads == kDecodePartition, "scores: one position per thread");

template <typename T>
__device__ __forceinline__ const T* cache_row(const void* cache, const int32_t* table, int t,
                                              int h, int num_heads, int block_size) {
  const int64_t block = table[t / block_size];
  return static_cast<const T*>(cache) + ((block * num_heads + h) * block_size + t % block_size) * kD;
}

// T: the cache element (kv_elem.cuh). One 16-byte load holds kE elements, a K or V row is
// kVec loads, and kVec adjacent threads share each row they load (BF16: 8 threads per row,
// 8 rows each; FP8: 4 and 4). FP8 folds k_scale into q and v_scale into the output.
// Resident blocks per SM the register budget must allow (ptxas, sm_90): BF16 6 (80
// registers, 8 bytes spilled; unbounded it takes 96: 5 blocks); FP8 7 (70 registers, no
// spill). 6 blocks with 32 KB of loads in flight each are more than an SM needs to keep
// its share of the memory bandwidth busy (Little's law: ~25 KB at H200 latency).
template <typename T>
inline constexpr int kDecodeMinBlocks = KvElem<T>::kFp8 ? 7 : 6;

// q's contribution as the score loop uses it: q * scale, and for FP8 also * k_scale
// (q . (code * k_scale) = (q * k_scale) . code).
template <typename T>
__device__ __forceinline__ float scaled_q(const PagedAttentionArgs& a, float q) {
  const float v = q * a.scale;
  return KvElem<T>::kFp8 ? v * a.k_scale : v;
}

// Rotary fused into decode attention (a.new_slots): rotary_kv_forward_kernel's arithmetic
// (rotary_pair.cuh) for one (sequence, head), thread j < kD / 2 taking pair j. Fills the block's q_s (the rotated q,
// rounded to BF16 as rotary_kv_forward stores it, then scaled), and in the block that owns
// position len - 1 (the one whose partitions include it) writes the rotated k and v to the
// new token's cache slot.
template <typename T>
__device__ __forceinline__ void rotate_and_store_new_token(const PagedAttentionArgs& a, int s,
                                                           int h, int len, float* q_s) {
  if (threadIdx.x >= kD / 2 || len <= 0) return;
  const int pos = len - 1, j = threadIdx.x;
  const bf16* q = a.q + static_cast<int64_t>(s) * a.q_stride + h * kD;
  const bf16* k = q + a.num_heads * kD;
  const bf16* v = q + 2 * a.num_heads * kD;
  const bool owner =
      (pos / kDecodePartition) % static_cast<int>(gridDim.z) == static_cast<int>(blockIdx.z);
  T* kc = nullptr;
  T* vc = nullptr;
  if (owner) {
    const int slot = a.new_slots[s];
    const int64_t base =
        ((static_cast<int64_t>(slot / a.block_size) * a.num_heads + h) * a.block_size +
         slot % a.block_size) * kD;
    kc = static_cast<T*>(const_cast<void*>(a.k_cache)) + base;
    vc = static_cast<T*>(const_cast<void*>(a.v_cache)) + base;
  }
  rotary_pair<T>(q, k, v, kc, vc, j, a.rotary_dim, kD, pos, a.theta, a.k_scale, a.v_scale,
                 [&](int d, bf16 x, bool) { q_s[d] = scaled_q<T>(a, __bfloat162float(x)); });
}

template <typename T>
__global__ void __launch_bounds__(kThreads, kDecodeMinBlocks<T>)
    attention_decode_kernel(PagedAttentionArgs a, const int32_t* __restrict__ context_lens,
                            int max_parts, float* __restrict__ ws,
                            unsigned int* __restrict__ counters) {
  using E = KvElem<T>;
  constexpr int kE = E::kPerVec;
  constexpr int kVec = kD / kE;                                   // loads per K/V row
  constexpr int kRowGroups = kThreads / kVec;                     // kVec threads per row
  constexpr int kRowsPerThread = kDecodePartition / kRowGroups;   // == kVec: one score each
  static_assert(kRowsPerThread == kVec && 32 % kVec == 0, "row groups inside a warp");
  __shared__ float q_s[kD];
  __shared__ float p_s[kDecodePartition];
  __shared__ float red[32];
  __shared__ float acc_s[kRowGroups][kD + 1];
  __shared__ bool last_s;
  // Before anything else (q, the cache, the merge counters): programmatic launch, pdl.cuh.
  // The trigger right after lets the W2 GEMV start streaming its fc1 columns meanwhile.
  pdl_wait();
  pdl_launch_dependents();
  const int h = blockIdx.x, s = blockIdx.y;
  const int len = context_lens[s];
  const int parts = (len + kDecodePartition - 1) / kDecodePartition;
  const int32_t* table = a.block_tables + static_cast<int64_t>(s) * a.max_blocks_per_seq;
  bf16* out = a.out + static_cast<int64_t>(s) * a.out_stride + h * kD;
  if (a.new_slots != nullptr) {
    rotate_and_store_new_token<T>(a, s, h, len, q_s);
    __syncthreads();  // q_s complete; the owner's cache writes visible to its own loads below
  }
  // This block's partitions: blockIdx.z, blockIdx.z + gridDim.z, ... (gridDim.z is every
  // partition max_context_len can have unless the launch capped it: attention_decode). Those
  // past this sequence's length are skipped; a length-0 context still writes its zeros.
  for (int part = blockIdx.z; part < max(parts, 1); part += gridDim.z) {
    const int p0 = part * kDecodePartition;
    const int p1 = min(len, p0 + kDecodePartition);

    // Issue the partition's loads: K and V, then q. kVec adjacent threads share a row, each
    // loading one 16-byte chunk of kRowsPerThread rows, so a warp reads whole rows (512
    // contiguous bytes per instruction within a cache block; the K loads used to take a row
    // per thread, 32 rows at 16 bytes each per instruction).
    const int dc = threadIdx.x % kVec, tg = threadIdx.x / kVec;
    uint4 k_raw[kRowsPerThread], v_raw[kRowsPerThread];
#pragma unroll
    for (int u = 0; u < kRowsPerThread; ++u) {
      const int t = p0 + tg + u * kRowGroups;
      const bool in = t < p1;
      k_raw[u] = in ? reinterpret_cast<const uint4*>(
                          cache_row<T>(a.k_cache, table, t, h, a.num_heads, a.block_size))[dc]
                    : make_uint4(0, 0, 0, 0);
      v_raw[u] = in ? reinterpret_cast<const uint4*>(
                          cache_row<T>(a.v_cache, table, t, h, a.num_heads, a.block_size))[dc]
                    : make_uint4(0, 0, 0, 0);
    }
    if (a.new_slots == nullptr && threadIdx.x < kD) {
      q_s[threadIdx.x] = scaled_q<T>(
          a, __bfloat162float(a.q[static_cast<int64_t>(s) * a.q_stride + h * kD + threadIdx.x]));
    }
    __syncthreads();

    // Partial dot of each of this thread's rows with its chunk of q, then a reduce-scatter
    // over the kVec threads of the row group (kVec - 1 shuffles): the thread with chunk
    // index dc ends with the whole score of its group's row dc.
    const float* qc = q_s + dc * kE;
    float dots[kRowsPerThread];
#pragma unroll
    for (int j = 0; j < kRowsPerThread; ++j) {
      float kf[kE];
      E::ToFloat(k_raw[j], kf);
      float dot = 0.0f;
#pragma unroll
      for (int e = 0; e < kE / 2; ++e) dot += qc[2 * e] * kf[2 * e] + qc[2 * e + 1] * kf[2 * e + 1];
      dots[j] = dot;
    }
#pragma unroll
    for (int o = kVec / 2; o >= 1; o /= 2) {
      const bool upper = (dc & o) != 0;  // keeps rows [o, 2o) of the current half
#pragma unroll
      for (int i = 0; i < o; ++i) {
        const float give = upper ? dots[i] : dots[i + o];
        const float keep = upper ? dots[i + o] : dots[i];
        dots[i] = keep + __shfl_xor_sync(0xffffffffu, give, o);
      }
    }
    const int t_score = p0 + tg + dc * kRowGroups;  // this thread's score: row dc of its group
    const float score = t_score < p1 ? dots[0] : -FLT_MAX;
    const float m = block_max(score, red);
    const float e = t_score < p1 ? __expf(score - m) : 0.0f;
    p_s[t_score - p0] = e;
    const float l = block_sum(e, red);  // ends with a barrier: p_s is complete

    float acc[kE];
#pragma unroll
    for (int i = 0; i < kE; ++i) acc[i] = 0.0f;
#pragma unroll
    for (int u = 0; u < kRowsPerThread; ++u) {
      const float p = p_s[tg + u * kRowGroups];  // 0 past p1
      float vf[kE];
      E::ToFloat(v_raw[u], vf);
#pragma unroll
      for (int i = 0; i < kE / 2; ++i) {
        acc[2 * i] += p * vf[2 * i];
        acc[2 * i + 1] += p * vf[2 * i + 1];
      }
    }
#pragma unroll
    for (int i = 0; i < kE; ++i) acc_s[tg][dc * kE + i] = acc[i];
    __syncthreads();

    if (parts <= 1) {
      if (threadIdx.x < kD) {
        float o = 0.0f;
#pragma unroll
        for (int g = 0; g < kRowGroups; ++g) o += acc_s[g][threadIdx.x];
        float r = len > 0 ? o / l : 0.0f;
        if constexpr (E::kFp8) r *= a.v_scale;
        out[threadIdx.x] = __float2bfloat16(r);
      }
      return;
    }
    // Partial result of this partition; the block that completes the last one merges them.
    // (Shared memory is safe to reuse in the next iteration: every buffer's last readers
    // are behind one of the barriers below.)
    float* wsh = ws + (static_cast<int64_t>(s) * a.num_heads + h) * max_parts * (kD + 2);
    if (threadIdx.x < kD) {
      float o = 0.0f;
#pragma unroll
      for (int g = 0; g < kRowGroups; ++g) o += acc_s[g][threadIdx.x];
      wsh[part * (kD + 2) + threadIdx.x] = o;
      if (threadIdx.x == 0) {
        wsh[part * (kD + 2) + kD] = m;
        wsh[part * (kD + 2) + kD + 1] = l;
      }
      __threadfence();
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      unsigned int* counter = counters + static_cast<int64_t>(s) * a.num_heads + h;
      last_s = atomicAdd(counter, 1u) == static_cast<unsigned int>(parts - 1);
      if (last_s) *counter = 0;  // ready for the next step (graph replays included)
    }
    __syncthreads();
    // Not the last: this block's next partition (if any). The last completion is never
    // followed by another partition of this block: all of them are done.
    if (!last_s) continue;
    if (threadIdx.x >= kD) return;
    __threadfence();
    float mm = -FLT_MAX;
    for (int p = 0; p < parts; ++p) mm = fmaxf(mm, __ldcg(wsh + p * (kD + 2) + kD));
    float ll = 0.0f, o = 0.0f;
    for (int p = 0; p < parts; ++p) {
      const float f = __expf(__ldcg(wsh + p * (kD + 2) + kD) - mm);
      ll += __ldcg(wsh + p * (kD + 2) + kD + 1) * f;
      o += __ldcg(wsh + p * (kD + 2) + threadIdx.x) * f;
    }
    float r = o / ll;
    if constexpr (E::kFp8) r *= a.v_scale;
    out[threadIdx.x] = __float2bfloat16(r);
    return;
  }
}

// Blocks per (sequence, head) for decode_partitions -1: enough for 8 waves of the blocks the
// GPU holds at once (so the last wave's tail stays small), never more than the partitions.
int AutoDecodePartitions(const void* kernel, int pairs, int parts) {
  const int sms = current_sm_count();
  const int per_sm = resident_blocks_per_sm(kernel, kThreads, 0);
  if (sms == 0 || per_sm == 0) return parts;  // the runtime cannot say: one block per partition
  const int64_t want = 8LL * sms * per_sm;
  const int64_t n = (want + pairs - 1) / std::max(pairs, 1);
  return static_cast<int>(std::clamp<int64_t>(n, 1, parts));
}

}  // namespace

int attention_decode_grid_partitions(const PagedAttentionArgs& args, int max_context_len) {
  const int parts = std::max(1, (max_context_len + kDecodePartition - 1) / kDecodePartition);
  if (args.decode_partitions > 0) return std::min(parts, args.decode_partitions);
  if (args.decode_partitions == 0) return parts;
  const void* kernel = args.kv_dtype == KvCacheDtype::kFp8E4m3
                           ? reinterpret_cast<const void*>(attention_decode_kernel<fp8_e4m3>)
                           : reinterpret_cast<const void*>(attention_decode_kernel<bf16>);
  return AutoDecodePartitions(kernel, args.num_seqs * args.num_heads, parts);
}

int64_t attention_decode_workspace_floats(int num_seqs, int num_heads, int max_context_len) {
  const int parts = (max_context_len + kDecodePartition - 1) / kDecodePartition;
  return parts <= 1 ? 0 : static_cast<int64_t>(num_seqs) * num_heads * parts * (kD + 2);
}

CudaStatus attention_decode(const PagedAttentionArgs& args, const int32_t* context_lens,
                            int max_context_len, float* workspace, unsigned int* counters,
                            cudaStream_t stream) {
  PHI_CUDA_REQUIRE(args.head_dim == kD, "attention_decode: head_dim must be 64, got " +
                                            std::to_string(args.head_dim));
  PHI_CUDA_REQUIRE(args.block_size > 0 && args.num_heads > 0 && args.num_seqs <= 65535,
                   "attention_decode: block_size > 0, num_heads > 0, num_seqs <= 65535");
  PHI_CUDA_REQUIRE(max_context_len > 0, "attention_decode: max_context_len must be > 0");
  if (args.num_seqs == 0) return {};
  const int parts = (max_context_len + kDecodePartition - 1) / kDecodePartition;
  PHI_CUDA_REQUIRE(parts <= 1 || (workspace != nullptr && counters != nullptr),
                   "attention_decode: workspace and counters required for contexts over " +
                       std::to_string(kDecodePartition));
  // The kernel's max_parts stays `parts` (the workspace layout); the grid may hold fewer.
  dim3 grid(args.num_heads, args.num_seqs, attention_decode_grid_partitions(args, max_context_len));
  if (args.kv_dtype == KvCacheDtype::kFp8E4m3) {
    PHI_CUDA_CHECK(launch_kernel(args.pdl, attention_decode_kernel<fp8_e4m3>, grid,
                                 dim3(kThreads), 0, stream, args, context_lens, parts, workspace,
                                 counters));
  } else {
    PHI_CUDA_CHECK(launch_kernel(args.pdl, attention_decode_kernel<bf16>, grid, dim3(kThreads), 0,
                                 stream, args, context_lens, parts, workspace, counters));
  }
  return {};
}

}  // namespace phi::worker::cuda
