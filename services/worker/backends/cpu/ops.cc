#include "services/worker/backends/cpu/ops.h"

#include <cmath>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define PHI_CLONES __attribute__((target_clones("arch=sapphirerapids", "avx2", "default")))
#else
#define PHI_CLONES
#endif

namespace phi::cpu {
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

inline float Dot(const float* a, const float* b, int n) {
  float acc[16] = {};
  int i = 0;
  for (; i + 16 <= n; i += 16)
    for (int l = 0; l < 16; ++l) acc[l] += a[i + l] * b[i + l];
  float s = 0;
  for (; i < n; ++i) s += a[i] * b[i];
  for (float v : acc) s += v;
  return s;
}

}  // namespace

PHI_CLONES void attend_query_cpu(const float* q, const float* const* k_blocks, const float* const* v_blocks,
                                 int64_t ctx, int block_size, int head_dim, float scale_div, float* scores,
                                 float* out) {
  float mx = -3.402823466e38f;
  for (int64_t j0 = 0, b = 0; j0 < ctx; j0 += block_size, ++b) {
    const float* kb = k_blocks[b];
    const int64_t n = ctx - j0 < block_size ? ctx - j0 : block_size;
    for (int64_t j = 0; j < n; ++j) {
      const float sc = Dot(q, kb + j * head_dim, head_dim) / scale_div;
      scores[j0 + j] = sc;
      mx = sc > mx ? sc : mx;
    }
  }
  for (int64_t j = 0; j < ctx; ++j) scores[j] = FastExp(scores[j] - mx);
  float acc[16] = {};
  int64_t i = 0;
  for (; i + 16 <= ctx; i += 16)
    for (int l = 0; l < 16; ++l) acc[l] += scores[i + l];
  float sum = 0;
  for (; i < ctx; ++i) sum += scores[i];
  for (float v : acc) sum += v;
  const float inv = 1.0f / sum;
  for (int d = 0; d < head_dim; ++d) out[d] = 0.0f;
  for (int64_t j0 = 0, b = 0; j0 < ctx; j0 += block_size, ++b) {
    const float* vb = v_blocks[b];
    const int64_t n = ctx - j0 < block_size ? ctx - j0 : block_size;
    for (int64_t j = 0; j < n; ++j) {
      const float p = scores[j0 + j] * inv;
      const float* v = vb + j * head_dim;
      for (int d = 0; d < head_dim; ++d) out[d] += p * v[d];
    }
  }
}

PHI_CLONES void layer_norm_cpu(const float* x, const float* gamma, const float* beta, double eps, int64_t n,
                               float* y) {
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

PHI_CLONES void gelu_new_cpu(const float* x, int64_t n, float* y) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    const float u = kSqrt2OverPi * (v + 0.044715f * v * v * v);
    // tanh(u) = 1 - 2 / (exp(2u) + 1): absolute error ~1e-7, and gelu needs 1 + tanh.
    const float t = 1.0f - 2.0f / (FastExp(2.0f * u) + 1.0f);
    y[i] = 0.5f * v * (1.0f + t);
  }
}

PHI_CLONES void rotary_cpu(float* v, const float* cos, const float* sin, int half) {
  for (int i = 0; i < half; ++i) {
    const float x1 = v[i], x2 = v[i + half];
    v[i] = x1 * cos[i] - x2 * sin[i];
    v[i + half] = x2 * cos[i] + x1 * sin[i];
  }
}

}  // namespace phi::cpu
