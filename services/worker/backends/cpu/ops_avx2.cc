// AVX2 + FMA twins of ops.h's LayerNorm and gelu_new (compiled with -mavx2 -mfma -mf16c;
// called only after a run-time CPU check). Each runs the operations of its AVX-512 twin
// (ops_avx512.cc) in the same order, 8 lanes where that one has 16, so the two agree bit for
// bit. Tails use masked loads and stores: nothing past n is read or written.
#include "services/worker/backends/cpu/ops.h"

#if defined(PHI_NO_AVX2)
namespace phi::worker::cpu::kernels {
void layer_norm_avx2(const float* x, const float* gamma, const float* beta, double eps, int64_t n, float* y) {
  layer_norm_portable(x, gamma, beta, eps, n, y);
}
void gelu_new_avx2(const float* x, int64_t n, float* y) { gelu_new_portable(x, n, y); }
}  // namespace phi::worker::cpu::kernels
#else

#include <immintrin.h>

#include <cmath>

#include "services/worker/backends/cpu/vec_math_avx2.h"

namespace phi::worker::cpu::kernels {
namespace {

inline __m256 GeluNew8(__m256 v) {
  const __m256 c = Set(0.7978845608028654f), a = Set(0.044715f), half = Set(0.5f), one = Set(1.0f), two = Set(2.0f);
  const __m256 u = _mm256_mul_ps(c, _mm256_fmadd_ps(_mm256_mul_ps(a, v), _mm256_mul_ps(v, v), v));
  // tanh(u) = 1 - 2 / (exp(2u) + 1), as the portable version.
  const __m256 t = _mm256_sub_ps(one, _mm256_div_ps(two, _mm256_add_ps(Exp8(_mm256_mul_ps(two, u)), one)));
  return _mm256_mul_ps(_mm256_mul_ps(half, v), _mm256_add_ps(one, t));
}

// The 8 floats of v widened to double lanes 0..3 (lo) and 4..7 (hi).
inline __m256d WidenLo(__m256 v) { return _mm256_cvtps_pd(_mm256_castps256_ps128(v)); }
inline __m256d WidenHi(__m256 v) { return _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)); }

}  // namespace

void layer_norm_avx2(const float* x, const float* gamma, const float* beta, double eps, int64_t n, float* y) {
  const int64_t full = n / 8 * 8;
  const __m256i tail = FirstLanes(n - full);  // elements [full, n)
  // Mean: 8 double lanes, lane l summing x[8c + l] over c in order (the tail's masked-off
  // lanes load 0, which adds nothing).
  __m256d s_lo = _mm256_setzero_pd(), s_hi = s_lo;
  for (int64_t i = 0; i < full; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    s_lo = _mm256_add_pd(s_lo, WidenLo(v));
    s_hi = _mm256_add_pd(s_hi, WidenHi(v));
  }
  if (full < n) {
    const __m256 v = _mm256_maskload_ps(x + full, tail);
    s_lo = _mm256_add_pd(s_lo, WidenLo(v));
    s_hi = _mm256_add_pd(s_hi, WidenHi(v));
  }
  const double mean = ReduceAdd8d(s_lo, s_hi) / static_cast<double>(n);
  // Variance: the same lanes over (x - mean)^2, one FMA each; the tail's masked-off lanes
  // have their deviation zeroed.
  const __m256d m = _mm256_set1_pd(mean);
  __m256d q_lo = _mm256_setzero_pd(), q_hi = q_lo;
  for (int64_t i = 0; i < full; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256d d_lo = _mm256_sub_pd(WidenLo(v), m), d_hi = _mm256_sub_pd(WidenHi(v), m);
    q_lo = _mm256_fmadd_pd(d_lo, d_lo, q_lo);
    q_hi = _mm256_fmadd_pd(d_hi, d_hi, q_hi);
  }
  if (full < n) {
    const __m256 v = _mm256_maskload_ps(x + full, tail);
    const __m256d d_lo = _mm256_and_pd(_mm256_sub_pd(WidenLo(v), m), FirstLanesPd(n - full));
    const __m256d d_hi = _mm256_and_pd(_mm256_sub_pd(WidenHi(v), m), FirstLanesPd(n - full - 4));
    q_lo = _mm256_fmadd_pd(d_lo, d_lo, q_lo);
    q_hi = _mm256_fmadd_pd(d_hi, d_hi, q_hi);
  }
  const double var = ReduceAdd8d(q_lo, q_hi) / static_cast<double>(n);
  const __m256 rstd = Set(static_cast<float>(1.0 / std::sqrt(var + eps)));
  const __m256 fmean = Set(static_cast<float>(mean));
  for (int64_t i = 0; i < full; i += 8) {
    const __m256 t = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), fmean), rstd);
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(t, _mm256_loadu_ps(gamma + i), _mm256_loadu_ps(beta + i)));
  }
  if (full < n) {
    const __m256 t = _mm256_mul_ps(_mm256_sub_ps(_mm256_maskload_ps(x + full, tail), fmean), rstd);
    _mm256_maskstore_ps(
        y + full, tail,
        _mm256_fmadd_ps(t, _mm256_maskload_ps(gamma + full, tail), _mm256_maskload_ps(beta + full, tail)));
  }
}

void gelu_new_avx2(const float* x, int64_t n, float* y) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, GeluNew8(_mm256_loadu_ps(x + i)));
  if (i < n) {
    const __m256i m = FirstLanes(n - i);
    _mm256_maskstore_ps(y + i, m, GeluNew8(_mm256_maskload_ps(x + i, m)));
  }
}

}  // namespace phi::worker::cpu::kernels

#endif  // PHI_NO_AVX2
