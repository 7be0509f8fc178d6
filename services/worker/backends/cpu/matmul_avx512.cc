// AVX-512 kernels (compiled with -mavx512f ...; called only after a run-time CPU check).
//
// Outer-product form with F32 FMAs: a register tile of MR rows x 32 output features
// (NP panels of two zmm each); per k, one activation per row is broadcast and multiplied
// with the panel's line of 32 weights. BF16 weights are widened by one unpack with zero
// (PackedMatrix stores them in that order), activations stay F32. On the Sapphire Rapids
// machines this was tuned on, F32 FMA issues 2x the FLOPs of vdpbf16ps (measured ~165 vs
// ~82 GFLOP/s per core), which is what bounds prefill.
//
// Activations are first repacked into bands of 14 rows ([band][k][14]): read straight from
// 14 rows of a [M, 2048] matrix, every broadcast of a k step hits the same L1 set (rows
// 8 KB apart) and the tile ran at ~55% of the FMA rate; packed, ~75% (1 thread, CPU time).
//
// Cache blocking (RunTiles, matmul_avx512_shared.h): for each K block, panels are walked
// kNcPanels at a time (their K block, 512 KB in BF16, stays in L2) while every row band of
// MR activations passes over them, so each weight is read from memory once per call
// whatever M is.
#include "services/worker/backends/cpu/matmul_kernels.h"

#if defined(PHI_NO_AVX512)
namespace phi::worker::cpu::kernels {
void matmul_bf16_avx512(const MatMulArgs& a) { matmul_bf16_portable(a); }
void matmul_f32_avx512(const MatMulArgs& a) { matmul_f32_portable(a); }
void matmul_int8_avx512(const MatMulArgs& a) { matmul_int8_portable(a); }
}  // namespace phi::worker::cpu::kernels
#else

#include <immintrin.h>

#include <array>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "services/worker/backends/cpu/matmul_avx512_shared.h"

namespace phi::worker::cpu::kernels {
namespace {

constexpr int64_t kPrefetchLines = 32;
static_assert(kMaxRows == 14, "14 x 2 accumulators + 2 weight registers + 1 broadcast");

enum class Format { kF32, kBF16, kInt8 };

template <Format F>
constexpr int ElemBytes() {
  return F == Format::kF32 ? 4 : F == Format::kBF16 ? 2 : 1;
}

template <Format F>
inline void LoadLine(const MatMulArgs& a, int64_t p, int64_t k, __m512* lo, __m512* hi) {
  if constexpr (F == Format::kBF16) {
    const __m512i v = _mm512_loadu_si512(static_cast<const uint16_t*>(a.w) + (p * a.k + k) * kPanel);
    const __m512i zero = _mm512_setzero_si512();
    *lo = _mm512_castsi512_ps(_mm512_unpacklo_epi16(zero, v));
    *hi = _mm512_castsi512_ps(_mm512_unpackhi_epi16(zero, v));
  } else if constexpr (F == Format::kInt8) {
    const int8_t* w = static_cast<const int8_t*>(a.w) + (p * a.k + k) * kPanel;
    *lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w))));
    *hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 16))));
  } else {
    const float* w = static_cast<const float*>(a.w) + (p * a.k + k) * kPanel;
    *lo = _mm512_loadu_ps(w);
    *hi = _mm512_loadu_ps(w + 16);
  }
}

// Folds one K block's sums into 16 outputs of row m (an INT8 block's sum times its scale).
template <Format F>
inline void Fold(const MatMulArgs& a, int64_t m, int64_t n, int64_t kb, __m512 sum) {
  if constexpr (F == Format::kInt8) {
    if (n >= a.n) return;
    const int64_t blocks = (a.k + kKBlock - 1) / kKBlock;
    sum = _mm512_mul_ps(sum, _mm512_loadu_ps(a.scales + ((n / kPanel) * blocks + kb / kKBlock) * kPanel + n % kPanel));
  }
  FoldBlockSum(a, m, n, kb, sum);
}

// Rows [m, m + MR) x panels [p, p + NP) over k in [kb, ke).
template <int MR, int NP, Format F>
void Tile(const MatMulArgs& a, int64_t m, int64_t p, int64_t kb, int64_t ke) {
  __m512 c[MR][2 * NP];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < 2 * NP; ++j) c[i][j] = _mm512_setzero_ps();
  // m is a band start (or 0 < m - band start for the short tiles of decode steps).
  const float* x = a.x_bands + (m / kMaxRows) * kMaxRows * a.k + m % kMaxRows;
  for (int64_t k = kb; k < ke; ++k) {
    // Fetch each panel's line 2 KB ahead: the first band over a weight block (and every
    // decode step) streams it from memory, and the hardware prefetcher stops at every 4 KB
    // page. Later bands find the lines in L2; the prefetch then costs one load slot.
    // Prefetches past the end never fault.
    for (int q = 0; q < NP; ++q) {
      _mm_prefetch(static_cast<const char*>(a.w) + ((p + q) * a.k + k + kPrefetchLines) * kPanel * ElemBytes<F>(),
                   _MM_HINT_T0);
    }
    __m512 w[2 * NP];
    for (int q = 0; q < NP; ++q) LoadLine<F>(a, p + q, k, &w[2 * q], &w[2 * q + 1]);
    for (int i = 0; i < MR; ++i) {
      const __m512 xv = _mm512_set1_ps(x[k * kMaxRows + i]);
      for (int j = 0; j < 2 * NP; ++j) c[i][j] = _mm512_fmadd_ps(xv, w[j], c[i][j]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < 2 * NP; ++j) Fold<F>(a, m + i, (p + j / 2) * kPanel + (j % 2) * 16, kb, c[i][j]);
}

template <Format F, int NP, int... R>
constexpr auto MakeTable(std::integer_sequence<int, R...>) {
  return std::array<TileFn, sizeof...(R)>{&Tile<R + 1, NP, F>...};
}

template <Format F>
void Run(const MatMulArgs& a) {
  static constexpr TileTables kTiles{MakeTable<F, 1>(std::make_integer_sequence<int, kMaxRows>()),
                                     MakeTable<F, 2>(std::make_integer_sequence<int, 6>()),
                                     MakeTable<F, 4>(std::make_integer_sequence<int, 3>())};
  RunTiles(a, kTiles);
}

}  // namespace

void matmul_bf16_avx512(const MatMulArgs& a) { Run<Format::kBF16>(a); }
void matmul_f32_avx512(const MatMulArgs& a) { Run<Format::kF32>(a); }
void matmul_int8_avx512(const MatMulArgs& a) { Run<Format::kInt8>(a); }

}  // namespace phi::worker::cpu::kernels

#endif  // PHI_NO_AVX512
