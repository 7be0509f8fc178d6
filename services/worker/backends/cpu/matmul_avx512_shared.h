// What the AVX-512 GEMM files share (the F32-FMA kernels and the vdpbf16ps one): the fold
// of one K block's sums into y (the contract in matmul_kernels.h), the schedule of their
// register tiles over rows, panels and K blocks, and the GCC warning switches their
// intrinsics need. For the AVX-512 files only (each compiled with -mavx512f ...): never include it from a file
// built without those flags, whose copy of these inline functions would have another
// instruction set under the same name.
#ifndef PHI_SERVICES_WORKER_BACKENDS_CPU_MATMUL_AVX512_SHARED_H_
#define PHI_SERVICES_WORKER_BACKENDS_CPU_MATMUL_AVX512_SHARED_H_

#include <immintrin.h>

#include <array>
#include <cstdint>

#include "services/worker/backends/cpu/matmul_kernels.h"

// GCC 12 warns falsely about the undefined vectors inside avx512fintrin.h's masked loads
// and conversions (__Y "may be used uninitialized"), as vec_math_avx512.h says.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace phi::worker::cpu::kernels {
namespace {  // internal linkage: one private copy per AVX-512 translation unit

// 16 outputs of row m from column n: the first block's sum gets the bias, then the old y
// when accumulating; every later block's sum is added to y. Columns past a.n are untouched.
inline void FoldBlockSum(const MatMulArgs& a, int64_t m, int64_t n, int64_t kb, __m512 sum) {
  const int64_t valid = a.n - n;
  if (valid <= 0) return;
  const __mmask16 mask = valid >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << valid) - 1);
  float* y = a.y + m * a.ldy + n;
  __m512 r = sum;
  if (kb == 0) {
    if (a.bias != nullptr) r = _mm512_add_ps(r, _mm512_maskz_loadu_ps(mask, a.bias + n));
    if (a.accumulate) r = _mm512_add_ps(_mm512_maskz_loadu_ps(mask, y), r);
  } else {
    r = _mm512_add_ps(_mm512_maskz_loadu_ps(mask, y), r);
  }
  _mm512_mask_storeu_ps(y, mask, r);
}

constexpr int64_t kNcPanels = 8;  // panels per L2 block in prefill: 8 x 1024 k x 64 B (BF16) = 512 KB
constexpr int kMaxRows = static_cast<int>(kBandRowsAvx512);  // rows of a prefill tile (one band)

// A register tile: rows [m, m + MR) x a few panels from p, over k in [kb, ke).
using TileFn = void (*)(const MatMulArgs&, int64_t m, int64_t p, int64_t kb, int64_t ke);

// One kernel's tiles by panels per tile and rows: one[r - 1] for 1..14 rows, two[r - 1]
// for 1..6, four[r - 1] for 1..3 (more independent chains and memory streams, fewer
// broadcasts, where the band is short).
struct TileTables {
  std::array<TileFn, kMaxRows> one;
  std::array<TileFn, 6> two;
  std::array<TileFn, 3> four;
};

// Panels [a.p0, a.p1) for rows [0, a.m), tile by tile; every tile computes the contract's
// arithmetic, so the schedule changes no result.
inline void RunTiles(const MatMulArgs& a, const TileTables& t) {
  if (a.m <= 6) {
    // Decode steps are bound by reading the weights: walk each group of panels from its
    // first k to its last (the same arithmetic, block by block), so that every panel is
    // one long sequential stream, prefetched ahead inside the tile.
    const int rows = static_cast<int>(a.m);
    for (int64_t p = a.p0; p < a.p1;) {
      const int np = rows <= 3 && p + 4 <= a.p1 ? 4 : (p + 2 <= a.p1 ? 2 : 1);
      const TileFn tile = np == 4 ? t.four[rows - 1] : np == 2 ? t.two[rows - 1] : t.one[rows - 1];
      for (int64_t kb = 0; kb < a.k; kb += kKBlock) tile(a, 0, p, kb, kb + kKBlock < a.k ? kb + kKBlock : a.k);
      p += np;
    }
    return;
  }
  // Prefill: for each K block, kNcPanels panels stay in L2 while every band of rows passes
  // over them, so each weight is read from memory once per call whatever M is.
  for (int64_t kb = 0; kb < a.k; kb += kKBlock) {
    const int64_t ke = kb + kKBlock < a.k ? kb + kKBlock : a.k;
    for (int64_t pc = a.p0; pc < a.p1; pc += kNcPanels) {
      const int64_t pe = pc + kNcPanels < a.p1 ? pc + kNcPanels : a.p1;
      for (int64_t m = 0; m < a.m; m += kMaxRows) {
        const int rows = static_cast<int>(a.m - m < kMaxRows ? a.m - m : kMaxRows);
        int64_t p = pc;
        if (rows <= 6) {
          for (; p + 2 <= pe; p += 2) t.two[rows - 1](a, m, p, kb, ke);
        }
        for (; p < pe; ++p) t.one[rows - 1](a, m, p, kb, ke);
      }
    }
  }
}

}  // namespace
}  // namespace phi::worker::cpu::kernels

#endif  // PHI_SERVICES_WORKER_BACKENDS_CPU_MATMUL_AVX512_SHARED_H_
