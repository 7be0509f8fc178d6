// Element-wise and row-wise operations of the Phi forward pass, F32. Each has an
// AVX-512 clone chosen at load time (GCC target_clones) and a baseline one.
#ifndef PHI_SERVICES_WORKER_BACKENDS_CPU_OPS_H_
#define PHI_SERVICES_WORKER_BACKENDS_CPU_OPS_H_

#include <cstdint>

namespace phi::cpu {

// y = (x - mean) / sqrt(var + eps) * gamma + beta over n elements (torch.nn.LayerNorm,
// biased variance). Statistics in double.
void layer_norm_cpu(const float* x, const float* gamma, const float* beta, double eps, int64_t n, float* y);

// y = gelu_new(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), transformers'
// NewGELUActivation (tanh approximation).
void gelu_new_cpu(const float* x, int64_t n, float* y);
namespace kernels {
void gelu_new_avx512(const float* x, int64_t n, float* y);  // same; the caller checked the CPU
}  // namespace kernels

// Rotate-half rotary embedding on the first 2*half dims of one head vector `v`:
// v[i] = v[i] cos[i] - v[i+half] sin[i]; v[i+half] = v[i+half] cos[i] + v[i] sin[i].
// ref: transformers apply_rotary_pos_emb / rotate_half.
void rotary_cpu(float* v, const float* cos, const float* sin, int half);

}  // namespace phi::cpu

#endif  // PHI_SERVICES_WORKER_BACKENDS_CPU_OPS_H_
