// One-token GEMV with the producer of its activation row fused in front (kernels.h,
// decode_gemv_forward with m = 1; gemv_mma.cu takes 2..8 tokens). At batch 1 a decode step is
// ~100 kernels that each read little; the LayerNorm and gelu kernels cost more in launch latency than in bytes, so each block of the
// GEMV rebuilds the activation row in shared memory itself (a few KB from L2), and the first
// weight loads are issued before pdl_wait() so they overlap the kernel before.
//
// Work split: a block is kWarps warps; each weight row is cut into `split` interleaved slices
// of 16-byte chunks, one per warp, so a block covers kWarps / split rows per row group. The
// grid is sized to what the GPU holds at once and walks the row groups, so the prologue runs
// once per resident block, not once per row group. Slice sums meet in shared memory in warp
// order: the result depends on `split` and `first_col` but not on the grid.
//
// kGeluConcat (the W2 GEMV, A = [attention | gelu(fc1)]): the fc1 columns, 80% of Phi-1.5's
// W2, need nothing from the attention kernel just before, so they are streamed before
// pdl_wait() and the attention (and the rotary kernel before it) run in their shadow; the
// attention columns follow the wait. Columns are summed in that order (first_col = a_cols);
// the unfused path gets the same order from kPlain with first_col.
#include "services/worker/backends/cuda/activations.cuh"
#include "services/worker/backends/cuda/device_limits.h"
#include "services/worker/backends/cuda/gemv_launch.h"
#include "services/worker/backends/cuda/kernels.h"
#include "services/worker/backends/cuda/pdl.cuh"
#include "services/worker/backends/cuda/reduce.cuh"

namespace phi::worker::cuda {
namespace {

constexpr int kThreads = kLayerNormThreads;  // the LayerNorm prologue's thread mapping
constexpr int kWarps = kThreads / 32;
// 16-byte weight loads in flight per lane (4 measured best: bench/results/cuda_backend.md).
constexpr int kInFlight = 4;

__device__ __forceinline__ void fma8(const uint4& wv, const uint4& av, float& acc) {
  const __nv_bfloat162* w2 = reinterpret_cast<const __nv_bfloat162*>(&wv);
  const __nv_bfloat162* a2 = reinterpret_cast<const __nv_bfloat162*>(&av);
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const float2 wf = __bfloat1622float2(w2[e]);
    const float2 af = __bfloat1622float2(a2[e]);
    acc += wf.x * af.x;
    acc += wf.y * af.y;
  }
}

// Four blocks of 256 threads per SM (64 registers each): 32 warps streaming weights per SM.
// Without the bound ptxas picked 48 registers and spilled in the kPlain form.
constexpr int kMinBlocksPerSm = 4;

// kGeluConcat keeps every row group's partial sums in registers across its pdl_wait(), so a
// block takes at most kMaxHeldGroups of them there (the host sizes the grid for it).
constexpr int kMaxHeldGroups = 4;

// Adds row `row`'s sums, one per warp slice, and writes d[row] (lane 0 of each row's first
// slice). Every thread of the block calls it: with split > 1 the slices meet in shared memory.
template <bool kF32>
__device__ __forceinline__ void finish_row(const DecodeGemvArgs& g, int row, float acc, int split,
                                           float* part_s) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  acc = warp_sum(acc);
  if (split > 1) {  // uniform over the block
    if (lane == 0) part_s[warp] = acc;
    __syncthreads();
    if (lane == 0 && warp % split == 0) {
      for (int p = 1; p < split; ++p) acc += part_s[warp + p];
    }
    __syncthreads();  // part_s is reused by the next row group
  }
  if (lane != 0 || warp % split != 0 || row >= g.n) return;
  if constexpr (kF32) {
    float* d = static_cast<float*>(g.d);
    float v = acc + (g.bias ? static_cast<const float*>(g.bias)[row] : 0.0f);
    if (g.beta != 0.0f) v += g.beta * d[row];
    d[row] = v;
  } else {
    bf16* d = static_cast<bf16*>(g.d);
    float v = acc + (g.bias ? __bfloat162float(static_cast<const bf16*>(g.bias)[row]) : 0.0f);
    if (g.beta != 0.0f) v += g.beta * __bfloat162float(d[row]);
    d[row] = __float2bfloat16(v);
  }
}

