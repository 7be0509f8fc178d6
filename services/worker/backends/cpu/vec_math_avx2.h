// Vector math for the AVX2 kernel files only (each is compiled with -mavx2 -mfma -mf16c).
// Never include it from a file built without those flags: its inline functions would then
// exist in two instruction sets under one name.
//
// Each helper computes what its AVX-512 twin (vec_math_avx512.h, and the reductions of
// GCC 12's avx512fintrin.h) computes, lane for lane, so that the AVX2 kernels agree with
// the AVX-512 ones bit for bit.
#ifndef PHI_SERVICES_WORKER_BACKENDS_CPU_VEC_MATH_AVX2_H_
#define PHI_SERVICES_WORKER_BACKENDS_CPU_VEC_MATH_AVX2_H_

#include <immintrin.h>

#include <cstdint>

namespace phi::worker::cpu::kernels {
namespace {  // internal linkage: one private copy per AVX2 translation unit

inline __m256 Set(float v) { return _mm256_set1_ps(v); }

// The mask of _mm256_maskload_ps / _mm256_maskstore_ps for lanes [0, n): n <= 0 gives no
// lane, n >= 8 all eight. Masked-off lanes are neither read nor written (no fault).
inline __m256i FirstLanes(int64_t n) {
  const int c = n <= 0 ? 0 : (n >= 8 ? 8 : static_cast<int>(n));
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(c), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// The same for four double lanes [0, n).
inline __m256d FirstLanesPd(int64_t n) {
  const int64_t c = n <= 0 ? 0 : (n >= 4 ? 4 : n);
  return _mm256_castsi256_pd(_mm256_cmpgt_epi64(_mm256_set1_epi64x(c), _mm256_setr_epi64x(0, 1, 2, 3)));
}

// exp over 8 lanes: Exp16's operations lane for lane (Cephes expf's range reduction and
// polynomial, ~1 ulp); inputs below -87 give 0 (the true value is under float's normal range).
inline __m256 Exp8(__m256 in) {
  const __m256 x = _mm256_min_ps(_mm256_max_ps(in, Set(-87.0f)), Set(88.0f));
  const __m256 n = _mm256_floor_ps(_mm256_fmadd_ps(x, Set(1.44269504088896341f), Set(0.5f)));
  __m256 r = _mm256_fnmadd_ps(n, Set(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, Set(-2.12194440e-4f), r);
  __m256 p = Set(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, Set(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, Set(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, Set(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, Set(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, Set(5.0000001201e-1f));
  p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, Set(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  const __m256 v = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
  return _mm256_and_ps(_mm256_cmp_ps(in, Set(-87.0f), _CMP_GE_OQ), v);
}

// A 16-lane vector held as lo (lanes 0..7) and hi (lanes 8..15), reduced in the order of
// GCC 12's _mm512_reduce_add_ps: halves, then quarters, then {0,1} + {2,3}, then lane 0 + 1.
inline float ReduceAdd16(__m256 lo, __m256 hi) {
  const __m256 t3 = _mm256_add_ps(hi, lo);
  const __m128 t6 = _mm_add_ps(_mm256_extractf128_ps(t3, 1), _mm256_castps256_ps128(t3));
  const __m128 t8 = _mm_add_ps(t6, _mm_shuffle_ps(t6, t6, _MM_SHUFFLE(1, 0, 3, 2)));
  return _mm_cvtss_f32(t8) + _mm_cvtss_f32(_mm_shuffle_ps(t8, t8, _MM_SHUFFLE(1, 1, 1, 1)));
}

// The same for _mm512_reduce_max_ps, with its operand order (which decides between +0
// and -0).
inline float ReduceMax16(__m256 lo, __m256 hi) {
  const __m256 t3 = _mm256_max_ps(hi, lo);
  const __m128 t6 = _mm_max_ps(_mm256_extractf128_ps(t3, 1), _mm256_castps256_ps128(t3));
  const __m128 t8 = _mm_max_ps(t6, _mm_shuffle_ps(t6, t6, _MM_SHUFFLE(1, 0, 3, 2)));
  const __m128 t10 = _mm_max_ps(t8, _mm_shuffle_ps(t8, t8, _MM_SHUFFLE(0, 1, 0, 1)));
  return _mm_cvtss_f32(t10);
}

// Eight double lanes held as lo (lanes 0..3) and hi (4..7): (lo + hi), then its halves,
// then lane 0 + lane 1. layer_norm_avx512 reduces its one __m512d in this order.
inline double ReduceAdd8d(__m256d lo, __m256d hi) {
  const __m256d t = _mm256_add_pd(lo, hi);
  const __m128d u = _mm_add_pd(_mm256_castpd256_pd128(t), _mm256_extractf128_pd(t, 1));
  return _mm_cvtsd_f64(u) + _mm_cvtsd_f64(_mm_unpackhi_pd(u, u));
}

}  // namespace
}  // namespace phi::worker::cpu::kernels

#endif  // PHI_SERVICES_WORKER_BACKENDS_CPU_VEC_MATH_AVX2_H_
