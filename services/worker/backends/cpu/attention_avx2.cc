// AVX2 + FMA causal attention (compiled with -mavx2 -mfma -mf16c; called only after a
// run-time check). attention_avx512.cc at half the width: a tile of up to
// kAttentionQueryTile queries runs its scores for all keys, then each query's softmax, then
// the weighted sum of V. Scores take one FMA per (query, dimension) for 8 keys at a time
// from the transposed K block, the weighted sum one FMA per (query, key) for 8 dimensions
// at a time. The register tiles are 4 queries x 2 chunks of 8 keys or dimensions (8
// accumulators, 2 K or V vectors, 4 broadcasts: 14 of the 16 ymm), so a tile of 8 queries
// reads each K and V vector twice (the second time from cache); smaller tiles (decode: 1
// query) work on 8 / QB chunks at once (kGroup), so they too run 6 to 8 FMA chains.
//
// Every output gets the AVX-512 kernel's operations in its order, so the two agree bit for
// bit: each score is the same FMA chain over d and one division; the softmax max and sum
// run over the AVX-512 kernel's 16-key chunks with 16 lanes held in two ymm registers (lo,
// hi) and are reduced as GCC's _mm512_reduce_max_ps / _mm512_reduce_add_ps do
// (vec_math_avx2.h); each output dimension is the same FMA chain over the keys.
#include "services/worker/backends/cpu/attention.h"

#if defined(PHI_NO_AVX2)
namespace phi::worker::cpu::kernels {
void attend_causal_avx2(const AttentionArgs& a) { attend_causal_portable(a); }
}  // namespace phi::worker::cpu::kernels
#else

#include <immintrin.h>

#include <algorithm>

#include "services/worker/backends/cpu/attention_query_tiles.h"
#include "services/worker/backends/cpu/vec_math_avx2.h"