template <GemvPrologue P, int VPT, bool kF32>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSm)
    decode_gemv_kernel(const DecodeGemvArgs g, int split, int groups) {
#ifdef PHI_CUDA_EMULATION
  unsigned char* smem_raw = cuda_emu::DynamicShared();  // the CPU emulator (tests/cuda_emu)
#else
  extern __shared__ __align__(16) unsigned char smem_raw[];
#endif
  bf16* a_s = reinterpret_cast<bf16*>(smem_raw);
  __shared__ float scratch[32];
  __shared__ float part_s[kMaxHeldGroups][kWarps];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int rows_per_group = kWarps / split;
  const int chunks = g.k >> 3;
  const int first_chunk = g.first_col >> 3;  // columns [first_col, k) are summed first
  const int stride = 32 * split;             // chunks between one lane's consecutive loads
  const int lane_first = lane + 32 * (warp % split);
  const uint4* w4 = reinterpret_cast<const uint4*>(g.w);
  // Row group j of this block (j = 0, 1, ...), and this warp's row in it.
  auto row_of = [&](int j) {
    return (static_cast<int>(blockIdx.x) + j * static_cast<int>(gridDim.x)) * rows_per_group +
           warp / split;
  };
  const int my_groups = (groups - static_cast<int>(blockIdx.x) + static_cast<int>(gridDim.x) - 1) /
                        static_cast<int>(gridDim.x);

  // Weights stream through wv: `load` issues the first kInFlight chunks of (row, range start),
  // `accumulate` consumes them and streams the rest of [c_begin, c_end). The caller issues
  // the next (row, range)'s first loads right after, so they are in flight during the
  // reductions and waits in between.
  uint4 wv[kInFlight];
  auto load = [&](int row, int c_begin, int c_end) {
    const uint4* wr = w4 + static_cast<int64_t>(row) * chunks;
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      const int c = c_begin + lane_first + stride * u;
      wv[u] = row < g.n && c < c_end ? __ldcs(wr + c) : make_uint4(0, 0, 0, 0);
    }
  };
  const uint4* as4 = reinterpret_cast<const uint4*>(a_s);
  auto accumulate = [&](int row, int c_begin, int c_end, float& acc) {
    if (row >= g.n) return;
    const uint4* wr = w4 + static_cast<int64_t>(row) * chunks;
    for (int c0 = c_begin + lane_first;;) {
#pragma unroll
      for (int u = 0; u < kInFlight; ++u) {
        const int c = c0 + stride * u;
        if (c < c_end) fma8(wv[u], as4[c], acc);
      }
      c0 += stride * kInFlight;
      if (c0 >= c_end) break;
#pragma unroll
      for (int u = 0; u < kInFlight; ++u) {
        const int c = c0 + stride * u;
        wv[u] = c < c_end ? __ldcs(wr + c) : make_uint4(0, 0, 0, 0);
      }
    }
  };

  // The weights depend on no kernel: their first loads go out before the wait.
  load(row_of(0), first_chunk, chunks);

  if constexpr (P == GemvPrologue::kGeluConcat) {
    // gelu(f) needs the W1 GEMV, three kernels back, which has completed by the time this
    // kernel starts (pdl.cuh); only a (attention's output) needs the kernel just before. f is
    // read from L2 (__ldcg), the coherence point its completed writes are in: an L1 line of
    // this SM could still hold the previous layer's f.
    for (int c = g.a_cols + threadIdx.x; c < g.k; c += kThreads) {
      const int j = c - g.a_cols;
      a_s[c] = j < g.f_cols ? __float2bfloat16(gelu_new(__bfloat162float(__ldcg(g.f + j))))
                            : __float2bfloat16(0.0f);
    }
    __syncthreads();
    // Range 0 (the gelu columns) of every row group before the wait, range 1 after.
    float acc[kMaxHeldGroups];
#pragma unroll
    for (int j = 0; j < kMaxHeldGroups; ++j) {
      acc[j] = 0.0f;
      if (j < my_groups) {
        accumulate(row_of(j), first_chunk, chunks, acc[j]);
        if (j + 1 < my_groups) {
          load(row_of(j + 1), first_chunk, chunks);
        } else {
          load(row_of(0), 0, first_chunk);
        }
      }
    }
    pdl_wait();
    pdl_launch_dependents();
    for (int c = threadIdx.x; c < g.a_cols; c += kThreads) a_s[c] = g.a[c];
    __syncthreads();
#pragma unroll
    for (int j = 0; j < kMaxHeldGroups; ++j) {
      if (j < my_groups) {
        accumulate(row_of(j), 0, first_chunk, acc[j]);
        if (j + 1 < my_groups) load(row_of(j + 1), 0, first_chunk);
      }
    }
#pragma unroll
    for (int j = 0; j < kMaxHeldGroups; ++j) {
      if (j < my_groups) finish_row<kF32>(g, row_of(j), acc[j], split, part_s[0]);
    }
  } else {
    pdl_wait();
    pdl_launch_dependents();
    if constexpr (P == GemvPrologue::kLayerNorm) {
      const float* xr = g.x + static_cast<int64_t>(g.row_index ? g.row_index[0] : 0) * g.k;
      layernorm_row_reg<VPT>(xr, g.gamma, g.beta_ln, a_s, g.k, g.eps, scratch);
    } else {
      const uint4* a4 = reinterpret_cast<const uint4*>(g.a);
      uint4* s4 = reinterpret_cast<uint4*>(a_s);
      for (int c = threadIdx.x; c < chunks; c += kThreads) s4[c] = a4[c];
    }
    __syncthreads();
    // One row group at a time: both ranges, then the next group's first loads, then the sums.
    for (int j = 0; j < my_groups; ++j) {
      const int row = row_of(j);
      float acc = 0.0f;
      accumulate(row, first_chunk, chunks, acc);
      load(row, 0, first_chunk);
      accumulate(row, 0, first_chunk, acc);
      if (j + 1 < my_groups) load(row_of(j + 1), first_chunk, chunks);
      finish_row<kF32>(g, row, acc, split, part_s[0]);
    }
  }
}

