#include "services/worker/backends/cpu/ops.h"

#include <cmath>
#include <cstring>

// Rotary only: layer_norm_portable and gelu_new_portable are the references, built for the
// baseline instruction set whatever the host (the SIMD kernels are picked by Isa).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define PHI_CLONES __attribute__((target_clones("arch=sapphirerapids", "avx2", "default")))
#else
#define PHI_CLONES
#endif

namespace phi::worker::cpu {
namespace {

// exp(x) for x in float range: Cephes expf's range reduction and polynomial (~1 ulp),
// branch-free so loops over it vectorize.
inline float FastExp(float in) {
  const float x = in < -87.0f ? -87.0f : (in > 88.0f ? 88.0f : in);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t e = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &e, 4);
  // Below -87 the true value is under float's normal range: flush to 0.
  return in < -87.0f ? 0.0f : p * scale;
}

}  // namespace

void layer_norm_portable(const float* x, const float* gamma, const float* beta, double eps, int64_t n, float* y) {
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += x[i];
  const double mean = sum / static_cast<double>(n);
  double sq = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = x[i] - mean;
    sq += d * d;
  }
  const float rstd = static_cast<float>(1.0 / std::sqrt(sq / static_cast<double>(n) + eps));
  const float fmean = static_cast<float>(mean);
  for (int64_t i = 0; i < n; ++i) y[i] = (x[i] - fmean) * rstd * gamma[i] + beta[i];
}

void gelu_new_portable(const float* x, int64_t n, float* y) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    const float u = kSqrt2OverPi * (v + 0.044715f * v * v * v);
    // tanh(u) = 1 - 2 / (exp(2u) + 1): absolute error ~1e-7, and gelu needs 1 + tanh.
    const float t = 1.0f - 2.0f / (FastExp(2.0f * u) + 1.0f);
    y[i] = 0.5f * v * (1.0f + t);
  }
}

PHI_CLONES void Rotary(float* v, const float* cos, const float* sin, int half) {
  for (int i = 0; i < half; ++i) {
    const float x1 = v[i], x2 = v[i + half];
    v[i] = x1 * cos[i] - x2 * sin[i];
    v[i + half] = x2 * cos[i] + x1 * sin[i];
  }
}

void LayerNorm(const float* x, const float* gamma, const float* beta, double eps, int64_t n, float* y, Isa isa) {
  switch (isa) {
    case Isa::kAvx512:
    case Isa::kAvx512Bf16:  // AVX-512's (vdpbf16ps is for BF16-weight GEMMs only)
      kernels::layer_norm_avx512(x, gamma, beta, eps, n, y);
      break;
    case Isa::kAvx2: kernels::layer_norm_avx2(x, gamma, beta, eps, n, y); break;
    case Isa::kPortable: layer_norm_portable(x, gamma, beta, eps, n, y); break;
  }
}

void GeluNew(const float* x, int64_t n, float* y, Isa isa) {
  switch (isa) {
    case Isa::kAvx512:
    case Isa::kAvx512Bf16:  // AVX-512's (vdpbf16ps is for BF16-weight GEMMs only)
      kernels::gelu_new_avx512(x, n, y);
      break;
    case Isa::kAvx2: kernels::gelu_new_avx2(x, n, y); break;
    case Isa::kPortable: gelu_new_portable(x, n, y); break;
  }
}

}  // namespace phi::worker::cpu
