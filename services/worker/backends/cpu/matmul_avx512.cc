// AVX-512 kernels (compiled with -mavx512f -mavx512bf16 ...; called only after a run-time
// CPU check). Dot-product form: each accumulator holds 16 partial sums of one (m, n)
// pair and is reduced once at the end, so weights are read in their natural [N, K] row
// layout. Register tile MR x NR; weights are walked in blocks of rows that stay in L2
// while all M rows pass over them, so prefill reads each weight from memory ~once.
#include "services/worker/backends/cpu/matmul_kernels.h"

#if defined(PHI_NO_AVX512)
namespace phi::cpu::kernels {
void matmul_bf16_avx512(const MatMulArgs& a) { matmul_bf16_portable(a); }
void matmul_f32_avx512(const MatMulArgs& a) { matmul_f32_portable(a); }
}  // namespace phi::cpu::kernels
#else

#include <immintrin.h>

// GCC 12 warns falsely about the undefined vectors inside _mm512_reduce_add_ps
// (avx512fintrin.h, __Y used uninitialized).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace phi::cpu::kernels {
namespace {

constexpr int64_t kL2BlockBytes = 1 << 20;

inline void Store(const MatMulArgs& a, int64_t m, int64_t n, float s) {
  if (a.bias != nullptr) s += a.bias[n];
  float* y = a.y + m * a.ldy + n;
  *y = a.accumulate ? *y + s : s;
}

template <int MR, int NR>
inline void TileBf16(const MatMulArgs& a, int64_t m, int64_t n, bool prefetch) {
  const uint16_t* x = static_cast<const uint16_t*>(a.x) + m * a.ldx;
  const uint16_t* w = static_cast<const uint16_t*>(a.w) + n * a.ldw;
  __m512 c[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) c[i][j] = _mm512_setzero_ps();
  const int64_t k_end = a.ldw;
  for (int64_t k = 0; k < k_end; k += 32) {
    __m512bh b[NR];
    for (int j = 0; j < NR; ++j) b[j] = (__m512bh)_mm512_loadu_si512(w + j * a.ldw + k);
    if (prefetch) {
      // The first row band over a weight block streams it from memory: fetch the next
      // tile's rows while this one is computed. A row is one 4 KB page at K = 2048, and
      // the hardware prefetcher restarts at every page, so each row would otherwise
      // begin with cold misses.
      for (int j = 0; j < NR; ++j) _mm_prefetch(reinterpret_cast<const char*>(w + (NR + j) * a.ldw + k), _MM_HINT_T0);
    }
    for (int i = 0; i < MR; ++i) {
      const __m512bh v = (__m512bh)_mm512_loadu_si512(x + i * a.ldx + k);
      for (int j = 0; j < NR; ++j) c[i][j] = _mm512_dpbf16_ps(c[i][j], v, b[j]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) Store(a, m + i, n + j, _mm512_reduce_add_ps(c[i][j]));
}

template <int MR, int NR>
inline void TileF32(const MatMulArgs& a, int64_t m, int64_t n) {
  const float* x = static_cast<const float*>(a.x) + m * a.ldx;
  const float* w = static_cast<const float*>(a.w) + n * a.ldw;
  __m512 c[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) c[i][j] = _mm512_setzero_ps();
  for (int64_t k = 0; k < a.ldw; k += 16) {
    __m512 b[NR];
    for (int j = 0; j < NR; ++j) b[j] = _mm512_loadu_ps(w + j * a.ldw + k);
    for (int i = 0; i < MR; ++i) {
      const __m512 v = _mm512_loadu_ps(x + i * a.ldx + k);
      for (int j = 0; j < NR; ++j) c[i][j] = _mm512_fmadd_ps(v, b[j], c[i][j]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) Store(a, m + i, n + j, _mm512_reduce_add_ps(c[i][j]));
}

// One row band [m, m+MR) over columns [nb, ne): wide tiles, then single columns.
template <int MR, bool kBf16>
inline void Band(const MatMulArgs& a, int64_t m, int64_t nb, int64_t ne) {
  const bool prefetch = m == 0;
  constexpr int NR = MR == 1 ? 8 : 4;
  int64_t n = nb;
  for (; n + NR <= ne; n += NR) {
    if constexpr (kBf16) {
      TileBf16<MR, NR>(a, m, n, prefetch);
    } else {
      TileF32<MR, NR>(a, m, n);
    }
  }
  for (; n < ne; ++n) {
    if constexpr (kBf16) {
      TileBf16<MR, 1>(a, m, n, false);
    } else {
      TileF32<MR, 1>(a, m, n);
    }
  }
}

template <bool kBf16>
void Run(const MatMulArgs& a, int elem_bytes) {
  int64_t block = kL2BlockBytes / (a.ldw * elem_bytes);
  block = block < 8 ? 8 : block / 8 * 8;
  for (int64_t nb = a.n0; nb < a.n1; nb += block) {
    const int64_t ne = nb + block < a.n1 ? nb + block : a.n1;
    int64_t m = 0;
    for (; m + 4 <= a.m; m += 4) Band<4, kBf16>(a, m, nb, ne);
    switch (a.m - m) {
      case 3: Band<3, kBf16>(a, m, nb, ne); break;
      case 2: Band<2, kBf16>(a, m, nb, ne); break;
      case 1: Band<1, kBf16>(a, m, nb, ne); break;
      default: break;
    }
  }
}

}  // namespace

void matmul_bf16_avx512(const MatMulArgs& a) { Run<true>(a, 2); }
void matmul_f32_avx512(const MatMulArgs& a) { Run<false>(a, 4); }

}  // namespace phi::cpu::kernels

#endif  // PHI_NO_AVX512
