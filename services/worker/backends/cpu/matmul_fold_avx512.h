// The fold of one K block's sums into y (the contract in matmul_kernels.h), and the GCC
// warning switches their intrinsics need, shared by the AVX-512 GEMM files only (each compiled with -mavx512f ...): never include it from a file
// built without those flags, whose copy of these inline functions would have another
// instruction set under the same name.
#ifndef PHI_SERVICES_WORKER_BACKENDS_CPU_MATMUL_FOLD_AVX512_H_
#define PHI_SERVICES_WORKER_BACKENDS_CPU_MATMUL_FOLD_AVX512_H_

#include <immintrin.h>

#include <cstdint>

#include "services/worker/backends/cpu/matmul_kernels.h"

// GCC 12 warns falsely about the undefined vectors inside avx512fintrin.h's masked loads
// and conversions (__Y "may be used uninitialized"), as vec_math_avx512.h says.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace phi::cpu::kernels {
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

}  // namespace
}  // namespace phi::cpu::kernels

#endif  // PHI_SERVICES_WORKER_BACKENDS_CPU_MATMUL_FOLD_AVX512_H_
