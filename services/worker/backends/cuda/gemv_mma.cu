// Decode GEMV for 2..8 tokens on tensor cores (decode_gemv_forward with m >= 2; kernels.h has the
// contract). A one-warp-per-row GEMV reads every token's activation chunk from L1 beside each
// weight chunk and loses to cuBLASLt from M = 4 (bench/results/cuda_backend.md). Here a warp multiplies a tile of 16 weight rows by the m tokens with
// mma.m16n8k16 (weights as A, the tokens as B's 8 columns, zeros past m): two instructions per
// kilobyte of weights at any m, and the one-token kernel's prologues (LayerNorm, gelu) fused.
//
// Fragments straight from memory: lane (g, t) loads 16 bytes of tile rows g and g + 8 at
// columns 8t..8t+7 of a 32-column step, and the same 16 bytes of token g's row from shared
// memory. Its registers hold columns (8t, 8t+1), (8t+2, 8t+3) for the first mma and
// (8t+4, 8t+5), (8t+6, 8t+7) for the second, as mma's k indices (2t, 2t+1), (2t+8, 2t+9)
// (layouts: mma.cuh). Every lane maps columns to k the same way for A and B, so each mma is
// the dot product over a permutation of 16 columns, and the two cover the step.
//
// Work split (as in gemv_decode.cu): blocks of 8 warps; each tile's steps are dealt to `split`
// warps in turn, so a block covers 8 / split tiles per tile group; the grid is what the GPU
// holds at once and walks the groups. The slices' sums meet in shared memory in warp order,
// so the result depends on `split` and `first_col` but not on the grid. Columns
// [first_col, k) are summed before [0, first_col) (kGeluConcat: the fc1 columns, streamed
// before pdl_wait(), as in the one-token kernel).
#include <algorithm>

#include "services/worker/backends/cuda/activations.cuh"
#include "services/worker/backends/cuda/device_limits.h"
#include "services/worker/backends/cuda/gemv_launch.h"
#include "services/worker/backends/cuda/mma.cuh"
#include "services/worker/backends/cuda/pdl.cuh"

namespace phi::worker::cuda {
namespace {

constexpr int kThreads = kLayerNormThreads;  // the LayerNorm prologue's thread mapping
constexpr int kWarps = kThreads / 32;
constexpr int kTile = 16;      // weight rows per mma tile
constexpr int kStepCols = 32;  // columns per step: two mma of k = 16
// Steps whose weights are in flight per lane: 8 loads of 16 bytes, 8 KB per warp.
constexpr int kInFlight = 4;
// kGeluConcat keeps every tile group's sums in registers across its pdl_wait().
constexpr int kMaxHeldGroups = 4;

// BF16 elements per shared A row: the columns rounded up to a step, padded so that a row is an
// odd multiple of 64 bytes: the 8 token rows of a fragment load then fall in alternate halves
// of the 32 banks, and the load takes the 4 wavefronts its 512 bytes need.
int shared_row(int k) {
  const int k32 = (k + kStepCols - 1) / kStepCols * kStepCols;
  return k32 % 64 == 0 ? k32 + 32 : k32;
}

struct TileFrag {
  uint4 lo, hi;  // tile rows g and g + 8, columns 8t..8t+7 of one step
};

__device__ __forceinline__ void mma_step(float* acc, const TileFrag& w, const uint4& a) {
  const uint32_t first[4] = {w.lo.x, w.hi.x, w.lo.y, w.hi.y};
  mma_bf16_16816(acc, first, a.x, a.y);
  const uint32_t second[4] = {w.lo.z, w.hi.z, w.lo.w, w.hi.w};
  mma_bf16_16816(acc, second, a.z, a.w);
}

// Adds the tile's sums, one per warp slice, and writes its d values (the first slice's warp:
// lane (g, t) holds rows g, g + 8 for tokens 2t, 2t + 1). Every thread of the block calls it.
template <bool kF32>
__device__ __forceinline__ void finish_tile(const DecodeGemvArgs& g, int tile, float* acc, int split,
                                            float4 (*part_s)[32]) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (split > 1) {  // uniform over the block
    part_s[warp][lane] = make_float4(acc[0], acc[1], acc[2], acc[3]);
    __syncthreads();
    if (warp % split == 0) {
      for (int p = 1; p < split; ++p) {
        const float4 q = part_s[warp + p][lane];
        acc[0] += q.x;
        acc[1] += q.y;
        acc[2] += q.z;
        acc[3] += q.w;
      }
    }
    __syncthreads();  // part_s is reused by the next tile group
  }
  if (warp % split != 0) return;
  const int row0 = tile * kTile + (lane >> 2), tok0 = 2 * (lane & 3);
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const int row = row0 + (e >= 2 ? 8 : 0), tok = tok0 + (e & 1);
    if (row >= g.n || tok >= g.m) continue;
    const int64_t o = static_cast<int64_t>(tok) * g.n + row;
    if constexpr (kF32) {
      float* d = static_cast<float*>(g.d);
      float v = acc[e] + (g.bias ? static_cast<const float*>(g.bias)[row] : 0.0f);
      if (g.beta != 0.0f) v += g.beta * d[o];
      d[o] = v;
    } else {
      bf16* d = static_cast<bf16*>(g.d);
      float v = acc[e] + (g.bias ? __bfloat162float(static_cast<const bf16*>(g.bias)[row]) : 0.0f);
      if (g.beta != 0.0f) v += g.beta * __bfloat162float(d[o]);
      d[o] = __float2bfloat16(v);
    }
  }
}

