// The avx512bf16 path's BF16-weight GEMM (compiled with the AVX-512 flags + -mavx512bf16;
// called only after a run-time CPU check): BF16 weights times BF16-rounded activations with
// vdpbf16ps, two k per instruction. Its arithmetic contract is in matmul_kernels.h.
//
// Same panels as the F32-FMA kernels (PackedMatrix, no format of its own): the lines of k
// and k + 1 of a panel, interleaved by one unpack-low and one unpack-high of 16-bit words,
// give per 32-bit lane the (w[k], w[k+1]) pair of one output column, in the column order
// that matmul_avx512.cc's unpack with zero gives (Bf16LaneOf): columns 0..15 and 16..31.
// The activations are rounded and paired once per call (pack_bands_bf16_pairs), so the
// tile broadcasts one 32-bit pair per row and makes one vdpbf16ps per row and 16 columns.
//
// Tiles and blocking as matmul_avx512.cc: 14 rows x 32 outputs for prefill bands (28
// accumulators), K blocks of kKBlock with kNcPanels panels kept in L2 while every band
// passes over them; batches of up to 6 rows stream each group of 1, 2 or 4 panels from its
// first k to its last with software prefetch (decode is bound by the weight bytes).
#include "services/worker/backends/cpu/matmul_kernels.h"

#if defined(PHI_NO_AVX512)
#include <cstring>

