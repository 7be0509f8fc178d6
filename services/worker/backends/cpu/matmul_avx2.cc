// AVX2 + FMA kernels (compiled with -mavx2 -mfma -mf16c; called only after a run-time CPU
// check). Same scheme as matmul_avx512.cc, sized for 16 ymm registers: the register tile
// is MR rows x NH half-panels of 16 output features (two ymm each); per k, one activation
// per row is broadcast and multiplied with the half-panel's 16 widened weights. Prefill
// tiles are 6 rows x 16 outputs (12 accumulators, 2 weight registers, 1 broadcast);
// decode tiles trade rows for half-panels (1 x 96, 2 x 48, 3 x 32 outputs) so that a step
// keeps 12 independent FMA chains and 2-3 weight streams in flight.
//
// Each product is one FMA into its output's block sum, in k order: the same operations as
// the AVX-512 kernels, so the two paths agree bit for bit.
#include "services/worker/backends/cpu/matmul_kernels.h"

#if defined(PHI_NO_AVX2)
namespace phi::worker::cpu::kernels {
void matmul_bf16_avx2(const MatMulArgs& a) { matmul_bf16_portable(a); }
void matmul_f32_avx2(const MatMulArgs& a) { matmul_f32_portable(a); }
void matmul_int8_avx2(const MatMulArgs& a) { matmul_int8_portable(a); }
}  // namespace phi::worker::cpu::kernels
#else

#include <immintrin.h>

#include <array>
#include <utility>

namespace phi::worker::cpu::kernels {
namespace {

enum class Format { kF32, kBF16, kInt8 };

// Panels per L2 block in prefill: 4 x 1024 k x 64 B (BF16) = 256 KB, half of Zen 3's L2.
constexpr int64_t kNcPanels = 4;
constexpr int64_t kPrefetchLines = 32;
constexpr int kMaxRows = static_cast<int>(kBandRowsAvx2);

template <Format F>
constexpr int ElemBytes() {
  return F == Format::kF32 ? 4 : F == Format::kBF16 ? 2 : 1;
}

// Half s % 2 of panel s / 2's line at k, widened to F32: part 0 and part 1, 8 columns each.
template <Format F>
inline void LoadHalf(const MatMulArgs& a, int64_t s, int64_t k, __m256* w0, __m256* w1) {
  const int64_t line = ((s / 2) * a.k + k) * kPanel + (s % 2) * 16;
  if constexpr (F == Format::kBF16) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(a.w) + line));
    const __m256i zero = _mm256_setzero_si256();
    *w0 = _mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, v));
    *w1 = _mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, v));
  } else if constexpr (F == Format::kInt8) {
    const int8_t* p = static_cast<const int8_t*>(a.w) + line;
    *w0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
    *w1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 8))));
  } else {
    const float* p = static_cast<const float*>(a.w) + line;
    *w0 = _mm256_loadu_ps(p);
    *w1 = _mm256_loadu_ps(p + 8);
  }
}

// First column (within the panel) of part q of half h: BF16 lines are in unpack order
// (matmul_kernels.h), F32 and INT8 lines in column order.
template <Format F>
constexpr int ColOf(int h, int q) {
  return F == Format::kBF16 ? (q == 0 ? 8 * h : 16 + 8 * h) : 16 * h + 8 * q;
}

inline __m256i FirstLanes(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n < 8 ? n : 8)),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// Folds one K block's sums into 8 outputs of row m from panel column c of panel p, per
// the contract in matmul_kernels.h.
template <Format F>
inline void Fold(const MatMulArgs& a, int64_t m, int64_t p, int c, int64_t kb, __m256 sum) {
  const int64_t n = p * kPanel + c;
  const int64_t valid = a.n - n;
  if (valid <= 0) return;
  float* y = a.y + m * a.ldy + n;
  __m256 r = sum;
  if constexpr (F == Format::kInt8) {
    const int64_t blocks = (a.k + kKBlock - 1) / kKBlock;
    r = _mm256_mul_ps(r, _mm256_loadu_ps(a.scales + (p * blocks + kb / kKBlock) * kPanel + c));
  }
  if (valid >= 8) {
    if (kb == 0) {
      if (a.bias != nullptr) r = _mm256_add_ps(r, _mm256_loadu_ps(a.bias + n));
      if (a.accumulate) r = _mm256_add_ps(_mm256_loadu_ps(y), r);
    } else {
      r = _mm256_add_ps(_mm256_loadu_ps(y), r);
    }
    _mm256_storeu_ps(y, r);
    return;
  }
  const __m256i mask = FirstLanes(valid);
  if (kb == 0) {
    if (a.bias != nullptr) r = _mm256_add_ps(r, _mm256_maskload_ps(a.bias + n, mask));
    if (a.accumulate) r = _mm256_add_ps(_mm256_maskload_ps(y, mask), r);
  } else {
    r = _mm256_add_ps(_mm256_maskload_ps(y, mask), r);
  }
  _mm256_maskstore_ps(y, mask, r);
}