template <GemvPrologue P, int VPT, bool kF32>
__global__ void __launch_bounds__(kThreads)
    gemv_mma_kernel(const DecodeGemvArgs g, int split, int groups, int lda) {
#ifdef PHI_CUDA_EMULATION
  unsigned char* smem_raw = cuda_emu::DynamicShared();  // the CPU emulator (tests/cuda_emu)
#else
  extern __shared__ __align__(16) unsigned char smem_raw[];
#endif
  bf16* a_s = reinterpret_cast<bf16*>(smem_raw);  // m rows of lda
  __shared__ float scratch[32];
  __shared__ float4 part_s[kWarps][32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int tok = lane >> 2, t = lane & 3;  // this lane's token row of B; its chunk in a step
  const int slice = warp % split;
  const int tiles_per_group = kWarps / split;
  const int chunks = g.k >> 3;  // 16-byte chunks of a weight row
  const int first_chunk = g.first_col >> 3;
  const int lda_chunks = lda >> 3;
  const uint4* w4 = reinterpret_cast<const uint4*>(g.w);
  const uint4* as4 = reinterpret_cast<const uint4*>(a_s);
  auto tile_of = [&](int j) {
    return (static_cast<int>(blockIdx.x) + j * static_cast<int>(gridDim.x)) * tiles_per_group +
           warp / split;
  };
  const int my_groups = (groups - static_cast<int>(blockIdx.x) + static_cast<int>(gridDim.x) - 1) /
                        static_cast<int>(gridDim.x);

  // Weights stream through wv: `load` issues kInFlight steps of `tile` starting at step s0
  // (this warp's slice of chunk range [c_begin, c_end)); `accumulate` consumes them and
  // streams the rest of the range. Chunks outside the range load as zeros (the range may
  // start or end inside a step).
  TileFrag wv[kInFlight];
  auto load = [&](int tile, int s0, int c_begin, int c_end) {
    const int row = tile * kTile + tok;
    const uint4* lo = w4 + static_cast<int64_t>(row) * chunks;
    const uint4* hi = lo + 8 * static_cast<int64_t>(chunks);
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      const int c = 4 * (s0 + split * u) + t;
      const bool in = c >= c_begin && c < c_end;
      wv[u].lo = in && row < g.n ? __ldcs(lo + c) : make_uint4(0, 0, 0, 0);
      wv[u].hi = in && row + 8 < g.n ? __ldcs(hi + c) : make_uint4(0, 0, 0, 0);
    }
  };
  auto first_step = [&](int c_begin) { return (c_begin >> 2) + slice; };
  auto accumulate = [&](int tile, int c_begin, int c_end, float* acc) {
    if (tile * kTile >= g.n) return;  // uniform over the warp
    const int s_end = (c_end + 3) >> 2;
    for (int s0 = first_step(c_begin);;) {
#pragma unroll
      for (int u = 0; u < kInFlight; ++u) {
        const int s = s0 + split * u;
        if (s < s_end) {  // uniform over the warp: mma needs every lane
          const int c = 4 * s + t;
          const bool in = c >= c_begin && c < c_end && tok < g.m;
          mma_step(acc, wv[u], in ? as4[tok * lda_chunks + c] : make_uint4(0, 0, 0, 0));
        }
      }
      s0 += split * kInFlight;
      if (s0 >= s_end) break;
      load(tile, s0, c_begin, c_end);
    }
  };

  // The weights depend on no kernel: their first loads go out before the wait.
  load(tile_of(0), first_step(first_chunk), first_chunk, chunks);

  if constexpr (P == GemvPrologue::kGeluConcat) {
    // gelu(f) needs the W1 GEMV, three kernels back, complete when this kernel starts
    // (pdl.cuh); read from L2 (__ldcg), where its writes are. Only a needs the kernel before.
    const int f_stride = g.f_stride > 0 ? g.f_stride : g.f_cols;
    const int tail = g.k - g.a_cols;
    for (int i = threadIdx.x; i < g.m * tail; i += kThreads) {
      const int r = i / tail, j = i - r * tail;
      a_s[r * lda + g.a_cols + j] =
          j < g.f_cols
              ? __float2bfloat16(gelu_new(__bfloat162float(
                    __ldcg(g.f + static_cast<int64_t>(r) * f_stride + j))))
              : __float2bfloat16(0.0f);
    }
    __syncthreads();
    // Range 0 (the gelu columns) of every tile group before the wait, range 1 after.
    float acc[kMaxHeldGroups][4];
#pragma unroll
    for (int j = 0; j < kMaxHeldGroups; ++j) {
      acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
      if (j < my_groups) {
        accumulate(tile_of(j), first_chunk, chunks, acc[j]);
        if (j + 1 < my_groups) {
          load(tile_of(j + 1), first_step(first_chunk), first_chunk, chunks);
        } else {
          load(tile_of(0), first_step(0), 0, first_chunk);
        }
      }
    }
    pdl_wait();
    pdl_launch_dependents();
    const int a_chunks = g.a_cols >> 3;
    for (int i = threadIdx.x; i < g.m * a_chunks; i += kThreads) {
      const int r = i / a_chunks, c = i - r * a_chunks;
      reinterpret_cast<uint4*>(a_s)[r * lda_chunks + c] =
          reinterpret_cast<const uint4*>(g.a)[static_cast<int64_t>(r) * chunks + c];
    }
    __syncthreads();
#pragma unroll
    for (int j = 0; j < kMaxHeldGroups; ++j) {
      if (j < my_groups) {
        accumulate(tile_of(j), 0, first_chunk, acc[j]);
        if (j + 1 < my_groups) load(tile_of(j + 1), first_step(0), 0, first_chunk);
      }
    }
#pragma unroll
    for (int j = 0; j < kMaxHeldGroups; ++j) {
      if (j < my_groups) finish_tile<kF32>(g, tile_of(j), acc[j], split, part_s);
    }
  } else {
    pdl_wait();
    pdl_launch_dependents();
    if constexpr (P == GemvPrologue::kLayerNorm) {
      for (int r = 0; r < g.m; ++r) {
        const float* xr = g.x + static_cast<int64_t>(g.row_index ? g.row_index[r] : r) * g.k;
        layernorm_row_reg<VPT>(xr, g.gamma, g.beta_ln, a_s + r * lda, g.k, g.eps, scratch);
      }
    } else {
      for (int i = threadIdx.x; i < g.m * chunks; i += kThreads) {
        const int r = i / chunks, c = i - r * chunks;
        reinterpret_cast<uint4*>(a_s)[r * lda_chunks + c] =
            reinterpret_cast<const uint4*>(g.a)[static_cast<int64_t>(r) * chunks + c];
      }
    }
    __syncthreads();
    // One tile group at a time: both ranges, then the next group's first loads, then the sums.
    for (int j = 0; j < my_groups; ++j) {
      const int tile = tile_of(j);
      float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      accumulate(tile, first_chunk, chunks, acc);
      load(tile, first_step(0), 0, first_chunk);
      accumulate(tile, 0, first_chunk, acc);
      if (j + 1 < my_groups) load(tile_of(j + 1), first_step(first_chunk), first_chunk, chunks);
      finish_tile<kF32>(g, tile, acc, split, part_s);
    }
  }
}