namespace phi::worker::cpu::kernels {

// Never called (no CPU without AVX-512 reports AVX512_BF16); kept linkable and correct.
void pack_bands_bf16_pairs(const float* x, int64_t m, int64_t ldx, int64_t k, int64_t band_rows, int64_t b0,
                           int64_t b1, uint32_t* x_pairs) {
  auto to_bf16 = [](float f) -> uint32_t {
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    if ((bits & 0x7f800000u) == 0) return (bits >> 16) & 0x8000u;                    // zero, denormal
    if ((bits & 0x7fffffffu) > 0x7f800000u) return ((bits >> 16) | 0x40u) & 0xffffu;  // NaN
    return ((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16) & 0xffffu;
  };
  const int64_t kp = (k + 1) / 2;
  for (int64_t b = b0; b < b1; ++b) {
    for (int64_t i = 0; i < band_rows && b * band_rows + i < m; ++i) {
      const float* src = x + (b * band_rows + i) * ldx;
      uint32_t* dst = x_pairs + b * band_rows * kp + i;
      for (int64_t j = 0; j < kp; ++j) {
        dst[j * band_rows] = to_bf16(src[2 * j]) | (2 * j + 1 < k ? to_bf16(src[2 * j + 1]) << 16 : 0u);
      }
    }
  }
}

void matmul_bf16dot_avx512bf16(const MatMulArgs& a) { matmul_bf16_portable(a); }

}  // namespace phi::worker::cpu::kernels
#else

#include <immintrin.h>

#include <array>
#include <cstdint>
#include <utility>

#include "services/worker/backends/cpu/matmul_avx512_shared.h"

namespace phi::worker::cpu::kernels {
namespace {

constexpr int64_t kPrefetchLines = 32;  // 2 KB ahead per panel, as matmul_avx512.cc
static_assert(kMaxRows == 14, "28 accumulators + 2 weight pairs + 1 line");
static_assert(kKBlock % 2 == 0, "K blocks must hold whole pairs");

inline const uint16_t* Line(const MatMulArgs& a, int64_t p, int64_t k) {
  return static_cast<const uint16_t*>(a.w) + (p * a.k + k) * kPanel;
}

inline __m512bh AsBh(__m512i v) { return (__m512bh)v; }  // a vector cast: the same 64 bytes

// Rows [m, m + MR) x panels [p, p + NP) over k in [kb, ke); kb is even (a block start).
template <int MR, int NP>
void Tile(const MatMulArgs& a, int64_t m, int64_t p, int64_t kb, int64_t ke) {
  __m512 c[MR][2 * NP];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < 2 * NP; ++j) c[i][j] = _mm512_setzero_ps();
  const int64_t pairs = (a.k + 1) / 2;
  // m is a band start (or 0 < m - band start for the short tiles of decode steps).
  const uint32_t* x = a.x_bf16_pairs + (m / kMaxRows) * kMaxRows * pairs + m % kMaxRows;
  const int64_t ke2 = kb + ((ke - kb) & ~int64_t{1});  // end of the whole pairs
  for (int64_t k = kb; k < ke2; k += 2) {
    // Both lines of the pair, 32 lines ahead (see matmul_avx512.cc). Past the end: no fault.
    for (int q = 0; q < NP; ++q) {
      _mm_prefetch(reinterpret_cast<const char*>(Line(a, p + q, k + kPrefetchLines)), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(Line(a, p + q, k + kPrefetchLines + 1)), _MM_HINT_T0);
    }
    __m512bh w[2 * NP];
    for (int q = 0; q < NP; ++q) {
      const __m512i l0 = _mm512_loadu_si512(Line(a, p + q, k));
      const __m512i l1 = _mm512_loadu_si512(Line(a, p + q, k + 1));
      w[2 * q] = AsBh(_mm512_unpacklo_epi16(l0, l1));      // columns 0..15: (w[k], w[k+1])
      w[2 * q + 1] = AsBh(_mm512_unpackhi_epi16(l0, l1));  // columns 16..31
    }
    // The pair is the broadcast (second) operand, so it can be vdpbf16ps's {1to16} load.
    const uint32_t* xk = x + k / 2 * kMaxRows;
    for (int i = 0; i < MR; ++i) {
      const __m512bh xv = AsBh(_mm512_set1_epi32(static_cast<int>(xk[i])));
      for (int j = 0; j < 2 * NP; ++j) c[i][j] = _mm512_dpbf16_ps(c[i][j], w[j], xv);
    }
  }
  if (ke2 < ke) {
    // Odd K: the last pair is (K - 1, none). Line K does not exist (it would be the next
    // panel's first line, or past the buffer): pair line K - 1 with zeros, as the packed
    // activation pair holds a zero.
    const int64_t k = ke2;
    const __m512i zero = _mm512_setzero_si512();
    __m512bh w[2 * NP];
    for (int q = 0; q < NP; ++q) {
      const __m512i l0 = _mm512_loadu_si512(Line(a, p + q, k));
      w[2 * q] = AsBh(_mm512_unpacklo_epi16(l0, zero));
      w[2 * q + 1] = AsBh(_mm512_unpackhi_epi16(l0, zero));
    }
    const uint32_t* xk = x + k / 2 * kMaxRows;
    for (int i = 0; i < MR; ++i) {
      const __m512bh xv = AsBh(_mm512_set1_epi32(static_cast<int>(xk[i])));
      for (int j = 0; j < 2 * NP; ++j) c[i][j] = _mm512_dpbf16_ps(c[i][j], w[j], xv);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < 2 * NP; ++j) FoldBlockSum(a, m + i, (p + j / 2) * kPanel + (j % 2) * 16, kb, c[i][j]);
}

template <int NP, int... R>
constexpr auto MakeTable(std::integer_sequence<int, R...>) {
  return std::array<TileFn, sizeof...(R)>{&Tile<R + 1, NP>...};
}

}  // namespace

void pack_bands_bf16_pairs(const float* x, int64_t m, int64_t ldx, int64_t k, int64_t band_rows, int64_t b0,
                           int64_t b1, uint32_t* x_pairs) {
  const int64_t kp = (k + 1) / 2;
  alignas(64) uint32_t buf[16];
  for (int64_t b = b0; b < b1; ++b) {
    // Rows past m in the last band stay unset: a tile reads only the band's valid rows.
    for (int64_t i = 0; i < band_rows && b * band_rows + i < m; ++i) {
      const float* src = x + (b * band_rows + i) * ldx;
      uint32_t* dst = x_pairs + b * band_rows * kp + i;
      // 32 activations -> 16 pairs per step; the tail loads zeros past k (so an odd k's
      // last pair gets a 0 in its high half).
      for (int64_t c = 0; c < k; c += 32) {
        const int64_t left = k - c;
        const __mmask16 m0 = left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1);
        const __mmask16 m1 = left >= 32 ? __mmask16(0xFFFF) : left <= 16 ? __mmask16(0) : __mmask16((1u << (left - 16)) - 1);
        const __m512 lo = _mm512_maskz_loadu_ps(m0, src + c);
        const __m512 hi = _mm512_maskz_loadu_ps(m1, src + c + 16);
        // vcvtne2ps2bf16: the low 16 BF16 from the second operand.
        const __m512bh v = _mm512_cvtne2ps_pbh(hi, lo);
        _mm512_store_si512(buf, (__m512i)v);
        const int64_t n = left >= 32 ? 16 : (left + 1) / 2;
        for (int64_t j = 0; j < n; ++j) dst[(c / 2 + j) * band_rows] = buf[j];
      }
    }
  }
}

void matmul_bf16dot_avx512bf16(const MatMulArgs& a) {
  static constexpr TileTables kTiles{MakeTable<1>(std::make_integer_sequence<int, kMaxRows>()),
                                     MakeTable<2>(std::make_integer_sequence<int, 6>()),
                                     MakeTable<4>(std::make_integer_sequence<int, 3>())};
  RunTiles(a, kTiles);
}

}  // namespace phi::worker::cpu::kernels

#endif  // PHI_NO_AVX512
