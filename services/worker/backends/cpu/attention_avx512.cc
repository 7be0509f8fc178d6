// AVX-512 causal attention (compiled with -mavx512f ...; called only after a run-time check).
// Tiles of up to kAttentionQueryTile queries share every K and V load: scores take one
// FMA per (query, dimension) for 16 keys at a time from the transposed K block, and the
// weighted sum of V one FMA per (query, key) for 16 dimensions at a time.
#include "services/worker/backends/cpu/attention.h"

#if defined(PHI_NO_AVX512)
namespace phi::worker::cpu::kernels {
void attend_causal_avx512(const AttentionArgs& a) { attend_causal_portable(a); }
}  // namespace phi::worker::cpu::kernels
#else

#include <immintrin.h>

#include <algorithm>

#include "services/worker/backends/cpu/attention_query_tiles.h"
#include "services/worker/backends/cpu/vec_math_avx512.h"


namespace phi::worker::cpu::kernels {
namespace {

inline __mmask16 FirstLanes(int64_t n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1); }

// Walks the keys [0, end) in chunks of at most 16 that never cross a block:
// fn(block, offset in block, first key, lanes).
template <typename Fn>
inline void ForEachKeyChunk(const AttentionArgs& a, int64_t end, Fn&& fn) {
  for (int64_t b = 0, j0 = 0; j0 < end; ++b) {
    for (int64_t o = 0; o < a.block_size && j0 < end; o += 16) {
      const int64_t lanes = std::min<int64_t>({16, a.block_size - o, end - j0});
      fn(b, o, j0, FirstLanes(lanes));
      j0 += lanes;
    }
  }
}

// Independent 16-lane chunks (of keys for the scores, of dimensions for the weighted sum)
// worked on together, so that a tile of few queries (a decode step's one) still runs 4-8
// FMA chains; each output's own chain is the same whatever the group, so no result changes.
template <int QB>
constexpr int kGroup = QB == 1 ? 4 : QB == 2 ? 2 : 1;

// scores[qi][j] for the QB queries starting at i0, keys [0, end).
template <int QB>
void Scores(const AttentionArgs& a, int64_t i0, int64_t end, float* s, int64_t lds) {
  constexpr int G = kGroup<QB>;
  const __m512 scale = Set(a.scale_div);
  const float* kt[G];
  int64_t j0s[G];
  __mmask16 ms[G];
  int n = 0;
  auto run = [&] {
    for (int g = n; g < G; ++g) {  // padding chunks: mask 0 reads and writes nothing
      kt[g] = kt[0];
      j0s[g] = j0s[0];
      ms[g] = 0;
    }
    __m512 acc[G][QB];
    for (int g = 0; g < G; ++g)
      for (int i = 0; i < QB; ++i) acc[g][i] = _mm512_setzero_ps();
    for (int64_t d = 0; d < a.head_dim; ++d) {
      __m512 qd[QB];
      for (int i = 0; i < QB; ++i) qd[i] = Set(a.q[(i0 + i) * a.q_stride + d]);
      for (int g = 0; g < G; ++g) {
        const __m512 k = _mm512_maskz_loadu_ps(ms[g], kt[g] + d * a.block_size);
        for (int i = 0; i < QB; ++i) acc[g][i] = _mm512_fmadd_ps(qd[i], k, acc[g][i]);
      }
    }
    for (int g = 0; g < G; ++g)
      for (int i = 0; i < QB; ++i) _mm512_mask_storeu_ps(s + i * lds + j0s[g], ms[g], _mm512_div_ps(acc[g][i], scale));
    n = 0;
  };
  ForEachKeyChunk(a, end, [&](int64_t b, int64_t o, int64_t j0, __mmask16 m) {
    kt[n] = a.k_blocks[b] + o;
    j0s[n] = j0;
    ms[n] = m;
    if (++n == G) run();
  });
  if (n > 0) run();
}

// Turns one query's scores [0, ctx) into softmax weights and zeroes [ctx, end).
void Softmax(const AttentionArgs& a, int64_t ctx, int64_t end, float* s) {
  __m512 mx = Set(-3.402823466e38f);
  ForEachKeyChunk(a, ctx, [&](int64_t, int64_t, int64_t j0, __mmask16 m) {
    mx = _mm512_mask_max_ps(mx, m, mx, _mm512_maskz_loadu_ps(m, s + j0));
  });
  const __m512 max = Set(_mm512_reduce_max_ps(mx));
  __m512 sum = _mm512_setzero_ps();
  ForEachKeyChunk(a, ctx, [&](int64_t, int64_t, int64_t j0, __mmask16 m) {
    const __m512 e = Exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, s + j0), max));
    _mm512_mask_storeu_ps(s + j0, m, e);
    sum = _mm512_mask_add_ps(sum, m, sum, e);
  });
  const __m512 inv = Set(1.0f / _mm512_reduce_add_ps(sum));
  int64_t j = 0;
  for (; j + 16 <= ctx; j += 16) _mm512_storeu_ps(s + j, _mm512_mul_ps(_mm512_loadu_ps(s + j), inv));
  if (j < ctx) {
    const __mmask16 m = FirstLanes(ctx - j);
    _mm512_mask_storeu_ps(s + j, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, s + j), inv));
  }
  for (j = ctx; j < end; ++j) s[j] = 0.0f;
}