using GemvMmaKernel = void (*)(const DecodeGemvArgs, int, int, int);

template <GemvPrologue P, int VPT, bool kF32>
struct GemvMmaKernelFor {
  static constexpr GemvMmaKernel kFn = gemv_mma_kernel<P, VPT, kF32>;
};

}  // namespace

size_t decode_gemv_tiles_shared_bytes(int m, int k) {
  return 2 * static_cast<size_t>(m) * static_cast<size_t>(shared_row(k));
}

int decode_gemv_tiles_default_split(int n, int k) {
  // Tiles spread over at least 16 warps per SM (each with 8 KB of weights in flight), each
  // slice keeping at least two rounds of kInFlight steps per warp.
  const int sms = current_sm_count();
  const int64_t want_warps = 16LL * (sms > 0 ? sms : 132);
  const int64_t tiles = (n + kTile - 1) / kTile;
  const int steps = (k + kStepCols - 1) / kStepCols;
  int split = 1;
  while (split < kWarps && tiles * split < want_warps && steps >= 2 * split * kInFlight) {
    split *= 2;
  }
  return split;
}

CudaStatus decode_gemv_prepare_device() {
  const size_t max = max_dynamic_shared_per_block();
  for (GemvPrologue p : {GemvPrologue::kPlain, GemvPrologue::kLayerNorm, GemvPrologue::kGeluConcat}) {
    for (int k : {1024, 2048, 4096, 8192}) {  // every LayerNorm width (layernorm_reg_vpt)
      for (bool d_f32 : {false, true}) {
        DecodeGemvArgs g;
        g.prologue = p;
        g.k = k;
        g.d_f32 = d_f32;
        PHI_CUDA_RETURN_IF_ERROR(allow_dynamic_shared(
            reinterpret_cast<const void*>(pick_gemv_kernel<GemvMmaKernelFor>(g)), max));
      }
    }
  }
  return {};
}

