// Host launchers of the CUDA kernels of the Phi forward pass and top-candidate selection.
// Naming (llm.c): kernel `<op>_<phase>_kernel` (in the .cu), launcher `<op>_<phase>` (here),
// CPU twin `<op>_<phase>_cpu` (tests/unit/worker/cuda/kernels_cpu.h, test-only). All pointers are device pointers; storage is
// BF16 with F32 accumulation, the residual stream and logits are F32. Every launcher is
// asynchronous on `stream` and returns a CudaStatus for argument and launch errors.
//
// Paged KV cache layout (per layer, K and V separate):
//   cache[block][head][slot_in_block][head_dim], slot = block_id * block_size + offset.
// Cache elements are BF16 or FP8 E4M3 (KvCacheDtype; the kernels are templated on it).
#ifndef PHI_SERVICES_WORKER_BACKENDS_CUDA_KERNELS_H_
#define PHI_SERVICES_WORKER_BACKENDS_CUDA_KERNELS_H_

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

#include "services/worker/backends/cuda/cuda_status.h"
#include "services/worker/backends/cuda/kv_cache_dtype.h"
#include "services/worker/engine/candidate_record_layout.h"

namespace phi::worker::cuda {

using bf16 = __nv_bfloat16;

// out[r] = LayerNorm(x[row_index ? row_index[r] : r]) * gamma + beta, over `dim` columns.
// x: F32 [*, dim]; out: BF16 [rows, dim]. The gather lets the final LayerNorm run only on the
// rows whose logits are wanted. `pdl`: launch as a programmatic dependent (pdl.cuh; so do
// gelu_forward's, rotary_kv_forward's and attention_decode's, used by decode steps).
CudaStatus layernorm_forward(const float* x, const int32_t* row_index, const bf16* gamma,
                             const bf16* beta, bf16* out, int rows, int dim, float eps,
                             cudaStream_t stream, bool pdl = false);

// x[t] = F32(table[tokens[t] - vocab_begin]), table BF16 [vocab, dim] holding the rows of ids
// [vocab_begin, vocab_begin + vocab). Other ids write zeros: under tensor parallelism each
// rank holds a slice of the vocabulary and an all-reduce assembles the rows; unsharded, it
// keeps a bad id (the runner validates ids before) from reading out of bounds.
CudaStatus embedding_forward(const int32_t* tokens, const bf16* table, float* x, int num_tokens,
                             int vocab, int dim, cudaStream_t stream, int vocab_begin = 0);

struct RotaryKvArgs {
  bf16* qkv = nullptr;          // [num_tokens, row_stride]: q at col 0, k at H*D, v at 2*H*D
  int row_stride = 0;           // elements per qkv row
  const int32_t* positions = nullptr;  // [num_tokens] absolute position of each token
  const int32_t* slots = nullptr;      // [num_tokens] block_id * block_size + offset
  void* k_cache = nullptr;      // this layer's K cache (elements of kv_dtype)
  void* v_cache = nullptr;      // this layer's V cache
  // FP8: K is stored as saturate_e4m3(k / k_scale), V as saturate_e4m3(v / v_scale) (round to
  // nearest even, +-448). BF16 stores the values and ignores the scales.
  KvCacheDtype kv_dtype = KvCacheDtype::kBf16;
  float k_scale = 1.0f;
  float v_scale = 1.0f;
  int num_tokens = 0;
  int num_heads = 0;
  int head_dim = 0;             // even
  int rotary_dim = 0;           // even, <= head_dim
  int block_size = 0;
  float theta = 10000.0f;
  bool pdl = false;             // launch as a programmatic dependent (pdl.cuh)
};
// Applies partial rotary embedding (rotate-half on the first rotary_dim dims of each head,
// inv_freq[i] = theta^(-2i/rotary_dim)) to q in place and to k, then writes k and v into the
// paged cache at the tokens' slots.
CudaStatus rotary_kv_forward(const RotaryKvArgs& args, cudaStream_t stream);

// out[r, c] = gelu_new(in[r, c]) (tanh approximation), strided rows.
CudaStatus gelu_forward(const bf16* in, int in_stride, bf16* out, int out_stride, int rows,
                        int cols, cudaStream_t stream, bool pdl = false);

// x[r, c] += bias[c], for BF16 and F32 matrices (fallback when a GEMM epilogue is unavailable).
CudaStatus bias_add_forward(bf16* x, const bf16* bias, int rows, int cols, cudaStream_t stream);
CudaStatus bias_add_forward(float* x, const float* bias, int rows, int cols, cudaStream_t stream);

// Shared geometry of the two attention kernels over the paged cache.
struct PagedAttentionArgs {
  const bf16* q = nullptr;      // [num_query_rows, q_stride], head h at column h * head_dim
  int q_stride = 0;
  const void* k_cache = nullptr;  // elements of kv_dtype (see RotaryKvArgs)
  const void* v_cache = nullptr;
  KvCacheDtype kv_dtype = KvCacheDtype::kBf16;
  float k_scale = 1.0f;           // FP8: K = code * k_scale, V = code * v_scale
  float v_scale = 1.0f;
  const int32_t* block_tables = nullptr;  // [num_seqs, max_blocks_per_seq]
  int max_blocks_per_seq = 0;
  bf16* out = nullptr;          // [num_query_rows, out_stride], head h at column h * head_dim
  int out_stride = 0;
  int num_seqs = 0;
  int num_heads = 0;
  int head_dim = 0;             // 64 (the kernels are specialised for it)
  int block_size = 0;
  float scale = 0.0f;           // 1/sqrt(head_dim)
  bool pdl = false;             // attention_decode: launch as a programmatic dependent (pdl.cuh)
  bool tensor_cores = true;     // attention_prefill: the mma.sync kernel, else FP32 FMA
  // attention_decode: blocks per (sequence, head). 0: one per partition max_context_len can
  // have. N > 0: at most N, each looping over every N-th partition (no blocks for partitions
  // past the real lengths when max_context_len is the graphs' max_positions, at the price of
  // longer blocks). -1: chosen from the batch, the fewest that still give 8 waves of the
  // GPU's resident blocks (attention_decode_grid_partitions).
  int decode_partitions = 0;
  // attention_decode with rotary fused (set new_slots): q and the new token's k and v are the
  // raw projections in q's row (k at column num_heads * head_dim, v at twice that), at
  // position context_lens[s] - 1. Every block rotates q itself, and the block that owns that
  // position rotates k and writes k and v to cache slot new_slots[s] before it reads the
  // cache: rotary_kv_forward's arithmetic, so the same bits, one kernel fewer per layer.
  // Null: q is already rotated and the cache holds the new token.
  const int32_t* new_slots = nullptr;
  int rotary_dim = 0;           // with new_slots: even, <= head_dim
  float theta = 10000.0f;       // with new_slots
};

// Decode: query row s belongs to sequence s and attends to cache positions [0, context_lens[s]).
// Flash-decoding split: each (sequence, head) context is cut into partitions of
// kDecodePartition positions run by separate blocks, then merged, so batch 1 still fills the
// GPU. max_context_len bounds every context_lens[s]; `workspace` holds
// attention_decode_workspace_floats(num_seqs, num_heads, max_context_len) floats of partial
// results, `counters` num_seqs * num_heads merge counters, zeroed once before the first call
// (the kernel leaves them at zero, graph replays included).
inline constexpr int kDecodePartition = 128;
// The grid's blocks per (sequence, head) for args.decode_partitions (see PagedAttentionArgs).
int attention_decode_grid_partitions(const PagedAttentionArgs& args, int max_context_len);
int64_t attention_decode_workspace_floats(int num_seqs, int num_heads, int max_context_len);
CudaStatus attention_decode(const PagedAttentionArgs& args, const int32_t* context_lens,
                            int max_context_len, float* workspace, unsigned int* counters,
                            cudaStream_t stream);

// Prefill (chunked, causal): sequence s has num_new[s] query rows starting at query row
// q_offset[s], at positions start_pos[s] + i; query i attends to cache positions
// [0, start_pos[s] + i]. Its own K/V must already be in the cache (rotary_kv_forward).
// tile_seq / tile_first list the tiles of kPrefillTileQ queries (prefill_tiles).
struct PrefillTiles {
  const int32_t* q_offset = nullptr;   // [num_seqs]
  const int32_t* start_pos = nullptr;  // [num_seqs]
  const int32_t* num_new = nullptr;    // [num_seqs]
  const int32_t* tile_seq = nullptr;   // [num_tiles]
  const int32_t* tile_first = nullptr; // [num_tiles] first query index within the sequence
  int num_tiles = 0;
};
inline constexpr int kPrefillTileQ = 64;
// Splits each sequence's new tokens into tiles of kPrefillTileQ queries for
// attention_prefill: appends (sequence, first query index) pairs.
inline void prefill_tiles(const int32_t* num_new, int num_seqs, std::vector<int32_t>* tile_seq,
                          std::vector<int32_t>* tile_first) {
  for (int s = 0; s < num_seqs; ++s) {
    for (int first = 0; first < num_new[s]; first += kPrefillTileQ) {
      tile_seq->push_back(s);
      tile_first->push_back(first);
    }
  }
}
CudaStatus attention_prefill(const PagedAttentionArgs& args, const PrefillTiles& tiles,
                             cudaStream_t stream);
// The same on tensor cores (attention_prefill_mma.cu; attention_prefill runs it when
// args.tensor_cores): P is rounded to BF16 before P V, as in FlashAttention-2.
CudaStatus attention_prefill_mma(const PagedAttentionArgs& args, const PrefillTiles& tiles,
                                 cudaStream_t stream);

// Small-M GEMM for decode (M <= 8): D[M,N] = A[M,K] W[N,K]^T + bias + beta D through
// decode_gemv_forward's kPlain form (M = 1: one warp per weight row; M >= 2: tensor cores). At small
// M a decode step is a pass over the weights, and a GEMV that keeps enough loads in flight
// gets closer to the copy bandwidth than a general GEMM. K a multiple of 8 with
// decode_gemv_fits(m, k); bias/D are BF16 or F32 (d_f32) like GemmLt.
inline constexpr int kGemvMaxM = 8;
CudaStatus gemv_forward(const bf16* a, const bf16* w, const void* bias, void* d, bool d_f32,
                        float beta, int m, int n, int k, cudaStream_t stream);

// Decode GEMV for m <= kGemvMaxM tokens: d[i, n] = A_i . W[n, :] + bias[n] (+ beta d[i, n]),
// with the producer of the activation rows A fused in front. Each block builds A in shared
// memory itself and the weights stream through with 16-byte evict-first loads; the first
// loads are issued before pdl_wait(), so under programmatic dependent launch they overlap the
// previous kernel. m = 1 (gemv_decode.cu): one weight row per warp slice, `split` warps per
// row, k <= kDecodeGemvMaxK. m = 2..8 (gemv_mma.cu): tiles of 16 weight rows on tensor cores
// (mma.m16n8k16, the tokens as its 8 columns), `split` warps per tile, A padded in shared
// memory (opt-in above 48 KB: decode_gemv_fits). The fused forms replace two kernels of each decode
// layer (LayerNorm before W1, gelu before W2) and are bit-identical to the unfused kernels
// followed by gemv_forward (kPlain) with the same m and split.
inline constexpr int kDecodeGemvMaxK = 16384;  // m = 1: A in 32 KB of shared memory (no opt-in)
enum class GemvPrologue {
  kPlain,       // A = a[0, k)
  kLayerNorm,   // A = LayerNorm(x row) * gamma + beta in BF16, as layernorm_forward stores it
  kGeluConcat,  // A = [a[0, a_cols) | gelu_new(f[0, f_cols)) | 0...], as gelu_forward stores it
};
struct DecodeGemvArgs {
  GemvPrologue prologue = GemvPrologue::kPlain;
  int m = 1;                            // tokens: rows of A and of d, 1..kGemvMaxM
  const bf16* a = nullptr;              // kPlain, kGeluConcat: m rows of k (row stride k)
  int a_cols = 0;                       // kGeluConcat
  const bf16* f = nullptr;              // kGeluConcat: gelu input (fc1 output), m rows
  int f_cols = 0;                       // kGeluConcat: a_cols + f_cols <= k, the rest is 0
  int f_stride = 0;                     // kGeluConcat: elements between f rows (0: f_cols)
  const float* x = nullptr;             // kLayerNorm: F32 rows of k values
  const int32_t* row_index = nullptr;   // kLayerNorm: A row i is x row row_index[i] (null: i)
  const bf16* gamma = nullptr;          // kLayerNorm
  const bf16* beta_ln = nullptr;        // kLayerNorm
  float eps = 1e-5f;                    // kLayerNorm
  const bf16* w = nullptr;              // [n, k], 16-byte aligned, k a multiple of 8
  const void* bias = nullptr;           // [n] BF16, or F32 when d_f32; may be null
  void* d = nullptr;                    // [m, n]
  bool d_f32 = false;
  float beta = 0.0f;                    // d = ... + beta * d (the residual add)
  int n = 0;
  int k = 0;
  // Columns [first_col, k) are summed before [0, first_col) (a multiple of 8; kGeluConcat
  // needs a_cols, whose columns it reads after the wait; kPlain may set it to match).
  int first_col = 0;
  // Tuning; 0 takes decode_gemv_default_split / every block the GPU holds at once.
  int split = 0;          // warps per weight row (m = 1) or 16-row tile (m >= 2): 1, 2, 4, 8
  int blocks_per_sm = 0;  // resident blocks per SM the grid is sized for
  bool pdl = false;       // launch as a programmatic dependent (pdl.cuh)
};
CudaStatus decode_gemv_forward(const DecodeGemvArgs& args, cudaStream_t stream);
// The split decode_gemv_forward (and gemv_forward) uses for m tokens and an n x k weight: enough
// warps that the rows fill the GPU, without cutting a row into pieces shorter than the loads
// one warp keeps in flight.
int decode_gemv_default_split(int m, int n, int k);
// Whether decode_gemv_forward takes m tokens of k columns (the shared memory A needs).
bool decode_gemv_fits(int m, int k);
// Opts every tensor-core decode GEMV kernel in to the most dynamic shared memory the current
// device allows (decode_gemv_forward otherwise does it on first use). Call once per device before
// capturing CUDA graphs, so that no attribute is set while a stream is being captured.
CudaStatus decode_gemv_prepare_device();
// Whether kLayerNorm supports rows of k values (the register LayerNorm's shapes).
bool decode_gemv_layernorm_fits(int k);

// Top candidates of logits rows for the engine's sampler (SequenceStep::num_candidates), so a
// sampled row leaves the GPU as 16 + 8 C bytes instead of 4 x vocab. Row r of the output
// describes logits row rows[r] restricted to its first w = clamp(vocab_limit - id0, 0, width)
// columns (ids id0 + j; ids >= vocab_limit are not rows of the model: PhiCudaModel passes
// vocab_size, so the log-sum-exp is the whole row's, padding included): the top
// k = min(counts[r], w) by value descending, ties by lower id first (the engine's SelectCandidates order, with
// -0.0 == +0.0), and, where want_lse[r] != 0, log(sum(exp(v))) over those w values in double
// (-inf otherwise, and for w == 0). Record r sits at out + r * CandidateRecordBytes(max_count)
// (engine/candidate_record_layout.h): log_sum_exp, truncated (w > k), valid (k), then
// max_count (value, id) entries, (0, -1) past k. One block per row (per slice with `slices`): three 11/11/10-bit radix passes find
// the k-th key (the first also takes the max, the second the sum of exps), a fourth collects
// the k winners, taking the lowest ids among those equal to the k-th.
inline constexpr int kMaxTopCandidates = 64;
struct TopCandidatesArgs {
  const float* logits = nullptr;   // rows of `ld` floats
  int64_t ld = 0;                  // row stride (floats), >= width
  int width = 0;                   // columns of a row this rank holds
  int id0 = 0;                     // id of column 0 (a vocabulary slice's first id)
  int vocab_limit = 0;             // ids >= vocab_limit are left out
  const int32_t* rows = nullptr;   // [num_rows] logits row of output record r
  const int32_t* counts = nullptr; // [num_rows] candidates wanted, 1 .. max_count (more: max_count)
  const int32_t* want_lse = nullptr;  // [num_rows] non-zero: compute the log-sum-exp
  int num_rows = 0;
  int max_count = 0;               // entries per record, 1 .. kMaxTopCandidates
  // Each row's `width` columns split into this many slices of
  // top_candidates_slice_width(width, slices) columns, one block each, so that a few rows
  // still spread over the GPU (one block reading a 51200-float row is latency-bound). The
  // record of slice s, row r sits at out + (s * num_rows + r) * record bytes: a shard as if a
  // rank held that slice; JoinCandidateSlices (engine/sampler.h) makes them the row's record.
  int slices = 1;
  void* out = nullptr;             // [slices, num_rows] records
};
CudaStatus top_candidates_forward(const TopCandidatesArgs& args, cudaStream_t stream);

__host__ __device__ inline constexpr int top_candidates_slice_width(int width, int slices) {
  return (width + slices - 1) / slices;
}
// Slices per row for num_rows rows of `width` columns: enough blocks for the GPU's SMs
// (from the current device), each slice at least kMinCandidateSliceWidth columns, at most
// kMaxMergedCandidates entries for the host to merge per row (slices x max_count), at most
// max_records records in all; 1 when the rows alone fill the GPU.
inline constexpr int kMinCandidateSliceWidth = 2048;
inline constexpr int kMaxMergedCandidates = 512;
int top_candidates_slices(int num_rows, int width, int max_count, int max_records);

}  // namespace phi::worker::cuda

#endif  // PHI_SERVICES_WORKER_BACKENDS_CUDA_KERNELS_H_