// Rows [m, m + MR) x half-panels [s, s + NH) over k in [kb, ke).
template <int MR, int NH, Format F>
void Tile(const MatMulArgs& a, int64_t m, int64_t s, int64_t kb, int64_t ke) {
  __m256 c[MR][2 * NH];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < 2 * NH; ++j) c[i][j] = _mm256_setzero_ps();
  constexpr int64_t br = kBandRowsAvx2;
  const float* x = a.x_bands + (m / br) * br * a.k + m % br;
  const char* w = static_cast<const char*>(a.w);
  for (int64_t k = kb; k < ke; ++k) {
    // Fetch each half's line 32 lines ahead (see matmul_avx512.cc: the hardware prefetcher
    // stops at every 4 KB page). Prefetches past the end never fault.
    // One prefetch per 64-byte line: a line holds 1 (BF16), 2 (INT8) or 0.5 (F32) panel
    // lines, so INT8 fetches on even k, and a half-panel tile fetches its own half.
    if (F != Format::kInt8 || (k & 1) == 0) {
      for (int h = 0; h < NH; ++h) {
        const int64_t sh = s + h;
        if (F != Format::kF32 && sh % 2 == 1 && h > 0) continue;  // its panel's line is fetched
        _mm_prefetch(w + (((sh / 2) * a.k + k + kPrefetchLines) * kPanel + (sh % 2) * 16) * ElemBytes<F>(),
                     _MM_HINT_T0);
      }
    }
    for (int h = 0; h < NH; ++h) {
      __m256 w0, w1;
      LoadHalf<F>(a, s + h, k, &w0, &w1);
      for (int i = 0; i < MR; ++i) {
        const __m256 xv = _mm256_set1_ps(x[k * br + i]);
        c[i][2 * h] = _mm256_fmadd_ps(xv, w0, c[i][2 * h]);
        c[i][2 * h + 1] = _mm256_fmadd_ps(xv, w1, c[i][2 * h + 1]);
      }
    }
  }
  // The sums leave the registers through a separate array: folding straight from c (with
  // run-time column offsets) made GCC keep c in memory and store all 12 accumulators on
  // every k step, which halved the FMA rate.
  alignas(32) float sums[MR][2 * NH][8];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < 2 * NH; ++j) _mm256_store_ps(sums[i][j], c[i][j]);
  for (int h = 0; h < NH; ++h) {
    const int64_t sh = s + h;
    for (int i = 0; i < MR; ++i) {
      for (int q = 0; q < 2; ++q) {
        Fold<F>(a, m + i, sh / 2, ColOf<F>(static_cast<int>(sh % 2), q), kb, _mm256_load_ps(sums[i][2 * h + q]));
      }
    }
  }
}

template <Format F>
using TileFn = void (*)(const MatMulArgs&, int64_t, int64_t, int64_t, int64_t);

template <Format F, int NH, int... R>
constexpr auto MakeTable(std::integer_sequence<int, R...>) {
  return std::array<TileFn<F>, sizeof...(R)>{&Tile<R + 1, NH, F>...};
}

template <Format F>
void Run(const MatMulArgs& a) {
  static constexpr auto kOne = MakeTable<F, 1>(std::make_integer_sequence<int, kMaxRows>());
  static constexpr auto kTwo = MakeTable<F, 2>(std::make_integer_sequence<int, 3>());
  // Decode tiles of 12 accumulators: 1 row x 6 half-panels, 2 x 3 (they may straddle panels).
  static constexpr TileFn<F> kSixOneRow = &Tile<1, 6, F>;
  static constexpr TileFn<F> kThreeTwoRows = &Tile<2, 3, F>;
  const int64_t s_end = 2 * a.p1;
  if (a.m <= kMaxRows) {
    // Decode steps are bound by reading the weights: walk each group of half-panels from
    // its first k to its last (the same arithmetic, block by block), one long prefetched
    // stream per panel.
    const int rows = static_cast<int>(a.m);
    for (int64_t s = 2 * a.p0; s < s_end;) {
      const int nh = rows == 1 && s + 6 <= s_end   ? 6
                     : rows == 2 && s + 3 <= s_end ? 3
                     : rows <= 3 && s + 2 <= s_end ? 2
                                                   : 1;
      const TileFn<F> tile = nh == 6   ? kSixOneRow
                             : nh == 3 ? kThreeTwoRows
                             : nh == 2 ? kTwo[rows - 1]
                                       : kOne[rows - 1];
      for (int64_t kb = 0; kb < a.k; kb += kKBlock) tile(a, 0, s, kb, kb + kKBlock < a.k ? kb + kKBlock : a.k);
      s += nh;
    }
    return;
  }
  for (int64_t kb = 0; kb < a.k; kb += kKBlock) {
    const int64_t ke = kb + kKBlock < a.k ? kb + kKBlock : a.k;
    for (int64_t pc = a.p0; pc < a.p1; pc += kNcPanels) {
      const int64_t se = 2 * (pc + kNcPanels < a.p1 ? pc + kNcPanels : a.p1);
      for (int64_t m = 0; m < a.m; m += kMaxRows) {
        const int rows = static_cast<int>(a.m - m < kMaxRows ? a.m - m : kMaxRows);
        int64_t s = 2 * pc;
        if (rows <= 3) {
          for (; s + 2 <= se; s += 2) kTwo[rows - 1](a, m, s, kb, ke);
        }
        for (; s < se; ++s) kOne[rows - 1](a, m, s, kb, ke);
      }
    }
  }
}

}  // namespace

void matmul_bf16_avx2(const MatMulArgs& a) { Run<Format::kBF16>(a); }
void matmul_f32_avx2(const MatMulArgs& a) { Run<Format::kF32>(a); }
void matmul_int8_avx2(const MatMulArgs& a) { Run<Format::kInt8>(a); }

}  // namespace phi::worker::cpu::kernels

#endif  // PHI_NO_AVX2
