// Vector math for the AVX-512 kernel files only (each is compiled with -mavx512f ...).
// Never include it from a file built without those flags: its inline functions would
// then exist in two instruction sets under one name.
#ifndef PHI_SERVICES_WORKER_BACKENDS_CPU_VEC_MATH_AVX512_H_
#define PHI_SERVICES_WORKER_BACKENDS_CPU_VEC_MATH_AVX512_H_

#include <immintrin.h>

// GCC 12 warns falsely about the undefined vectors inside avx512fintrin.h's masked
// intrinsics (__Y "may be used uninitialized"); every AVX-512 kernel file includes this.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace phi::worker::cpu::kernels {
namespace {  // internal linkage: one private copy per AVX-512 translation unit

inline __m512 Set(float v) { return _mm512_set1_ps(v); }

// exp over 16 lanes: Cephes expf's range reduction and polynomial (~1 ulp); inputs below
// -87 give 0 (the true value is under float's normal range).
inline __m512 Exp16(__m512 in) {
  const __m512 x = _mm512_min_ps(_mm512_max_ps(in, Set(-87.0f)), Set(88.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_fmadd_ps(x, Set(1.44269504088896341f), Set(0.5f)),
                                        _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, Set(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, Set(-2.12194440e-4f), r);
  __m512 p = Set(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, Set(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, Set(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, Set(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, Set(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, Set(5.0000001201e-1f));
  p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, Set(1.0f)));
  const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  const __m512 v = _mm512_mul_ps(p, _mm512_castsi512_ps(e));
  return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(in, Set(-87.0f), _CMP_GE_OQ), v);
}

}  // namespace
}  // namespace phi::worker::cpu::kernels

#endif  // PHI_SERVICES_WORKER_BACKENDS_CPU_VEC_MATH_AVX512_H_
