// AVX-512 twins of ops.h's LayerNorm and gelu_new (compiled with -mavx512f ...; called
// only after a run-time CPU check). gelu_new runs over every fc1 output: 100 M values in a
// 512-token Phi-1.5 prefill, where the scalar version took ~0.6 s of 2 cores. ops_avx2.cc
// runs the same operations in the same order at 8 lanes: the two agree bit for bit.
#include "services/worker/backends/cpu/ops.h"

#if defined(PHI_NO_AVX512)
namespace phi::worker::cpu::kernels {
void layer_norm_avx512(const float* x, const float* gamma, const float* beta, double eps, int64_t n, float* y) {
  layer_norm_portable(x, gamma, beta, eps, n, y);
}
void gelu_new_avx512(const float* x, int64_t n, float* y) { gelu_new_portable(x, n, y); }
}  // namespace phi::worker::cpu::kernels
#else

#include <immintrin.h>

#include <cmath>

#include "services/worker/backends/cpu/vec_math_avx512.h"

namespace phi::worker::cpu::kernels {
namespace {

// (lanes 0..3 + lanes 4..7), then its halves, then lane 0 + lane 1: ReduceAdd8d's order
// (vec_math_avx2.h).
inline double ReduceAdd8d(__m512d v) {
  const __m256d t = _mm256_add_pd(_mm512_castpd512_pd256(v), _mm512_extractf64x4_pd(v, 1));
  const __m128d u = _mm_add_pd(_mm256_castpd256_pd128(t), _mm256_extractf128_pd(t, 1));
  return _mm_cvtsd_f64(u) + _mm_cvtsd_f64(_mm_unpackhi_pd(u, u));
}

}  // namespace

// The statistics take 8 floats per step into 8 double lanes (lane l: x[8c + l]), as
// layer_norm_avx2; the output, element-wise, 16 at a time.
void layer_norm_avx512(const float* x, const float* gamma, const float* beta, double eps, int64_t n, float* y) {
  const int64_t full = n / 8 * 8;
  const __mmask8 tail = static_cast<__mmask8>((1u << (n - full)) - 1);  // elements [full, n)
  __m512d s = _mm512_setzero_pd();
  for (int64_t i = 0; i < full; i += 8) s = _mm512_add_pd(s, _mm512_cvtps_pd(_mm256_loadu_ps(x + i)));
  if (full < n) s = _mm512_add_pd(s, _mm512_cvtps_pd(_mm256_maskz_loadu_ps(tail, x + full)));
  const double mean = ReduceAdd8d(s) / static_cast<double>(n);
  const __m512d m = _mm512_set1_pd(mean);
  __m512d q = _mm512_setzero_pd();
  for (int64_t i = 0; i < full; i += 8) {
    const __m512d d = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + i)), m);
    q = _mm512_fmadd_pd(d, d, q);
  }
  if (full < n) {
    const __m512d d = _mm512_maskz_sub_pd(tail, _mm512_cvtps_pd(_mm256_maskz_loadu_ps(tail, x + full)), m);
    q = _mm512_fmadd_pd(d, d, q);
  }
  const double var = ReduceAdd8d(q) / static_cast<double>(n);
  const __m512 rstd = Set(static_cast<float>(1.0 / std::sqrt(var + eps)));
  const __m512 fmean = Set(static_cast<float>(mean));
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 k = n - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1);
    const __m512 t = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), fmean), rstd);
    _mm512_mask_storeu_ps(y + i, k,
                          _mm512_fmadd_ps(t, _mm512_maskz_loadu_ps(k, gamma + i), _mm512_maskz_loadu_ps(k, beta + i)));
  }
}

void gelu_new_avx512(const float* x, int64_t n, float* y) {
  const __m512 c = Set(0.7978845608028654f), a = Set(0.044715f), half = Set(0.5f), one = Set(1.0f), two = Set(2.0f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1);
    const __m512 v = _mm512_maskz_loadu_ps(m, x + i);
    const __m512 u = _mm512_mul_ps(c, _mm512_fmadd_ps(_mm512_mul_ps(a, v), _mm512_mul_ps(v, v), v));
    // tanh(u) = 1 - 2 / (exp(2u) + 1), as the portable version.
    const __m512 t = _mm512_sub_ps(one, _mm512_div_ps(two, _mm512_add_ps(Exp16(_mm512_mul_ps(two, u)), one)));
    _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(_mm512_mul_ps(half, v), _mm512_add_ps(one, t)));
  }
}

}  // namespace phi::worker::cpu::kernels

#endif  // PHI_NO_AVX512