namespace phi::worker::cpu::kernels {
namespace {

// Walks the keys [0, end) in chunks of at most W that never cross a block:
// fn(block, offset in block, first key, keys in the chunk).
template <int W, typename Fn>
inline void ForEachKeyChunk(const AttentionArgs& a, int64_t end, Fn&& fn) {
  for (int64_t b = 0, j0 = 0; j0 < end; ++b) {
    for (int64_t o = 0; o < a.block_size && j0 < end; o += W) {
      const int64_t lanes = std::min<int64_t>({W, a.block_size - o, end - j0});
      fn(b, o, j0, lanes);
      j0 += lanes;
    }
  }
}

// Independent 8-lane chunks worked on together: G * QB accumulators, so that a tile of few
// queries (a decode step's one) still runs enough FMA chains to hide their latency. Each
// output's own chain is the same whatever G: the grouping changes no result.
template <int QB>
constexpr int kGroup = QB == 1 ? 8 : QB == 2 ? 4 : QB <= 4 ? 2 : 1;

// scores[qi][j .. j + 8) for the QB queries at q (stride q_stride), from the K^T block
// columns at kt[g] into s[g] + qi * lds, for G chunks of 8 keys.
template <int QB, int G>
inline void ScoreFullChunks(const AttentionArgs& a, const float* q, const float* const* kt, float* const* s,
                            int64_t lds) {
  __m256 acc[G][QB];
  for (int g = 0; g < G; ++g) {
    for (int i = 0; i < QB; ++i) acc[g][i] = _mm256_setzero_ps();
  }
  for (int64_t d = 0; d < a.head_dim; ++d) {
    __m256 qd[QB];
    for (int i = 0; i < QB; ++i) qd[i] = Set(q[i * a.q_stride + d]);
    for (int g = 0; g < G; ++g) {
      const __m256 k = _mm256_loadu_ps(kt[g] + d * a.block_size);
      for (int i = 0; i < QB; ++i) acc[g][i] = _mm256_fmadd_ps(qd[i], k, acc[g][i]);
    }
  }
  const __m256 scale = Set(a.scale_div);
  for (int g = 0; g < G; ++g) {
    for (int i = 0; i < QB; ++i) _mm256_storeu_ps(s[g] + i * lds, _mm256_div_ps(acc[g][i], scale));
  }
}

// The same for one chunk of `lanes` < 8 keys (masked loads and stores: nothing past them is
// touched).
template <int QB>
inline void ScorePartialChunk(const AttentionArgs& a, const float* q, const float* kt, int64_t lanes, float* s,
                              int64_t lds) {
  const __m256i m = FirstLanes(lanes);
  __m256 acc[QB];
  for (int i = 0; i < QB; ++i) acc[i] = _mm256_setzero_ps();
  for (int64_t d = 0; d < a.head_dim; ++d) {
    const __m256 k = _mm256_maskload_ps(kt + d * a.block_size, m);
    for (int i = 0; i < QB; ++i) acc[i] = _mm256_fmadd_ps(Set(q[i * a.q_stride + d]), k, acc[i]);
  }
  const __m256 scale = Set(a.scale_div);
  for (int i = 0; i < QB; ++i) _mm256_maskstore_ps(s + i * lds, m, _mm256_div_ps(acc[i], scale));
}

// n (< G) full chunks left over: one group of n.
template <int QB, int G>
inline void ScoreLeftoverChunks(const AttentionArgs& a, const float* q, const float* const* kt, float* const* s,
                                int64_t lds, int n) {
  if constexpr (G > 1) {
    if (n == G - 1) {
      ScoreFullChunks<QB, G - 1>(a, q, kt, s, lds);
    } else {
      ScoreLeftoverChunks<QB, G - 1>(a, q, kt, s, lds, n);
    }
  }
}

// scores[qi][j] for the QB queries starting at i0, keys [0, end): chunks of 8 keys that
// never cross a block, kGroup<QB> full ones at a time.
template <int QB>
void Scores(const AttentionArgs& a, int64_t i0, int64_t end, float* s, int64_t lds) {
  constexpr int G = kGroup<QB>;
  const float* q = a.q + i0 * a.q_stride;
  const float* kt[G];
  float* sg[G];
  int pending = 0;
  ForEachKeyChunk<8>(a, end, [&](int64_t b, int64_t o, int64_t j0, int64_t lanes) {
    if (lanes < 8) {
      ScorePartialChunk<QB>(a, q, a.k_blocks[b] + o, lanes, s + j0, lds);
      return;
    }
    kt[pending] = a.k_blocks[b] + o;
    sg[pending] = s + j0;
    if (++pending == G) {
      ScoreFullChunks<QB, G>(a, q, kt, sg, lds);
      pending = 0;
    }
  });
  if (pending > 0) ScoreLeftoverChunks<QB, G>(a, q, kt, sg, lds, pending);
}

// Turns one query's scores [0, ctx) into softmax weights and zeroes [ctx, end). Max and
// sum run over the AVX-512 kernel's chunks of up to 16 keys, lane l of a chunk in lane l of
// (lo, hi); a lane outside the chunk keeps its value, as under the AVX-512 mask.
void Softmax(const AttentionArgs& a, int64_t ctx, int64_t end, float* s) {
  __m256 mx_lo = Set(-3.402823466e38f), mx_hi = mx_lo;
  ForEachKeyChunk<16>(a, ctx, [&](int64_t, int64_t, int64_t j0, int64_t lanes) {
    const __m256i m_lo = FirstLanes(lanes);
    mx_lo = _mm256_blendv_ps(mx_lo, _mm256_max_ps(mx_lo, _mm256_maskload_ps(s + j0, m_lo)), _mm256_castsi256_ps(m_lo));
    if (lanes > 8) {
      const __m256i m_hi = FirstLanes(lanes - 8);
      mx_hi = _mm256_blendv_ps(mx_hi, _mm256_max_ps(mx_hi, _mm256_maskload_ps(s + j0 + 8, m_hi)),
                               _mm256_castsi256_ps(m_hi));
    }
  });
  const __m256 max = Set(ReduceMax16(mx_lo, mx_hi));
  __m256 sum_lo = _mm256_setzero_ps(), sum_hi = sum_lo;
  ForEachKeyChunk<16>(a, ctx, [&](int64_t, int64_t, int64_t j0, int64_t lanes) {
    const __m256i m_lo = FirstLanes(lanes);
    const __m256 e_lo = Exp8(_mm256_sub_ps(_mm256_maskload_ps(s + j0, m_lo), max));
    _mm256_maskstore_ps(s + j0, m_lo, e_lo);
    sum_lo = _mm256_blendv_ps(sum_lo, _mm256_add_ps(sum_lo, e_lo), _mm256_castsi256_ps(m_lo));
    if (lanes > 8) {
      const __m256i m_hi = FirstLanes(lanes - 8);
      const __m256 e_hi = Exp8(_mm256_sub_ps(_mm256_maskload_ps(s + j0 + 8, m_hi), max));
      _mm256_maskstore_ps(s + j0 + 8, m_hi, e_hi);
      sum_hi = _mm256_blendv_ps(sum_hi, _mm256_add_ps(sum_hi, e_hi), _mm256_castsi256_ps(m_hi));
    }
  });
  const __m256 inv = Set(1.0f / ReduceAdd16(sum_lo, sum_hi));
  int64_t j = 0;
  for (; j + 8 <= ctx; j += 8) _mm256_storeu_ps(s + j, _mm256_mul_ps(_mm256_loadu_ps(s + j), inv));
  if (j < ctx) {
    const __m256i m = FirstLanes(ctx - j);
    _mm256_maskstore_ps(s + j, m, _mm256_mul_ps(_mm256_maskload_ps(s + j, m), inv));
  }
  for (j = ctx; j < end; ++j) s[j] = 0.0f;
}

// out[qi][d0 .. d0 + 8G) = sum_j s[qi][j] v_j over keys [0, end), for G full chunks of 8
// dimensions.
template <int QB, int G>
inline void WeightedValueFullChunks(const AttentionArgs& a, int64_t i0, int64_t end, const float* s, int64_t lds,
                                    int64_t d0) {
  __m256 acc[G][QB];
  for (int g = 0; g < G; ++g) {
    for (int i = 0; i < QB; ++i) acc[g][i] = _mm256_setzero_ps();
  }
  for (int64_t b = 0, j = 0; j < end; ++b) {
    const float* vb = a.v_blocks[b] + d0;
    for (int64_t slot = 0; slot < a.block_size && j < end; ++slot, ++j) {
      __m256 w[QB];
      for (int i = 0; i < QB; ++i) w[i] = Set(s[i * lds + j]);
      for (int g = 0; g < G; ++g) {
        const __m256 v = _mm256_loadu_ps(vb + slot * a.head_dim + 8 * g);
        for (int i = 0; i < QB; ++i) acc[g][i] = _mm256_fmadd_ps(w[i], v, acc[g][i]);
      }
    }
  }
  for (int g = 0; g < G; ++g) {
    for (int i = 0; i < QB; ++i) _mm256_storeu_ps(a.out + (i0 + i) * a.out_stride + d0 + 8 * g, acc[g][i]);
  }
}

// The same for the last `lanes` < 8 dimensions at d0.
template <int QB>
inline void WeightedValuePartialChunk(const AttentionArgs& a, int64_t i0, int64_t end, const float* s, int64_t lds,
                                      int64_t d0, int64_t lanes) {
  const __m256i m = FirstLanes(lanes);
  __m256 acc[QB];
  for (int i = 0; i < QB; ++i) acc[i] = _mm256_setzero_ps();
  for (int64_t b = 0, j = 0; j < end; ++b) {
    const float* vb = a.v_blocks[b] + d0;
    for (int64_t slot = 0; slot < a.block_size && j < end; ++slot, ++j) {
      const __m256 v = _mm256_maskload_ps(vb + slot * a.head_dim, m);
      for (int i = 0; i < QB; ++i) acc[i] = _mm256_fmadd_ps(Set(s[i * lds + j]), v, acc[i]);
    }
  }
  for (int i = 0; i < QB; ++i) _mm256_maskstore_ps(a.out + (i0 + i) * a.out_stride + d0, m, acc[i]);
}

template <int QB, int G>
inline void WeightedValueLeftoverChunks(const AttentionArgs& a, int64_t i0, int64_t end, const float* s,
                                        int64_t lds, int64_t d0, int n) {
  if constexpr (G > 1) {
    if (n == G - 1) {
      WeightedValueFullChunks<QB, G - 1>(a, i0, end, s, lds, d0);
    } else {
      WeightedValueLeftoverChunks<QB, G - 1>(a, i0, end, s, lds, d0, n);
    }
  }
}

// out[qi] = sum_j s[qi][j] v_j over keys [0, end): kGroup<QB> chunks of 8 dimensions at a
// time, then the masked last one.
template <int QB>
void WeightedValues(const AttentionArgs& a, int64_t i0, int64_t end, const float* s, int64_t lds) {
  constexpr int G = kGroup<QB>;
  const int64_t full = a.head_dim / 8;
  int64_t c = 0;
  for (; c + G <= full; c += G) WeightedValueFullChunks<QB, G>(a, i0, end, s, lds, 8 * c);
  if (c < full) WeightedValueLeftoverChunks<QB, G>(a, i0, end, s, lds, 8 * c, static_cast<int>(full - c));
  if (8 * full < a.head_dim) WeightedValuePartialChunk<QB>(a, i0, end, s, lds, 8 * full, a.head_dim - 8 * full);
}

// Scores and weighted values for a tile of QB queries by sub-tiles of at most kSubTile,
// each working on kGroup<sub-tile> chunks at once: 4 queries x 2 chunks load 6 vectors per
// 8 FMAs where 8 queries x 1 chunk load 9 (a 512-token prefill's attention 13% faster on a
// Zen 4 core; 2 queries x 4 chunks was 40% slower than 4 x 2).
constexpr int kSubTile = 4;

template <int QB>
void ScoresBySubTile(const AttentionArgs& a, int64_t i0, int64_t end, float* s, int64_t lds) {
  if constexpr (QB > kSubTile) {
    Scores<kSubTile>(a, i0, end, s, lds);
    ScoresBySubTile<QB - kSubTile>(a, i0 + kSubTile, end, s + kSubTile * lds, lds);
  } else {
    Scores<QB>(a, i0, end, s, lds);
  }
}

template <int QB>
void WeightedValuesBySubTile(const AttentionArgs& a, int64_t i0, int64_t end, const float* s, int64_t lds) {
  if constexpr (QB > kSubTile) {
    WeightedValues<kSubTile>(a, i0, end, s, lds);
    WeightedValuesBySubTile<QB - kSubTile>(a, i0 + kSubTile, end, s + kSubTile * lds, lds);
  } else {
    WeightedValues<QB>(a, i0, end, s, lds);
  }
}

template <int QB>
void Tile(const AttentionArgs& a, int64_t i0) {
  const int64_t end = a.ctx0 + i0 + QB - 1;  // keys seen by the tile's last query
  const int64_t lds = a.ctx0 + a.nq - 1;
  ScoresBySubTile<QB>(a, i0, end, a.scores, lds);
  for (int i = 0; i < QB; ++i) Softmax(a, a.ctx0 + i0 + i, end, a.scores + i * lds);
  WeightedValuesBySubTile<QB>(a, i0, end, a.scores, lds);
}

}  // namespace

void attend_causal_avx2(const AttentionArgs& a) {
  ForEachQueryTile(a, [&](auto qb, int64_t i0) { Tile<decltype(qb)::value>(a, i0); });
}

}  // namespace phi::worker::cpu::kernels

#endif  // PHI_NO_AVX2
