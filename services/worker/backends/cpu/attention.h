// Causal attention of a run of consecutive queries of one head over the paged KV cache.
//
// Cache layout (per layer, block and head): K transposed, [head_dim][block_size], so that
// one vector load holds one dimension of 16 keys and scores need no horizontal sums; V as
// [block_size][head_dim]. Query i (0-based) of the run sees keys [0, ctx0 + i).
//
// The arithmetic is fixed per query, whatever the run length (a decode step's single query
// computes what the same query computes inside a prefill chunk, bit for bit):
//   score_j = (sum over d = 0.. of q[d] * k_j[d], accumulated in order) / scale_div;
//   e_j = exp(score_j - max); sum = lane-wise sums over the key chunks in order, then one
//   reduction; out = sum over j = 0.. in order of (e_j * (1 / sum)) * v_j.
// ref: transformers' eager PhiAttention (scores / sqrt(head_dim), softmax, . V).
#ifndef PHI_SERVICES_WORKER_BACKENDS_CPU_ATTENTION_H_
#define PHI_SERVICES_WORKER_BACKENDS_CPU_ATTENTION_H_

#include <cstdint>

#include "services/worker/backends/cpu/cpu_features.h"

namespace phi::worker::cpu {

struct AttentionArgs {
  const float* q = nullptr;  // nq rows of head_dim, stride q_stride floats
  int64_t q_stride = 0;
  int64_t nq = 0;
  int64_t ctx0 = 0;  // keys seen by the first query (>= 1)
  const float* const* k_blocks = nullptr;  // block b: K^T [head_dim][block_size]
  const float* const* v_blocks = nullptr;  // block b: V [block_size][head_dim]
  int block_size = 0;
  int head_dim = 0;
  float scale_div = 1.0f;
  float* scores = nullptr;  // scratch: kAttentionQueryTile * (ctx0 + nq - 1) floats
  float* out = nullptr;     // nq rows of head_dim, stride out_stride floats
  int64_t out_stride = 0;
};

constexpr int kAttentionQueryTile = 8;

// The kernel of `isa` (the caller checked that the CPU runs it).
void AttendCausal(const AttentionArgs& a, Isa isa);

namespace kernels {
void attend_causal_avx512(const AttentionArgs& a);
void attend_causal_avx2(const AttentionArgs& a);
void attend_causal_portable(const AttentionArgs& a);
}  // namespace kernels

}  // namespace phi::worker::cpu

#endif  // PHI_SERVICES_WORKER_BACKENDS_CPU_ATTENTION_H_