using DecodeGemvKernel = void (*)(const DecodeGemvArgs, int, int);

template <GemvPrologue P, int VPT, bool kF32>
struct DecodeGemvKernelFor {
  static constexpr DecodeGemvKernel kFn = decode_gemv_kernel<P, VPT, kF32>;
};

}  // namespace

int decode_gemv_rows_default_split(int n, int k) {
  // Rows spread over at least half the warps the GPU holds (64 per SM), so enough loads are
  // in flight; each slice keeps at least one full round of kInFlight loads per lane.
  const int sms = current_sm_count();
  const int64_t want_warps = 32LL * (sms > 0 ? sms : 132);
  const int chunks = k / 8;
  int split = 1;
  while (split < kWarps && static_cast<int64_t>(n) * split < want_warps &&
         chunks >= 2 * split * 32 * kInFlight) {
    split *= 2;
  }
  return split;
}

CudaStatus launch_decode_gemv_rows(const DecodeGemvArgs& g, cudaStream_t stream) {
  const int split = g.split > 0 ? g.split : decode_gemv_rows_default_split(g.n, g.k);
  const int rows_per_group = kWarps / split;
  const int groups = (g.n + rows_per_group - 1) / rows_per_group;
  const DecodeGemvKernel kernel = pick_gemv_kernel<DecodeGemvKernelFor>(g);
  const size_t shared_bytes = 2 * static_cast<size_t>(g.k);
  const int64_t grid = gemv_persistent_grid(
      reinterpret_cast<const void*>(kernel), kThreads, shared_bytes, g.blocks_per_sm, groups,
      g.prologue == GemvPrologue::kGeluConcat ? kMaxHeldGroups : 0);
  PHI_CUDA_CHECK(launch_kernel(g.pdl, kernel, dim3(static_cast<unsigned>(grid)), dim3(kThreads),
                               shared_bytes, stream, g, split, groups));
  return {};
}

}  // namespace phi::worker::cuda