// out[qi] = sum_j s[qi][j] v_j over keys [0, end), 16 dimensions at a time.
template <int QB>
void WeightedValues(const AttentionArgs& a, int64_t i0, int64_t end, const float* s, int64_t lds) {
  constexpr int G = kGroup<QB>;
  for (int64_t d0 = 0; d0 < a.head_dim; d0 += 16 * G) {
    __mmask16 m[G];
    for (int g = 0; g < G; ++g) {
      const int64_t left = a.head_dim - d0 - 16 * g;
      m[g] = left <= 0 ? __mmask16(0) : FirstLanes(left);
    }
    __m512 acc[G][QB];
    for (int g = 0; g < G; ++g)
      for (int i = 0; i < QB; ++i) acc[g][i] = _mm512_setzero_ps();
    for (int64_t b = 0, j = 0; j < end; ++b) {
      const float* vb = a.v_blocks[b] + d0;
      for (int64_t slot = 0; slot < a.block_size && j < end; ++slot, ++j) {
        __m512 p[QB];
        for (int i = 0; i < QB; ++i) p[i] = Set(s[i * lds + j]);
        for (int g = 0; g < G; ++g) {
          // A chunk past head_dim (mask 0) reads nothing; its pointer stays inside the row.
          const __m512 v = _mm512_maskz_loadu_ps(m[g], vb + slot * a.head_dim + (m[g] != 0 ? 16 * g : 0));
          for (int i = 0; i < QB; ++i) acc[g][i] = _mm512_fmadd_ps(p[i], v, acc[g][i]);
        }
      }
    }
    for (int g = 0; g < G; ++g)
      for (int i = 0; i < QB; ++i) {
        _mm512_mask_storeu_ps(a.out + (i0 + i) * a.out_stride + d0 + (m[g] != 0 ? 16 * g : 0), m[g], acc[g][i]);
      }
  }
}

template <int QB>
void Tile(const AttentionArgs& a, int64_t i0) {
  const int64_t end = a.ctx0 + i0 + QB - 1;  // keys seen by the tile's last query
  const int64_t lds = a.ctx0 + a.nq - 1;
  Scores<QB>(a, i0, end, a.scores, lds);
  for (int i = 0; i < QB; ++i) Softmax(a, a.ctx0 + i0 + i, end, a.scores + i * lds);
  WeightedValues<QB>(a, i0, end, a.scores, lds);
}

}  // namespace

void attend_causal_avx512(const AttentionArgs& a) {
  ForEachQueryTile(a, [&](auto qb, int64_t i0) { Tile<decltype(qb)::value>(a, i0); });
}

}  // namespace phi::worker::cpu::kernels

#endif  // PHI_NO_AVX512