CudaStatus launch_decode_gemv_tiles(const DecodeGemvArgs& g, cudaStream_t stream) {
  const int split = g.split > 0 ? g.split : decode_gemv_tiles_default_split(g.n, g.k);
  const int tiles = (g.n + kTile - 1) / kTile;
  const int tiles_per_group = kWarps / split;
  const int groups = (tiles + tiles_per_group - 1) / tiles_per_group;
  const GemvMmaKernel kernel = pick_gemv_kernel<GemvMmaKernelFor>(g);
  const size_t shared_bytes = decode_gemv_tiles_shared_bytes(g.m, g.k);
  const void* kernel_id = reinterpret_cast<const void*>(kernel);
  PHI_CUDA_RETURN_IF_ERROR(allow_dynamic_shared(kernel_id, shared_bytes));
  const int64_t grid =
      gemv_persistent_grid(kernel_id, kThreads, shared_bytes, g.blocks_per_sm, groups,
                           g.prologue == GemvPrologue::kGeluConcat ? kMaxHeldGroups : 0);
  PHI_CUDA_CHECK(launch_kernel(g.pdl, kernel, dim3(static_cast<unsigned>(grid)), dim3(kThreads),
                               shared_bytes, stream, g, split, groups, shared_row(g.k)));
  return {};
}

}  // namespace phi::worker::cuda
